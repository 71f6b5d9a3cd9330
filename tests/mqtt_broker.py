"""A private MQTT broker for tests and benchmarks, on a free loopback port.

Mosquitto when its binary is on the machine (a generated config with
persistence, so that a stopped and restarted broker keeps the sessions and
queued messages of persistent subscribers); otherwise amqtt, a pure-Python
broker, in a child process (no persistence: tests that need a broker restart
to keep sessions check `persistent`). `PERPEX_TEST_BROKER=amqtt` forces the
fallback, `PERPEX_TEST_BROKER=mosquitto` forbids it.

Never the system broker: every broker here listens on a port it picked
itself and is killed when the test ends.

`TcpProxy` is a TCP relay to put between a client and the broker, for
dropped-connection tests: it can reset every relayed connection at once
(RST, no MQTT DISCONNECT) and refuse new ones for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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

    def save(self, timeout: float = 10.0) -> None:
        """Have Mosquitto write its persistence file now (SIGUSR1) and wait until it has: sessions and
        subscriptions that exist at this moment survive even a SIGKILL (what was queued later does not)."""
        if self.kind != "mosquitto" or self.proc is None:
            raise RuntimeError("only a running Mosquitto saves its state on request")
        db = self.dir / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if db.stat().st_mtime_ns != before:
                    time.sleep(0.05)  # (written to a new file, then renamed: it is complete once it has this name)
                    return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not write {db} within {timeout} s")

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


# --------------------------------------------------------------------------- a line that can be cut
def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly: SO_LINGER 0 makes the close send an RST, and whatever is unsent is discarded."""
    with contextlib.suppress(Exception):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()


class TcpProxy:
    """A TCP relay from a free loopback port (`port`, `url`) to `target_host:target_port`, run by an event
    loop in its own thread, so that a test can break the line under a client:

    * `freeze()`: stop relaying in both directions (the line goes silent: what the client writes is
      neither delivered nor acknowledged; TCP flow control holds the rest); `thaw()` relays again;
    * `cut()`: reset every relayed connection on both sides at once (RST, no MQTT DISCONNECT; bytes in
      transit, including what `freeze` held, are lost) and stop listening: new connections are refused;
    * `resume()`: listen again on the same port.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.accepted = 0  # connections relayed
        self.resets = 0  # connections reset by cut()
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter, tuple[asyncio.Task[None], ...]]] = set()
        self._flowing: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _call(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self, timeout: float = 10.0) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
                return
            except OSError:  # (the port taken meanwhile, for a moment, as some client's own port)
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        if self._server is None:  # cut while this one was being set up: it is cut too
            _reset(writer)
            _reset(up_writer)
            return
        self.accepted += 1
        for w in (writer, up_writer):
            with contextlib.suppress(OSError):
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        tasks = (loop.create_task(self._pipe(reader, up_writer)), loop.create_task(self._pipe(up_reader, writer)))
        conn = (writer, up_writer, tasks)
        self._conns.add(conn)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:  # one side closed (or the line was cut): close the other one too
            self._conns.discard(conn)
            for t in tasks:
                t.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(1 << 16):
                if not self._flowing.is_set():
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()

    async def _freeze(self, on: bool) -> None:
        assert self._flowing is not None
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    def freeze(self) -> None:
        self._call(self._freeze(True))

    def thaw(self) -> None:
        self._call(self._freeze(False))

    async def _cut(self) -> int:
        if self._server is not None:
            self._server.close()  # no more listening: a connection attempt is refused
            self._server = None
        n = 0
        for writer, up_writer, tasks in list(self._conns):
            for t in tasks:
                t.cancel()
            _reset(writer)
            _reset(up_writer)
            n += 1
        self._conns.clear()
        assert self._flowing is not None
        self._flowing.set()
        self.resets += n
        self.cuts += 1
        return n

    def cut(self) -> int:
        """Reset every relayed connection and refuse new ones (until `resume`); returns how many were reset."""
        return self._call(self._cut())

    def resume(self) -> None:
        """Accept connections again."""
        if self._server is None:
            self._call(self._listen())

    async def _close(self) -> None:
        await self._cut()
        if self._handlers:  # let each connection's handler finish (its pipes were cancelled)
            _done, pending = await asyncio.wait(set(self._handlers), timeout=5)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
