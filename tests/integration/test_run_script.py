"""``make run`` (scripts/run) when the worker cannot run: a clear word, and nothing left over.

Each test starts the real script in its own session with its own stack folder and ports
(never the test session's stack), and checks that every process of that session is gone
once the script has exited.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import ROOT, free_port

pytestmark = pytest.mark.integration


def session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def run_script(tmp_path: Path) -> Iterator[object]:
    """Start scripts/run with extra settings; whatever it leaves is killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(**env: str) -> subprocess.Popen[str]:
        full = {**os.environ, "THURROCK_STACK_DIR": str(tmp_path / "stack"),
                "THURROCK_KAFKA_PORT": str(free_port()), "THURROCK_STORE_PORT": str(free_port()),
                **env}
        for k in ("KAFKA_BOOTSTRAP_SERVERS", "INFLUX_URL", "TOPIC_PREFIX"):
            full.pop(k, None)
        proc = subprocess.Popen([str(ROOT / "scripts" / "run")], cwd=ROOT, env=full,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if session_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(10)
    subprocess.run([str(ROOT / ".venv" / "bin" / "thurrock-streams"), "stack", "down"],
                   env={**os.environ, "THURROCK_STACK_DIR": str(tmp_path / "stack")},
                   capture_output=True, check=False, timeout=60)


def test_a_taken_web_port_stops_make_run_before_it_starts_anything(run_script: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        proc = run_script(WEB_PORT=str(port))  # type: ignore[operator]
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    assert proc.returncode == 1
    assert err.strip() == (f"run: port {port} for the worker's web server is taken by another "
                           "program (or not a port): stop it, or choose a free port with "
                           "WEB_PORT=<port>")
    assert out == ""  # nothing started: no stack, no worker
    assert elapsed < 10
    assert not session_alive(proc.pid)


def test_make_run_stops_with_the_workers_last_words_when_the_worker_dies(
        run_script: object, tmp_path: Path) -> None:
    # A setting only the worker reads, and refuses at start-up: it exits at once.
    missing = tmp_path / "no-such-rules.toml"
    t0 = time.monotonic()
    proc = run_script(WEB_PORT=str(free_port()),  # type: ignore[operator]
                      ALERT_RULES_FILE=str(missing))
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, (out, err)
    assert "run: the worker stopped (exit code 2); the end of its log" in err
    assert f"  | thurrock-streams: alert rules {missing}: [Errno 2]" in err
    assert "run: stopping..." in out
    assert "kafka: stopped" in out and "store: stopped" in out
    assert not session_alive(proc.pid)
    assert elapsed < 90
