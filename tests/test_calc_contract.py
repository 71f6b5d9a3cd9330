"""The `exchange calc` JSON contract, through the installed console script, in subprocesses.

The contract is issue 3 ("The calculator"): one JSON document in, from a file
argument or standard input,

    {"profile", "position_mode", "wallet_balance", "positions": [{"symbol", "side", "qty", "entry_price",
     "mark_price", "margin_mode", "isolated_margin", "leverage", "mmr", "cum"}],
     "what_if": [{"add_margin": {...}} | {"close": {...}} | {"mark": {...}}]}

numbers as JSON numbers or decimal strings; one JSON document out,

    {"margin_balance", "maintenance_margin", "margin_ratio",
     "positions": [{"symbol", "side", "liquidation_price", "bankruptcy_price", "maintenance_margin",
                    "unrealized_pnl", "mmr", "cum"}],
     "what_if": [the same document after each step]}

every number a decimal string with at least 8 significant digits (exact, not
rounded to a tick), a liquidation price that does not exist (a fully
collateralised long) null; bad input: a message naming the field, exit status
2; `--help` shows a worked example; the human form
(`exchange calc --entry 80000 --side long --leverage 10 --margin 1000 --add-margin 500`)
prints a small table.

Expected figures are worked by hand from mechanics.md §3.1 (isolated, one-way):
    LP = (WB + cum − side·q·EP) / (q·MMR − side·q),   BP: the same with MMR = cum = 0,
with the BTCUSDT bracket 1 (notional < 300,000: MMR 0.40 %, cum 0; mechanics.md §2).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.console import EXCHANGE

TOP_KEYS = {"margin_balance", "maintenance_margin", "margin_ratio", "positions", "what_if"}
STEP_KEYS = TOP_KEYS - {"what_if"}
POSITION_KEYS = {"symbol", "side", "liquidation_price", "bankruptcy_price", "maintenance_margin", "unrealized_pnl",
                 "mmr", "cum"}
TEXT_KEYS = {"symbol", "side", "margin_mode"}  # the only values that are not numbers
DECIMAL = re.compile(r"-?\d+(\.\d+)?")  # fixed point: no exponent, no thousands separator


def calc(*args: str, stdin: str | None = None, cmd: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(cmd or EXCHANGE), "calc", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def calc_json(doc: Any) -> dict[str, Any]:
    run = calc(stdin=json.dumps(doc))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def significant_digits(s: str) -> int:
    """Digits from the first non-zero one on; for a zero, its number of decimals."""
    digits = s.lstrip("-").replace(".", "").lstrip("0")
    if digits:
        return len(digits)
    return len(s.split(".")[1]) if "." in s else 0


def numbers(doc: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every value of the output that is not a text field (symbol, side, margin_mode)."""
    out: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k not in TEXT_KEYS:
                out += numbers(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += numbers(v, f"{path}[{i}]")
    else:
        out.append((path, doc))
    return out


# ---------------------------------------------------------------------------- documents
# The seed position of mechanics.md §8(a): long 0.125 BTC at 80,000 (10x: 1,000 USDT isolated margin).
SEED = {"symbol": "BTCUSDT", "side": "long", "qty": "0.125", "entry_price": "80000", "margin_mode": "isolated",
        "isolated_margin": "1000"}
# LP = (1,000 − 0.125 × 80,000) / (0.125 × 0.004 − 0.125) = −9,000 / −0.1245 = 72,289.156626…
SEED_LP = Fraction(-9000) / Fraction("-0.1245")
# after adding 500: (1,500 − 10,000) / −0.1245 = 68,273.092369…
SEED_LP_PLUS_500 = Fraction(-8500) / Fraction("-0.1245")
# BP: −9,000 / −0.125 = 72,000 and −8,500 / −0.125 = 68,000
SEED_BP, SEED_BP_PLUS_500 = Fraction(72_000), Fraction(68_000)

# Everything at once: the Binance official cross account (two cross longs with a fixed bracket each, mechanics.md
# §3.1; the brackets of the 2021 tables of §2), in hedge mode a cross short beside the cross ETH long, and an
# isolated short in a symbol the emulator does not know (its bracket given); three what-if steps.
RICH = {
    "profile": "binance",
    "position_mode": "hedge",
    "wallet_balance": "1535443.01",
    "positions": [
        {"symbol": "BTCUSDT", "side": "long", "qty": "109.488", "entry_price": "32481.98", "mark_price": "31967.27",
         "margin_mode": "cross", "mmr": "0.025", "cum": "16300"},
        {"symbol": "ETHUSDT", "side": "long", "qty": "3683.979", "entry_price": "1456.84", "mark_price": "1335.18",
         "margin_mode": "cross", "mmr": "0.1", "cum": "135365"},
        {"symbol": "ETHUSDT", "side": "short", "qty": "10", "entry_price": "1400", "mark_price": "1335.18",
         "margin_mode": "cross", "mmr": "0.0065", "cum": "15"},  # its own bracket: 2021 ETH table, 10k–100k
        {"symbol": "SOLUSDT", "side": "short", "qty": "50", "entry_price": "150.25", "mark_price": "149.5",
         "margin_mode": "isolated", "isolated_margin": "751.25", "mmr": "0.01", "cum": "0"},
    ],
    "what_if": [
        {"add_margin": {"symbol": "SOLUSDT", "side": "short", "amount": "400"}},
        {"close": {"symbol": "ETHUSDT", "side": "long", "qty": "1000"}},
        {"mark": {"symbol": "BTCUSDT", "price": "30000"}},
    ],
}


@pytest.fixture(scope="module")
def rich() -> dict[str, Any]:
    return calc_json(RICH)


# ---------------------------------------------------------------------------- the output document
def test_every_listed_key_is_present(rich: dict[str, Any]) -> None:
    assert set(rich) >= TOP_KEYS, TOP_KEYS - set(rich)
    assert len(rich["positions"]) == 4
    for p in rich["positions"]:
        assert set(p) >= POSITION_KEYS, POSITION_KEYS - set(p)
    assert len(rich["what_if"]) == len(RICH["what_if"])  # one document per step
    for step in rich["what_if"]:
        assert set(step) >= STEP_KEYS, STEP_KEYS - set(step)
        for p in step["positions"]:
            assert set(p) >= POSITION_KEYS, POSITION_KEYS - set(p)
    # the positions are reported as given: symbol and side
    assert [(p["symbol"], p["side"]) for p in rich["positions"]] == [(p["symbol"], p["side"])
                                                                     for p in RICH["positions"]]


def test_every_number_is_a_decimal_string_with_8_significant_digits(rich: dict[str, Any]) -> None:
    values = numbers(rich)
    assert len(values) >= 4 * 4 * len(POSITION_KEYS - TEXT_KEYS)  # four documents of four positions
    for path, v in values:
        if v is None:
            assert path.endswith(("liquidation_price", "bankruptcy_price", "margin_ratio")), path
            continue
        assert isinstance(v, str), (path, v)  # never a JSON number
        assert DECIMAL.fullmatch(v), (path, v)
        assert significant_digits(v) >= 8, (path, v)


def test_significant_digits_helper() -> None:
    assert significant_digits("72289.15662651") == 13
    assert significant_digits("0.0040000000") == 8
    assert significant_digits("-0.00001234") == 4
    assert significant_digits("0.00000000") == 8
    assert significant_digits("1535443.0") == 8


def test_prices_are_exact_not_rounded_to_a_tick() -> None:
    out = calc_json({"positions": [SEED]})
    (p,) = out["positions"]
    lp, bp = Decimal(p["liquidation_price"]), Decimal(p["bankruptcy_price"])
    # within the last digit printed of the exact value, far finer than BTCUSDT's tick of 0.10
    assert abs(Fraction(lp) - SEED_LP) <= Fraction(1, 10**8)
    assert lp != lp.quantize(Decimal("0.1"))
    assert Fraction(bp) == SEED_BP
    # MM at the mark (80,000): 0.125 × 80,000 × 0.4 % = 40 USDT, bracket 1
    assert (Fraction(Decimal(p["maintenance_margin"])), Fraction(Decimal(p["mmr"])),
            Fraction(Decimal(p["cum"]))) == (40, Fraction("0.004"), 0)


@pytest.mark.parametrize("position", [
    # 1x isolated: margin = the initial margin = the whole notional, 0.1 × 80,000 = 8,000:
    # LP = (8,000 − 8,000) / (0.1 × 0.004 − 0.1) = 0: no price at which it is liquidated
    {"symbol": "BTCUSDT", "side": "long", "qty": "0.1", "entry_price": "80000", "margin_mode": "isolated",
     "leverage": "1"},
    {"symbol": "BTCUSDT", "side": "long", "qty": "0.1", "entry_price": "80000", "margin_mode": "isolated",
     "isolated_margin": "8000"},
    # more than the notional: LP = 1,000 / −0.0996 < 0
    {"symbol": "BTCUSDT", "side": "long", "qty": "0.1", "entry_price": "80000", "margin_mode": "isolated",
     "isolated_margin": "9000", "mark_price": "60000"},
], ids=["leverage_1", "margin_equals_notional", "margin_above_notional"])
def test_a_fully_collateralised_long_has_no_liquidation_price(position: dict[str, Any]) -> None:
    out = calc_json({"positions": [position], "what_if": [{"mark": {"symbol": "BTCUSDT", "price": "1"}}]})
    assert out["positions"][0]["liquidation_price"] is None
    assert out["what_if"][0]["positions"][0]["liquidation_price"] is None  # at any mark


def test_a_file_argument_works_as_well_as_stdin(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    path.write_text(json.dumps(RICH))
    by_file = calc(str(path))
    by_stdin = calc(stdin=json.dumps(RICH))
    assert by_file.returncode == by_stdin.returncode == 0, (by_file.stderr, by_stdin.stderr)
    assert by_file.stdout == by_stdin.stdout
    assert json.loads(by_file.stdout)["positions"]


def test_python_dash_m_gives_the_same_output() -> None:
    doc = json.dumps({"positions": [SEED]})
    script = calc(stdin=doc)
    module = calc(stdin=doc, cmd=[sys.executable, "-m", "exchange"])
    assert script.returncode == module.returncode == 0
    assert script.stdout == module.stdout


def test_numbers_as_json_numbers_or_strings_give_the_same_output() -> None:
    as_strings = calc(stdin=json.dumps(RICH))

    def numeric(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: numeric(v) if k not in ("symbol", "side", "margin_mode", "profile", "position_mode")
                    else v for k, v in x.items()}
        if isinstance(x, list):
            return [numeric(v) for v in x]
        d = Decimal(x)
        return int(d) if d == d.to_integral_value() and "." not in x else float(x)

    doc = numeric(RICH)
    assert isinstance(doc["positions"][0]["qty"], float) and isinstance(doc["positions"][0]["cum"], int)
    as_numbers = calc(stdin=json.dumps(doc))
    assert as_strings.returncode == as_numbers.returncode == 0, as_numbers.stderr
    assert as_numbers.stdout == as_strings.stdout


# ---------------------------------------------------------------------------- bad input
BAD = [
    ("not json", "{positions: ", "input"),
    ("no positions", {"positions": []}, "positions"),
    ("entry price not a number", {"positions": [dict(SEED, entry_price="eighty thousand")]},
     "positions[0].entry_price"),
    ("negative mark", {"positions": [dict(SEED, mark_price="-1")]}, "positions[0].mark_price"),
    ("unknown margin mode", {"positions": [dict(SEED, margin_mode="portfolio")]}, "positions[0].margin_mode"),
    ("isolated without margin", {"positions": [{k: v for k, v in SEED.items() if k != "isolated_margin"}]},
     "positions[0].isolated_margin"),
    ("position mode", {"position_mode": "both", "positions": [SEED]}, "position_mode"),
    ("unknown step", {"positions": [SEED], "what_if": [{"liquidate": {}}]}, "what_if[0]"),
    ("step without amount", {"positions": [SEED], "what_if": [{"add_margin": {"symbol": "BTCUSDT",
                                                                                "side": "long"}}]},
     "what_if[0].add_margin.amount"),
    ("second position's field", {"positions": [SEED, {"symbol": "ETHUSDT", "side": "long", "qty": "1",
                                                       "entry_price": "3000", "margin_mode": "isolated",
                                                       "isolated_margin": "x"}]},
     "positions[1].isolated_margin"),
]


@pytest.mark.parametrize(("doc", "field"), [(d, f) for _, d, f in BAD], ids=[i for i, _, _ in BAD])
def test_bad_input_exits_2_naming_the_field(doc: Any, field: str) -> None:
    run = calc(stdin=doc if isinstance(doc, str) else json.dumps(doc))
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert field in run.stderr, run.stderr
    assert run.stdout == ""
    assert "Traceback" not in run.stderr


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    run = calc(str(tmp_path / "nowhere.json"))
    assert run.returncode == 2
    assert "nowhere.json" in run.stderr and "Traceback" not in run.stderr


# ---------------------------------------------------------------------------- --help and the human form
def test_help_shows_a_worked_example_that_is_true() -> None:
    run = calc("--help")
    assert run.returncode == 0
    text = run.stdout
    assert "example" in text.lower()
    # the JSON example in the help, run as shown, gives the figures the help states, which are the hand values
    (example,) = re.findall(r"echo '(\{.*?\})' \| exchange calc", text, flags=re.S)
    out = calc_json(json.loads(example))
    shown = [out["positions"][0]["liquidation_price"], out["what_if"][0]["positions"][0]["liquidation_price"]]
    for value in shown:
        assert value in text, (value, text)
    assert abs(Fraction(Decimal(shown[0])) - SEED_LP) <= Fraction(1, 10**8)
    assert abs(Fraction(Decimal(shown[1])) - SEED_LP_PLUS_500) <= Fraction(1, 10**8)
    # and the human form is shown too
    assert "--entry" in text and "--add-margin" in text


def test_human_form_with_add_margin_prints_a_table_with_both_liquidation_prices() -> None:
    run = calc("--entry", "80000", "--side", "long", "--leverage", "10", "--margin", "1000", "--add-margin", "500")
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) >= 3  # a title or header and rows: a table, not one line
    # 72,289.16 as is and 68,273.09 after adding 500 (SEED_LP, SEED_LP_PLUS_500 to the cent), labelled
    assert f"{float(SEED_LP):.2f}" == "72289.16" and f"{float(SEED_LP_PLUS_500):.2f}" == "68273.09"
    assert "72289.16" in run.stdout and "68273.09" in run.stdout
    assert any("liq" in line.lower() for line in lines)
    # the bankruptcy prices beside them: 72,000 and 68,000
    assert "72000.00" in run.stdout and "68000.00" in run.stdout
    assert "Traceback" not in run.stderr
