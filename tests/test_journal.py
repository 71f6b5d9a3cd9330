"""The journal: complete, ordered, deterministic; `replay` and `exchange replay` check it event by event."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from bench.random_flow import random_flow
from exchange.clearing import Clearing
from exchange.cli import main as cli_main
from exchange.clock import VirtualClock
from exchange.commands import Deposit, PlaceOrder, SetMarkPrice
from exchange.engine import Engine
from exchange.enums import Side
from exchange.journal import JOURNAL_MAGIC, JournalError, JournalReader, JournalSink, engine_from_config, replay
from exchange.runtime import Runtime, mark_price_timer

enc = msgspec.json.Encoder().encode


def write_journal(path, cmds, *, engine=None, timers=(), config=None) -> Runtime:
    async def main() -> Runtime:
        rt = Runtime(engine or Engine(), sinks=[JournalSink(path)], timers=list(timers), config=config)
        async with rt:
            await rt.submit_many(cmds)
        return rt

    return asyncio.run(main())


def test_every_command_and_event_in_order_with_a_header_and_an_end(tmp_path):
    cmds = list(random_flow(3, 5000))
    path = tmp_path / "run.jsonl"
    rt = write_journal(path, cmds, config={"seed": 3})
    lines = path.read_bytes().splitlines()
    header = json.loads(lines[0])
    assert header["journal"] == JOURNAL_MAGIC and header["version"] == 1 and header["schema"] == 1
    cfg = header["config"]
    assert cfg["run"] == {"seed": 3}
    assert [i["symbol"] for i in cfg["engine"]["instruments"]] == ["BTCUSDT", "ETHUSDT"]
    assert cfg["clock"]["mode"] == "virtual"
    assert json.loads(lines[-1]) == {"end": {"commands": len(cmds), "events": rt.events, "last_seq": rt.engine.seq}}
    engine = Engine()
    r = JournalReader(path)
    steps = list(r.steps())
    assert [c for c, _ in steps] == cmds
    for (cmd, raws) in steps:
        assert [bytes(x) for x in raws] == [enc(e) for e in engine.apply(cmd)]


def test_two_identical_runs_write_byte_identical_journals(tmp_path):
    cmds = list(random_flow(4, 3000))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_journal(a, cmds, timers=[mark_price_timer(100)], config={"seed": 4})
    write_journal(b, cmds, timers=[mark_price_timer(100)], config={"seed": 4})
    assert a.read_bytes() == b.read_bytes()
    assert b"time" not in a.read_bytes().splitlines()[0].lower().replace(b"timers", b"").replace(b"_time", b"")


def test_replay_gives_the_same_events(tmp_path):
    path = tmp_path / "run.jsonl"
    write_journal(path, list(random_flow(5, 8000)), timers=[mark_price_timer(50)])
    res = replay(path)
    assert res.ok and res.complete and res.mismatches == 0 and res.events > 8000


def test_replay_finds_a_changed_event_and_names_it(tmp_path):
    path = tmp_path / "run.jsonl"
    write_journal(path, list(random_flow(6, 2000)))
    lines = path.read_bytes().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if b'"type":"Trade"' in line)
    lines[i] = lines[i].replace(b'"type":"Trade","seq":', b'"type":"Trade","seq":9', 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    res = replay(bad)
    assert not res.ok and res.mismatches >= 1
    assert res.first_mismatch is not None and res.first_mismatch["journal"]["type"] == "Trade"
    assert cli_main(["replay", str(bad), "--quiet"]) == 1
    assert cli_main(["replay", str(path), "--quiet"]) == 0


def test_a_journal_cut_short_still_replays_what_it_holds(tmp_path):
    path = tmp_path / "run.jsonl"
    write_journal(path, list(random_flow(7, 2000)))
    lines = path.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[: len(lines) // 2]))
    res = replay(cut)
    assert res.ok and not res.complete and res.commands == len(lines) // 2 - 1


def test_not_a_journal(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"hello": 1}\n')
    with pytest.raises(JournalError):
        replay(p)
    assert cli_main(["replay", str(p)]) == 2


def test_engine_with_clearing_is_rebuilt_from_the_header(tmp_path):
    path = tmp_path / "run.jsonl"
    engine = Engine(clock=VirtualClock(), clearing=Clearing(maker_fee_ppm=100, taker_fee_ppm=300))
    cmds = [SetMarkPrice(symbol="BTCUSDT", price=800_000)]
    for acc in (1, 2):
        cmds.append(Deposit(account=acc, asset="USDT", amount=10_000 * 10**8))
    cmds += [PlaceOrder(account=1, symbol="BTCUSDT", side=Side.SELL, qty=10, price=800_010),
             PlaceOrder(account=2, symbol="BTCUSDT", side=Side.BUY, qty=10, price=800_010)]
    write_journal(path, cmds, engine=engine)
    header_cfg = JournalReader(path).config
    rebuilt = engine_from_config(header_cfg)
    assert rebuilt.clearing is not None and rebuilt.clearing.taker_fee_ppm == 300
    res = replay(path)
    assert res.ok and res.events > len(cmds)


def test_cli_replay_prints_events_and_republishes_to_a_new_journal(tmp_path, capsysbinary):
    path = tmp_path / "run.jsonl"
    write_journal(path, list(random_flow(8, 500)))
    assert cli_main(["replay", str(path), "--events"]) == 0
    out = capsysbinary.readouterr().out.splitlines()
    n = replay(path).events
    assert len(out) == n and json.loads(out[0])["seq"] == 1
    copy = tmp_path / "copy.jsonl"
    assert cli_main(["replay", str(path), "--journal", str(copy), "--quiet"]) == 0
    assert replay(copy).events == n
