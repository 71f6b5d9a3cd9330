"""Rebuilding every account from the event stream alone.

A subscriber that reads nothing but the engine's events (BalanceUpdated,
PositionUpdated, AccountConfigUpdated, InsuranceFundUpdated,
LiquidationRecorded, FundingSettled, FundingPayment, …) rebuilds, after a
random session, every account's spot and futures wallets, isolated margins,
positions (qty, cost, realised PnL, liquidation and bankruptcy price, the
auto-margin-addition flag), leverage, margin and position modes and fee tiers,
the fee income, and the insurance fund's balance; they must equal the
engine's state. The subscriber is also given what a client knows from the
exchange's configuration, not from events: each symbol's settlement asset
(PositionUpdated.wallet_balance does not name its asset) and the insurance
fund's opening balance (configuration; no event announces it).

Funding: a FundingPayment carries the balance it was paid from or to (the
futures wallet of a cross position, the isolated margin of an isolated one);
an isolated position also gets a PositionUpdated FUNDING_FEE; the
FundingSettled remainder (payers round up, receivers down) is fee income
(mechanics.md §1.3). Auto margin addition: AccountConfigUpdated carries
`position_side` and that position's own flag (symbol "": an account-wide
change, no flag).

It also checks that the stream explains itself: each BalanceUpdated and
InsuranceFundUpdated follows from the previous balance plus its delta, each
FundingPayment from the previous balance plus its amount, and each fill's
PositionUpdated moves wallet + isolated margin by exactly the realised PnL
minus the fee it reports (but for a loss beyond a margin that the insurance
fund carried: test_every_fill_explains_the_money_it_moved).

The sessions are the random sessions of test_margin_property (five accounts,
two symbols, every kind of command, mark moves), on the clearing engine alone
and on the full exchange (liquidations, insurance fund, ADL); and the same
with an index for each symbol, the clock moved across funding times (every
10 minutes of virtual time), index updates and auto-margin-addition switches
(FundingSession).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from exchange.assembly import build_exchange
from exchange.clearing import FUND_ACCOUNT, Clearing
from exchange.commands import (
    AdvanceClock,
    Deposit,
    PlaceOrder,
    SetAutoMarginAddition,
    SetLeverage,
    SetMarginMode,
    SetMarkPrice,
    UpdateIndex,
)
from exchange.engine import Engine
from exchange.enums import MarginMode, PositionMode, PositionSide, Side, WalletKind
from exchange.events import (
    AccountConfigUpdated,
    BalanceUpdated,
    Event,
    FundingPayment,
    FundingSettled,
    InsuranceFundUpdated,
    LiquidationRecorded,
    OrderRejected,
    PositionUpdated,
)
from exchange.funding import FundingSchedule
from tests.test_margin_property import ACCOUNTS, KINDS, START, SYMBOLS, Session, spread

FUT, SPOT = WalletKind.FUTURES, WalletKind.SPOT
USDT = "USDT"
FILL_REASONS = ("TRADE", "LIQUIDATION", "ADL")


@dataclass
class Pos:
    qty: int = 0
    cost: int = 0
    realized_pnl: int = 0
    isolated_margin: int = 0
    liq: int = 0
    bankruptcy: int = 0


@dataclass
class Rebuilt:
    """An account book kept from events only."""

    settlement: dict[str, str]  # symbol -> settlement asset (exchange configuration)
    wallets: dict[tuple[int, str, WalletKind], int] = field(default_factory=dict)
    positions: dict[tuple[int, str, PositionSide], Pos] = field(default_factory=dict)
    leverage: dict[tuple[int, str], int] = field(default_factory=dict)
    margin_mode: dict[tuple[int, str], MarginMode] = field(default_factory=dict)
    position_mode: dict[int, PositionMode] = field(default_factory=dict)
    fee_tier: dict[int, tuple[int, int]] = field(default_factory=dict)
    fee_income: dict[str, int] = field(default_factory=dict)
    auto_add: dict[tuple[int, str, PositionSide], bool] = field(default_factory=dict)  # per position
    balance_breaks: list[BalanceUpdated] = field(default_factory=list)  # balance ≠ previous + delta
    funding_breaks: list[FundingPayment] = field(default_factory=list)  # balance ≠ previous + amount
    fund_breaks: list[InsuranceFundUpdated] = field(default_factory=list)  # the same, for the fund
    unexplained_fills: list[tuple[PositionUpdated, int]] = field(default_factory=list)  # (event, Δ − (pnl − fee))

    def opening(self, fund: dict[str, int]) -> None:
        for asset, amount in fund.items():
            self.wallets[(FUND_ACCOUNT, asset, FUT)] = amount

    def apply(self, e: Event) -> None:
        if isinstance(e, BalanceUpdated):
            key = (e.account, e.asset, e.wallet)
            if self.wallets.get(key, 0) + e.delta != e.balance:
                self.balance_breaks.append(e)
            self.wallets[key] = e.balance
        elif isinstance(e, InsuranceFundUpdated):
            key = (FUND_ACCOUNT, e.asset, FUT)
            if self.wallets.get(key, 0) + e.delta != e.balance:
                self.fund_breaks.append(e)
            self.wallets[key] = e.balance
        elif isinstance(e, PositionUpdated):
            wkey = (e.account, self.settlement[e.symbol], FUT)
            pos = self.positions.setdefault((e.account, e.symbol, e.position_side), Pos())
            if e.reason in FILL_REASONS:
                moved = (e.wallet_balance - self.wallets.get(wkey, 0)) + (e.isolated_margin - pos.isolated_margin)
                if moved != e.realized_pnl_delta - e.fee:
                    self.unexplained_fills.append((e, moved - (e.realized_pnl_delta - e.fee)))
                if e.reason == "TRADE":
                    asset = self.settlement[e.symbol]
                    self.fee_income[asset] = self.fee_income.get(asset, 0) + e.fee
            self.wallets[wkey] = e.wallet_balance
            pos.qty, pos.cost, pos.realized_pnl = e.qty, e.cost, e.realized_pnl
            pos.isolated_margin, pos.liq, pos.bankruptcy = e.isolated_margin, e.liquidation_price, e.bankruptcy_price
            self.leverage[(e.account, e.symbol)] = e.leverage
            self.margin_mode[(e.account, e.symbol)] = e.margin_mode
        elif isinstance(e, LiquidationRecorded):
            # what is left after the liquidation step (the leftover swept to the fund is not otherwise reported)
            if e.margin_mode is MarginMode.ISOLATED:
                self.positions[(e.account, e.symbol, e.position_side)].isolated_margin = e.balance_left
            else:
                self.wallets[(e.account, self.settlement[e.symbol], FUT)] = e.balance_left
        elif isinstance(e, FundingPayment):
            # the balance the payment came from or went to: the isolated margin of an isolated position, else
            # the futures wallet (the margin mode as the events told it)
            if self.margin_mode.get((e.account, e.symbol), MarginMode.CROSS) is MarginMode.ISOLATED:
                pos = self.positions.setdefault((e.account, e.symbol, e.position_side), Pos())
                before = pos.isolated_margin
                pos.isolated_margin = e.balance
            else:
                key = (e.account, self.settlement[e.symbol], FUT)
                before = self.wallets.get(key, 0)
                self.wallets[key] = e.balance
            if before + e.amount != e.balance:
                self.funding_breaks.append(e)
        elif isinstance(e, FundingSettled):
            # payers' round-ups less receivers' round-downs: the exchange's (mechanics.md §1.3)
            asset = self.settlement[e.symbol]
            self.fee_income[asset] = self.fee_income.get(asset, 0) + e.remainder
        elif isinstance(e, AccountConfigUpdated):
            self.position_mode[e.account] = e.position_mode
            self.fee_tier[e.account] = (e.maker_fee_ppm, e.taker_fee_ppm)
            if e.symbol:  # "" is account-wide (position mode, fee tier): no symbol settings, no flag
                self.leverage[(e.account, e.symbol)] = e.leverage
                self.margin_mode[(e.account, e.symbol)] = e.margin_mode
                self.auto_add[(e.account, e.symbol, e.position_side)] = e.auto_margin_addition


def differences(rebuilt: Rebuilt, c: Clearing, with_fund: bool, cross_prices: bool = True) -> list[str]:
    """Every way the rebuilt book differs from the engine's state (empty: equal). `cross_prices` False: cross
    positions' liquidation and bankruptcy prices are left out (see test_cross_prices_follow_events_across_adl)."""
    out: list[str] = []
    assets = sorted(set(rebuilt.settlement.values()))
    for acct in c.accounts.values():
        if acct.id == FUND_ACCOUNT and not with_fund:
            continue
        for asset in assets:
            for kind, ledger in ((FUT, acct.wallet), (SPOT, acct.spot)):
                got, want = rebuilt.wallets.get((acct.id, asset, kind), 0), ledger.get(asset, 0)
                if got != want:
                    out.append(f"account {acct.id} {kind} {asset}: rebuilt {got}, engine {want}")
        for (symbol, side), p in acct.positions.items():
            r = rebuilt.positions.get((acct.id, symbol, side), Pos())
            got = (r.qty, r.cost, r.realized_pnl, r.isolated_margin, r.liq, r.bankruptcy)
            want = (p.qty, p.cost, p.realized_pnl, p.isolated_margin, p.liq_ticks, p.bankruptcy_ticks)
            if not cross_prices and p.settings.margin_mode is MarginMode.CROSS:
                got, want = got[:4], want[:4]
            if got != want:
                out.append(f"account {acct.id} {symbol} {side}: rebuilt {got}, engine {want}")
            if rebuilt.auto_add.get((acct.id, symbol, side), False) != p.auto_add:
                out.append(f"account {acct.id} {symbol} {side} auto margin addition: engine {p.auto_add}")
        if acct.id == FUND_ACCOUNT:
            continue
        if rebuilt.position_mode.get(acct.id, PositionMode.ONE_WAY) is not acct.position_mode:
            out.append(f"account {acct.id} position mode")
        if rebuilt.fee_tier.get(acct.id, (c.maker_fee_ppm, c.taker_fee_ppm)) != (acct.maker_fee_ppm,
                                                                                  acct.taker_fee_ppm):
            out.append(f"account {acct.id} fee tier")
        for symbol, s in acct.settings.items():
            if rebuilt.leverage.get((acct.id, symbol), 20) != s.leverage:
                out.append(f"account {acct.id} {symbol} leverage")
            if rebuilt.margin_mode.get((acct.id, symbol), MarginMode.CROSS) is not s.margin_mode:
                out.append(f"account {acct.id} {symbol} margin mode")
    for key in rebuilt.positions:
        acct = c.accounts.get(key[0])
        if acct is None or (key[1], key[2]) not in acct.positions:
            out.append(f"rebuilt a position the engine does not have: {key}")
    for asset in assets:
        if rebuilt.fee_income.get(asset, 0) != c.treasury.fee_income.get(asset, 0):
            out.append(f"fee income {asset}: rebuilt {rebuilt.fee_income.get(asset, 0)}, "
                       f"engine {c.treasury.fee_income.get(asset, 0)}")
    return out


def random_session(full: bool, seed: int, ops: int) -> Session:
    rng = random.Random(seed)
    s = Session(full)
    s.prelude()
    for _ in range(ops):
        s.step(spread(rng.randrange(len(KINDS)), rng.randrange(2**32)))
    return s


def settlement_of(s: Session) -> dict[str, str]:
    return {sym: m.instrument.settlement_asset for sym, m in s.engine.markets.items()}


SEEDS = range(12)
OPS = 400


@pytest.mark.parametrize("full", [False, True], ids=["clearing", "full_exchange"])
@pytest.mark.parametrize("seed", SEEDS)
def test_rebuild_accounts_from_events(full: bool, seed: int) -> None:
    s = random_session(full, seed, OPS)
    assert sum(1 for e in s.events if type(e).__name__ == "Trade") >= 20  # the session did trade
    rebuilt = Rebuilt(settlement_of(s))
    for e in s.events:
        rebuilt.apply(e)
    # users' accounts: wallets, positions, settings, and the fee income
    assert differences(rebuilt, s.clearing, with_fund=False) == []
    assert rebuilt.balance_breaks == []


@pytest.mark.parametrize("seed", SEEDS)
def test_rebuild_insurance_fund_from_events(seed: int) -> None:
    """The full exchange: the fund's balance and positions too (every change of the fund is an event,
    mechanics.md Part 1 "Insurance fund"). These sessions have liquidations, ADL and fund take-overs; no
    ordinary trade in them loses more than its margin (that case: test_shortfall_in_a_trade_is_evented)."""
    s = random_session(True, seed, OPS)
    rebuilt = Rebuilt(settlement_of(s))
    for e in s.events:
        rebuilt.apply(e)
    assert differences(rebuilt, s.clearing, with_fund=True) == []


@pytest.mark.parametrize("full", [False, True], ids=["clearing", "full_exchange"])
def test_every_fill_explains_the_money_it_moved(full: bool) -> None:
    """Δ futures wallet + Δ isolated margin of each fill's PositionUpdated = realised PnL − fee, but for a loss
    beyond the margin that the insurance fund carried (a shortfall): that difference, and only that, is left
    unexplained by the fill's event."""
    fills = 0
    for seed in SEEDS:
        s = random_session(full, seed, OPS)
        rebuilt = Rebuilt(settlement_of(s))
        for e in s.events:
            rebuilt.apply(e)
        fills += sum(1 for e in s.events if isinstance(e, PositionUpdated) and e.reason in FILL_REASONS)
        assert all(diff > 0 for _, diff in rebuilt.unexplained_fills), rebuilt.unexplained_fills
        assert sum(diff for _, diff in rebuilt.unexplained_fills) == s.clearing.shortfalls
    assert fills >= 1000


# ---------------------------------------------------------------------------- sessions with funding and auto-add
# A funding time every 10 minutes of virtual time (the schedule is configuration; mechanics.md §1.3 divides the
# rate by 8/N for an N-hour interval): many funding times for few mark ticks, which are what costs wall time.
FUNDING_INTERVAL_MS = 600_000
EXTRA_KINDS = ["auto_add"] * 4 + ["index"] * 3 + ["clock"] * 5 + ["margin_mode"] * 3  # more isolated positions
FUNDING_KINDS = KINDS + EXTRA_KINDS
CLOCK_STEPS_MS = [1, 1_000, 5_000, 30_000, 120_000]


class FundingSession(Session):
    """test_margin_property's sessions with an index for each symbol (so the market-data model runs: marks
    every second, premium samples, funding), plus three kinds of operation: AdvanceClock (1 ms to two minutes,
    or to the next funding time, 1 ms before it or 1 ms after it), UpdateIndex (the session's price ± up to
    0.5 %), and SetAutoMarginAddition on or off for a position side."""

    def __init__(self, full: bool) -> None:
        schedule = FundingSchedule(interval_ms=FUNDING_INTERVAL_MS)
        self.engine = (build_exchange(funding_schedule=schedule) if full
                       else Engine(clearing=Clearing(), funding_schedule=schedule))
        assert self.engine.clearing is not None
        self.clearing = self.engine.clearing
        self.events = []
        self.commands = 0
        self.mark = dict(START)

    def prelude(self) -> list[list[Event]]:
        outs = super().prelude()
        outs += [self.apply(UpdateIndex(symbol=sym, sources=[("venue", 1, START[sym])])) for sym in SYMBOLS]
        return outs

    def command(self, op: Any) -> Any:
        kind_i, a, b, c = op
        k = kind_i % len(FUNDING_KINDS)
        if k < len(KINDS):
            return super().command((k, a, b, c))
        kind = FUNDING_KINDS[k]
        if kind in KINDS:
            return super().command((KINDS.index(kind), a, b, c))
        account = ACCOUNTS[a % len(ACCOUNTS)]
        symbol = SYMBOLS[b % 2]
        if kind == "auto_add":
            return SetAutoMarginAddition(account=account, symbol=symbol, enabled=c % 3 != 0,
                                         position_side=self._side(account, c >> 2))
        if kind == "index":
            price = self.mark[symbol] * (1_000_000 + (c % 1001) * 10 - 5_000) // 1_000_000
            return UpdateIndex(symbol=symbol, sources=[("venue", 1, price)])
        now = self.engine.clock.now
        choice = c % 8
        if choice < len(CLOCK_STEPS_MS):
            return AdvanceClock(ts=now + CLOCK_STEPS_MS[choice])
        nxt = now - now % FUNDING_INTERVAL_MS + FUNDING_INTERVAL_MS
        return AdvanceClock(ts=max(now, nxt + (choice - 6)))  # 1 ms before, at, or 1 ms after it


@functools.cache
def funding_session(full: bool, seed: int, ops: int) -> FundingSession:
    """One session per (engine, seed), built once for the tests below (they only read it)."""
    rng = random.Random(seed)
    s = FundingSession(full)
    s.prelude()
    for _ in range(ops):
        s.step(spread(rng.randrange(len(FUNDING_KINDS)), rng.randrange(2**32)))
    return s


FUNDING_SEEDS = range(8)
FUNDING_OPS = 400


@pytest.mark.parametrize("full", [False, True], ids=["clearing", "full_exchange"])
def test_rebuild_through_funding_and_auto_add(full: bool) -> None:
    """Sessions that cross funding times: the rebuilt accounts (FundingPayment's balance to the wallet or the
    isolated margin, PositionUpdated FUNDING_FEE for isolated positions, FundingSettled's remainder to fee
    income) and every position's auto-margin-addition flag (AccountConfigUpdated, one per position side) equal
    the engine's; the full exchange's insurance fund too. Cross liquidation and bankruptcy prices are left
    out on the clearing engine alone (no risk monitor: nothing refreshes them on a mark tick of another
    symbol); the full exchange publishes them (test_cross_prices_follow_events_across_adl)."""
    counts: Counter[str] = Counter()
    for seed in FUNDING_SEEDS:
        s = funding_session(full, seed, FUNDING_OPS)
        rebuilt = Rebuilt(settlement_of(s))
        for e in s.events:
            rebuilt.apply(e)
        assert differences(rebuilt, s.clearing, with_fund=full, cross_prices=not full) == [], seed
        assert rebuilt.balance_breaks == [] and rebuilt.fund_breaks == [], seed
        counts["fundings"] += sum(1 for e in s.events if isinstance(e, FundingSettled))
        counts["payments"] += sum(1 for e in s.events if isinstance(e, FundingPayment))
        counts["isolated_funding_updates"] += sum(1 for e in s.events if isinstance(e, PositionUpdated)
                                                  and e.reason == "FUNDING_FEE")
        counts["remainder"] += sum(e.remainder for e in s.events if isinstance(e, FundingSettled))
        counts["auto_add_on"] += sum(1 for e in s.events if isinstance(e, AccountConfigUpdated)
                                     and e.auto_margin_addition)
        counts["auto_add_positions"] += sum(1 for p in s.clearing.all_positions() if p.auto_add)
        counts["trades"] += sum(1 for e in s.events if type(e).__name__ == "Trade")
    # funding did happen, to cross and to isolated positions, with rounding left over; flags were set
    assert counts["fundings"] >= 40 and counts["payments"] >= 150, counts
    assert counts["isolated_funding_updates"] > 0 and counts["remainder"] > 0, counts
    assert counts["auto_add_on"] > 0 and counts["auto_add_positions"] > 0, counts
    assert counts["trades"] >= 100, counts


def test_cross_prices_follow_events_across_adl() -> None:
    """The full exchange's funding sessions, cross liquidation and bankruptcy prices included."""
    for seed in FUNDING_SEEDS:
        s = funding_session(True, seed, FUNDING_OPS)
        rebuilt = Rebuilt(settlement_of(s))
        for e in s.events:
            rebuilt.apply(e)
        assert differences(rebuilt, s.clearing, with_fund=True) == [], seed


def _funding_breaks(full: bool) -> list[tuple[FundingPayment, bool]]:
    """Every FundingPayment whose balance is not the previous balance plus its amount, over the funding
    sessions, with whether it is a leg of a hedge account's cross pair in its symbol (another leg of the same
    account and symbol funded at the same time)."""
    out = []
    for seed in FUNDING_SEEDS:
        s = funding_session(full, seed, FUNDING_OPS)
        rebuilt = Rebuilt(settlement_of(s))
        for e in s.events:
            rebuilt.apply(e)
        legs = Counter((e.account, e.symbol, e.funding_time) for e in s.events if isinstance(e, FundingPayment))
        for e in rebuilt.funding_breaks:
            paired = legs[(e.account, e.symbol, e.funding_time)] > 1
            out.append((e, paired and rebuilt.margin_mode.get((e.account, e.symbol)) is MarginMode.CROSS))
    return out


@pytest.mark.parametrize("full", [False, True], ids=["clearing", "full_exchange"])
def test_funding_payments_explain_their_balance_but_for_hedge_cross_pairs(full: bool) -> None:
    """Each FundingPayment's balance is the previous balance (as the events told it) plus its amount, but for
    the second leg of a hedge account's cross LONG and SHORT in one symbol (the bug of
    test_every_funding_payment_explains_its_balance)."""
    assert [e for e, hedge_cross_pair in _funding_breaks(full) if not hedge_cross_pair] == []


@pytest.mark.parametrize("full", [False, True], ids=["clearing", "full_exchange"])
def test_every_funding_payment_explains_its_balance(full: bool) -> None:
    assert _funding_breaks(full) == []
    for seed in FUNDING_SEEDS:
        c = funding_session(full, seed, FUNDING_OPS).clearing
        assert c.held(USDT) == c.treasury.deposits[USDT], seed


# ---------------------------------------------------------------------------- a loss beyond the margin in a trade
def _shortfall_in_a_trade() -> tuple[Any, list[Event]]:
    """Full exchange. Account 1: isolated 100x long 1 BTC @ 80,000 (margin 800, bankruptcy 79,200). With the
    mark still at 80,000 (no liquidation), it sells 1 BTC @ 79,000 into account 2's bid (inside the 5 % band):
    a loss of 1,000 on a margin of 800. The position loses its margin and no more; 200 + the fee is the
    insurance fund's (nobody owes money)."""
    engine = build_exchange()
    events: list[Event] = []

    def ok(cmd: Any) -> None:
        out = engine.apply(cmd)
        assert not [e for e in out if isinstance(e, OrderRejected)], out
        events.extend(out)

    ok(Deposit(account=1, asset=USDT, amount=2000 * 10**8))
    ok(Deposit(account=2, asset=USDT, amount=100_000 * 10**8))
    ok(SetMarkPrice(symbol="BTCUSDT", price=800_000))
    ok(SetMarginMode(account=1, symbol="BTCUSDT", margin_mode=MarginMode.ISOLATED))
    ok(SetLeverage(account=1, symbol="BTCUSDT", leverage=100))
    ok(PlaceOrder(account=2, symbol="BTCUSDT", side=Side.SELL, qty=1000, price=800_000))
    ok(PlaceOrder(account=1, symbol="BTCUSDT", side=Side.BUY, qty=1000, price=800_000))
    ok(PlaceOrder(account=2, symbol="BTCUSDT", side=Side.BUY, qty=1000, price=790_000))
    ok(PlaceOrder(account=1, symbol="BTCUSDT", side=Side.SELL, qty=1000, price=790_000))
    return engine, events


def test_shortfall_in_a_trade_is_bounded_by_the_margin() -> None:
    engine, _ = _shortfall_in_a_trade()
    c = engine.clearing
    pos = c.accounts[1].positions[("BTCUSDT", PositionSide.BOTH)]
    assert pos.qty == 0 and pos.isolated_margin == 0
    # the wallet lost the margin (800) and the taker fees (40 on the open, 39.5 on the close), no more
    assert c.accounts[1].wallet[USDT] == 112_050_000_000  # 2,000 − 800 − 40 − 39.5 = 1,120.5
    assert c.shortfalls == 200 * 10**8
    assert c.held(USDT) == c.treasury.deposits[USDT]


def test_shortfall_in_a_trade_is_evented() -> None:
    engine, events = _shortfall_in_a_trade()
    rebuilt = Rebuilt({"BTCUSDT": USDT, "ETHUSDT": USDT})
    for e in events:
        rebuilt.apply(e)
    assert rebuilt.wallets.get((FUND_ACCOUNT, USDT, FUT), 0) == engine.clearing.treasury.insurance[USDT]


# ---------------------------------------------------------------------------- the fund's balance in its events
def _adl_in_two_chunks() -> tuple[Any, list[Event]]:
    """Full exchange, empty fund. Account 1: isolated 50x long 1 BTC @ 80,000 bought from accounts 2 and 3 (0.5
    each): margin 1,600, bankruptcy 78,400, LP (80,000 − 1,600)/0.996 = 78,714.86. The mark falls to 78,700:
    no bid in the book, and the fund (balance 0) cannot take the position over, so it is deleveraged against
    accounts 2 and 3, 0.5 at a time, at 78,400:
      chunk 1: PnL 0.5 × −1,600 = −800 → margin 800; clearance fee 1 % × 39,200 = 392 → margin 408;
      chunk 2: PnL −800 → margin −392 → the fee is capped to 0 and the fund carries the 392 shortfall.
    The fund's events: CLEARANCE_FEE +392 (balance after it: 392), then SHORTFALL −392 (balance after: 0)."""
    engine = build_exchange()
    events: list[Event] = []

    def ok(cmd: Any) -> None:
        out = engine.apply(cmd)
        assert not [e for e in out if isinstance(e, OrderRejected)], out
        events.extend(out)

    for account in (1, 2, 3):
        ok(Deposit(account=account, asset=USDT, amount=5000 * 10**8))
    ok(SetMarkPrice(symbol="BTCUSDT", price=800_000))
    ok(SetMarginMode(account=1, symbol="BTCUSDT", margin_mode=MarginMode.ISOLATED))
    ok(SetLeverage(account=1, symbol="BTCUSDT", leverage=50))
    for seller in (2, 3):
        ok(PlaceOrder(account=seller, symbol="BTCUSDT", side=Side.SELL, qty=500, price=800_000))
        ok(PlaceOrder(account=1, symbol="BTCUSDT", side=Side.BUY, qty=500, price=800_000))
    pos = engine.clearing.accounts[1].positions[("BTCUSDT", PositionSide.BOTH)]
    assert (pos.isolated_margin, pos.bankruptcy_ticks, pos.liq_ticks) == (1600 * 10**8, 784_000, 787_149)
    ok(SetMarkPrice(symbol="BTCUSDT", price=787_000))
    assert pos.qty == 0
    return engine, events


def test_adl_in_two_chunks_conserves_and_rebuilds() -> None:
    engine, events = _adl_in_two_chunks()
    c = engine.clearing
    assert [(e.account, e.qty) for e in events if type(e).__name__ == "AdlExecuted"] == [(2, 500), (3, 500)]
    assert c.held(USDT) == c.treasury.deposits[USDT]
    rebuilt = Rebuilt({"BTCUSDT": USDT, "ETHUSDT": USDT})
    for e in events:
        rebuilt.apply(e)
    assert differences(rebuilt, c, with_fund=True) == []


def test_adl_at_the_bankruptcy_price_costs_the_fund_nothing() -> None:
    """ADL closes at the bankruptcy price, where no margin is left to pay a clearance fee from (the fee is
    capped by the margin left, mechanics.md step 4): chunk 1 leaves margin 800, chunk 2 takes it to 0, and the
    fund neither receives a fee nor carries a shortfall. (Charging the full 1 % on chunk 1 would take 392 of
    the margin chunk 2 needs and hand it back to the fund as a 392 shortfall: a round trip that reports a fee
    nobody paid.)"""
    _, events = _adl_in_two_chunks()
    fund = [(e.cause, e.delta, e.balance) for e in events if isinstance(e, InsuranceFundUpdated)]
    assert fund == []
    (record,) = [e for e in events if type(e).__name__ == "LiquidationRecorded"]
    assert (record.fee, record.insurance_fund_delta, record.qty_adl) == (0, 0, 1000)


def test_insurance_fund_events_balance_follows_delta() -> None:
    """Each InsuranceFundUpdated's balance is the previous one plus its delta, over a whole random session."""
    for seed in SEEDS:
        s = random_session(True, seed, OPS)
        fund = [e for e in s.events if isinstance(e, InsuranceFundUpdated)]
        balance = s.clearing.treasury.deposits[USDT] - sum(  # the fund's opening balance: deposits − accounts'
            e.delta for e in s.events if isinstance(e, BalanceUpdated) and e.reason.value in ("DEPOSIT", "WITHDRAW"))
        for e in fund:
            balance += e.delta
            assert e.balance == balance, e

