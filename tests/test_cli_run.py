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
