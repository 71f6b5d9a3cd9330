"""The built-in scenarios (exchange/scenarios/*.toml) and scenario-file validation.

Each built-in scenario's header comment states its defining outcome; one test per scenario checks it
through `build` + `drive`, from a `RunSummary` and the events. The expected figures come from the
scenario files (start prices, the fund's floor, the funding interval, balances, margin adds), from
mechanics.md or from hand arithmetic in the comments, never from a run's output. For every built-in
the money is conserved to the atom at the end and no wallet, isolated margin or fund is negative, and
the event stream is a function of the seed: one seed twice gives byte-identical streams, another seed
a different one.

Units: BTCUSDT tick 0.1 USDT (prices in events are ticks), lot 0.001 BTC, money atom 1e-8 USDT;
bracket 1 (notional < 300,000) MMR 0.4%, cum 0; taker fee 0.05% (the scenarios' default).

Then: scenario files with one mistake each give a ScenarioError that names the file, the line and the
field; the complete example of docs/scenarios.md loads and runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import cache
from pathlib import Path

import pytest

from exchange.clearing import FUND_ACCOUNT
from exchange.commands import SetFeeTier
from exchange.enums import BalanceReason, PositionReason, Side
from exchange.events import (
    BalanceUpdated,
    Event,
    FundingPayment,
    FundingSettled,
    IndexPriceUpdated,
    LiquidationRecorded,
    MarginCall,
    MarkPriceUpdated,
    PositionUpdated,
    Trade,
    encode_events,
)
from exchange.scenario import BUILTIN, Built, Scenario, ScenarioError, build, key_lines, load_scenario
from exchange.scenario_run import drive
from exchange.summary import RunSummary
from exchange.traders import HoldAndHope, PartialCloser

ROOT = Path(__file__).resolve().parents[1]
BTC = "BTCUSDT"
ATOMS = 10**8  # atoms per USDT
TICKS = 10  # ticks per USDT (tick 0.1)
LOTS = 1000  # lots per BTC (lot 0.001)


def usdt(amount: str | int | Decimal) -> int:
    """A USDT amount as atoms, exactly."""
    d = Decimal(str(amount)) * ATOMS
    assert d == d.to_integral_value(), amount
    return int(d)


# ------------------------------------------------------------------ running the built-ins
@dataclass
class Run:
    scenario: Scenario
    built: Built
    summary: dict
    events: list[Event]


def _run(name: str, seed: int | None = None, until: str | None = None) -> Run:
    scenario, path = load_scenario(name)
    built = build(scenario, path.parent, seed=seed, until=until)
    summary = RunSummary.for_engine(built.engine)
    events: list[Event] = []

    def on_step(cmd, evs):
        summary.on_step(cmd, evs)
        events.extend(evs)

    drive(built, on_step)
    return Run(scenario, built, summary.finish(built.engine, 1.0), events)


#: How much of each scenario the outcome tests run: all of it, but funding-squeeze (8 h) is cut to
#: 4 h, which holds four hourly fundings.
OUTCOME_UNTIL = {"funding-squeeze": "4h"}


@cache
def outcome_run(name: str) -> Run:
    return _run(name, until=OUTCOME_UNTIL.get(name))


def of(events: list[Event], cls: type) -> list:
    return [e for e in events if type(e) is cls]


def accounts_of(built: Built, cls: type) -> list[int]:
    return [st.trader.account for st in built.traders if isinstance(st.trader, cls)]


def test_the_builtins_are_the_five_documented():
    assert set(BUILTIN) == {"calm", "crash", "wick", "funding-squeeze", "add-margin-vs-partial-close"}
    for name in BUILTIN:
        assert (ROOT / "exchange" / "scenarios" / f"{name}.toml").exists()


# ------------------------------------------------------------------ defining outcomes
def test_calm_no_liquidation_no_adl():
    """calm.toml: "Defining outcome: no liquidation." (and so no ADL either)."""
    r = outcome_run("calm")
    s = r.summary
    assert r.built.duration_ms == 3_600_000  # the whole hour of the file
    assert s["trades"] > 0  # the market did trade
    assert s["liquidations_full"] == 0
    assert s["liquidations_partial"] == 0
    assert not of(r.events, LiquidationRecorded)
    assert s["adl_events"] == 0


def test_crash_adl_and_fund_at_its_floor():
    """crash.toml: "ADL happens and the insurance fund reaches its floor" — liquidations in a cascade,
    the fund run down to its floor (150,000 opening, floor 140,000 in the file), then ADL."""
    r = outcome_run("crash")
    s = r.summary
    floor = Decimal(r.scenario.insurance_fund.floor)
    assert floor == Decimal("140000")  # from the file
    assert Decimal(s["insurance_fund_start"]) == Decimal(r.scenario.insurance_fund.balance) == Decimal("150000")
    # issue 7: "a crash scenario produces margin calls, partial and full liquidations, insurance fund use and ADL"
    assert s["margin_calls"] > 0
    assert s["liquidations_full"] > 0
    assert s["liquidations_partial"] > 0  # the two whales of the file, above bracket 1
    assert s["adl_events"] > 0
    # the fund reached its floor, within one USDT
    assert abs(Decimal(s["insurance_fund_min"]) - floor) <= 1, s["insurance_fund_min"]
    assert Decimal(s["insurance_fund_end"]) >= 0


def test_wick_liquidations_and_the_price_comes_back():
    """wick.toml: -9% over 20 s at 5 m, retraced 100% within 60 s, from 80,000: liquidations happen and
    the price comes back. The minimum mark must be at least 5% under the start; the final index and
    mark within 2% of it (the random walk's 0.01% steps add ~0.35% of noise over 20 min)."""
    r = outcome_run("wick")
    start = Decimal(r.scenario.markets[0].index.start) * TICKS
    assert start == 800_000
    s = r.summary
    assert s["liquidations_full"] + s["liquidations_partial"] > 0
    marks = [e.mark_price for e in of(r.events, MarkPriceUpdated) if e.symbol == BTC]
    assert min(marks) <= start * Decimal("0.95")
    m = r.built.engine.markets[BTC]
    for final in (m.mark_price, m.data.index_price, marks[-1]):
        assert abs(final - start) <= start * Decimal("0.02"), final
    # the liquidations happened in the wick (from 5 m to 5 m 20 s + a minute of retrace), not elsewhere
    liq_ts = [e.ts for e in of(r.events, LiquidationRecorded)]
    assert all(300_000 <= ts <= 380_000 for ts in liq_ts), liq_ts


def test_funding_squeeze_longs_pay_every_hour_and_are_squeezed():
    """funding-squeeze.toml: funding every hour (funding_interval_hours = 1), the book quoted 1% above
    the index, so the rate is positive and longs pay shorts; the crowded longs (hold_and_hope, 100x)
    get margin calls / liquidations while the index goes nowhere (a 0.02% random walk)."""
    r = outcome_run("funding-squeeze")
    assert r.scenario.markets[0].funding_interval_hours == 1
    hour = 3_600_000
    settled = [e for e in of(r.events, FundingSettled) if e.symbol == BTC]
    # 4 h run: a settlement at 1 h, 2 h, 3 h and 4 h, and at no other time
    assert [e.funding_time for e in settled] == [hour, 2 * hour, 3 * hour, 4 * hour]
    assert all(e.rate > 0 for e in settled)  # positive: longs pay shorts
    assert all(e.paid > 0 and e.paid == e.received + e.remainder for e in settled)
    payments = of(r.events, FundingPayment)
    assert payments
    for p in payments:
        assert (p.amount <= 0) if p.qty > 0 else (p.amount >= 0), p  # longs pay, shorts receive
    s = r.summary
    assert Decimal(s["funding_paid"]) > 0
    assert Decimal(s["funding_paid"]) == Decimal(s["funding_received"]) + Decimal(s["funding_remainder"])

    crowded = set(accounts_of(r.built, HoldAndHope))
    assert len(crowded) == 40  # count = 40 in the file
    squeezed = [e for e in of(r.events, MarginCall) + of(r.events, LiquidationRecorded) if e.account in crowded]
    assert squeezed
    assert all(e.side == "LONG" for e in of(r.events, LiquidationRecorded) if e.account in crowded)
    # and funding did part of it: a crowded long that paid funding was margin-called or liquidated after
    paid_at = {}
    for p in payments:
        if p.account in crowded and p.amount < 0:
            paid_at.setdefault(p.account, p.seq)
    assert any(e.account in paid_at and e.seq > paid_at[e.account] for e in squeezed)
    # ... while the index stayed within 3% of its start (80,000 in the file)
    start = Decimal(r.scenario.markets[0].index.start) * TICKS
    index = [e.index_price for e in of(r.events, IndexPriceUpdated) if e.symbol == BTC]
    assert index and all(abs(i - start) <= start * Decimal("0.03") for i in index)


def test_add_margin_vs_partial_close():
    """add-margin-vs-partial-close.toml: both open 0.25 BTC long at ~80,000, 10x; the price falls to
    62,000. The margin adder (hold_and_hope, isolated, balance 4,100, add_margin 1,000) is liquidated at
    about 64,257 and loses all its isolated margin and no more; the partial closer survives smaller.

    Hand figures: isolated margin = q·EP/10 (≈ 2,000) + 1,000 + 1,000 (a third add is impossible: the
    wallet keeps 4,100 − 2,000 − 10 (taker fee 0.05% of 20,000) − 2 × 1,000 ≈ 90 < 1,000).
    Liquidation price (mechanics.md §3.1, isolated one-way long, cum 0):
    LP = (WB − q·EP) / (q·MMR − q); with EP = 80,000 exactly:
    (4,000 − 20,000) / (0.001 − 0.25) = 16,000 / 0.249 = 64,257.03. The fill's exact entry price moves
    it by a few USDT. It is liquidated when the mark first falls to LP or below (MM ≥ margin balance
    ⟺ mark ≤ LP for a long).
    """
    r = outcome_run("add-margin-vs-partial-close")
    [adder] = accounts_of(r.built, HoldAndHope)
    [closer] = accounts_of(r.built, PartialCloser)
    ev = r.events
    q = Fraction(1, 4)  # 0.25 BTC, qty in the file
    mmr = Fraction(4, 1000)

    # its opening fills and its entry price
    opening = [e for e in of(ev, PositionUpdated) if e.account == adder and e.reason is PositionReason.TRADE]
    assert opening and opening[-1].qty == 250  # 0.25 BTC in lots
    cost = Fraction(opening[-1].cost, ATOMS)  # USDT: q × EP
    ep = cost / q
    assert abs(ep - 80_000) <= 10  # ~80,000: the index, plus the market maker's half spread and levels
    open_fees = sum(e.fee for e in opening)
    # taker 0.05% of the notional (each fill's fee exact: notional × 0.0005 is whole atoms here)
    assert open_fees == cost * ATOMS * Fraction(5, 10_000)

    # two margin adds of 1,000 (the file's add_margin), then nothing left to add
    adds = [e for e in of(ev, PositionUpdated) if e.account == adder and e.reason is PositionReason.MARGIN_TRANSFER]
    transfers = [e for e in of(ev, BalanceUpdated) if e.account == adder and e.reason is BalanceReason.MARGIN_TRANSFER]
    assert len(adds) == 2
    assert [e.delta for e in transfers] == [-usdt(1000), -usdt(1000)]
    wb = cost / 10 + 2000  # USDT: initial margin (10x) + 1,000 + 1,000
    assert adds[-1].isolated_margin == wb * ATOMS

    lp = (wb - q * ep) / (q * mmr - q)
    assert abs(lp - Fraction(64_257)) <= 10, float(lp)

    [liq] = [e for e in of(ev, LiquidationRecorded) if e.account == adder]
    assert not liq.partial and liq.side == "LONG" and liq.qty == 250
    # the mark that triggered it is at or below LP; every mark after the last add was above it
    assert Fraction(liq.trigger_price, TICKS) <= lp
    marks = [e for e in of(ev, MarkPriceUpdated) if e.symbol == BTC and adds[-1].seq < e.seq < liq.seq]
    assert marks and marks[-1].mark_price == liq.trigger_price
    assert all(Fraction(e.mark_price, TICKS) > lp for e in marks[:-1])
    assert lp - Fraction(liq.trigger_price, TICKS) <= 25  # 25 m → 35 m: 73,000 → 62,000, 18.3 USDT a 1 s step
    # it lost its whole isolated margin and no more: nothing left in the position, and the wallet is
    # 4,100 − opening fees − initial margin − 2 × 1,000, as it was just before the liquidation
    assert liq.balance_left == 0
    acct = r.built.engine.clearing.accounts[adder]
    assert not any(p.qty for p in acct.positions.values())
    assert all(p.isolated_margin == 0 for p in acct.positions.values())
    assert acct.wallet["USDT"] == usdt("4100") - open_fees - wb * ATOMS
    assert acct.wallet["USDT"] == adds[-1].wallet_balance

    # the partial closer: never liquidated, still long, smaller, having closed part with market sells
    assert not [e for e in of(ev, LiquidationRecorded) if e.account == closer]
    pos = view_qty(r.built, closer)
    assert 0 < pos < 250
    sells = [e for e in of(ev, Trade) if e.taker_account == closer and e.taker_side is Side.SELL]
    assert sells
    assert r.built.engine.clearing.accounts[closer].wallet["USDT"] > 0
    # and the index did fall to 62,000 (the file's last point)
    assert r.built.engine.markets[BTC].data.index_price == 62_000 * TICKS


def view_qty(built: Built, account: int) -> int:
    acct = built.engine.clearing.accounts[account]
    return sum(p.qty for p in acct.positions.values() if p.symbol == BTC)


# ------------------------------------------------------------------ every built-in: money and determinism
@pytest.mark.parametrize("name", BUILTIN)
def test_conserved_to_the_atom_and_nothing_negative(name):
    r = outcome_run(name)
    c = r.built.engine.clearing
    assert c.held("USDT") == c.treasury.deposits["USDT"]
    assert r.summary["conserved"] is True
    assert Decimal(r.summary["balances_total"]) == (
        Decimal(r.summary["deposits_total"]) - Decimal(r.summary["withdrawals_total"]))
    for acct in c.accounts.values():
        for asset, bal in [*acct.wallet.items(), *acct.spot.items()]:
            assert bal >= 0, (acct.id, asset, bal)
        for pos in acct.positions.values():
            assert pos.isolated_margin >= 0, (acct.id, pos.symbol)
    assert all(v >= 0 for v in c.treasury.insurance.values())
    assert c.accounts[FUND_ACCOUNT].wallet.get("USDT", 0) >= 0


#: The stretch of each scenario the determinism test runs (its eventful part, kept short).
DETERMINISM_UNTIL = {
    "calm": "5m",
    "crash": "8m",  # the crash starts at 5 m: liquidations, the fund's floor and ADL by 8 m
    "wick": "390s",  # the wick at 5 m and its retrace
    "funding-squeeze": "61m",  # the first hourly funding
    "add-margin-vs-partial-close": "19m",  # the first margin add (~17 m) and partial close (~18.5 m)
}
#: An event each stretch must hold (its type tag, or a field value), so that the comparison covers it.
DETERMINISM_HOLDS = {
    "calm": b'"type":"Trade"',
    "crash": b'"type":"AdlExecuted"',
    "wick": b'"type":"LiquidationRecorded"',
    "funding-squeeze": b'"type":"FundingSettled"',
    "add-margin-vs-partial-close": b'"MARGIN_TRANSFER"',
}


def stream(name: str, seed: int | None, until: str) -> bytes:
    scenario, path = load_scenario(name)
    built = build(scenario, path.parent, seed=seed, until=until)
    chunks: list[bytes] = []
    drive(built, lambda cmd, evs: chunks.append(encode_events(evs)))
    return b"\n".join(chunks)


@pytest.mark.parametrize("name", BUILTIN)
def test_deterministic_given_the_seed(name):
    until = DETERMINISM_UNTIL[name]
    seed = load_scenario(name)[0].scenario.seed
    first = stream(name, None, until)  # the file's seed
    assert len(first) > 10_000
    assert DETERMINISM_HOLDS[name] in first
    assert stream(name, seed, until) == first  # the same seed again, given explicitly
    assert stream(name, seed + 1, until) != first


# ------------------------------------------------------------------ validation of scenario files
GOOD = """\
# a small scenario
[scenario]
name = "t"
seed = 1
duration = "2m"

[[markets]]
symbol = "BTCUSDT"
[markets.index]
kind = "random_walk"
start = "80000"

[[traders]]
kind = "market_maker"
balance = "1000000"
count = 1

[[traders]]
kind = "noise"
count = 2
rate = "0.1"
"""


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the only line of `text` that contains `marker`."""
    [n] = [i + 1 for i, line in enumerate(text.splitlines()) if marker in line]
    return n


def error_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return str(info.value)


def test_the_base_file_of_these_tests_loads_and_builds(tmp_path):
    scenario, path = load_scenario(write(tmp_path, GOOD, "good.toml"))
    built = build(scenario, path.parent)
    assert built.duration_ms == 120_000 and len(built.traders) == 3


def test_adl_interval_and_fund_notional_limit_reach_the_engine(tmp_path):
    """docs/scenarios.md: `[scenario] adl_interval` and `[insurance_fund] max_notional`."""
    text = GOOD.replace('duration = "2m"', 'duration = "2m"\nadl_interval = "10s"')
    text += '\n[insurance_fund]\nbalance = "50000"\nmax_notional = "50%"\n'
    scenario, path = load_scenario(write(tmp_path, text, "good.toml"))
    risk = build(scenario, path.parent).engine.risk
    assert risk.adl_interval_ms == 10_000 and risk.next_adl_publish == 10_000
    assert risk.fund.max_notional_ppm == 500_000
    defaults = build(*load_scenario(write(tmp_path, GOOD, "good.toml"))).engine.risk
    assert (defaults.adl_interval_ms, defaults.fund.max_notional_ppm) == (30_000, 1_000_000)


def test_a_bad_fund_limit_or_adl_interval_names_its_field(tmp_path):
    text = GOOD + '\n[insurance_fund]\nmax_notional = "lots"\n'
    assert error_of(write(tmp_path, text)).startswith(f"bad.toml:{line_of(text, 'lots')}: insurance_fund.max_notional")
    text = GOOD.replace('duration = "2m"', 'duration = "2m"\nadl_interval = "0s"')
    assert error_of(write(tmp_path, text)).startswith(f"bad.toml:{line_of(text, '0s')}: scenario.adl_interval")


def test_fee_tiers_by_name_for_traders_and_accounts(tmp_path):
    """docs/scenarios.md `[fees]`: named tiers taken with `fee_tier`; the rest keep the default rates."""
    text = GOOD.replace('kind = "noise"\n', 'kind = "noise"\nfee_tier = "vip3"\n')
    text += ('\n[fees]\nmaker = "0.0002"\ntaker = "0.0005"\n[fees.tiers.vip3]\nmaker = "0.00012"\n'
             'taker = "0.00032"\n\n[[accounts]]\nid = 5\nfee_tier = "vip3"\n')
    scenario, path = load_scenario(write(tmp_path, text, "good.toml"))
    built = build(scenario, path.parent)
    rates = {c.account: (c.maker_fee_ppm, c.taker_fee_ppm) for c in built.setup if isinstance(c, SetFeeTier)}
    noise = [t.trader.account for t in built.traders if type(t.trader).__name__ == "NoiseTaker"]
    maker_mm = [t.trader.account for t in built.traders if type(t.trader).__name__ == "MarketMaker"]
    assert len(noise) == 2 and len(maker_mm) == 1
    # 0.012% = 120 ppm, 0.032% = 320 ppm; the default 0.02% / 0.05% = 200 / 500 ppm
    assert all(rates[a] == (120, 320) for a in noise) and rates[5] == (120, 320)
    assert rates[maker_mm[0]] == (200, 500)


def test_an_unknown_fee_tier_names_its_field_and_line(tmp_path):
    text = GOOD.replace('kind = "noise"\n', 'kind = "noise"\nfee_tier = "vip9"\n')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'vip9')}: traders[1].fee_tier: no tier 'vip9'"), err
    text = GOOD + '\n[fees.tiers.vip1]\nmaker = "0.5"\ntaker = "0.0004"\n'
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, '0.5')}: fees.tiers.vip1.maker: "), err


# (mistake, edit of GOOD, marker of the line the error must point at, field named)
CASES = {
    "wrong type": (('count = 2', 'count = "2"'), 'count = "2"', "traders[1].count"),
    "bad duration": (('duration = "2m"', 'duration = "two minutes"'), "two minutes", "scenario.duration"),
    "unknown trader kind": (('kind = "noise"', 'kind = "whale"'), "whale", "traders[1].kind"),
    "symbol without a market": (('rate = "0.1"', 'rate = "0.1"\nsymbol = "ETHUSDT"'), "ETHUSDT",
                                "traders[1].symbol"),
    "missing csv file": (('kind = "random_walk"\nstart = "80000"', 'kind = "csv"\nfile = "nope.csv"'), "nope.csv",
                         "markets[0].index.file"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_names_file_line_and_field(tmp_path, case):
    (old, new), marker, field = CASES[case]
    assert old in GOOD
    text = GOOD.replace(old, new)
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, marker)}: {field}: "), err


def test_a_wrong_type_message_is_msgspecs(tmp_path):
    """docs/scenarios.md: `crash.toml:47: traders[2].count: Expected `int`, got `str``."""
    text = GOOD.replace("count = 2", 'count = "2"')
    err = error_of(write(tmp_path, text))
    assert err.endswith("traders[1].count: Expected `int`, got `str`"), err


def test_an_unknown_field_is_refused_and_named(tmp_path):
    text = GOOD.replace('rate = "0.1"', 'rate = "0.1"\ncolour = "red"')
    err = error_of(write(tmp_path, text))
    m = re.match(r"bad\.toml:(\d+): traders\[1\]", err)
    assert m, err
    assert "colour" in err
    # the line is in the second [[traders]] table, from its header to the unknown key
    assert line_of(text, 'kind = "noise"') - 1 <= int(m.group(1)) <= line_of(text, "colour")


def test_an_unknown_field_points_at_its_own_line(tmp_path):
    text = GOOD.replace('rate = "0.1"', 'rate = "0.1"\ncolour = "red"')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'colour')}: traders[1].colour: "), err


def test_an_unknown_field_of_the_scenario_table_points_at_its_line(tmp_path):
    text = GOOD.replace("seed = 1", "seed = 1\nspeed = 3")
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'speed')}: scenario.speed: "), err


def test_every_zero_names_every_at_its_line(tmp_path):
    text = GOOD.replace("count = 2\n", "").replace('rate = "0.1"', 'rate = "0.1"\nevery = 0')
    text += '\n[[traders]]\nkind = "trend"\ncount = 3\n'
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'every = 0')}: traders[1].every: "), err


def test_a_commented_table_header_does_not_move_the_line(tmp_path):
    text = GOOD.replace('[[traders]]\nkind = "noise"', '[[traders]]  # the noise takers\nkind = "noise"')
    text = text.replace("count = 2", 'count = "2"')
    line = line_of(text, 'count = "2"')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line}: traders[1].count: "), err


def test_an_inline_table_field_points_at_its_line(tmp_path):
    text = GOOD.replace(
        '[[traders]]\nkind = "market_maker"',
        '[[accounts]]\nid = 1\nposition = { symbol = "ETHUSDT", qty = "0.1" }\n\n'
        '[[traders]]\nkind = "market_maker"\nsymbol = "BTCUSDT"')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'position =')}: accounts[0].position.symbol: "), err


def test_a_quoted_key_points_at_its_line(tmp_path):
    text = GOOD.replace("count = 2\n", "").replace('rate = "0.1"', 'rate = "0.1"\n"every" = 0')
    line = line_of(text, '"every" = 0')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line}: traders[1].every: "), err


def test_an_element_of_a_multi_line_array_points_at_its_line(tmp_path):
    text = GOOD.replace('kind = "random_walk"\nstart = "80000"',
                        'kind = "points"\npoints = [\n  ["0s", "80000"],  # the start ]\n  ["1m",\n'
                        '   "79000"],\n  ["2m", 78000],\n]')
    err = error_of(write(tmp_path, text))
    assert err == f"bad.toml:{line_of(text, '78000')}: markets[0].index.points[2][1]: Expected `str`, got `int`", err


def test_an_unknown_field_of_an_inline_table_in_an_array_points_at_its_line(tmp_path):
    text = GOOD.replace('symbol = "BTCUSDT"\n', 'symbol = "BTCUSDT"\nsources = [\n  { venue = "binance" },\n'
                        '  { venue = "okx", wieght = 2 },\n]\n')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'wieght')}: markets[0].sources[1].wieght: "), err
    assert "unknown field `wieght`" in err


def test_lookalike_lines_in_a_multi_line_string_do_not_move_the_line(tmp_path):
    text = GOOD.replace('name = "t"', 'name = "t"\ndescription = """\n[[traders]]\ncount = 7  # not a key\n"""')
    text = text.replace("count = 2", 'count = "2"')
    line = line_of(text, 'count = "2"')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line}: traders[1].count: "), err


def test_a_nested_array_of_tables_counts_per_parent_element(tmp_path):
    """`[[markets.index.shocks]]` after the second `[[markets]]` is markets[1]'s first shock, not shocks[1]."""
    text = GOOD.replace('start = "80000"\n', 'start = "80000"\n[[markets.index.shocks]]\nat = "1m"\n\n'
                        '[[markets]]\nsymbol = "ETHUSDT"\nindex.kind = "random_walk"  # a dotted key\n'
                        'index.start = "3000"\n[[markets.index.shocks]]\nat = "soon"\n')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'soon')}: markets[1].index.shocks[0].at: "), err


def test_a_missing_required_field_names_it_at_its_table(tmp_path):
    text = GOOD.replace("[[traders]]\nkind = \"noise\"", '[[accounts]]  # no id\nbalance = "5"\n\n'
                        '[[traders]]\nkind = "noise"')
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, '[[accounts]]')}: accounts[0].id: "), err
    assert "missing required field `id`" in err


def _paths(value: object, path: tuple = ()):
    """Every key path of a tomllib document: tables' keys and arrays' indexes."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield (*path, k)
        yield from _paths(v, (*path, k))


@pytest.mark.parametrize("name", [*BUILTIN, "docs example"])
def test_the_locator_knows_every_key_of_the_builtins_and_the_docs_example(name):
    """key_lines finds exactly the keys tomllib reads, each at a line that holds that key."""
    import tomllib

    text = docs_example() if name == "docs example" else (ROOT / "exchange" / "scenarios" / f"{name}.toml").read_text()
    lines = key_lines(text)
    assert set(lines) == set(_paths(tomllib.loads(text)))
    source = text.splitlines()
    for path, n in lines.items():
        if isinstance(path[-1], str):
            assert path[-1] in source[n - 1], (path, n, source[n - 1])


def test_a_toml_syntax_error_names_the_file(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace('name = "t"', "name = ")))
    assert err.startswith("bad.toml: "), err


def test_an_unknown_builtin_or_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="not a built-in scenario"):
        load_scenario(tmp_path / "nowhere.toml")


def docs_example() -> str:
    md = (ROOT / "docs" / "scenarios.md").read_text()
    section = md.split("## A complete example", 1)[1]
    m = re.search(r"```toml\n(.*?)```", section, re.S)
    assert m, "no ```toml block under 'A complete example' in docs/scenarios.md"
    return m.group(1)


def test_the_docs_complete_example_loads_and_runs(tmp_path):
    scenario, path = load_scenario(write(tmp_path, docs_example(), "my-crash.toml"))
    # what the example says
    assert scenario.scenario.name == "my-crash" and scenario.scenario.seed == 42
    assert [s.venue for s in scenario.markets[0].sources] == ["binance", "okx"]
    assert scenario.markets[0].index.shocks[0].move == "-15%"
    assert [a.id for a in scenario.accounts] == [1]
    built = build(scenario, path.parent, until="3m")
    summary = RunSummary.for_engine(built.engine)
    assert drive(built, summary.on_step) > 0
    c = built.engine.clearing
    assert c.held("USDT") == c.treasury.deposits["USDT"]
    # the explicit account's opening position: 0.25 BTC long, isolated 10x, auto margin addition on
    [pos] = [p for p in c.accounts[1].positions.values() if p.qty]
    assert pos.qty == 250 and pos.symbol == BTC
    # the populations: 1 market maker + 30 + 10 hold-and-hope
    assert len(built.traders) == 41
    assert Decimal(summary.finish(built.engine, 1.0)["insurance_fund_start"]) == Decimal("150000")


def test_each_market_keeps_its_own_funding_interval(tmp_path):
    """docs/scenarios.md `funding_interval_hours` is per market: BTCUSDT 8 h (the default), ETHUSDT 4 h."""
    text = GOOD + ('\n[[markets]]\nsymbol = "ETHUSDT"\nfunding_interval_hours = 4\n'
                   '[markets.index]\nkind = "random_walk"\nstart = "3000"\n')
    scenario, path = load_scenario(write(tmp_path, text, "good.toml"))
    engine = build(scenario, path.parent).engine
    assert engine.markets["BTCUSDT"].data.schedule.interval_ms == 8 * 3_600_000
    assert engine.markets["ETHUSDT"].data.schedule.interval_ms == 4 * 3_600_000


def test_a_bad_funding_interval_or_a_market_twice_names_its_field(tmp_path):
    text = GOOD.replace('symbol = "BTCUSDT"\n', 'symbol = "BTCUSDT"\nfunding_interval_hours = 0\n', 1)
    err = error_of(write(tmp_path, text))
    assert err.startswith(f"bad.toml:{line_of(text, 'funding_interval_hours')}: markets[0].funding_interval_hours"), err
    text = GOOD + '\n[[markets]]\nsymbol = "BTCUSDT"\n[markets.index]\nkind = "random_walk"\nstart = "3000"\n'
    assert "markets[0].symbol: BTCUSDT is listed twice" in error_of(write(tmp_path, text))
