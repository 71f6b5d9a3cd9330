"""The human form of `exchange calc` (issue 7: "what adding X margin does to the liquidation price
against what closing the same risk by a partial close does, side by side"), through the real console
script in subprocesses.

* every bad human-form value exits 2 with a one-line message naming the option, no traceback;
* the seed example (mechanics.md §8(a); examples.json `seed_a_btc80000_10x_margin_plus_0` and
  `..._plus_500`): the "as is" and "add 500 margin" columns give Binance's 72,289.16 / 68,273.09
  (§8(a) "Binance's formula ... MMR 0.4%", the seed_a notes; 2 decimals there, so ±0.01), and the
  examples' own 72,400 / 68,400 (tolerance abs 1e-6) under the entry-notional profile with MMR 0.5%;
* the partial-close and add columns agree with the JSON form given the same `close` / `add_margin`
  what-if step (the two interfaces compared, the close quantity read from the human output);
* cross margin with a wallet gives other figures than isolated (the close moves the liquidation price);
* --mark shows margin ratio, unrealised PnL and the distance to the liquidation price;
* --help shows the seed example and exactly what it prints; every line fits in 100 columns.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.console import EXCHANGE

SPEC_DIR = Path(__file__).resolve().parent / "data" / "spec"  # the copy of shared/spec (see test_margin_examples)
SEED = ["--entry", "80000", "--side", "long", "--leverage", "10", "--margin", "1000", "--add-margin", "500",
        "--mark", "76000"]
LABEL_W = 22  # the human table's label column (exchange/cli_calc.py)


def calc(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXCHANGE, "calc", *args], input=stdin, capture_output=True, text=True, timeout=60)


def human(*args: str) -> subprocess.CompletedProcess[str]:
    proc = calc(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


def json_calc(doc: dict[str, Any]) -> dict[str, Any]:
    proc = calc(stdin=json.dumps(doc))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def table(stdout: str) -> dict[str, dict[str, str]]:
    """The human table as {column title: {row label: cell}}."""
    lines = stdout.splitlines()
    (i,) = [n for n, line in enumerate(lines) if line.startswith(" " * LABEL_W) and line.strip()][:1]
    titles = re.split(r"\s{2,}", lines[i].strip())
    width = (len(lines[i]) - LABEL_W) // len(titles)
    out: dict[str, dict[str, str]] = {t: {} for t in titles}
    for line in lines[i + 1:]:
        label = line[:LABEL_W].strip()
        if not label or len(line) != LABEL_W + width * len(titles):
            break  # the notes below the table
        for j, t in enumerate(titles):
            out[t][label] = line[LABEL_W + j * width: LABEL_W + (j + 1) * width].strip()
    return out


def column(cols: dict[str, dict[str, str]], prefix: str) -> tuple[str, dict[str, str]]:
    (hit,) = [(t, c) for t, c in cols.items() if t.startswith(prefix)]
    return hit


def examples() -> dict[str, dict[str, Any]]:
    path = SPEC_DIR / "examples.json"
    if not path.exists():
        pytest.fail(f"examples.json not found in tests/data/spec ({path})")
    return {e["id"]: e for e in json.loads(path.read_text())}


def within(got: str, expected: Any, tol: Any) -> bool:
    return abs(Decimal(got) - Decimal(str(expected))) <= Decimal(str(tol))


def seed_position(margin_mode: str = "isolated") -> dict[str, Any]:
    pos = {"symbol": "BTCUSDT", "side": "long", "qty": "0.125", "entry_price": "80000", "mark_price": "76000",
           "margin_mode": margin_mode}
    if margin_mode == "isolated":
        pos["isolated_margin"] = "1000"
    return pos


# ---------------------------------------------------------------------------- bad input
BASE = ["--entry", "80000", "--leverage", "10", "--margin", "1000", "--add-margin", "500"]
BAD = [
    (["--add-margin", "abc"], "--add-margin"),
    (["--add-margin", "-5"], "--add-margin"),
    (["--add-margin", "nan"], "--add-margin"),
    (["--mark", "abc"], "--mark"),
    (["--mark", "0"], "--mark"),
    (["--entry", "1,000"], "--entry"),
    (["--leverage", "ten"], "--leverage"),
    (["--margin", "-1000"], "--margin"),
    (["--qty", "inf"], "--qty"),
    (["--close", "x"], "--close"),
    (["--close", "0.2"], "--close"),  # more than the position's 0.125
    (["--wallet", "-3"], "--wallet"),
    (["--wallet", "100"], "--add-margin"),  # isolated: 500 is more than the wallet
    (["--margin-mode", "cross"], "--wallet"),  # cross needs a wallet
    (["--margin-mode", "both"], "--margin-mode"),
    (["--side", "up"], "--side"),
    (["--profile", "bybit"], "--profile"),
    (["--symbol", "DOGEUSDT"], "--symbol"),
    (["--mmr", "abc", "--cum", "0"], "--mmr"),
    (["--mmr", "0.004"], "--cum"),
    (["--mmr", "0.004", "--cum", "x"], "--cum"),
    (["--add-margin", "1e-30"], "--add-margin"),
]


@pytest.mark.parametrize(("extra", "option"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_exits_2_naming_the_option(extra: list[str], option: str) -> None:
    args = list(BASE)
    for k in range(0, len(extra), 2):  # replace the option where BASE has it, else append
        if extra[k] in args:
            args[args.index(extra[k]) + 1] = extra[k + 1]
        else:
            args += extra[k:k + 2]
    proc = calc(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    message = proc.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith("exchange calc:"), message
    assert re.search(rf"(^|\W){re.escape(option)}\b", message), message


def test_missing_size_and_json_options_without_entry_exit_2() -> None:
    proc = calc("--entry", "80000")
    assert proc.returncode == 2 and "--margin" in proc.stderr and "Traceback" not in proc.stderr
    proc = calc("--add-margin", "500", stdin="{}")
    assert proc.returncode == 2 and "--add-margin" in proc.stderr and "--entry" in proc.stderr


# ---------------------------------------------------------------------------- the seed example
def test_seed_example_binance_default_matches_the_spec() -> None:
    # mechanics.md §8(a): Binance's formula with BTCUSDT's bracket 1 (MMR 0.4%): 72,289.16, then 68,273.09
    # after +500 (also the notes of examples.json seed_a_btc80000_10x_margin_plus_0 / _plus_500); the spec
    # gives them to 2 decimals, so ±0.01 (as tests/test_margin_examples.py BINANCE_SEED).
    cols = table(human(*SEED).stdout)
    assert list(cols) == ["as is", "add 500 margin", "close 0.065"]
    assert within(cols["as is"]["liquidation price"], "72289.16", "0.01")
    assert within(cols["add 500 margin"]["liquidation price"], "68273.09", "0.01")
    assert cols["as is"]["isolated margin"] == "1000.00"
    assert cols["add 500 margin"]["isolated margin"] == "1500.00"
    # bankruptcy: EP − WB/q (mechanics.md §3.1): 80,000 − 1,000/0.125, 80,000 − 1,500/0.125
    assert cols["as is"]["bankruptcy price"] == "72000.00"
    assert cols["add 500 margin"]["bankruptcy price"] == "68000.00"
    assert cols["add 500 margin"]["wallet change"] == "-500.00"


def test_seed_example_entry_notional_matches_the_examples() -> None:
    # examples.json seed_a_btc80000_10x_margin_plus_0 / _plus_500: 72,400 / 68,400 exactly (abs 1e-6), with
    # MMR 0.5% charged on the entry notional (mechanics.md §8(a), "reproduced exactly").
    ex = examples()
    cols = table(human(*SEED, "--profile", "entry-notional", "--mmr", "0.005", "--cum", "0").stdout)
    for example_id, title in [("seed_a_btc80000_10x_margin_plus_0", "as is"),
                              ("seed_a_btc80000_10x_margin_plus_500", "add 500 margin")]:
        e = ex[example_id]
        assert e["inputs"]["mm_base"] == "entry_notional" and e["inputs"]["mmr"] == 0.005
        assert within(cols[title]["liquidation price"], e["expected"]["liquidation_price"], e["tolerance"]["abs"])


# ---------------------------------------------------------------------------- human form = JSON form
@pytest.mark.parametrize("mode", ["isolated", "cross"])
def test_columns_agree_with_the_json_form(mode: str) -> None:
    extra = ["--margin-mode", "cross", "--wallet", "1000"] if mode == "cross" else ["--wallet", "5000"]
    cols = table(human(*SEED, *extra).stdout)
    title, close_col = column(cols, "close ")
    close_qty = title.removeprefix("close ")
    wallet = "1000" if mode == "cross" else "5000"
    base = {"profile": "binance", "wallet_balance": wallet, "positions": [seed_position(mode)]}
    out = json_calc({**base, "what_if": [{"close": {"symbol": "BTCUSDT", "side": "long", "qty": close_qty}}]})
    after = out["what_if"][0]
    (pos,) = after["positions"]
    assert within(close_col["liquidation price"], pos["liquidation_price"], "0.005")
    assert within(close_col["bankruptcy price"], pos["bankruptcy_price"], "0.005")
    assert Decimal(close_col["position qty"]) == Decimal(pos["qty"])
    assert within(close_col["wallet"], after["wallet_balance"], "0.005")
    assert within(close_col["unrealised PnL"], pos["unrealized_pnl"], "0.005")
    # the realised PnL of the close at the mark: the close moves the cross wallet by exactly it; an isolated
    # close moves the wallet by it plus the released margin
    released = Decimal(0) if mode == "cross" else Decimal("1000") - Decimal(pos["isolated_margin"])
    assert within(close_col["realised PnL"], Decimal(after["wallet_balance"]) - Decimal(wallet) - released,
                  "0.005")
    # "as is" is the document without steps
    (now,) = out["positions"]
    assert within(cols["as is"]["liquidation price"], now["liquidation_price"], "0.005")
    # "add 500 margin": isolated, the add_margin step; cross, the wallet 500 larger
    if mode == "isolated":
        add = json_calc({**base, "what_if": [{"add_margin": {"symbol": "BTCUSDT", "side": "long",
                                                             "amount": "500"}}]})["what_if"][0]
    else:
        add = json_calc({**base, "wallet_balance": "1500"})
    assert within(cols["add 500 margin"]["liquidation price"], add["positions"][0]["liquidation_price"], "0.005")
    assert within(cols["add 500 margin"]["wallet"], add["wallet_balance"], "0.005")


def test_default_close_is_the_quantity_whose_initial_margin_at_the_mark_is_x() -> None:
    # documented in --help: Q = X × leverage / mark rounded down to the lot (0.001): 500 × 10 / 76,000 = 0.0657…
    proc = human(*SEED)
    title, col = column(table(proc.stdout), "close ")
    assert title == "close 0.065"
    assert col["position qty"] == "0.060"
    # --close overrides it
    title, col = column(table(human(*SEED, "--close", "0.1").stdout), "close ")
    assert title == "close 0.1" and col["position qty"] == "0.025"


def test_cross_with_a_wallet_differs_from_isolated() -> None:
    iso = table(human(*SEED).stdout)
    cross = table(human(*SEED, "--margin-mode", "cross", "--wallet", "1000").stdout)
    # isolated: a partial close shrinks the margin in proportion, so the liquidation price stays
    assert column(iso, "close ")[1]["liquidation price"] == iso["as is"]["liquidation price"]
    # cross: the 260 USDT realised loss stays in the wallet behind a smaller position, so the price moves
    _, c_close = column(cross, "close ")
    assert c_close["liquidation price"] != cross["as is"]["liquidation price"]
    assert c_close["liquidation price"] != column(iso, "close ")[1]["liquidation price"]
    assert Decimal(c_close["liquidation price"]) < Decimal(cross["as is"]["liquidation price"])
    assert "isolated margin" not in cross["as is"] and cross["as is"]["wallet (cross margin)"] == "1000.00"
    # a larger wallet backs the cross position further
    big = table(human(*SEED, "--margin-mode", "cross", "--wallet", "3000").stdout)
    assert Decimal(big["as is"]["liquidation price"]) < Decimal(iso["as is"]["liquidation price"])


def test_mark_shows_ratio_pnl_and_distance() -> None:
    at_entry = table(human(*SEED[:-2]).stdout)
    at_mark = table(human(*SEED).stdout)
    assert at_entry["as is"]["unrealised PnL"] == "0.00"
    assert at_mark["as is"]["unrealised PnL"] == "-500.00"  # 0.125 × (76,000 − 80,000)
    for title, col in at_mark.items():
        lp = Decimal(col["liquidation price"])
        dist, pct = re.fullmatch(r"(-?[\d.]+) \((-?[\d.]+)%\)", col["distance to liq."]).groups()
        assert within(dist, Decimal("76000") - lp, "0.005"), title
        assert within(pct, (Decimal("76000") - lp) / Decimal("76000") * 100, "0.005"), title
        assert col["margin ratio"].endswith("%")
        assert col["margin ratio"] != at_entry["as is"]["margin ratio"]
    # a mark beyond the liquidation price: liquidation as is, but not with 500 more margin
    beyond = table(human(*SEED[:-1], "72100").stdout)
    assert beyond["as is"]["status at mark"] == "liquidation"
    assert beyond["add 500 margin"]["status at mark"] == "ok"
    assert beyond["as is"]["distance to liq."].startswith("-")


def test_short_side() -> None:
    cols = table(human("--entry", "80000", "--side", "short", "--leverage", "20", "--margin", "500",
                       "--add-margin", "200", "--mark", "83000").stdout)
    lp_now, lp_add = (Decimal(cols[t]["liquidation price"]) for t in ("as is", "add 200 margin"))
    assert 83000 < lp_now < lp_add  # a short's liquidation price is above the mark; margin moves it up
    dist = Decimal(cols["as is"]["distance to liq."].split()[0])
    assert within(str(dist), lp_now - 83000, "0.005")


# ---------------------------------------------------------------------------- help and layout
def test_help_shows_the_seed_example_and_what_it_prints() -> None:
    proc = calc("--help")
    assert proc.returncode == 0
    command = "exchange calc " + " ".join(SEED)
    assert command in proc.stdout
    printed = human(*SEED).stdout.rstrip("\n")
    assert textwrap.indent(printed, "  ") in proc.stdout
    assert "--margin-mode cross --wallet" in proc.stdout
    assert "initial margin at the mark" in proc.stdout  # the definition of "the same risk"


@pytest.mark.parametrize("extra", [
    [], ["--margin-mode", "cross", "--wallet", "1000"], ["--wallet", "123456.78"],
    ["--profile", "entry-notional", "--mmr", "0.005", "--cum", "0"], ["--add-margin", "5000"],
])
def test_fits_in_100_columns(extra: list[str]) -> None:
    args = list(SEED)
    if "--add-margin" in extra:
        args[args.index("--add-margin") + 1] = extra[1]
        extra = []
    out = human(*args, *extra).stdout
    assert max(len(line) for line in out.splitlines()) <= 100, out


def test_cross_wallet_that_owes() -> None:
    """A cross wallet below zero, as the engine publishes for an account whose loss its cross UPNL backs
    (docs/architecture.md "Who pays a loss"): long 0.1 BTC @ 50,000, mark 60,000, wallet -209.1. By hand
    (mechanics.md §3.1, bracket 1: MMR 0.4 %, cum 0): the BP solves -209.1 + 0.1 x (P - 50,000) = 0, P = 52,091;
    the LP solves -209.1 + 0.1 x (P - 50,000) = 0.1 x P x 0.004, 0.0996 P = 5,209.1, P = 52,300.2008. The engine
    gives the same BP (tests/test_margin_rules.py test_cross_account_owing_is_liquidated_on_its_margin_balance)."""
    cols = table(human("--symbol", "BTCUSDT", "--side", "long", "--entry", "50000", "--qty", "0.1", "--mark", "60000",
                       "--margin-mode", "cross", "--wallet=-209.1").stdout)
    as_is = cols["as is"]
    assert (as_is["wallet (cross margin)"], as_is["bankruptcy price"], as_is["liquidation price"]) == (
        "-209.10", "52091.00", "52300.20")
