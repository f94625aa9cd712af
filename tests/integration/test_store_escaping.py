"""Hostile site_ids through the real writer into the real store, read back byte for byte."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from thurrock_streams.adapters.influx import InfluxWriter, to_line
from thurrock_streams.settings import Settings
from thurrock_streams.stack import StackConfig

from .harness import export, poll

pytestmark = pytest.mark.integration

NON_ASCII = ["é", "ü", "中", "🚦", "£", "e\u0301", "Ω≈ç√"]


def hostile_ids(tag: str) -> list[str]:
    """Each printable ASCII character alone, inside, doubled at the end and after a
    backslash; then non-ASCII ones, the issue's cases and a 64-character id."""
    ids = []
    for i in range(0x20, 0x7F):
        c = chr(i)
        ids += [f"{tag}{i:02x}a{c}b", f"{tag}{i:02x}e{c}{c}", f"{tag}{i:02x}s\\{c}"]
    ids += [f"{tag}u{c}" for c in NON_ASCII]
    ids += [f"{tag}x" + "".join(NON_ASCII)]
    ids += [f"{tag}a\\,b", f"{tag}end\\", f"{tag}\\\\", f'{tag} ,="\\ =, ']
    ids.append((f"{tag}L" + "=\\, é" * 20)[:64])
    assert all(s.isprintable() and len(s) <= 64 for s in ids)
    return ids


def test_every_printable_character_survives_into_the_store(stack: StackConfig) -> None:
    tag = f"esc{uuid.uuid4().hex[:8]}-"
    sites = hostile_ids(tag)
    lines = [to_line("traffic", {"site_id": s, "window": "1m", "ts": 1_700_000_060.0,
                                 "count": n, "flow_vph": 60.0 * n})
             for n, s in enumerate(sites)]
    settings = Settings.from_env(stack.env())

    async def write() -> list[int]:
        w = InfluxWriter(settings)
        try:
            return await w.write(lines)
        finally:
            await w.close()

    assert asyncio.run(write()) == []  # the store refused no point

    rows = poll(lambda: export(stack, f'{{__name__="traffic_count",site_id=~"{tag}.*"}}'),
                lambda r: len(r) >= len(sites), 30, "every hostile site in the store")
    stored = {r["metric"]["site_id"]: r["values"] for r in rows}
    assert sorted(stored) == sorted(sites)  # str equality: the same UTF-8 bytes
    for n, s in enumerate(sites):
        assert stored[s] == [n], s
    assert {r["metric"]["window"] for r in rows} == {"1m"}
