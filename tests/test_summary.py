"""The run summary (exchange.summary) on a small real session through `build_exchange`.

The session (`session()`, shared with tests/test_report.py) is set up so that
every figure can be worked out by hand; the derivations are next to the
commands. BTCUSDT: tick 0.1, lot 0.001 (k = 10_000 atoms per tick·lot),
bracket 1 below 300,000 USDT (MMR 0.4%, cum 0), bracket 2 to 800,000 (MMR
0.5%, cum 300); clearance fee 1%; ETHUSDT: tick 0.01, lot 0.001 (k = 1_000).
The insurance fund opens with 20,000 USDT. Virtual time starts at 0.

Accounts: 1 isolated 8x long 0.25 BTC @ 80,000 (margin 2,500, bankruptcy
70,000); 5 isolated 10x long 5 BTC @ 80,000 (margin 40,000, bankruptcy
72,000); 2 the short side of both (cross); 3 bids that the liquidations hit;
4 deposits and withdraws; 6 and 7 an ETH long and short for funding.

1. t = 10 min, mark 72,300: account 5's ratio is MM / MB = (5 × 72,300 × 0.5%
   − 300) / (40,000 − 5 × 7,700) = 1,507.5 / 1,500 ≥ 1: liquidation. Its
   notional 361,500 is in bracket 2, so first a partial step down to the
   bracket floor: keep ⌊300,000 / 72.3⌋ = 4.149 BTC, sell 0.851 at the
   bankruptcy price 72,000 into account 3's bid of 1 BTC @ 72,700 (a trade).
   After it: margin 40,000 − 0.851 × 7,300 − fee 618.677 = 33,169.023, MB =
   33,169.023 − 4.149 × 7,700 = 1,221.72 > MM = 4.149 × 72,300 × 0.4% =
   1,199.89: safe again. PARTIAL liquidation #1. Account 1 (8x) at 72,300:
   MM 72.3, MB 2,500 − 0.25 × 7,700 = 575: safe.
2. t = 20 min, mark 70,300: account 1 has MM 70.3 / MB 75 = 93.7% ≥ 80%:
   MARGIN CALL #1 (< 100%: no liquidation). Account 5: MB = 33,169.023 −
   4.149 × 9,700 < 0: FULL liquidation #1 at its bankruptcy price 72,006.8
   (80,000 − 33,169.023 / 4.149, on the grid): 0.149 fill on the rest of the
   72,700 bid (a trade; the 70,100 bid is below it), fee 108.323; the other
   4 BTC the fund cannot take over (4 × 70,300 = 281,200 notional > its
   ~20,727 balance), so ADL closes them against the only short, account 2:
   ADL #1 (no trade: ADL is booked, not matched). Margin left 0.2: the fee.
3. t = 30 min, mark 69,900: account 1's MB = 2,500 − 0.25 × 10,100 < 0: FULL
   liquidation #2: 0.1 fills on account 3's thin bid @ 70,100 (a trade; pnl
   −990, fee 70.1), the remaining 0.15 the fund takes over (loss at mark
   0.15 × 100.7 ≤ its balance, notional 10,485 ≤ its balance) at the new
   bankruptcy price 70,400.7 (margin 1,439.9 = 0.15 × (80,000 − 70,400.67)),
   fee capped at the 0.005 left. No bid within the 5% band: the fund keeps
   its 0.15 long (it never offloads in this session).
4. From 45 min the index is live (BTC 70,500, 71,200, 70,800, 71,500 at 45 min,
   2 h, 4 h, 6 h; ETH 3,000.01 at 45 min); at each index step one trade at
   the index (account 2 buys 0.1 BTC of account 3), and one ETH trade of
   0.011: so the last price equals the index, the funding rate of the
   interval is still 0 and the mark, median(index, index + basis, last), is
   the index: no further margin call or liquidation.
5. AdvanceClock to 8 h 10 min: the funding time 8 h settles both symbols.
   Nothing rests in the books, so every premium sample is 0 and the rate is
   the interest rate, 0.01%: longs pay, at mark 71,500 (BTC) and 3,000.01.
   BTC: fund long 0.15 pays 1.0725, account 3 long 1.1 − 0.4 = 0.7 pays 5.005,
   account 2 short 1.25 − 0.4 = 0.85 receives 6.0775 (exact: no remainder).
   ETH: 0.011 × 3,000.01 × 0.01% = 0.0033000011 USDT: the long pays it rounded
   up (0.00330002), the short receives it rounded down (0.00330001): a
   remainder of 1 atom.

Trades: 2 openings + 1 (partial) + 1 (full, account 5) + 1 (full, account 1)
+ 4 BTC index-step trades + 1 ETH opening = 10.
Insurance fund: 20,000 + 618.677 + (108.323 + 0.2) + (70.1 + 0.005) − 1.0725
= 20,796.2325 at the end; it only gained before paying 1.0725: min = start.
"""

from __future__ import annotations

import time
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

from exchange.assembly import build_exchange
from exchange.clearing import FUND_ACCOUNT
from exchange.commands import (
    AdvanceClock,
    Command,
    Deposit,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    SetMarkPrice,
    UpdateIndex,
    Withdraw,
)
from exchange.engine import Engine
from exchange.enums import BalanceReason, MarginMode, PositionReason, PositionSide, Side, TimeInForce, WalletKind
from exchange.events import (
    BalanceUpdated,
    Event,
    FundingPayment,
    FundingSettled,
    InsuranceFundUpdated,
    OrderRejected,
    PositionUpdated,
)
from exchange.report import ChartSeries
from exchange.summary import FundBalance, RunSummary, render_table

U = 10**8  # atoms per USDT
MIN = 60_000
HOUR = 3_600_000
BTC, ETH = "BTCUSDT", "ETHUSDT"
FUND_OPENING = 20_000
BUY, SELL, IOC = Side.BUY, Side.SELL, TimeInForce.IOC
DEPOSITS = {1: 3_000, 2: 100_000, 3: 50_000, 4: 5_000, 5: 41_000, 6: 1_000, 7: 1_000}
WITHDRAWN = 1_500  # by account 4


class Session(NamedTuple):
    engine: Engine
    events: list[Event]
    summary: RunSummary  # fed event by event with `add`
    chart: ChartSeries  # fed step by step with `add_events`
    wall_seconds: float
    fund_start: int


@lru_cache(maxsize=1)
def session() -> Session:
    """The session of the module docstring, run once per test process."""
    engine = build_exchange(insurance_fund={"USDT": FUND_OPENING * U})
    summary = RunSummary.for_engine(engine)
    chart = ChartSeries.for_engine(engine, scenario="test session: liquidations, ADL and funding")
    fund_start = engine.clearing.treasury.insurance["USDT"]  # type: ignore[union-attr]
    events: list[Event] = []
    btc, eth = engine.market(BTC).instrument, engine.market(ETH).instrument

    def apply(cmd: Command) -> None:
        out = engine.apply(cmd)
        assert not [e for e in out if isinstance(e, OrderRejected)], (cmd, out)
        for e in out:
            summary.add(e)
        chart.add_events(out)
        events.extend(out)

    def order(account: int, side: Side, qty: str, price: str, tif: TimeInForce = TimeInForce.GTC,
              symbol: str = BTC) -> None:
        ins = btc if symbol == BTC else eth
        apply(PlaceOrder(account=account, symbol=symbol, side=side, qty=ins.qty_lots(qty),
                         price=ins.price_ticks(price), tif=tif))

    def mark(price: str) -> None:
        apply(SetMarkPrice(symbol=BTC, price=btc.price_ticks(price)))

    def index(symbol: str, price: str) -> None:
        ins = btc if symbol == BTC else eth
        apply(UpdateIndex(symbol=symbol, sources=[("spot", 1, ins.price_ticks(price))]))

    t0 = time.perf_counter()
    for account, amount in DEPOSITS.items():
        apply(Deposit(account=account, asset="USDT", amount=amount * U))
    apply(Withdraw(account=4, asset="USDT", amount=WITHDRAWN * U))
    for account, leverage in ((1, 8), (5, 10)):
        apply(SetMarginMode(account=account, symbol=BTC, margin_mode=MarginMode.ISOLATED))
        apply(SetLeverage(account=account, symbol=BTC, leverage=leverage))
    mark("80000")
    order(2, SELL, "0.25", "80000")
    order(1, BUY, "0.25", "80000", IOC)  # trade 1
    order(2, SELL, "5", "80000")
    order(5, BUY, "5", "80000", IOC)  # trade 2
    order(3, BUY, "1", "72700")  # absorbs account 5's partial step and part of its full liquidation
    order(3, BUY, "0.1", "70100")  # the thin bid under account 1
    apply(AdvanceClock(ts=10 * MIN))
    mark("72300")  # account 5: partial liquidation (trade 3)
    apply(AdvanceClock(ts=20 * MIN))
    mark("70300")  # account 1: margin call; account 5: full liquidation (trade 4) + ADL
    apply(AdvanceClock(ts=30 * MIN))
    mark("69900")  # account 1: full liquidation (trade 5), the rest to the fund
    for ts, price in ((45 * MIN, "70500"), (2 * HOUR, "71200"), (4 * HOUR, "70800"), (6 * HOUR, "71500")):
        apply(AdvanceClock(ts=ts))
        index(BTC, price)
        if ts == 45 * MIN:
            index(ETH, "3000.01")
            order(7, SELL, "0.011", "3000.01", symbol=ETH)
            order(6, BUY, "0.011", "3000.01", IOC, symbol=ETH)  # the ETH trade
        order(3, SELL, "0.1", price)
        order(2, BUY, "0.1", price, IOC)  # trades 6..9
    apply(AdvanceClock(ts=8 * HOUR + 10 * MIN))  # funding at 8 h
    wall = time.perf_counter() - t0
    return Session(engine, events, summary, chart, wall, fund_start)


def test_counts_are_the_ones_set_up() -> None:
    s = session()
    out = s.summary.finish(s.engine, s.wall_seconds)
    assert out["events"] == len(s.events)
    assert out["trades"] == 10
    assert out["liquidations_partial"] == 1
    assert out["liquidations_full"] == 2
    assert out["margin_calls"] == 1
    assert out["adl_events"] == 1
    assert out["orders_rejected"] == 0
    assert out["virtual_seconds"] == (8 * HOUR + 10 * MIN) / 1000
    for key in ("events", "trades", "liquidations_full", "liquidations_partial", "margin_calls", "adl_events"):
        assert type(out[key]) is int


def test_funding_balances_to_the_atom() -> None:
    out = session().summary.finish(session().engine, 1.0)
    paid, received, remainder = (Decimal(out[k]) for k in ("funding_paid", "funding_received", "funding_remainder"))
    assert paid == received + remainder
    # BTC 1.0725 + 5.005 = 6.0775 paid and received; ETH 0.00330002 paid, 0.00330001 received
    assert out["funding_paid"] == "6.08080002"
    assert out["funding_received"] == "6.08080001"
    assert out["funding_remainder"] == "0.00000001"
    assert out["funding_shortfall"] == "0.00000000"


def test_balances_equal_deposits_less_withdrawals_to_the_atom() -> None:
    s = session()
    out = s.summary.finish(s.engine, 1.0)
    opening_and_deposits = FUND_OPENING + sum(DEPOSITS.values())
    assert out["deposits_total"] == f"{opening_and_deposits}.00000000"
    assert out["withdrawals_total"] == f"{WITHDRAWN}.00000000"
    assert Decimal(out["balances_total"]) == Decimal(out["deposits_total"]) - Decimal(out["withdrawals_total"])
    assert out["conserved"] is True
    # the same total as the clearing's own invariant, and open positions remain (uPnL is not trivially 0)
    c = s.engine.clearing
    assert c is not None
    assert s.summary.balances_total(s.engine) == c.held("USDT") == c.treasury.deposits["USDT"]
    assert sum(1 for p in c.all_positions() if p.qty) == 5  # accounts 2, 3, 6, 7 and the fund
    # the deposits the events showed agree (the fund's opening has no event)
    assert s.summary.deposits_seen == sum(DEPOSITS.values()) * U


def test_insurance_fund_figures() -> None:
    s = session()
    out = s.summary.finish(s.engine, 1.0)
    assert out["insurance_fund_start"] == "20000.00000000"
    assert Decimal(out["insurance_fund_min"]) <= Decimal(out["insurance_fund_start"])
    assert out["insurance_fund_min"] == out["insurance_fund_start"]
    assert out["insurance_fund_end"] == "20796.23250000"
    # the balance followed from events alone ends where the engine's does
    assert s.summary.fund.balance == s.engine.clearing.treasury.insurance["USDT"]  # type: ignore[union-attr]


def test_wall_time_rate_and_chart_path() -> None:
    s = session()
    out = s.summary.finish(s.engine, 2.0, "out/chart.png")
    assert out["wall_seconds"] == 2.0
    assert out["events_per_sec"] == round(len(s.events) / 2.0, 1)
    assert out["chart"] == "out/chart.png"
    assert s.summary.finish(s.engine, 0.0)["events_per_sec"] == 0.0
    assert s.summary.finish(s.engine, 0.0)["chart"] is None


def test_add_events_equals_add_one_by_one() -> None:
    s = session()
    batch = RunSummary(s.fund_start)
    batch.add_events(s.events)
    a, b = batch.finish(s.engine, 1.0), s.summary.finish(s.engine, 1.0)
    assert a == b


def test_render_table_aligns_the_figures() -> None:
    s = session()
    text = render_table(s.summary.finish(s.engine, 1.25, "out/chart.png"))
    lines = text.splitlines()
    assert len(lines) == len({ln.split("  ")[0] for ln in lines})  # one row per figure
    by_label = {ln[:40].rstrip(): ln for ln in lines}
    assert any(label.startswith("trades") and line.rstrip().endswith(" 10") for label, line in by_label.items())
    money = [ln for ln in lines if ln.endswith(" USDT")]
    assert len(money) == 11  # the money figures of SUMMARY_LABELS: fund ×3, deposits, withdrawals, balances, funding ×5
    assert len({ln.rindex(".") for ln in money}) == 1  # decimal points in one column
    assert "20,796.23250000 USDT" in text


def test_fund_balance_applies_a_funding_shortfall_after_the_funds_own_payment() -> None:
    """Synthetic events: a shortfall is paid by the fund after the payments of its settlement."""
    fb = FundBalance(1_000)
    fb.funding_settled(FundingSettled(1, 1, 0, BTC, 0, 1, 1, 3, 50, 40, 0, 10))  # payers were 10 short
    assert (fb.balance, fb.low) == (990, 990)
    fb.funding_payment(FundingPayment(2, 2, 0, BTC, FUND_ACCOUNT, PositionSide.BOTH, 5, 7, 1_007, 0))
    assert fb.balance == 997  # the wallet after its payment (1,007), less the shortfall paid after
    fb.fund_updated(InsuranceFundUpdated(3, 0, 0, "BTC", -500, 497, "SHORTFALL"))  # another asset: ignored
    assert fb.balance == 997
    fb.fund_updated(InsuranceFundUpdated(4, 0, 0, "USDT", -500, 497, "SHORTFALL"))
    fb.balance_updated(BalanceUpdated(5, 0, 0, FUND_ACCOUNT, "USDT", WalletKind.SPOT, BalanceReason.DEPOSIT, 5, 5))
    assert (fb.balance, fb.low) == (497, 497)  # a spot wallet is not the fund
    fb.position(PositionUpdated(6, 6, 0, BTC, FUND_ACCOUNT, PositionSide.BOTH, PositionReason.LIQUIDATION, 1, 10,
                                MarginMode.CROSS, 20, 0, 2_000, 0, 0, 0, 0, 0))
    assert (fb.balance, fb.low) == (2_000, 497)


def test_summary_is_fast_enough_for_millions_of_events() -> None:
    """Throughput on the session's events replayed (no timing assertion beyond a generous floor)."""
    s = session()
    events = s.events * 40
    summary = RunSummary(s.fund_start)
    t0 = time.perf_counter()
    add = summary.add
    for e in events:
        add(e)
    rate = len(events) / (time.perf_counter() - t0)
    assert summary.events == len(events)
    assert rate > 100_000, f"{rate:.0f} events/s"
