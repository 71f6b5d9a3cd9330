"""`exchange run` (and the other commands' help) through the real console script, in subprocesses.

    exchange run wick --until 7m --report-dir DIR --summary-json DIR/s.json --quiet

must exit 0 and write the summary JSON (every figure the issue lists; money as decimal strings;
balances = deposits − withdrawals and funding paid = received + remainder, to the atom), the chart
(a PNG of at least 800 × 500 px) and the journal (DIR/wick.jsonl, which `exchange replay` finds
identical). Two runs with one seed write byte-identical journals; a bad scenario file exits 2 with
`file:line: field: ...` on standard error; every command's --help exits 0 and shows an example.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).parent / "exchange"
if _SCRIPT.exists():
    EXCHANGE = [str(_SCRIPT)]
elif shutil.which("exchange"):
    EXCHANGE = [shutil.which("exchange")]
else:  # the package is importable but its console script is not installed
    EXCHANGE = [sys.executable, "-m", "exchange"]

SUMMARY_KEYS = [
    "events", "trades", "liquidations_full", "liquidations_partial", "margin_calls", "adl_events",
    "insurance_fund_start", "insurance_fund_min", "insurance_fund_end", "deposits_total", "balances_total",
    "funding_paid", "funding_received", "funding_remainder", "wall_seconds", "events_per_sec", "chart",
]
MONEY_KEYS = [
    "insurance_fund_start", "insurance_fund_min", "insurance_fund_end", "deposits_total", "withdrawals_total",
    "balances_total", "funding_paid", "funding_received", "funding_remainder",
]
DECIMAL = re.compile(r"-?\d+(\.\d+)?")  # plain fixed-point: no exponent, no thousands separator


def exchange(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MPLBACKEND", None)
    return subprocess.run([*EXCHANGE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_wick(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return exchange("run", "wick", "--until", "7m", "--report-dir", str(out), "--summary-json", str(out / "s.json"),
                    "--quiet", *extra, cwd=out.parent)


@pytest.fixture(scope="module")
def wick(tmp_path_factory):
    out = tmp_path_factory.mktemp("wick") / "out"
    proc = run_wick(out)
    return proc, out


def test_run_exits_0(wick):
    proc, _ = wick
    assert proc.returncode == 0, proc.stderr
    assert "liquidations" in proc.stdout  # the summary table


def test_summary_json_has_every_figure(wick):
    proc, out = wick
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / "s.json").read_text())
    missing = [k for k in SUMMARY_KEYS if k not in s]
    assert not missing
    for k in ("events", "trades", "liquidations_full", "liquidations_partial", "margin_calls", "adl_events"):
        assert isinstance(s[k], int) and not isinstance(s[k], bool) and s[k] >= 0, k
    assert s["events"] > 0 and s["trades"] > 0
    assert s["liquidations_full"] + s["liquidations_partial"] > 0  # the wick (at 5 m) is inside the 7 m
    for k in MONEY_KEYS:
        assert isinstance(s[k], str) and DECIMAL.fullmatch(s[k]), (k, s[k])
    assert isinstance(s["wall_seconds"], int | float) and s["wall_seconds"] > 0
    assert isinstance(s["events_per_sec"], int | float) and s["events_per_sec"] > 0
    # the fund: 1,000,000 at the start (wick.toml), its minimum at most its start and its end
    d = {k: Decimal(s[k]) for k in MONEY_KEYS}
    assert d["insurance_fund_start"] == Decimal("1000000")
    assert d["insurance_fund_min"] <= min(d["insurance_fund_start"], d["insurance_fund_end"])
    # deposits: the fund's 1,000,000 + the traders' balances of wick.toml:
    # 5,000,000 (maker) + 10 × 20,000 (noise) + 20 × 3,000 + 10 × 100,000 (hold and hope) = 6,260,000
    assert d["deposits_total"] == Decimal("7260000")
    assert d["balances_total"] == d["deposits_total"] - d["withdrawals_total"]
    assert d["funding_paid"] == d["funding_received"] + d["funding_remainder"]


def test_chart_is_a_png_of_at_least_800_by_500(wick):
    proc, out = wick
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / "s.json").read_text())
    chart = Path(s["chart"])
    if not chart.is_absolute():
        chart = out.parent / chart
    assert chart.exists() and chart.parent.resolve() == out.resolve()
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 500, (width, height)
    assert len(data) > 20_000


def test_journal_replays_identical(wick):
    proc, out = wick
    assert proc.returncode == 0, proc.stderr
    journal = out / "wick.jsonl"
    assert journal.exists()
    lines = journal.read_bytes().splitlines()
    assert json.loads(lines[0])["journal"] == "perp-exchange-journal"
    assert "end" in json.loads(lines[-1])  # a clean close
    rep = exchange("replay", str(journal), cwd=out.parent)
    assert rep.returncode == 0, rep.stderr
    assert "identical" in rep.stdout


def _ints_and_strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _ints_and_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _ints_and_strings(v)
    else:
        yield obj


def test_same_seed_same_journal_bytes(wick, tmp_path):
    proc, out = wick
    assert proc.returncode == 0, proc.stderr
    time.sleep(1.1)  # a wall-clock second later, in another directory
    again = tmp_path / "again"
    proc2 = run_wick(again)
    assert proc2.returncode == 0, proc2.stderr
    first, second = (out / "wick.jsonl").read_bytes(), (again / "wick.jsonl").read_bytes()
    assert first == second
    # the header holds no wall-clock time and no path
    header = json.loads(first.split(b"\n", 1)[0])
    now_s = time.time()
    for v in _ints_and_strings(header):
        if isinstance(v, int | float) and not isinstance(v, bool):
            assert not (abs(v - now_s) < 86_400 * 365 or abs(v - now_s * 1000) < 86_400_000 * 365), v
        if isinstance(v, str):
            assert str(tmp_path) not in v and str(out) not in v
    assert header["config"]["run"]["seed"] == 3  # wick.toml's seed


def test_another_seed_another_journal(wick, tmp_path):
    proc, out = wick
    assert proc.returncode == 0, proc.stderr
    other = tmp_path / "seed4"
    proc2 = run_wick(other, "--seed", "4")
    assert proc2.returncode == 0, proc2.stderr
    journal = (other / "wick.jsonl").read_bytes()
    assert journal != (out / "wick.jsonl").read_bytes()
    assert json.loads(journal.split(b"\n", 1)[0])["config"]["run"]["seed"] == 4


def test_funding_figures_add_up_when_funding_is_paid(tmp_path):
    """funding-squeeze settles every hour: 65 minutes hold one settlement, paid = received + remainder."""
    out = tmp_path / "fs"
    proc = exchange("run", "funding-squeeze", "--until", "65m", "--report-dir", str(out), "--summary-json",
                    str(out / "s.json"), "--quiet", "--no-journal", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / "s.json").read_text())
    paid, received, remainder = (Decimal(s[k]) for k in ("funding_paid", "funding_received", "funding_remainder"))
    assert paid > 0
    assert paid == received + remainder
    assert remainder >= 0
    assert Decimal(s["balances_total"]) == Decimal(s["deposits_total"]) - Decimal(s["withdrawals_total"])
    assert not (out / "funding-squeeze.jsonl").exists()  # --no-journal


BAD = """\
[scenario]
name = "bad"
duration = "2m"

[[markets]]
symbol = "BTCUSDT"
[markets.index]
kind = "random_walk"
start = "80000"

[[traders]]
kind = "noise"
count = "3"
"""


def test_bad_scenario_file_exits_2_naming_file_line_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    proc = exchange("run", str(bad), "--report-dir", str(tmp_path / "out"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    # line 13 is `count = "3"` of traders[0]
    assert "bad.toml:13: traders[0].count: " in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "bad.jsonl").exists()


def test_unknown_scenario_exits_2(tmp_path):
    proc = exchange("run", "no-such-scenario", "--report-dir", str(tmp_path / "out"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no-such-scenario" in proc.stderr


def _shows_an_example(help_text: str, command: str | None) -> bool:
    """An example invocation (`exchange CMD ...`) outside the usage block at the top."""
    body = help_text.split("\n\n", 1)[1] if "\n\n" in help_text else ""
    cmd = command or r"(run|demo|calc|replay|tail)"
    return re.search(rf"\bexchange {cmd}\b", body) is not None


HELP = [
    None,
    "run",
    "demo",
    "calc",
    "replay",
    "tail",
]


@pytest.mark.parametrize("command", HELP)
def test_help_exits_0_and_shows_an_example(tmp_path, command):
    args = [command, "--help"] if command else ["--help"]
    proc = exchange(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: exchange")
    assert _shows_an_example(proc.stdout, command), proc.stdout
    assert "exit status" in proc.stdout.lower()


def test_top_level_help_shows_an_example_of_every_command_and_the_common_exit_codes(tmp_path):
    proc = exchange("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    examples = proc.stdout.split("examples", 1)[1]
    for command in ("run", "demo", "calc", "replay", "tail"):
        assert re.search(rf"^  exchange {command}\b", examples, re.M), command
    for code in ("0", "1", "2", "130", "143"):
        assert re.search(rf"\b{code}\b", examples.split("exit status", 1)[1]), code


def test_a_csv_scenario_replays_from_another_directory(tmp_path):
    src = tmp_path / "scenarios"
    src.mkdir()
    # a straight fall from 80,000 to 79,820 over 3 minutes, a point every 10 s
    rows = ["ts_ms,price"] + [f"{t},{80000 - t / 1000:.1f}" for t in range(0, 180_001, 10_000)]
    (src / "prices.csv").write_text("\n".join(rows) + "\n")
    (src / "c.toml").write_text(
        '[scenario]\nname = "csvrun"\nduration = "2m"\n\n[[markets]]\nsymbol = "BTCUSDT"\n'
        '[markets.index]\nkind = "csv"\nfile = "prices.csv"\n\n'
        '[[traders]]\nkind = "market_maker"\nbalance = "1000000"\n\n[[traders]]\nkind = "noise"\ncount = 3\n')
    proc = exchange("run", str(src / "c.toml"), "--report-dir", str(tmp_path / "out"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = exchange("replay", str(tmp_path / "out" / "csvrun.jsonl"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "identical" in rep.stdout
    # the journal is self-contained: the index prices are in it, so the csv file is not needed at all
    (src / "prices.csv").unlink()
    rep = exchange("replay", str(tmp_path / "out" / "csvrun.jsonl"), cwd=src)
    assert rep.returncode == 0, rep.stderr
    assert "identical" in rep.stdout


# ------------------------------------------------------------------ exit codes: bad values, cannot start
@pytest.mark.parametrize("accounts", ["0", "-3", "many"])
def test_a_bad_accounts_count_exits_2(tmp_path, accounts):
    proc = exchange("run", "calm", "--accounts", accounts, "--report-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "--accounts" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("speed", ["0", "-1", "inf"])
def test_a_bad_speed_exits_2(tmp_path, speed):
    for command in (["run", "calm"], ["replay", "nothing.jsonl"]):
        proc = exchange(*command, "--speed", speed, cwd=tmp_path)
        assert proc.returncode == 2, command
        assert "--speed" in proc.stderr


def _closed_port() -> int:
    from tests.mqtt_broker import free_port

    return free_port()  # bound then released: nothing listens there


def test_run_with_an_unreachable_broker_exits_2_with_one_error_line(tmp_path):
    url = f"mqtt://127.0.0.1:{_closed_port()}"
    proc = exchange("run", "calm", "--until", "10s", "--quiet", "--mqtt", url, "--report-dir", str(tmp_path / "out"),
                    cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"exchange run: cannot start: cannot connect to MQTT broker {url}" in proc.stderr
    assert proc.stdout == ""  # no summary: nothing ran


def test_run_with_a_bad_mqtt_url_exits_2(tmp_path):
    proc = exchange("run", "calm", "--until", "10s", "--quiet", "--mqtt", "http://127.0.0.1:1",
                    "--report-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "mqtt://HOST:PORT" in proc.stderr


def _small_journal(path: Path, virtual_ms: int = 4000) -> int:
    """A journal of a few orders and a clock step every 100 ms up to `virtual_ms`; returns its command count."""
    import asyncio

    from bench.random_flow import random_flow
    from exchange.commands import AdvanceClock
    from exchange.engine import Engine
    from exchange.journal import JournalSink
    from exchange.runtime import Runtime

    orders = list(random_flow(7, 200))
    cmds: list = []
    for k, t in enumerate(range(100, virtual_ms + 1, 100)):
        cmds += orders[k * 5:(k + 1) * 5]
        cmds.append(AdvanceClock(ts=t))

    async def main() -> None:
        rt = Runtime(Engine(), sinks=[JournalSink(path)])
        await rt.start()
        await rt.submit_many(cmds)
        await rt.stop()

    asyncio.run(main())
    return len(cmds)


def test_replay_with_an_unreachable_broker_exits_2(tmp_path):
    journal = tmp_path / "j.jsonl"
    _small_journal(journal, 500)
    proc = exchange("replay", str(journal), "--mqtt", f"mqtt://127.0.0.1:{_closed_port()}", cwd=tmp_path,
                    timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "cannot connect to MQTT broker" in proc.stderr


def test_replay_republishes_at_the_chosen_speed(tmp_path, capsys):
    """4 virtual seconds at --speed 4: about one wall second (unpaced it takes a few ms), and the
    republished journal is the original, byte for byte."""
    from exchange.cli import main

    journal, again = tmp_path / "j.jsonl", tmp_path / "again.jsonl"
    n = _small_journal(journal, 4000)
    t0 = time.monotonic()
    assert main(["replay", str(journal), "--speed", "4", "--journal", str(again)]) == 0
    took = time.monotonic() - t0
    assert 0.9 <= took < 6.0, took
    assert f"{n} commands" in capsys.readouterr().out
    assert again.read_bytes() == journal.read_bytes()
    t0 = time.monotonic()
    assert main(["replay", str(journal), "--speed", "40", "--quiet"]) == 0  # no sink: paced all the same
    took = time.monotonic() - t0
    assert 0.09 <= took < 0.9, took


# ------------------------------------------------------------------ exchange tail: a gap is exit status 1
def _publish(url: str, topic: str, seqs: list[int]) -> None:
    import paho.mqtt.client as paho

    from exchange.mqtt_sink import parse_mqtt_url

    host, port = parse_mqtt_url(url)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.connect(host, port)
    c.loop_start()
    try:
        for s in seqs:
            payload = json.dumps({"type": "Trade", "schema": 1, "seq": s, "topic_seq": s, "ts": s, "price": 1})
            c.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.mark.parametrize(("seqs", "status"), [([1, 2, 3], 0), ([1, 2, 4], 1)], ids=["no-gap", "gap"])
def test_tail_exits_1_when_it_saw_a_gap(tmp_path, seqs, status):
    from tests.mqtt_broker import MqttBroker, broker_kind

    if broker_kind() is None:
        pytest.skip("no MQTT broker available")
    with MqttBroker(tmp_path / "broker").start() as broker:
        prefix = f"tail{os.getpid()}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([*EXCHANGE, "tail", "--mqtt", broker.url, "--mqtt-prefix", prefix, "--count", "3",
                                 "--timeout", "60"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith("# subscribed"), line
            _publish(broker.url, f"{prefix}/market/BTCUSDT/trades", seqs)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == status, err
    assert ("GAP" in out) == bool(status)
    assert "3 events" in err
