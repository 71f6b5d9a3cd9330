"""Liquidation scenarios through the whole exchange (`build_exchange`), from the seeds and the spec's examples.

Rules: mechanics.md Part 1 ("Liquidation process" steps 1–6, "Insurance fund", "ADL", "Auto margin
addition", "Nobody owes money") and Part 2 §3–§8; examples: examples.json. Every expected number
below is either taken from those files or worked out by hand in the comments, with the defaults of
the engine: BTCUSDT/ETHUSDT bracket 1 (notional < 300,000) MMR 0.4%, cum 0; taker fee 0.05%,
maker fee 0.02%; clearance fee 1% of the liquidated notional at the fill price; LP = Binance's
formula with the MM charged at the LP's own notional (§3.1), isolated one-way long:

    LP = (q·EP − WB − cum) / (q·(1 − MMR))        BP = EP − WB/q

LPs and BPs of a long are kept on the tick grid rounded up (toward the mark), a short's down; the
decision to liquidate is always the exact comparison MM ≥ margin balance (Part 1 "Units"), so for a
long the first mark that liquidates is the first tick *below* the exact LP.

Every command goes through `tests.scenario_kit.Scenario.apply`, which checks conservation to the
atom, no negative balance (wallets, isolated margins, the fund) and balanced open interest after it.

Engine bugs these tests found are at the end, as regression tests (all fixed).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adl.ranking import AdlRanking, quantiles, rank, score
from exchange.accounts import Position, SymbolSettings
from exchange.commands import PlaceOrder, PlaceStopOrder, Withdraw
from exchange.conditional import StopType, WorkingType
from exchange.enums import CancelReason, MarginMode, OrderStatus, OrderType, PositionSide, TimeInForce
from exchange.events import (
    AdlExecuted,
    BalanceUpdated,
    InsuranceFundUpdated,
    LiquidationRecorded,
    MarginCall,
    OrderAccepted,
    OrderCanceled,
    PositionTakenOver,
    PositionUpdated,
    StopOrderAccepted,
    StopOrderCanceled,
    Trade,
)
from exchange.instrument import btcusdt, ethusdt
from exchange.venue import ENTRY_NOTIONAL
from liquidation.monitor import Verdict
from tests.scenario_kit import BTC, BUY, ETH, SELL, USDT, Scenario, of_type, usdt

# The spec's worked examples: the copy in tests/data/spec (test_margin_examples checks it against shared/spec).
SPEC_DIR = Path(__file__).resolve().parent / "data" / "spec"


def example(example_id: str) -> dict:
    path = SPEC_DIR / "examples.json"
    if not path.exists():
        pytest.fail(f"examples.json not found in tests/data/spec ({path.name})")
    [ex] = [e for e in json.loads(path.read_text()) if e["id"] == example_id]
    return ex


MM_ACCT = 3  # a market maker that provides the bids a liquidation sells into
BIG = "1000000"  # counterparties' deposits, USDT


def iso_key(account: int, symbol: str = BTC) -> tuple[int, str, str]:
    return (account, symbol, "BOTH")


def cross_key(account: int) -> tuple[int, str, str]:
    return (account, "", USDT)


def liquidation_orders(events: list, account: int) -> list[OrderAccepted]:
    return [e for e in of_type(events, OrderAccepted) if e.order_type is OrderType.LIQUIDATION and e.account == account]


# ================================================================== (a) seed 000
def seed_000(s: Scenario) -> None:
    """2,000 USDT isolated at 10x long 0.25 BTC from 80,000; +1,000 at mark 76,000; +1,000 at mark 73,000.

    Deposit 5,010 = 2,000 initial margin (0.25 × 80,000 / 10) + 10 opening taker fee (20,000 × 0.05%)
    + 2 × 1,000 added + 1,000 never committed to the position.
    """
    s.deposit(1, "5010")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    s.mark(BTC, "76000")
    s.add_margin(1, BTC, "1000")
    s.mark(BTC, "73000")
    s.add_margin(1, BTC, "1000")
    # The market maker's bid, placed while the mark is 73,000 and left there as the mark falls.
    s.bid(MM_ACCT, BTC, "65000", "0.25")
    s.bid(MM_ACCT, BTC, "60000", "1")


def test_a_seed_000_add_margin_twice_and_still_get_liquidated() -> None:
    s = Scenario(fund="100000")
    s.deposit(1, "5010")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    pos = s.position(1, BTC)
    # q·EP = 20,000; LP = (20,000 − WB)/(0.25 × 0.996) = (20,000 − WB)/0.249; BP = 80,000 − WB/0.25.
    # mechanics.md §8 (a) gives the same ratios for 0.125 BTC with 1,000/1,500/2,000 of margin, MMR 0.4%:
    # "72,289.16 / 68,273.09 / 64,257.03".
    assert pos.isolated_margin == usdt("2000") and s.wallet(1) == usdt("3000")
    assert pos.liq_ticks == s.px(BTC, "72289.2")  # 18,000/0.249 = 72,289.157 → up to the tick
    assert pos.bankruptcy_ticks == s.px(BTC, "72000")
    s.mark(BTC, "76000")
    s.add_margin(1, BTC, "1000")
    assert pos.liq_ticks == s.px(BTC, "68273.1")  # 17,000/0.249 = 68,273.092
    assert pos.bankruptcy_ticks == s.px(BTC, "68000")
    s.mark(BTC, "73000")
    s.add_margin(1, BTC, "1000")
    assert pos.liq_ticks == s.px(BTC, "64257.1")  # 16,000/0.249 = 64,257.028
    assert pos.bankruptcy_ticks == s.px(BTC, "64000")
    assert pos.isolated_margin == usdt("4000") and s.wallet(1) == usdt("1000")
    s.bid(MM_ACCT, BTC, "65000", "0.25")
    s.bid(MM_ACCT, BTC, "60000", "1")

    # The fall goes on. The seed article puts the liquidation at 70,000. That is not what 4,000 USDT of
    # margin on 0.25 BTC gives under either formula mechanics.md §8 checks the seed with (Binance, MM at
    # the LP notional: 64,257.03 — §8's "64,257.03" for the same margin per BTC; MM on the entry notional
    # at 0.5%: 80,000 − (4,000 − 100)/0.25 = 64,400); 70,000 would need ~2,570 of margin, i.e. the
    # additions not (fully) counted. So at 70,000 (and 67,000, 65,000) nothing happens.
    for mark in ("70000", "67000", "65000"):
        assert not of_type(s.mark(BTC, mark), LiquidationRecorded, MarginCall)
    # Margin call when MM ≥ 80% of the margin balance: 0.001·P = 0.8·(4,000 + 0.25·P − 20,000)
    # → P = 12,800/0.199 = 64,321.608: the first tick at or below it calls.
    assert not of_type(s.mark(BTC, "64321.7"), MarginCall)
    [call] = of_type(s.mark(BTC, "64321.6"), MarginCall)
    assert (call.account, call.symbol) == (1, BTC)
    # 64,257.1 (the LP on the grid): MM = 0.25 × 64,257.1 × 0.4% = 64.2571 < margin balance
    # 4,000 + 0.25 × (64,257.1 − 80,000) = 64.275: still not liquidated (the decision is the exact ratio).
    assert not liquidation_orders(s.mark(BTC, "64257.1"), 1)
    assert pos.qty == s.lots(BTC, "0.25")
    # 64,257.0: MM = 64.257 ≥ margin balance 64.25: liquidated, at the first mark below 64,257.1.
    events = s.mark(BTC, "64257")
    [order] = liquidation_orders(events, 1)
    assert (order.side, order.qty, order.price) == (SELL, s.lots(BTC, "0.25"), s.px(BTC, "64000"))  # at BP
    [trade] = of_type(events, Trade)
    assert (trade.price, trade.qty, trade.maker_account) == (s.px(BTC, "65000"), s.lots(BTC, "0.25"), MM_ACCT)
    assert pos.qty == 0 and pos.isolated_margin == 0
    # All 4,000 USDT of margin are lost, and nothing more:
    #   realised 0.25 × (65,000 − 80,000) = −3,750
    #   clearance fee 1% × 16,250 = 162.5 (≤ the 250 left)           → fund
    #   leftover 4,000 − 3,750 − 162.5 = 87.5 (the position was the last on that margin) → fund
    [rec] = of_type(events, LiquidationRecorded)
    assert rec.loss == -usdt("3750") and rec.fee == usdt("162.5")
    flows = {ev.cause: ev.delta for ev in of_type(events, InsuranceFundUpdated)}
    assert flows == {"CLEARANCE_FEE": usdt("162.5"), "LEFTOVER_MARGIN": usdt("87.5")}
    assert -rec.loss + rec.fee + flows["LEFTOVER_MARGIN"] == usdt("4000")
    assert s.fund() == usdt("100000") + usdt("250")
    # The wallet keeps what was never committed to the position.
    assert s.wallet(1) == usdt("1000")
    # Further falls do nothing more to the account.
    assert not liquidation_orders(s.mark(BTC, "60000"), 1)
    assert s.wallet(1) == usdt("1000") and len(s.records(1)) == 1


# ================================================================== (b) partial close moves the LP
def test_b_partial_close_moves_a_cross_lp_away_but_not_an_isolated_one() -> None:
    s = Scenario()
    s.deposit(1, "2010")  # cross
    s.deposit(4, "2010")  # isolated
    s.deposit(2, BIG)
    s.cross(1, BTC, leverage=10)
    s.isolated(4, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    s.open(4, BTC, BUY, "0.25", "80000", counterparty=2)
    cross, iso = s.position(1, BTC), s.position(4, BTC)
    # Both: 0.25 BTC at 80,000 backed by 2,000 (cross: the wallet after the 10 USDT fee; isolated: the
    # initial margin), so the same LP: (20,000 − 2,000)/0.249 = 72,289.157 → 72,289.2, BP 72,000.
    assert s.wallet(1) == usdt("2000") and iso.isolated_margin == usdt("2000") and s.wallet(4) == 0
    for pos in (cross, iso):
        assert (pos.liq_ticks, pos.bankruptcy_ticks) == (s.px(BTC, "72289.2"), s.px(BTC, "72000"))

    s.mark(BTC, "78000")
    s.close(1, BTC, SELL, "0.125", "78000", counterparty=2)
    s.close(4, BTC, SELL, "0.125", "78000", counterparty=2)
    # Both closed half at 78,000: realised 0.125 × (78,000 − 80,000) = −250; taker fee
    # 0.125 × 78,000 × 0.05% = 4.875.
    #
    # CROSS: the whole wallet backs what is left: WB = 2,000 − 250 − 4.875 = 1,745.125 for 0.125 BTC:
    #   LP = (10,000 − 1,745.125)/(0.125 × 0.996) = 8,254.875/0.1245 = 66,304.216 → 66,304.3
    #   BP = 80,000 − 1,745.125/0.125 = 66,039.0
    # The LP moved away from the mark by ~6,000: a partial close protects the rest of a cross position.
    assert s.wallet(1) == usdt("1745.125")
    assert (cross.liq_ticks, cross.bankruptcy_ticks) == (s.px(BTC, "66304.3"), s.px(BTC, "66039"))
    #
    # ISOLATED: the margin shrinks in proportion to the quantity closed (2,000 × 0.125/0.25 = 1,000 stays),
    # the rest comes back to the wallet with the PnL: 1,000 − 250 − 4.875 = 745.125. Margin per BTC is
    # unchanged, so the LP is where it was: (10,000 − 1,000)/0.1245 = 72,289.157 → 72,289.2, BP 72,000.
    assert iso.isolated_margin == usdt("1000") and s.wallet(4) == usdt("745.125")
    assert (iso.liq_ticks, iso.bankruptcy_ticks) == (s.px(BTC, "72289.2"), s.px(BTC, "72000"))
    # The published positions say the same.
    last = {ev.account: ev for ev in of_type(s.log, PositionUpdated) if ev.account in (1, 4)}
    assert last[1].liquidation_price == s.px(BTC, "66304.3") and last[4].liquidation_price == s.px(BTC, "72289.2")


# ================================================================== (c) isolated leaves the rest alone
def test_c_isolated_liquidation_leaves_the_cross_wallet_and_other_positions_untouched() -> None:
    s = Scenario()
    s.deposit(1, "5000")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.isolated(1, BTC, leverage=10)
    s.cross(1, ETH, leverage=5)
    s.mark(BTC, "80000")
    s.mark(ETH, "3000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)  # isolated, margin 2,000, fee 10
    s.open(1, ETH, BUY, "1", "3000", counterparty=2)  # cross, fee 1.5
    s.bid(1, ETH, "2900", "0.1")  # an ETH order of the same account (holds cross margin)
    s.bid(1, BTC, "70000", "0.01")  # a BTC order of the same account
    s.bid(MM_ACCT, BTC, "72100", "0.25")
    # a stop-loss in each symbol: the BTC one goes with the liquidation (binance-api.md §3.4 step 2; it holds no
    # margin, but left behind it could reopen a position), the ETH one stays
    stops = {}
    for sym, trigger, qty in ((BTC, "60000", "0.002"), (ETH, "2000", "0.1")):
        ins = s.engine.market(sym).instrument
        [acc] = of_type(s.apply(PlaceStopOrder(account=1, symbol=sym, side=SELL, stop_type=StopType.STOP_MARKET,
                                               trigger_price=ins.price_ticks(trigger), qty=ins.qty_lots(qty),
                                               working_type=WorkingType.MARK_PRICE)), StopOrderAccepted)
        stops[sym] = acc.stop_id
    eth = s.position(1, ETH)
    wallet = s.wallet(1)
    assert wallet == usdt("5000") - usdt("2000") - usdt("10") - usdt("1.5")  # 2,988.5
    eth_before = (eth.qty, eth.cost, eth.liq_ticks, eth.bankruptcy_ticks, eth.realized_pnl)

    # First tick below the BTC LP 72,289.157: MM = 0.25 × 72,289.1 × 0.4% = 72.2891 ≥ MB = 2,000 +
    # 0.25 × (72,289.1 − 80,000) = 72.275. Sold at 72,100: realised −1,975, the 25 left pays part of the
    # 180.25 fee (capped by what is left), nothing left over.
    events = s.mark(BTC, "72289.1")
    [rec] = of_type(events, LiquidationRecorded)
    assert (rec.symbol, rec.account, rec.loss, rec.fee) == (BTC, 1, -usdt("1975"), usdt("25"))
    assert s.position(1, BTC).qty == 0
    # Step 1 cancels only the orders of that symbol (isolated); the ETH order stays.
    [cancel] = of_type(events, OrderCanceled)
    assert (cancel.symbol, cancel.account, cancel.reason) == (BTC, 1, CancelReason.LIQUIDATION)
    assert cancel.status is OrderStatus.EXPIRED  # binance-api.md §3.4 step 2: X=EXPIRED, er="5"
    assert s.engine.market(ETH).open_by_account.get(1)
    [stop_gone] = of_type(events, StopOrderCanceled)
    assert (stop_gone.stop_id, stop_gone.reason) == (stops[BTC], CancelReason.LIQUIDATION)
    assert set(s.engine.stop_orders) == {stops[ETH]}
    # The cross wallet and the ETH position are exactly as they were; no event touched them.
    assert s.wallet(1) == wallet
    assert (eth.qty, eth.cost, eth.liq_ticks, eth.bankruptcy_ticks, eth.realized_pnl) == eth_before
    # (account 2, the counterparty, is cross short in both symbols: the BTC mark moves its ETH liquidation
    # price, which is published, as it must be)
    assert not [e for e in of_type(events, PositionUpdated, BalanceUpdated) if e.account == 1 and
                (e.symbol == ETH or isinstance(e, BalanceUpdated))]
    assert [e.account for e in of_type(events, PositionUpdated) if e.symbol == ETH] == [2]
    assert s.risk.monitor.verdict(cross_key(1)) is Verdict.SAFE
    assert s.records(1) == [rec]


# ================================================================== (d) cross: one falls, both go
def test_d_cross_account_losing_btc_drags_eth_down_in_descending_mm_order() -> None:
    s = Scenario(fund="100000")
    s.deposit(1, "2000")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.cross(1, BTC, leverage=20)
    s.cross(1, ETH, leverage=20)
    s.mark(BTC, "80000")
    s.mark(ETH, "3000")
    s.open(1, BTC, BUY, "0.1", "80000", counterparty=2)  # notional 8,000, fee 4
    s.open(1, ETH, BUY, "10", "3000", counterparty=2)  # notional 30,000, fee 15
    assert s.wallet(1) == usdt("1981")
    s.bid(MM_ACCT, ETH, "3000", "10")
    s.bid(MM_ACCT, BTC, "60000", "1")
    # Cross: liquidated when MM ≥ MB, with ETH at 3,000 and BTC at P:
    #   MM = 0.1·P·0.4% + 30,000·0.4% = 0.0004·P + 120;  MB = 1,981 + 0.1·(P − 80,000)
    #   → P ≤ 6,139/0.0996 = 61,636.5. BTC falls to 61,000; ETH does not move.
    # Priority (Part 1, §4): descending maintenance margin: ETH 120 > BTC 0.1 × 61,000 × 0.4% = 24.4,
    # so ETH goes first although it is BTC that fell.
    # ETH at its bankruptcy price (cross: TMM1 = 24.4 of BTC, UPNL1 = −1,900 of BTC):
    #   BP = (1,981 − 24.4 − 1,900 − 10 × 3,000)/(−10) = 2,994.34; it sells into the bid at 3,000:
    #   realised 0, clearance fee 1% × 30,000 = 300 → wallet 1,681.
    # Still liquidatable (MB = 1,681 − 1,900 = −219 < MM 24.4; a 1% fee is more than the 0.4% of MM
    # that closing frees, so closing in bracket 1 never restores compliance): BTC goes too, at
    # BP = 80,000 − 1,681/0.1 = 63,190, above the mark: no bid at or above it, so the fund takes it over
    # at 63,190 (its loss at the mark 0.1 × 2,190 = 219 ≤ its balance) and offloads it at once into the
    # 60,000 bid: −319 for the fund.
    events = s.mark(BTC, "61000")
    recs = of_type(events, LiquidationRecorded)
    assert [r.symbol for r in recs] == [ETH, BTC]
    assert recs[0].liquidation_id == recs[1].liquidation_id  # one liquidation of one cross unit
    assert [o.symbol for o in liquidation_orders(events, 1)] == [ETH, BTC]
    assert [o.price for o in liquidation_orders(events, 1)] == [s.px(ETH, "2994.34"), s.px(BTC, "63190")]
    eth_rec, btc_rec = recs
    assert (eth_rec.qty_book, eth_rec.loss, eth_rec.fee) == (s.lots(ETH, "10"), 0, usdt("300"))
    assert eth_rec.balance_left == usdt("1681")
    assert (btc_rec.qty_book, btc_rec.qty_insurance, btc_rec.loss, btc_rec.fee) == (0, s.lots(BTC, "0.1"),
                                                                                   -usdt("1681"), 0)
    [taken] = of_type(events, PositionTakenOver)
    assert (taken.account, taken.qty, taken.price) == (1, s.lots(BTC, "0.1"), s.px(BTC, "63190"))
    assert s.position(1, BTC).qty == 0 and s.position(1, ETH).qty == 0
    assert s.wallet(1) == 0  # a cross liquidation loses at most the wallet, here all of it
    assert s.fund() == usdt("100000") + usdt("300") - usdt("319")


# ================================================================== (e) a wick
def test_e_wick_liquidates_once_and_the_rebound_changes_nothing() -> None:
    s = Scenario()
    s.deposit(1, "2510")  # 2,000 margin + 10 fee + 500 kept
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)  # LP 72,289.2, BP 72,000 (see (b))
    s.bid(MM_ACCT, BTC, "72150", "0.25")
    s.bid(MM_ACCT, BTC, "70000", "5")
    s.mark(BTC, "75000")
    # The wick: down through the LP to 72,000 and straight back.
    events = s.mark(BTC, "72000")
    [rec] = of_type(events, LiquidationRecorded)
    # sold at 72,150: realised 0.25 × (72,150 − 80,000) = −1,962.5; fee min(1% × 18,037.5, 37.5) = 37.5
    assert (rec.loss, rec.fee, rec.balance_left) == (-usdt("1962.5"), usdt("37.5"), 0)
    for mark in ("76000", "79000", "80000", "72000", "71000", "80000"):
        events = s.mark(BTC, mark)
        assert not of_type(events, LiquidationRecorded, MarginCall, OrderAccepted, PositionUpdated)
    assert s.position(1, BTC).qty == 0
    assert s.records(1) == [rec]
    assert s.wallet(1) == usdt("500")
    assert not s.risk.monitor.units_of(s.clearing.accounts[1])


# ================================================================== (f) a cascade into ADL
SHORTS = {  # account: (leverage, qty, entry) — isolated shorts, sold to the market maker
    11: (5, "0.1", "80000"),  # margin 1,600  BP = 80,000 + 1,600/0.1 = 96,000
    12: (10, "0.1", "81000"),  # margin   810  BP = 81,000 + 8,100 = 89,100
    13: (20, "0.1", "79100"),  # margin 395.5  BP = 79,100 + 3,955 = 83,055
    14: (2, "0.2", "80000"),  # margin 8,000  BP = 120,000
    15: (2, "0.15", "72000"),  # margin 5,400  BP = 108,000 (the one losing short after the crash)
}
LONGS = {  # isolated longs, bought from the market maker
    1: (20, "0.1", "80000"),  # margin 400  LP = 7,600/0.0996 = 76,305.2   BP 76,000
    2: (25, "0.1", "81000"),  # margin 324  LP = 7,776/0.0996 = 78,072.3   BP 77,760
    3: (50, "0.45", "79100"),  # margin 711.9 LP = 34,883.1/0.4482 = 77,829.4 BP 77,518
}
MAKER = 100


def cascade_market(**build_kwargs: Any) -> Scenario:
    s = Scenario(fund="4000", **build_kwargs)
    s.deposit(MAKER, "10000000")
    for account, (lev, _, _) in {**SHORTS, **LONGS}.items():
        s.deposit(account, "20000")
        s.isolated(account, BTC, leverage=lev)
    # Σ shorts 0.65 = Σ longs 0.65: the market maker ends the set-up flat.
    for price in ("72000", "80000", "81000", "79100"):
        s.mark(BTC, price)
        for account, (_, qty, entry) in SHORTS.items():
            if entry == price:
                s.open(account, BTC, SELL, qty, price, counterparty=MAKER)
        for account, (_, qty, entry) in LONGS.items():
            if entry == price:
                s.open(account, BTC, BUY, qty, price, counterparty=MAKER)
    assert s.position(MAKER, BTC).qty == 0
    s.bid(MAKER, BTC, "77800", "0.06")  # the only bid: thin
    return s


def test_f_cascade_thin_bids_fund_limit_then_adl_by_rank() -> None:
    s = cascade_market()
    for account, (_, _, _) in SHORTS.items():
        assert s.position(account, BTC).bankruptcy_ticks == {11: s.px(BTC, "96000"), 12: s.px(BTC, "89100"),
                                                             13: s.px(BTC, "83055"), 14: s.px(BTC, "120000"),
                                                             15: s.px(BTC, "108000")}[account]
    assert [s.position(a, BTC).liq_ticks for a in LONGS] == [s.px(BTC, p) for p in ("76305.3", "78072.3",
                                                                                     "77829.4")]
    # Step 1: mark 78,000 crosses long 2's LP (78,072.3) only. Its IOC (0.1 at BP 77,760) takes the thin
    # bid: 0.06 at 77,800 (realised −192, fee 1% × 4,668 = 46.68 → margin 85.32 left for 0.04). The
    # rest's BP is now (3,240 − 85.32)/0.04 = 78,867; the fund can carry it (loss at the mark
    # 0.04 × 867 = 34.68 ≤ 4,046.68, notional 0.04 × 78,000 = 3,120 ≤ 4,046.68): it takes it over
    # and cannot offload it (no bid left within the 5% band).
    events = s.mark(BTC, "78000")
    [rec2] = of_type(events, LiquidationRecorded)
    assert (rec2.account, rec2.qty_book, rec2.qty_insurance, rec2.qty_adl) == (2, s.lots(BTC, "0.06"),
                                                                               s.lots(BTC, "0.04"), 0)
    [taken] = of_type(events, PositionTakenOver)
    assert (taken.qty, taken.price) == (s.lots(BTC, "0.04"), s.px(BTC, "78867"))
    assert s.fund() == usdt("4046.68") and s.position(0, BTC).qty == s.lots(BTC, "0.04")
    # The liquidation pushed the price through: the last trade is 77,800, and the mark follows it.
    last = s.engine.market(BTC).last_price
    assert last == s.px(BTC, "77800")

    # Step 2: mark 77,800 crosses long 3's LP (77,829.4). No bid at or above its BP 77,518; the fund
    # is limited: (0.04 + 0.45) × 77,800 = 38,122 > its balance 4,046.68. So ADL: the shorts are ranked
    # by the BitMEX score at the mark M = 77,800 (mechanics.md §6):
    #   PnL% = (EP − M)/EP,  effective leverage = M/(BP − M)   (isolated shorts)
    #   12: (3,200/81,000) × 77,800/11,300 = 0.039506 × 6.8850 = 0.27200
    #   13: (1,300/79,100) × 77,800/5,255  = 0.016435 × 14.805 = 0.24332
    #   11: (2,200/80,000) × 77,800/18,200 = 0.027500 × 4.2747 = 0.11755
    #   14: (2,200/80,000) × 77,800/42,200 = 0.027500 × 1.8436 = 0.05070
    #   15: PnL% = (72,000 − 77,800)/72,000 = −0.080556 < 0 → −0.080556 / (77,800/30,200) = −0.03127
    # → 12, 13, 11, 14, 15: the 0.45 closes 12 (0.1), 13 (0.1), 11 (0.1) and 0.15 of 14, at 77,518.
    events = s.mark(BTC, "77800")
    adl = of_type(events, AdlExecuted)
    assert [(e.account, e.qty, e.rank) for e in adl] == [
        (12, s.lots(BTC, "0.1"), 1), (13, s.lots(BTC, "0.1"), 2), (11, s.lots(BTC, "0.1"), 3),
        (14, s.lots(BTC, "0.15"), 4)]
    assert {e.price for e in adl} == {s.px(BTC, "77518")}
    assert not of_type(events, PositionTakenOver)
    [rec3] = of_type(events, LiquidationRecorded)
    assert rec3.adl_counterparties == [(12, 100), (13, 100), (11, 100), (14, 150)]
    assert (rec3.account, rec3.qty_book, rec3.qty_insurance, rec3.qty_adl) == (3, 0, 0, s.lots(BTC, "0.45"))

    # Step 3: the crash goes on to 76,100, through long 1's LP (76,305.2). No bid; the fund is still
    # limited ((0.04 + 0.1) × 76,100 = 10,654 > 4,046.68). Ranking at M = 76,100 of what is left:
    #   14: (3,900/80,000) × 76,100/43,900 = 0.04875 × 1.7335 = 0.08451
    #   15: PnL% = −4,100/72,000 = −0.056944 → −0.056944 / (76,100/31,900) = −0.02387
    # The profitable short goes first and in full (0.05); only then the losing one (0.05 of 0.15).
    events = s.mark(BTC, "76100")
    adl = of_type(events, AdlExecuted)
    assert [(e.account, e.qty, e.rank, e.price) for e in adl] == [
        (14, s.lots(BTC, "0.05"), 1, s.px(BTC, "76000")), (15, s.lots(BTC, "0.05"), 2, s.px(BTC, "76000"))]

    # ADL touched only shorts; the longs left (market maker 0.06, fund 0.04) are as they were.
    assert s.position(MAKER, BTC).qty == s.lots(BTC, "0.06")
    assert s.position(0, BTC).qty == s.lots(BTC, "0.04")
    for account in (11, 12, 13, 14):
        assert s.position(account, BTC).qty == 0
    assert s.position(15, BTC).qty == -s.lots(BTC, "0.1")
    # Deleveraged at the liquidated orders' bankruptcy prices, no fee:
    #   14: 0.15 × (80,000 − 77,518) + 0.05 × (80,000 − 76,000) = 372.3 + 200 = 572.3
    #   15: 0.05 × (72,000 − 76,000) = −200
    assert s.position(14, BTC).realized_pnl == usdt("572.3")
    assert s.position(15, BTC).realized_pnl == -usdt("200")
    for account in LONGS:
        assert s.position(account, BTC).qty == 0


def test_f_hand_ranking_agrees_with_adl_ranking_rank() -> None:
    """The hand scores of (f) at 77,800 and at 76,100, against adl.ranking on the live positions."""
    s = cascade_market()
    k = s.ins(BTC).atoms_per_tick_lot
    shorts = [s.position(a, BTC) for a in SHORTS]
    for mark, expected in (("77800", [12, 13, 11, 14, 15]), ("76100", [13, 12, 11, 14, 15])):
        assert [p.account for p in rank(shorts, s.px(BTC, mark), k)] == expected
    # e.g. 13 at 77,800: (1,300/79,100) × 77,800/(83,055 − 77,800), exactly
    assert score(s.position(13, BTC), s.px(BTC, "77800"), k) == Fraction(1300, 79100) * Fraction(77800, 5255)


# ================================================================== (g) margin call per crossing
def test_g_margin_call_once_per_crossing_of_80_percent() -> None:
    s = Scenario()
    s.deposit(1, "2010")
    s.deposit(2, BIG)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    # Ratio MM/MB reaches 80% when 0.25·P·0.4% = 0.8·(2,000 + 0.25·(P − 80,000)) → 0.199·P = 14,400
    # → P = 72,361.809. At 72,361.9: MM 72.3619 < 0.8 × 90.475 = 72.38; at 72,361.8: MM 72.3618 ≥
    # 0.8 × 90.45 = 72.36. (The LP, 72,289.157, is below: no liquidation in this test.)
    calls = []
    for mark in ("75000", "72361.9"):
        calls += of_type(s.mark(BTC, mark), MarginCall)
    assert not calls
    [call] = of_type(s.mark(BTC, "72361.8"), MarginCall)
    # ratio = 72.3618 / 90.45 = 0.8000199 → 800,019 ppm (floored)
    assert (call.account, call.symbol, call.maintenance_margin, call.margin_balance) == (
        1, BTC, usdt("72.3618"), usdt("90.45"))
    assert call.margin_ratio_ppm == usdt("72.3618") * 1_000_000 // usdt("90.45") == 800_019
    # Deeper, still above the LP: no more calls (not on every tick).
    for mark in ("72350", "72330", "72300", "72361.8"):
        assert not of_type(s.mark(BTC, mark), MarginCall)
    # Recovery below 80% (at 72,500: 72.5/125 = 58%) publishes nothing; the next crossing calls again.
    assert not of_type(s.mark(BTC, "72500"), MarginCall)
    [again] = of_type(s.mark(BTC, "72361.8"), MarginCall)
    assert again.margin_ratio_ppm == 800_019
    assert not of_type(s.mark(BTC, "72300"), MarginCall)
    assert not s.records(1)


# ================================================================== (h) auto margin addition
def auto_add_market(**build: object) -> Scenario:
    """examples.json `mexc_auto_margin_addition_example_seed_b`: long 5,000 contracts × 0.0001 BTC = 0.5 BTC at
    18,000, 10x, MMR 0.4%, 50 USDT available. Deposit 954.5 = 900 margin + 4.5 fee + 50."""
    s = Scenario(**build)  # type: ignore[arg-type]
    s.deposit(1, "954.5")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "18000")
    s.open(1, BTC, BUY, "0.5", "18000", counterparty=2)
    s.auto_add(1, BTC)
    assert s.wallet(1) == usdt("50") and s.position(1, BTC).isolated_margin == usdt("900")
    # An open order of that symbol holding 15 USDT (0.01 × 15,000 / 10): available 35, until step 1.
    s.bid(1, BTC, "15000", "0.01")
    assert s.clearing.available(s.clearing.accounts[1], USDT) == usdt("35")
    s.bid(MM_ACCT, BTC, "16170", "0.5")
    return s


def test_h_auto_margin_addition_mexc_amounts_36_then_14() -> None:
    ex = example("mexc_auto_margin_addition_example_seed_b")
    first, second = ex["expected"]["add_amount_first"], ex["expected"]["add_amount_second"]
    # by hand: EP × qty × MMR = 18,000 × 0.5 × 0.4% = 36; then only 50 − 36 = 14 is available
    assert (first, second) == (36, 14)
    assert ex["inputs"]["contracts"] * ex["inputs"]["contract_size_btc"] == 0.5
    s = auto_add_market()
    pos = s.position(1, BTC)
    # Binance LP: (9,000 − 900)/(0.5 × 0.996) = 8,100/0.498 = 16,265.06 → 16,265.1 on the grid.
    assert pos.liq_ticks == s.px(BTC, "16265.1")
    assert not of_type(s.mark(BTC, "16265.1"), BalanceUpdated)  # MM 32.5302 < MB 32.55
    # Trigger 1 at 16,265.0 (MM 32.53 ≥ MB 900 − 867.5 = 32.5): the symbol's order is cancelled first
    # (its 15 USDT released), then add = min(36, 50) = 36 → margin 936, LP = 8,064/0.498 = 16,192.77.
    events = s.mark(BTC, "16265")
    [cancel] = of_type(events, OrderCanceled)
    assert (cancel.account, cancel.reason) == (1, CancelReason.LIQUIDATION)
    [add] = of_type(events, BalanceUpdated)
    assert add.delta == -usdt(first) and add.balance == usdt("14")
    assert events.index(cancel) < events.index(add)
    assert pos.isolated_margin == usdt("936") and pos.liq_ticks == s.px(BTC, "16192.8")
    assert not of_type(events, LiquidationRecorded)  # MB 936 − 867.5 = 68.5 > MM 32.53: saved
    # Trigger 2 at 16,192.7 (MM 32.3854 ≥ MB 936 − 903.65 = 32.35): add = min(36, 14) = 14 → margin
    # 950, LP = 8,050/0.498 = 16,164.66.
    assert not of_type(s.mark(BTC, "16192.8"), BalanceUpdated)
    events = s.mark(BTC, "16192.7")
    [add2] = of_type(events, BalanceUpdated)
    assert add2.delta == -usdt(second) and add2.balance == 0
    assert pos.isolated_margin == usdt("950") and pos.liq_ticks == s.px(BTC, "16164.7")
    assert not of_type(events, LiquidationRecorded)
    # Trigger 3 at 16,164.6 (MM 32.3292 ≥ MB 950 − 917.7 = 32.3): nothing left to add → liquidated,
    # into the bid at 16,170 (BP 18,000 − 950/0.5 = 16,100): realised −915, fee min(80.85, 35) = 35.
    events = s.mark(BTC, "16164.6")
    assert not of_type(events, BalanceUpdated)
    [rec] = of_type(events, LiquidationRecorded)
    assert (rec.bankruptcy_price, rec.loss, rec.fee, rec.balance_left) == (s.px(BTC, "16100"), -usdt("915"),
                                                                          usdt("35"), 0)
    assert pos.qty == 0 and s.wallet(1) == 0
    # Total lost: 900 + 36 + 14 = 950 = 915 + 35: the margin and what was added, no more.
    assert -rec.loss + rec.fee == usdt("950")


def test_h_auto_margin_addition_entry_notional_profile_gives_the_examples_derived_lps() -> None:
    """With MM on the entry notional (venue profile ENTRY_NOTIONAL, MEXC's base), the LPs are the example's
    `derived_simple_formula`: LP = EP − (WB − MM)/q with MM = 36: 18,000 − 864/0.5 = 16,272; after +36:
    16,200; after +14 more: 16,172. (The source's own LPs 16,288.98 → 16,188 are inconsistent, §8 (b).)"""
    derived = example("mexc_auto_margin_addition_example_seed_b")["expected"]["derived_simple_formula"]
    s = auto_add_market(profile=ENTRY_NOTIONAL)
    pos = s.position(1, BTC)
    assert pos.liq_ticks == s.px(BTC, "16272") == s.px(BTC, str(derived["liq_before"]))
    assert not of_type(s.mark(BTC, "16272.1"), BalanceUpdated)
    [add] = of_type(s.mark(BTC, "16272"), BalanceUpdated)  # MB = 900 − 864 = 36 = MM: at the LP
    assert add.delta == -usdt("36") and pos.liq_ticks == s.px(BTC, str(derived["liq_after_36"]))
    [add2] = of_type(s.mark(BTC, "16200"), BalanceUpdated)
    assert add2.delta == -usdt("14") and pos.liq_ticks == s.px(BTC, str(derived["liq_after_50"]))
    events = s.mark(BTC, "16172")
    assert of_type(events, LiquidationRecorded) and pos.qty == 0


# ================================================================== (i) partial, bracket by bracket
def big_long(clearance_fee: str) -> Scenario:
    """50 BTC long at 80,000, isolated 20x: notional 4,000,000, bracket 4 (3M–12M, MMR 1%, cum 12,000).
    Margin 200,000 (deposit 202,000: + 2,000 taker fee). LP = (4,000,000 − 200,000 − 12,000)/(50 × 0.99)
    = 76,525.25 (its notional 3.83M is in bracket 4: consistent); BP = 80,000 − 200,000/50 = 76,000."""
    s = Scenario(fund="1000000", instruments=[msgspec.structs.replace(btcusdt(), clearance_fee=clearance_fee),
                                              ethusdt()])
    s.deposit(1, "202000")
    s.deposit(2, "100000000")
    s.deposit(MM_ACCT, "100000000")
    s.isolated(1, BTC, leverage=20)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "50", "80000", counterparty=2)
    pos = s.position(1, BTC)
    assert (pos.liq_ticks, pos.bankruptcy_ticks) == (s.px(BTC, "76525.3"), s.px(BTC, "76000"))
    s.bid(MM_ACCT, BTC, "76300", "60")  # deep bids
    return s


def test_i_partial_liquidation_bracket_by_bracket_stops_once_compliant() -> None:
    # Binance's older BTCUSDT clearance fee, 0.3% (mechanics.md §3.3), below the marginal MMR of
    # brackets 2–4, so that a partial step can restore compliance (see the next test for 1%).
    s = big_long("0.003")
    pos = s.position(1, BTC)
    # The mark gaps to 76,300: notional 3,815,000 (bracket 4): MM = 38,150 − 12,000 = 26,150;
    # MB = 200,000 + 50 × (76,300 − 80,000) = 15,000 → liquidate.
    events = s.mark(BTC, "76300")
    recs = of_type(events, LiquidationRecorded)
    orders = liquidation_orders(events, 1)
    # Step 3a: down to bracket 4's floor 3,000,000: keep floor(3,000,000/76,300) = 39.318 BTC, sell 10.682
    #   at BP 76,000 → fills at 76,300: realised 10.682 × (−3,700) = −39,523.4, fee 0.3% × 815,036.6
    #   = 2,445.1098 → margin 158,031.4902. Now 39.318 BTC = 2,999,963.4 (bracket 3, 0.65%, cum 1,500):
    #   MM = 19,499.7621 − 1,500 = 17,999.7621 > MB = 158,031.4902 − 145,476.6 = 12,554.8902: go on.
    # Step 3b: down to 800,000: keep floor(800,000/76,300) = 10.484 BTC, sell 28.834 at the BP, now
    #   (3,145,440 − 158,031.4902)/39.318 = 75,980.69 → 75,980.7: fills at 76,300: realised −106,685.8,
    #   fee 0.3% × 2,200,034.2 = 6,600.1026 → margin 44,745.5876. 10.484 BTC = 799,929.2 (bracket 2,
    #   0.5%, cum 300): MM = 3,699.646 < MB = 44,745.5876 − 38,790.8 = 5,954.7876: compliant, stop.
    assert [(o.qty, o.price) for o in orders] == [(s.lots(BTC, "10.682"), s.px(BTC, "76000")),
                                                  (s.lots(BTC, "28.834"), s.px(BTC, "75980.7"))]
    assert [(r.partial, r.qty, r.loss, r.fee) for r in recs] == [
        (True, s.lots(BTC, "10.682"), -usdt("39523.4"), usdt("2445.1098")),
        (True, s.lots(BTC, "28.834"), -usdt("106685.8"), usdt("6600.1026"))]
    assert pos.qty == s.lots(BTC, "10.484")  # still above bracket 1: kept
    assert pos.isolated_margin == usdt("44745.5876") == recs[-1].balance_left
    assert s.risk.monitor.verdict(iso_key(1)) is Verdict.SAFE
    assert not of_type(events, PositionTakenOver, AdlExecuted)


def test_i_with_the_default_1_percent_fee_partial_steps_cannot_restore_compliance() -> None:
    """With the default 1% clearance fee (mechanics.md step 4) a step that closes ΔN of notional at the
    mark lowers the margin balance by 1% × ΔN but the MM only by the marginal MMR × ΔN (1%, 0.65%, 0.5%,
    0.4% in brackets 4–1): a partial step can never restore compliance below bracket 5 unless it fills
    above the mark. Same position as above: 3a leaves margin 152,326.234 (fee 8,150.366), MB 6,849.634 <
    MM 17,999.76; 3b (fee 22,000.342) leaves margin 23,640.092, MB −15,150.708 (bankrupt): the BP of the
    rest, (838,720 − 23,640.092)/10.484 = 77,745.13 → 77,745.2, is above every bid; the last IOC expires and
    the fund takes the 10.484 BTC over at 77,745.2."""
    s = big_long("0.01")
    events = s.mark(BTC, "76300")
    recs = of_type(events, LiquidationRecorded)
    assert [(r.partial, r.qty_book, r.qty_insurance) for r in recs] == [
        (True, s.lots(BTC, "10.682"), 0), (True, s.lots(BTC, "28.834"), 0), (False, 0, s.lots(BTC, "10.484"))]
    assert [r.fee for r in recs[:2]] == [usdt("8150.366"), usdt("22000.342")]
    [taken] = of_type(events, PositionTakenOver)
    assert (taken.qty, taken.price) == (s.lots(BTC, "10.484"), s.px(BTC, "77745.2"))
    assert s.position(1, BTC).qty == 0 and s.position(1, BTC).isolated_margin == 0


# ================================================================== (j) the BitMEX ADL example
def test_j_bitmex_adl_ranking_example() -> None:
    ex = example("bitmex_adl_ranking_example")
    rows = [(a["account"], a["qty"], a["pnl_ranking"]) for a in ex["inputs"]["accounts"]]
    assert rows == [(1, 10, 3), (2, 10, 6), (3, 20, 1), (4, 30, 4), (5, 20, 5), (6, 10, 2)]
    # The example gives each long only its rank r (6 = most profitable × levered). Hand-built longs at
    # mark 700 (k = 1: a value is qty × price) with scores in that order: EP = 700 − 10·r, BP = EP − 100:
    #   score = (700 − EP)/EP × 700/(700 − BP) = 10r/(700 − 10r) × 700/(100 + 10r)
    #   r = 6 (account 2): 60/640 × 700/160 = 0.41016;  r = 5 (5): 50/650 × 700/150 = 0.35897
    #   r = 4 (4): 40/660 × 700/140 = 0.30303;  r = 3 (1): 30/670 × 700/130 = 0.24110
    #   r = 2 (6): 20/680 × 700/120 = 0.17157;  r = 1 (3): 10/690 × 700/110 = 0.09223
    mark = 700
    positions = []
    for account, qty, r in rows:
        p = Position(account, "BTCUSDT", PositionSide.BOTH, SymbolSettings(10, MarginMode.CROSS))
        p.qty, p.cost, p.bankruptcy_ticks = qty, qty * (700 - 10 * r), 700 - 10 * r - 100
        positions.append(p)
    assert score(positions[1], mark, 1) == Fraction(60, 640) * Fraction(700, 160)
    ranked = rank(positions, mark, 1)
    assert [p.account for p in ranked] == [2, 5, 4, 1, 6, 3] == ex["expected"]["order"]
    # A liquidated short of 20 at bankruptcy price 650 closes the top of the ranking (mechanics.md §6,
    # the liquidator's loop: take min(remaining, its size), highest first).
    remaining, fills = 20, []
    for p in ranked:
        if not remaining:
            break
        take = min(remaining, p.qty)
        fills.append({"account": p.account, "qty": take, "price": 650.0})
        remaining -= take
    assert fills == [{"account": 2, "qty": 10, "price": 650.0}, {"account": 5, "qty": 10, "price": 650.0}]
    assert fills == ex["expected"]["fills"]
    assert 20 - fills[1]["qty"] == ex["expected"]["account5_remaining_qty"]

    # Quantiles. mechanics.md Part 1: q = min(4, floor(percentile × 5)), percentile = the place in the
    # ranking, 1 for the first to be deleveraged: here 6/6, 5/6, …, 1/6 → 4, 4, 3, 2, 1, 0.
    assert [(p.account, q) for p, q in quantiles(ranked)] == [(2, 4), (5, 4), (4, 3), (1, 2), (6, 1), (3, 0)]
    n = len(ranked)
    assert [q for _, q in quantiles(ranked)] == [min(4, (n - i) * 5 // n) for i in range(n)]
    # BitMEX's published percentiles (20, 40, 60, 80, 80, 100%) are the other way round (small = first in
    # line) and follow the cumulative *quantity* share of 100 contracts — ceil(share / 20%) × 20%: shares
    # 10, 30, 60, 70, 80, 100% — an inference noted in examples.json, not a rule of mechanics.md, which
    # ranks by place. The two differ (e.g. accounts 1 and 6 share 80% there, not here): we keep the spec.
    total, cum, inferred = sum(p.qty for p in ranked), 0, {}
    for p in ranked:
        cum += p.qty
        inferred[p.account] = -(-cum * 5 // total) / 5
    assert inferred == {2: 0.2, 5: 0.4, 4: 0.6, 1: 0.8, 6: 0.8, 3: 1.0}
    assert inferred == {int(a): v for a, v in ex["expected"]["percentile"].items()}


# ================================================================== (k) records a trader can query
def test_k_liquidation_record_answers_what_a_trader_asks() -> None:
    s = Scenario(fund="100000")
    seed_000(s)
    s.mark(BTC, "64257")
    [rec] = s.risk.records[1]
    assert (rec.account, rec.symbol, rec.side, rec.partial) == (1, BTC, "LONG", False)
    assert (rec.margin_mode, rec.leverage) == (MarginMode.ISOLATED, 10)
    assert Fraction(rec.entry_price_num, rec.entry_price_den) == s.px(BTC, "80000")  # entry
    assert rec.trigger_price == s.px(BTC, "64257")  # the mark that triggered it
    assert rec.bankruptcy_price == s.px(BTC, "64000")
    assert rec.qty == rec.qty_book == s.lots(BTC, "0.25") and rec.qty_insurance == rec.qty_adl == 0
    assert rec.execution_notional == s.lots(BTC, "0.25") * s.px(BTC, "65000")  # tick·lots
    assert Fraction(rec.execution_notional, rec.qty) == s.px(BTC, "65000")  # average execution price
    assert rec.loss == -usdt("3750") and rec.fee == usdt("162.5")
    assert rec.balance_left == 0  # the isolated margin after it
    assert rec.insurance_fund_delta == usdt("250")  # fee 162.5 + leftover 87.5
    assert rec.adl_counterparties == []
    assert 2 not in s.risk.records  # only the liquidated account has records


def test_k_records_name_the_adl_counterparties() -> None:
    s = cascade_market()
    for mark in ("78000", "77800", "76100"):
        s.mark(BTC, mark)
    assert [(r.qty_book, r.qty_insurance, r.qty_adl) for r in s.risk.records[2]] == [(60, 40, 0)]
    [rec3] = s.risk.records[3]
    assert rec3.adl_counterparties == [(12, 100), (13, 100), (11, 100), (14, 150)]
    assert rec3.execution_notional == 450 * s.px(BTC, "77518") and rec3.bankruptcy_price == s.px(BTC, "77518")
    # Closed in full at its bankruptcy price: the loss 0.45 × (77,518 − 79,100) = −711.9 is the whole
    # margin; nothing is left for a clearance fee, and the fund neither gains nor loses on it.
    assert rec3.loss == -usdt("711.9") and rec3.fee == 0 and rec3.insurance_fund_delta == 0
    assert not [e for e in of_type(s.log, InsuranceFundUpdated) if e.cause == "SHORTFALL"]
    [rec1] = s.risk.records[1]
    assert rec1.adl_counterparties == [(14, 50), (15, 50)]
    for account in SHORTS:  # the deleveraged accounts are not liquidated: no records of their own
        assert account not in s.risk.records


# ================================================================== the index between mark ticks
def test_commands_leave_the_index_stale_and_the_next_tick_reindexes_each_account_once(monkeypatch) -> None:
    """A command checks the units it touched exactly and only marks their accounts stale; the next mark tick
    re-indexes every stale account once, however many commands touched it, to the index that re-indexing
    every account from scratch at that tick gives."""
    from liquidation.monitor import RiskMonitor

    s = Scenario()
    for account in (1, 4):
        s.deposit(account, "10000")
    s.deposit(2, BIG)
    s.isolated(1, BTC, leverage=10)
    s.cross(4, BTC, leverage=20)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.1", "80000", counterparty=2)
    s.open(4, BTC, SELL, "0.1", "80000", counterparty=2)
    s.mark(BTC, "80001")
    monitor = s.risk.monitor
    assert not monitor.stale
    before = dict(monitor._entry)
    assert iso_key(1) in before and cross_key(4) in before
    for _ in range(3):  # three fills each, no tick
        s.open(1, BTC, BUY, "0.01", "80000", counterparty=2)
        s.open(4, BTC, SELL, "0.01", "80000", counterparty=2)
    assert monitor.stale == {1, 2, 4}
    assert monitor._entry == before  # nothing re-indexed by the commands

    reindexed: list[int] = []
    real = monitor.reindex_account
    monkeypatch.setattr(monitor, "reindex_account", lambda acct: reindexed.append(acct.id) or real(acct))
    s.mark(BTC, "80002")
    assert sorted(reindexed) == [1, 2, 4] and not monitor.stale
    assert monitor._entry[cross_key(4)] != before[cross_key(4)]  # short 0.13 BTC on the same wallet: a new trigger
    scratch = RiskMonitor(s.clearing)
    for acct in s.clearing.accounts.values():
        scratch.reindex_account(acct)
    assert monitor._entry == scratch._entry
    assert {sym: (list(r.longs), list(r.shorts)) for sym, r in monitor.symbols.items() if r.longs or r.shorts} == \
        {sym: (list(r.longs), list(r.shorts)) for sym, r in scratch.symbols.items() if r.longs or r.shorts}


# ================================================================== engine bugs found by these tests
# They were found by this file and the property test, and are fixed in the engine (they were strict xfails
# until then): they stay as regression tests.
def test_withdrawal_re_indexes_the_cross_account() -> None:
    """Was: Withdraw changed the cross LP without marking the account touched; the risk monitor kept the
    old trigger and a mark between the new LP and the old trigger did not liquidate."""
    s = Scenario()
    s.deposit(1, "10000")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.cross(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    # wallet 9,990: LP = (20,000 − 9,990)/0.249 = 40,200.8. Withdraw 7,990 (the free margin above the
    # 2,000 initial margin): wallet 2,000, LP = 72,289.2 (as in (b)).
    s.apply(Withdraw(account=1, asset=USDT, amount=usdt("7990")))
    assert s.position(1, BTC).liq_ticks == s.px(BTC, "72289.2")
    s.bid(MM_ACCT, BTC, "72000", "1")
    s.mark(BTC, "72200")  # below the LP: MM 72.2 ≥ MB 2,000 − 1,950 = 50
    assert s.risk.monitor.verdict(cross_key(1)) is not Verdict.LIQUIDATE
    [rec] = s.records(1)
    assert rec.trigger_price == s.px(BTC, "72200")


def test_margin_removal_re_indexes_the_isolated_position() -> None:
    """Was: removing isolated margin did not re-index the position; the monitor kept the trigger of the
    larger margin."""
    s = Scenario()
    s.deposit(1, "10000")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    s.add_margin(1, BTC, "3000")  # margin 5,000
    s.open(1, BTC, BUY, "0.002", "80000", counterparty=2)  # a fill re-indexes it with margin 5,016
    s.add_margin(1, BTC, "-3000")  # margin 2,016 for 0.252 BTC: LP = (20,160 − 2,016)/(0.252 × 0.996)
    assert s.position(1, BTC).liq_ticks == s.px(BTC, "72289.2")  # = 18,144/0.250992 = 72,289.157
    s.bid(MM_ACCT, BTC, "72000", "1")
    s.mark(BTC, "72200")
    assert s.risk.monitor.verdict(iso_key(1)) is not Verdict.LIQUIDATE
    [rec] = s.records(1)
    assert rec.trigger_price == s.px(BTC, "72200")


def fund_holding_a_long() -> Scenario:
    """The fund (1,000 USDT) ends up holding 0.02 BTC long taken over at 72,000 that it cannot offload."""
    s = Scenario(fund="1000")
    s.deposit(1, "500")
    s.deposit(2, BIG)
    s.deposit(MM_ACCT, BIG)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.02", "80000", counterparty=2)  # margin 160, BP 72,000
    # A gap to 45,000 with an empty book: the fund takes 0.02 over at 72,000 (loss at the mark
    # 0.02 × 27,000 = 540 ≤ 1,000; notional 900 ≤ 1,000), and cannot offload it (no bid).
    events = s.mark(BTC, "45000")
    assert of_type(events, PositionTakenOver) and s.fund() == usdt("1000")
    assert s.position(0, BTC).qty == s.lots(BTC, "0.02")
    return s


def test_insurance_fund_deleverages_what_it_holds_before_going_below_zero() -> None:
    """Was: the fund held the position through the fall and a later offload at 19,500 realised
    0.02 × (19,500 − 72,000) = −1,050 > 1,000: fund at −50 USDT. Now, at 20,000 its equity
    1,000 + 0.02 × (20,000 − 72,000) = −40 ≤ 0 (its floor): its position is deleveraged against the
    opposite side at the price where the equity is 0: 72,000 − 1,000/0.02 = 22,000."""
    s = fund_holding_a_long()
    events = s.mark(BTC, "20000")
    [adl] = of_type(events, AdlExecuted)
    assert (adl.account, adl.qty, adl.price) == (2, s.lots(BTC, "0.02"), s.px(BTC, "22000"))
    [rec] = of_type(events, LiquidationRecorded)
    assert (rec.account, rec.bankruptcy_price, rec.adl_counterparties) == (0, s.px(BTC, "22000"), [(2, 20)])
    assert s.fund() == 0 and s.position(0, BTC).qty == 0
    s.bid(MM_ACCT, BTC, "19500", "1")
    s.mark(BTC, "20000")
    assert s.fund() == 0


def test_fund_offload_never_sells_below_the_funds_bankruptcy_price() -> None:
    """Was: with a bid below the fund's bankruptcy price resting as the mark gaps, the offload (IOC at
    mark × 0.95) sold 0.02 at 19,500 (−1,050 on a 1,000 balance: fund −50) before the guard could
    deleverage at 22,000. Now the offload's limit is clamped at the fund's floor price."""
    s = fund_holding_a_long()
    s.bid(MM_ACCT, BTC, "19500", "1")  # resting while the mark is 45,000 (far below it)
    # The gap to 20,000: the bid is now inside the 5% band (≥ 19,000); the kit's invariant check raises.
    s.mark(BTC, "20000")
    assert s.fund() >= 0


def test_kit_catches_a_broken_invariant() -> None:
    """The scenario kit's checks are live: a rejected order is reported, and a tampered wallet breaks
    conservation."""
    s = Scenario()
    s.deposit(1, "100")
    with pytest.raises(AssertionError, match="rejected"):
        s.apply(PlaceOrder(account=1, symbol=BTC, side=BUY, qty=10**6, price=1, tif=TimeInForce.GTC))
    s.clearing.accounts[1].wallet[USDT] += 1
    with pytest.raises(AssertionError, match="conservation"):
        s.deposit(1, "1")


# ================================================================== the fund's balance and floor (step 5)
def _gap_down(floor: str, max_notional_ppm: int = 1_000_000) -> tuple[Scenario, list]:
    """An isolated 10x long of 0.1 BTC from 80,000 with 800 USDT of margin: bankruptcy price
    BP = entry − margin / qty = 80,000 − 800 / 0.1 = 72,000 (mechanics.md §3.1 with MMR = cum = 0).
    The mark gaps to 70,000, under the BP, with no bid in the book: the IOC at the BP finds nothing,
    and the fund (10,000 USDT) would take 0.1 over at 72,000 with a loss at the mark of
    (72,000 − 70,000) × 0.1 = 200 USDT and a net notional of 0.1 × 70,000 = 7,000 USDT."""
    s = Scenario(fund="10000", insurance_floor={USDT: usdt(floor)}, insurance_max_notional_ppm=max_notional_ppm)
    s.deposit(1, "1000")
    s.deposit(2, "100000")
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.1", "80000", counterparty=2)
    assert s.position(1, BTC).isolated_margin == usdt("800")
    assert s.position(1, BTC).bankruptcy_ticks == s.px(BTC, "72000")
    return s, s.mark(BTC, "70000")


def test_fund_above_its_floor_takes_the_position_over() -> None:
    """Floor 0: 10,000 − 0 ≥ 200 and 7,000 ≤ 100% × 10,000: the fund takes it over at the BP; no ADL."""
    s, events = _gap_down("0")
    [taken] = of_type(events, PositionTakenOver)
    assert (taken.account, taken.qty, taken.price) == (1, s.lots(BTC, "0.1"), s.px(BTC, "72000"))
    assert not of_type(events, AdlExecuted)
    assert s.position(0, BTC).qty == s.lots(BTC, "0.1")
    assert s.position(2, BTC).qty == -s.lots(BTC, "0.1")  # the short is untouched


def test_fund_whose_balance_would_fall_below_its_floor_refuses_and_adl_closes_the_short() -> None:
    """Floor 9,900: the loss at the mark (200) is more than the 100 above the floor, although the
    notional limit would allow it: no take-over, the short is deleveraged at the BP, 72,000."""
    s, events = _gap_down("9900")
    assert not of_type(events, PositionTakenOver)
    [adl] = of_type(events, AdlExecuted)
    assert (adl.account, adl.qty, adl.price, adl.rank) == (2, s.lots(BTC, "0.1"), s.px(BTC, "72000"), 1)
    assert s.position(2, BTC).qty == 0
    assert s.fund() >= usdt("9900")  # the floor holds
    [rec] = of_type(events, LiquidationRecorded)
    assert (rec.qty_book, rec.qty_insurance, rec.qty_adl) == (0, 0, s.lots(BTC, "0.1"))
    assert rec.adl_counterparties == [(2, s.lots(BTC, "0.1"))]


def test_fund_notional_limit_refuses_even_with_balance_to_spare() -> None:
    """max_notional 50%: 7,000 > 50% × 10,000 = 5,000, so no take-over even with floor 0: ADL."""
    s, events = _gap_down("0", max_notional_ppm=500_000)
    assert not of_type(events, PositionTakenOver)
    assert [(e.account, e.qty) for e in of_type(events, AdlExecuted)] == [(2, s.lots(BTC, "0.1"))]


def test_fund_history_query_filters_by_cause_liquidation_and_time() -> None:
    """InsuranceFund.query: every change with its cause (mechanics.md Part 1 "Insurance fund"), filtered."""
    s = Scenario(fund="100000")
    for account, amount in ((1, "5010"), (2, "100000"), (3, "100000")):
        s.deposit(account, amount)
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    # LP = (20,000 − 2,000) / (0.25 × (1 − 0.4%)) ≈ 72,289; BP 72,000. A bid at 72,150 absorbs the IOC:
    # the fund gets a clearance fee (capped by the 37.5 USDT of margin left) with this liquidation's id
    s.bid(3, BTC, "72150", "1")
    events = s.mark(BTC, "72200")
    [rec] = of_type(events, LiquidationRecorded)
    fund = s.risk.fund
    everything = fund.query()
    assert everything == fund.history and everything  # no filter: the whole ledger
    mine = fund.query(liquidation_id=rec.liquidation_id)
    assert mine and all(e.liquidation_id == rec.liquidation_id for e in mine)
    assert [e for e in mine if e.cause == "CLEARANCE_FEE"] == fund.query(cause="CLEARANCE_FEE",
                                                                          liquidation_id=rec.liquidation_id)
    assert fund.query(account=1) == [e for e in everything if e.account == 1]
    assert fund.query(asset="BTC") == []
    last_ts = everything[-1].ts
    assert fund.query(until=last_ts) == [e for e in everything if e.ts < last_ts]
    assert fund.query(since=last_ts + 1) == []


# ================================================================== the alternative ranking (RANDOM_OFFSET)
@pytest.mark.parametrize("seed", range(8))
def test_random_offset_adl_takes_every_profitable_short_before_the_losing_one(seed: int) -> None:
    """dYdX-style seeded order (adl/ranking.py), with the emulator's rule (issue 5, mechanics.md Part 1 "ADL"):
    a losing position only after every profitable one. The cascade of test_f: at 77,800 shorts 11–14 are in
    profit (entries 79,100–81,000), 15 (entry 72,000) is losing; the 0.45 ADL'd at 77,800 comes from 11–14 only,
    in a rotation of their account order; at 76,100 what is left of them goes before 15."""
    s = cascade_market(adl_ranking=AdlRanking.RANDOM_OFFSET, adl_seed=seed)
    s.mark(BTC, "78000")
    step2 = of_type(s.mark(BTC, "77800"), AdlExecuted)
    accounts = [e.account for e in step2]
    assert 15 not in accounts and sum(e.qty for e in step2) == s.lots(BTC, "0.45")
    ring = [11, 12, 13, 14]
    start = ring.index(accounts[0])
    assert accounts == (ring[start:] + ring[:start])[:len(accounts)]  # a rotation of the account order
    step3 = of_type(s.mark(BTC, "76100"), AdlExecuted)
    order = [e.account for e in step3]
    assert sum(e.qty for e in step3) == s.lots(BTC, "0.1")
    assert order[-1] == 15 and all(a != 15 for a in order[:-1])  # the losing short last
    for account in ring:
        assert s.position(account, BTC).qty == 0  # every profitable short used up before 15 was touched


def test_random_offset_orders_differ_by_seed() -> None:
    """Not the score in disguise: different seeds start the rotation at different accounts."""
    firsts = set()
    for seed in range(8):
        s = cascade_market(adl_ranking=AdlRanking.RANDOM_OFFSET, adl_seed=seed)
        s.mark(BTC, "78000")
        firsts.add(of_type(s.mark(BTC, "77800"), AdlExecuted)[0].account)
    assert len(firsts) >= 2, firsts


def test_ranking_comes_from_the_venue_profile() -> None:
    """VenueProfile.adl_ranking chooses the ranking; build_exchange's argument overrides it."""
    from exchange.venue import BINANCE

    profile = msgspec.structs.replace(BINANCE, name="random", adl_ranking=AdlRanking.RANDOM_OFFSET)
    assert Scenario(profile=profile).risk.adl_ranking is AdlRanking.RANDOM_OFFSET
    assert Scenario().risk.adl_ranking is AdlRanking.PNL_LEVERAGE
    assert Scenario(profile=profile, adl_ranking=AdlRanking.PNL_LEVERAGE).risk.adl_ranking is AdlRanking.PNL_LEVERAGE
