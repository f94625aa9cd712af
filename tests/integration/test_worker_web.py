"""What a real worker's web server exposes, and where (issue 12, item 8)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def status(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def listening(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port``, from the kernel's tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                fam = socket.AF_INET if width == 8 else socket.AF_INET6
                found.add(socket.inet_ntop(fam, words))
    return found


def test_the_worker_serves_its_own_pages_only_and_on_loopback(make_worker: Any) -> None:
    worker = make_worker()
    port = worker.web_port
    for path in ("/counters", "/metrics", "/healthz"):
        assert status(port, path)[0] == 200, path
    assert json.loads(status(port, "/healthz")[1]) == {"status": "ok"}
    # Faust's own views: table data, the cluster's workers, its index and statistics.
    for path in ("/table/", "/table", "/router/", "/router", "/", "/graph/", "/stats/",
                 "/assignment/", "/performance/", "/table/traffic-sites/"):
        assert status(port, path)[0] == 404, path

    # Bound to 127.0.0.1 (THURROCK_WEB_HOST's default), not to every interface: another
    # loopback address of this machine does not reach it (one bound to 0.0.0.0 would).
    assert listening(port) == {"127.0.0.1"}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
