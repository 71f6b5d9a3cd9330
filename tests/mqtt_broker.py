"""A private MQTT broker for tests and benchmarks, on a free loopback port.

Mosquitto when its binary is on the machine (a generated config with
persistence, so that a stopped and restarted broker keeps the sessions and
queued messages of persistent subscribers); otherwise amqtt, a pure-Python
broker, in a child process (no persistence: tests that need a broker restart
to keep sessions check `persistent`). `PERPEX_TEST_BROKER=amqtt` forces the
fallback, `PERPEX_TEST_BROKER=mosquitto` forbids it.

Never the system broker: every broker here listens on a port it picked
itself and is killed when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_AMQTT_LAUNCHER = r"""
import asyncio, signal, sys, logging
logging.basicConfig(level=logging.ERROR)
from amqtt.broker import Broker

async def main(port):
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 1000}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()

asyncio.run(main(int(sys.argv[1])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def amqtt_available() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except Exception:
        return False
    return True


def broker_kind() -> str | None:
    """Which broker `MqttBroker` will start here: mosquitto, amqtt, or None (neither is available)."""
    forced = os.environ.get("PERPEX_TEST_BROKER", "").strip().lower()
    if forced == "amqtt":
        return "amqtt" if amqtt_available() else None
    if mosquitto_binary():
        return "mosquitto"
    if forced == "mosquitto":
        return None
    return "amqtt" if amqtt_available() else None


class MqttBroker:
    """Start with `start()` or as a context manager; `stop`, `kill` and `restart` for failure tests."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, port: int | None = None,
                 kind: str | None = None) -> None:
        self.kind = kind or broker_kind()
        if self.kind is None:
            raise RuntimeError("no MQTT broker available: install mosquitto or `pip install amqtt`")
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="perpex-broker-")
            workdir = self._tmp.name
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.persistent = self.kind == "mosquitto"
        self.starts = 0

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        # started as root, Mosquitto would switch to its own user, which can write neither its log nor its
        # persistence file here: no sessions would survive a restart. Stay the user that started it.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else ""
        conf.write_text(
            user
            + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "persistence_file mosquitto.db\n"
            "autosave_interval 3600\n"
            "max_queued_messages 0\n"  # no limit on a persistent subscriber's queue
            "max_inflight_messages 0\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> MqttBroker:
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.kind == "mosquitto":
            binary = mosquitto_binary()
            assert binary is not None
            cmd = [binary, "-c", str(self._config())]
        else:
            cmd = [sys.executable, "-c", _AMQTT_LAUNCHER, str(self.port)]
        out = open(self.dir / f"{self.kind}.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; see {self.dir}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                self.starts += 1
                return self
            except OSError:
                time.sleep(0.02)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"{self.kind} did not listen on port {self.port} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM: Mosquitto saves its persistence file first)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: no chance to save anything."""
        self.stop(signal.SIGKILL)

    def restart(self, down_for: float = 0.0, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        if down_for:
            time.sleep(down_for)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        self.stop(signal.SIGKILL if self.kind == "amqtt" else signal.SIGTERM)
        if self._tmp is not None:
            with contextlib.suppress(Exception):
                self._tmp.cleanup()

    def __enter__(self) -> MqttBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
