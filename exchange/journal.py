"""The journal: every accepted command and every event, in order, in one JSON-lines file.

Format (one JSON object per line, written with msgspec):

    {"journal":"perp-exchange-journal","version":1,"schema":1,"config":{...}}    header
    {"cmd":{"type":"PlaceOrder",...},"events":[{"type":"OrderAccepted",...},...]}   one line per step
    ...
    {"end":{"commands":N,"events":M,"last_seq":S}}                                  on a clean close

The header names the journal format version, the event schema version and
the run's configuration (instruments, clock, timers, clearing settings, the
caller's own settings) and nothing that differs between two identical runs:
no wall-clock time, host, path or random id. Two identical virtual-time runs
therefore write byte-identical journals. A journal without its `end` line
was cut short (a crash); everything before the cut is still readable.

`replay` rebuilds the engine from the header, applies the journal's commands
one by one and compares the events it gets with the journal's, event by
event, as encoded bytes; `exchange replay FILE` is its command line.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, Union

import msgspec

from exchange.clock import VirtualClock
from exchange.commands import Command
from exchange.engine import Engine
from exchange.events import SCHEMA_VERSION, Event
from exchange.instrument import Instrument
from exchange.sinks import Chunk, OverflowPolicy, Sink

log = logging.getLogger("exchange.journal")

JOURNAL_MAGIC = "perp-exchange-journal"
JOURNAL_VERSION = 1


class _StepLine(msgspec.Struct):
    cmd: Command
    events: list[Event]


class _EndLine(msgspec.Struct):
    end: dict[str, int]


def _concrete_subclasses(base: type) -> list[type]:
    """Every tagged subclass of `base` defined so far (the union grows as modules add types)."""
    out, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        cfg = getattr(cls, "__struct_config__", None)
        if cfg is not None and getattr(cfg, "tag", None) is not None:
            out.append(cls)
    return out


def command_types() -> list[type]:
    import exchange.commands  # noqa: F401  (the module that defines the base set)

    return _concrete_subclasses(Command)


def _line_type() -> type:
    cmd_union = Union[tuple(command_types())]  # type: ignore[valid-type]
    return msgspec.defstruct("_ReadLine", [
        ("cmd", Optional[cmd_union], None),  # noqa: UP045
        ("events", list[msgspec.Raw], []),
        ("end", Optional[dict[str, int]], None),  # noqa: UP045
    ])


class JournalSink(Sink):
    """Writes the journal; always the block policy (a journal with a gap could not be replayed)."""

    name = "journal"

    def __init__(self, path: str | os.PathLike[str], *, capacity: int = 262_144, fsync: bool = False,
                 buffer_bytes: int = 1 << 20) -> None:
        super().__init__(capacity=capacity, policy=OverflowPolicy.BLOCK)
        self.path = Path(path)
        self.fsync = fsync
        self.buffer_bytes = buffer_bytes
        self._enc = msgspec.json.Encoder()
        self._buf = bytearray()
        self._file: Any = None
        self.commands = 0
        self.events = 0
        self.last_seq = 0
        self.bytes_written = 0

    async def start(self, context: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115  (closed in close())
        header = {"journal": JOURNAL_MAGIC, "version": JOURNAL_VERSION, "schema": SCHEMA_VERSION,
                  "config": context.get("config", {})}
        self._buf += self._enc.encode(header)
        self._buf += b"\n"
        self._write()

    async def handle(self, chunk: Chunk) -> None:
        buf, encode_into = self._buf, self._enc.encode_into
        n = 0
        for cmd, events in chunk:
            encode_into(_StepLine(cmd, events), buf, -1)
            buf += b"\n"
            if events:
                n += len(events)
                self.last_seq = events[-1].seq
        self.commands += len(chunk)
        self.events += n
        if len(buf) >= self.buffer_bytes:
            self._write()

    async def idle(self) -> None:
        self._write()
        if self._file is not None:
            self._file.flush()

    async def close(self) -> None:
        if self._file is None:
            return
        self._buf += self._enc.encode(_EndLine({"commands": self.commands, "events": self.events,
                                                "last_seq": self.last_seq}))
        self._buf += b"\n"
        self._write()
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def _write(self) -> None:
        if self._buf and self._file is not None:
            self._file.write(self._buf)
            self.bytes_written += len(self._buf)
            self._buf.clear()

    def stats(self) -> dict[str, Any]:
        return {"commands": self.commands, "events": self.events, "bytes": self.bytes_written + len(self._buf)}


# --------------------------------------------------------------------------- reading
class JournalError(ValueError):
    pass


class JournalReader:
    """Reads a journal: `header`, then `steps()` yields (command, raw encoded events); `end` after that."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115  (closed by close()/iteration end)
        first = self._file.readline()
        try:
            header = msgspec.json.decode(first)
        except msgspec.DecodeError as exc:
            raise JournalError(f"{self.path}: not a journal (bad header: {exc})") from None
        if not isinstance(header, dict) or header.get("journal") != JOURNAL_MAGIC:
            raise JournalError(f"{self.path}: not a journal (no {JOURNAL_MAGIC!r} header)")
        if header.get("version") != JOURNAL_VERSION:
            raise JournalError(f"{self.path}: journal version {header.get('version')}, expected {JOURNAL_VERSION}")
        self.header: dict[str, Any] = header
        self.end: dict[str, int] | None = None
        self.lines = 1

    @property
    def config(self) -> dict[str, Any]:
        return self.header.get("config", {})

    def steps(self) -> Iterator[tuple[Command, list[msgspec.Raw]]]:
        decode = msgspec.json.Decoder(_line_type()).decode
        try:
            for line in self._file:
                self.lines += 1
                if not line.strip():
                    continue
                try:
                    rec = decode(line)
                except msgspec.DecodeError as exc:
                    raise JournalError(f"{self.path}:{self.lines}: {exc}") from None
                if rec.end is not None:
                    self.end = rec.end
                    continue
                if rec.cmd is None:
                    raise JournalError(f"{self.path}:{self.lines}: a line with neither cmd nor end")
                yield rec.cmd, rec.events
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def engine_from_config(config: dict[str, Any]) -> Engine:
    """The engine a journal's header describes (run.engine_factory "module:function" overrides)."""
    factory = (config.get("run") or {}).get("engine_factory")
    if factory:
        module, _, fn = str(factory).partition(":")
        return getattr(importlib.import_module(module), fn)(config)
    eng = config.get("engine", {})
    instruments = [msgspec.convert(d, Instrument) for d in eng.get("instruments", [])] or None
    kwargs: dict[str, Any] = {}
    if eng.get("clearing") is not None:
        from exchange.clearing import Clearing

        ckw: dict[str, Any] = {}
        c = eng["clearing"]
        if "profile" in c:
            from exchange.venue import VenueProfile

            ckw["profile"] = msgspec.convert(c["profile"], VenueProfile)
        for k in ("maker_fee_ppm", "taker_fee_ppm"):
            if k in c:
                ckw[k] = c[k]
        kwargs["clearing"] = Clearing(**ckw)
    return Engine(instruments, VirtualClock(int(eng.get("start_ms", 0))), **kwargs)


class ReplayResult(msgspec.Struct):
    commands: int = 0
    events: int = 0  # events in the journal
    replayed_events: int = 0  # events the replayed engine produced
    mismatches: int = 0
    first_mismatch: dict[str, Any] | None = None
    complete: bool = False  # the journal has its end line
    last_seq: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.events == self.replayed_events


def replay(path: str | os.PathLike[str], engine: Engine | None = None, *,
           on_step: Callable[[Command, list[Event]], None] | None = None, max_report: int = 1) -> ReplayResult:
    """Apply the journal's commands to a fresh engine; compare every event with the journal's."""
    reader = JournalReader(path)
    if engine is None:
        engine = engine_from_config(reader.config)
    enc = msgspec.json.Encoder().encode
    res = ReplayResult()
    apply = engine.apply
    for cmd, raws in reader.steps():
        res.commands += 1
        events = apply(cmd)
        if on_step is not None:
            on_step(cmd, events)
        res.events += len(raws)
        res.replayed_events += len(events)
        if len(raws) != len(events) or any(enc(ev) != bytes(raw) for ev, raw in zip(events, raws, strict=False)):
            for i in range(max(len(raws), len(events))):
                got = enc(events[i]) if i < len(events) else None
                want = bytes(raws[i]) if i < len(raws) else None
                if got != want:
                    res.mismatches += 1
                    if res.first_mismatch is None and res.mismatches <= max_report:
                        res.first_mismatch = {
                            "command_index": res.commands, "command": msgspec.json.decode(enc(cmd)),
                            "event_index": i,
                            "journal": msgspec.json.decode(want) if want is not None else None,
                            "replayed": msgspec.json.decode(got) if got is not None else None,
                        }
        if events:
            res.last_seq = events[-1].seq
    res.complete = reader.end is not None
    end = reader.end
    if end is not None and (end.get("commands") != res.commands or end.get("events") != res.events):
        raise JournalError(f"{path}: end line says {reader.end}, the journal holds {res.commands} commands "
                           f"and {res.events} events")
    return res
