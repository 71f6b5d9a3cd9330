"""Funding through the whole exchange, property-tested: random accounts, books, indices and marks.

Hypothesis draws sessions for six accounts on BTCUSDT and ETHUSDT on the full
exchange (`exchange.assembly.build_exchange`: risk monitor, liquidations,
insurance fund, ADL), with a configurable N-hour funding schedule
(`FundingSchedule.every_hours`; 1 and 2 h here for speed, the 8 h default in
its own smaller test). Each account is one-way or hedge, cross or isolated
per symbol, at a random leverage (1x to 150x). Each funding interval:

1. a new index per symbol (`UpdateIndex`, one source: the index is its price), a step of up to ±1 %
   from the last (kept small so that the quotes below stay inside the 5 % price band around the mark);
2. trades between the accounts at the index ± up to 0.3 % (a resting sell,
   crossed by a buy; rejects are part of the game), then every user order
   left is cancelled;
3. a market maker (account 9, a deep pocket) quotes two levels a side around
   index × (1 + c), c up to ±1.2 %, with a depth that sometimes holds the
   impact notional and sometimes not: that is the premium;
4. the clock to T − 1 ms (premium samples, mark ticks, maybe liquidations),
   a random mark (`SetMarkPrice`, index ± 1.5 %), and the clock to T.

Checked after EVERY command: the invariants of tests/test_margin_property.py
(`check_invariants`: conservation to the atom, Σ long OI = Σ short OI, no
isolated margin negative and no user wallet but one backed by a cross position,
flat positions clean, isolated
liquidation and bankruptcy prices equal to a from-scratch recomputation). It
is given no events, so cross LPs are only counted when stale, never asserted:
an AdvanceClock moves every mark many times after the accounts last changed,
and the engine refreshes cross LPs on account changes, not on mark ticks (see
test_margin_property.test_cross_lp_is_refreshed_on_account_change_not_on_mark).

Checked at every FundingSettled, independently of exchange/funding.py:

* the rate, from the interval's published premium samples (mechanics.md
  §1.3): P̄ = Σ k·P_k / Σ k, F = [P̄ + clamp(I − P̄, ±0.05 %)] × N / 8, rounded
  half-even to 1e-8, then clamped to ±0.75 %; and each premium sample taken
  while the book was as the command found it, from the book's depth:
  P = [max(0, impact bid − index) − max(0, index − impact ask)] / index, the
  impact price being the average fill price of 200 USDT × 150 (IMR at the
  max leverage) = 30,000 USDT walked through the levels (a side too thin:
  its term is 0), rounded to the nearest 1e-12, ties to even. (The rounding of
  P and of F is the engine's documented choice, exchange/funding.py; the spec
  does not fix it.)
* the mark is the one set at T − 1 ms; every position open when the clock
  reached T is paid, and only those;
* each FundingPayment: exact = q × mark × F (in atoms); a payer pays
  ceil(exact), a receiver gets floor(|exact|) (mechanics.md Part 1 "Funding":
  payers round up, receivers down); a cross payer pays in full from its
  futures wallet, below zero if need be (its open position backs the debt;
  mechanics.md §3.1: the margin balance, wallet + UPNL, is what the
  liquidation acts on); an isolated payer (and the fund's account) pays at
  most its balance and the insurance fund pays the rest
  (Clearing.settle_funding: `paid` counts what was owed, the payment and
  `balance` what was applied); its `balance` is the balance after it;
* paid == received + remainder, remainder = paid − received in
  [0, number of positions), shortfall = Σ what payers could not pay, with an
  InsuranceFundUpdated FUNDING_SHORTFALL of −shortfall when > 0; the
  remainder is booked to fee income; every isolated position funded gets a
  PositionUpdated FUNDING_FEE with its new margin; no isolated margin below 0.

A hedge account's cross LONG and SHORT legs in one symbol share one wallet:
the main test keeps hedge cross accounts to one leg per symbol, and a variant
lets them hold both (see also
tests/test_funding_engine.py::test_hedge_cross_legs_both_funded_in_one_wallet).

Hand-built: a payer whose isolated margin cannot pay at the capped rate, the
insurance fund paying the rest (FUNDING_SHORTFALL), and the same with an
empty fund (the receivers are cut: `socialized`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from exchange.assembly import build_exchange
from exchange.clearing import FUND_ACCOUNT
from exchange.commands import (
    AdvanceClock,
    CancelAll,
    Deposit,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    SetMarkPrice,
    SetPositionMode,
    UpdateIndex,
)
from exchange.enums import MarginMode, PositionMode, PositionSide, Side
from exchange.events import (
    AdlQuantiles,
    BalanceUpdated,
    Event,
    FundingPayment,
    FundingSettled,
    IndexPriceUpdated,
    InsuranceFundUpdated,
    MarginCall,
    MarkPriceUpdated,
    OrderRejected,
    PositionUpdated,
    PremiumIndexSampled,
    Trade,
)
from exchange.funding import FundingSchedule
from exchange.testkit import EngineClock
from tests.test_margin_property import check_invariants

BTC, ETH, USDT = "BTCUSDT", "ETHUSDT", "USDT"
SYMBOLS = (BTC, ETH)
BOTH, LONG, SHORT = PositionSide.BOTH, PositionSide.LONG, PositionSide.SHORT
U = 10**8  # atoms per USDT (the engine's money atom, 1e-8 USDT)
HOUR = 3_600_000

# mechanics.md Part 1 "Tick sizes": BTCUSDT 0.10, ETHUSDT 0.01, step 0.001 for both. Prices are ticks and
# quantities lots, so one tick × one lot is 0.0001 USDT (BTC) = 10,000 atoms and 0.00001 USDT (ETH) = 1,000.
TICK = {BTC: Fraction("0.10"), ETH: Fraction("0.01")}
LOT = Fraction("0.001")
K = {s: int(TICK[s] * LOT * U) for s in SYMBOLS}
assert K == {BTC: 10_000, ETH: 1_000}

# Rates: FundingSettled.rate and PremiumIndexSampled.premium are integers in 1e-12 (exchange/events.py).
RATE_DEN = 10**12
INTEREST = RATE_DEN // 10_000  # I = 0.01 % per 8 h (mechanics.md §1.3)
CLAMP = 5 * RATE_DEN // 10_000  # the ±0.05 % band of clamp(I − P̄)
CAP = 75 * RATE_DEN // 10_000  # the default per-symbol cap, ±0.75 % (mechanics.md Part 1 "Funding")
RATE_QUANTUM = RATE_DEN // 10**8  # F is rounded half-even to 1e-8 (exchange/funding.py: Binance's 8 decimals)
# Impact margin notional: 200 USDT / IMR at the max leverage; both symbols' bracket 1 is 150x (mechanics.md
# Part 1, "Brackets": BTCUSDT table in §2, ETHUSDT list in Part 1), so 200 × 150 = 30,000 USDT.
IMPACT_NOTIONAL = Fraction(200 * 150)

START_INDEX = {BTC: 800_000, ETH: 300_000}  # 80,000.0 and 3,000.00
USERS = (1, 2, 3, 4, 5, 6)
MAKER = 9
OPENING_FUND = 1_000_000 * U
LEVERAGES = [1, 2, 5, 10, 20, 20, 50, 125, 150]
DEPOSITS = [2_000, 5_000, 20_000]  # USDT
QTY = {BTC: [5, 10, 20, 50, 100, 200], ETH: [100, 300, 1000, 3000]}  # lots
QUOTE_QTY = {BTC: [100, 200, 300], ETH: [3000, 5000, 8000]}  # a level; 0.375 BTC or 10 ETH = 30,000 USDT


# ---------------------------------------------------------------------------- independent formulas
def impact_price(depth: list[tuple[int, int]], symbol: str) -> Fraction | None:
    """Average fill price (USDT) of a market order for IMPACT_NOTIONAL walked through `depth` (best first):
    each level gives min(its notional, what is left), the last in part; None if the side holds less."""
    left = IMPACT_NOTIONAL
    base = Fraction(0)  # base asset filled
    for price_ticks, lots in depth:
        price = price_ticks * TICK[symbol]
        take = min(price * lots * LOT, left)
        base += take / price
        left -= take
        if not left:
            return IMPACT_NOTIONAL / base
    return None


def expected_premium(index_ticks: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]],
                     symbol: str) -> int:
    """P = [max(0, ImpactBid − Index) − max(0, Index − ImpactAsk)] / Index (mechanics.md §1.3), in 1e-12."""
    index = index_ticks * TICK[symbol]
    ib, ia = impact_price(bids, symbol), impact_price(asks, symbol)
    up = max(Fraction(0), ib - index) if ib is not None else Fraction(0)
    down = max(Fraction(0), index - ia) if ia is not None else Fraction(0)
    return round((up - down) / index * RATE_DEN)  # Fraction rounds to the nearest, ties to even


def expected_rate(premiums: list[int], hours: int) -> int:
    """F = [P̄ + clamp(I − P̄, −0.05 %, +0.05 %)] / (8 / N), P̄ = Σ k·P_k / Σ k (k = 1 for the first sample of the
    interval), rounded half-even to 1e-8, then clamped to the ±0.75 % cap (mechanics.md §1.3)."""
    n = len(premiums)
    avg = Fraction(sum(k * p for k, p in enumerate(premiums, 1)), n * (n + 1) // 2) if n else Fraction(0)
    f8 = avg + min(max(INTEREST - avg, Fraction(-CLAMP)), Fraction(CLAMP))
    f = f8 * hours / 8
    rounded = round(f / RATE_QUANTUM) * RATE_QUANTUM
    return min(max(rounded, -CAP), CAP)


def owed(qty: int, mark: int, rate: int, symbol: str) -> Fraction:
    """The exact funding a position owes, in atoms (< 0: it receives): size × mark × F, longs pay when F > 0.
    q lots × mark ticks × (atoms per tick·lot) × rate / 1e12."""
    return Fraction(qty * mark * K[symbol] * rate, RATE_DEN)


# ---------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class AccountPlan:
    hedge: bool
    isolated: tuple[bool, bool]  # per symbol
    leverage: tuple[int, int]
    deposit: int  # USDT


@dataclass(frozen=True)
class TradePlan:
    symbol: int
    buyer: int
    seller: int
    qty: int  # index into QTY
    offset_ppm: int  # the price: index × (1 + offset)
    legs: int  # bit 0: the buyer's hedge leg is LONG, bit 1: the seller's is LONG


@dataclass(frozen=True)
class QuotePlan:
    center_ppm: int
    half_spread_ppm: int
    qty1: int
    qty2: int


@dataclass(frozen=True)
class IntervalPlan:
    index_ppm: tuple[int, int]  # the index moves by this from the last interval's
    trades: list[TradePlan]
    quotes: tuple[QuotePlan, QuotePlan]
    mark_ppm: tuple[int, int]


class Bits:
    """Parameters from one drawn integer, through a generator seeded with it (test_margin_property's `spread`
    does the same with a hash): hypothesis favours small and boundary values, which would make every account
    and every interval alike; a failing plan is printed as its integers, which replay it."""

    def __init__(self, entropy: int) -> None:
        self.rng = random.Random(entropy)

    def take(self, n: int) -> int:
        """A value in [0, n)."""
        return self.rng.randrange(n)

    def between(self, lo: int, hi: int) -> int:
        return lo + self.take(hi - lo + 1)


def account_plan(entropy: int) -> AccountPlan:
    b = Bits(entropy)
    return AccountPlan(b.take(3) == 0, (b.take(2) == 0, b.take(2) == 0),
                       (LEVERAGES[b.take(len(LEVERAGES))], LEVERAGES[b.take(len(LEVERAGES))]),
                       DEPOSITS[b.take(len(DEPOSITS))])


def trade_plan(entropy: int) -> TradePlan:
    b = Bits(entropy)
    buyer = b.take(len(USERS))
    seller = (buyer + 1 + b.take(len(USERS) - 1)) % len(USERS)  # never the buyer
    return TradePlan(b.take(2), USERS[buyer], USERS[seller], b.take(6), b.between(-3_000, 3_000), b.take(4))


def quote_plan(entropy: int) -> QuotePlan:
    b = Bits(entropy)
    return QuotePlan(b.between(-12_000, 12_000), b.between(200, 3_000), b.take(3), b.take(3))


def interval_plan(entropy: int, trades: list[int]) -> IntervalPlan:
    b = Bits(entropy)
    return IntervalPlan((b.between(-10_000, 10_000), b.between(-10_000, 10_000)),
                        [trade_plan(t) for t in trades], (quote_plan(b.take(2**20)), quote_plan(b.take(2**20))),
                        (b.between(-15_000, 15_000), b.between(-15_000, 15_000)))


ENTROPY = st.integers(0, 2**32)
ACCOUNT_PLANS = st.builds(account_plan, ENTROPY)
INTERVAL_PLANS = st.builds(interval_plan, ENTROPY, st.lists(ENTROPY, min_size=4, max_size=12))


def scaled(ticks: int, ppm: int) -> int:
    return ticks * (1_000_000 + ppm) // 1_000_000


# ---------------------------------------------------------------------------- the run
class FundingRun:
    """One engine fed a plan; every command checked as it goes."""

    def __init__(self, hours: int, accounts: dict[int, AccountPlan], both_legs: bool,
                 fund: int = OPENING_FUND) -> None:
        self.engine = build_exchange(funding_schedule=FundingSchedule.every_hours(hours),
                                     insurance_fund={USDT: fund} if fund else None)
        self.c = self.engine.clearing
        self.view = SimpleNamespace(clearing=self.c)  # what check_invariants reads
        self.hours = hours
        self.accounts = accounts
        self.both_legs = both_legs
        self.index = dict(START_INDEX)
        self.mark_set: dict[str, int] = {}
        self.premiums: dict[str, list[int]] = {s: [] for s in SYMBOLS}
        self.stats: Counter[str] = Counter()

    # -------------------------------------------------------------- commands
    def apply(self, cmd: Any) -> list[Event]:
        now = self.engine.clock.now
        books = {s: (self.engine.markets[s].book.depth(Side.BUY), self.engine.markets[s].book.depth(Side.SELL))
                 for s in SYMBOLS}
        snap = self.snapshot()
        fee_before = self.c.treasury.fee_income.get(USDT, 0)
        out = self.engine.apply(cmd)
        self.stats["commands"] += 1
        self.stats["liquidations"] += sum(1 for e in out if type(e).__name__ == "LiquidationRecorded")
        self.check_market_data(out, books)
        remainders = self.check_funding(out, snap, now)
        if not any(isinstance(e, Trade) for e in out):  # no fee from a fill in this command: only the remainders
            assert self.c.treasury.fee_income.get(USDT, 0) - fee_before == remainders
        check_invariants(self.view, [], self.stats)  # type: ignore[arg-type]
        assert self.c.treasury.insurance.get(USDT, 0) >= 0
        return out

    def leg(self, account: int, symbol: int, bit: int, buying: bool, qty: int) -> PositionSide:
        """The position side of an order: BOTH one-way; in hedge mode the drawn leg, or the opening leg where the
        drawn one would close more than that leg holds (which is refused); a cross hedge account keeps to one
        leg per symbol unless `both_legs`."""
        plan = self.accounts.get(account)
        if plan is None or not plan.hedge:
            return BOTH
        if not plan.isolated[symbol] and not self.both_legs:
            return LONG if (account + symbol) % 2 else SHORT  # one cross leg per symbol (see the module doc)
        side = LONG if bit else SHORT
        pos = self.c.accounts[account].positions.get((SYMBOLS[symbol], side))
        if (side is LONG) != buying and (pos is None or abs(pos.qty) < qty):
            side = LONG if buying else SHORT
        return side

    def prelude(self) -> None:
        self.apply(Deposit(account=MAKER, asset=USDT, amount=100_000_000 * U))
        for a, plan in self.accounts.items():
            self.apply(Deposit(account=a, asset=USDT, amount=plan.deposit * U))
            if plan.hedge:
                self.apply(SetPositionMode(account=a, position_mode=PositionMode.HEDGE))
            for i, s in enumerate(SYMBOLS):
                if plan.isolated[i]:
                    self.apply(SetMarginMode(account=a, symbol=s, margin_mode=MarginMode.ISOLATED))
                self.apply(SetLeverage(account=a, symbol=s, leverage=plan.leverage[i]))

    def trade(self, t: TradePlan) -> None:
        if t.buyer == t.seller:
            return
        s = SYMBOLS[t.symbol]
        price = scaled(self.index[s], t.offset_ppm)
        qty = QTY[s][t.qty % len(QTY[s])]
        self.apply(PlaceOrder(account=t.seller, symbol=s, side=Side.SELL, qty=qty, price=price,
                              position_side=self.leg(t.seller, t.symbol, t.legs & 2, False, qty)))
        out = self.apply(PlaceOrder(account=t.buyer, symbol=s, side=Side.BUY, qty=qty, price=price,
                                    position_side=self.leg(t.buyer, t.symbol, t.legs & 1, True, qty)))
        self.stats["trades"] += sum(1 for e in out if isinstance(e, Trade))

    def interval(self, n: int, iv: IntervalPlan, forced: list[TradePlan]) -> None:
        """The n-th funding interval, from (n − 1) × N h to T = n × N h."""
        end = n * self.hours * HOUR
        for i, s in enumerate(SYMBOLS):
            self.index[s] = scaled(self.index[s], iv.index_ppm[i])  # a walk: ±1 % an interval
            self.apply(UpdateIndex(symbol=s, sources=[("venue", 1, self.index[s])]))
            assert self.engine.markets[s].data.index_price == self.index[s]  # one source: the index is its price
            self.apply(CancelAll(account=MAKER, symbol=s))
        for t in forced + iv.trades:
            self.trade(t)
        for a in self.accounts:
            for s in SYMBOLS:
                self.apply(CancelAll(account=a, symbol=s))
        for i, s in enumerate(SYMBOLS):
            q = iv.quotes[i]
            bid = scaled(self.index[s], q.center_ppm - q.half_spread_ppm)
            ask = scaled(self.index[s], q.center_ppm + q.half_spread_ppm)
            levels = [(Side.BUY, bid, q.qty1), (Side.BUY, scaled(bid, -1_000), q.qty2),
                      (Side.SELL, ask, q.qty1), (Side.SELL, scaled(ask, 1_000), q.qty2)]
            for side, price, qi in levels:
                out = self.apply(PlaceOrder(account=MAKER, symbol=s, side=side, qty=QUOTE_QTY[s][qi], price=price))
                assert not [e for e in out if isinstance(e, OrderRejected)], out
        self.apply(AdvanceClock(ts=end - 1))
        for i, s in enumerate(SYMBOLS):
            self.mark_set[s] = scaled(self.index[s], iv.mark_ppm[i])
            self.apply(SetMarkPrice(symbol=s, price=self.mark_set[s]))
        out = self.apply(AdvanceClock(ts=end))
        assert sorted(e.symbol for e in out if isinstance(e, FundingSettled)) == sorted(SYMBOLS)

    # -------------------------------------------------------------- state
    def snapshot(self) -> dict[str, Any]:
        """Open positions per symbol ((account, side) -> (qty, isolated)) and the balances funding pays from."""
        positions: dict[str, dict[tuple[int, PositionSide], tuple[int, bool]]] = {s: {} for s in SYMBOLS}
        balances: dict[tuple, int] = {}
        for acct in self.c.accounts.values():
            balances[("wallet", acct.id)] = acct.wallet.get(USDT, 0)
            for (symbol, side), p in acct.positions.items():
                if p.qty:
                    isolated = p.settings.margin_mode is MarginMode.ISOLATED
                    positions[symbol][(acct.id, side)] = (p.qty, isolated)
                    balances[("isolated", acct.id, symbol, side)] = p.isolated_margin
        return {"positions": positions, "balances": balances}

    # -------------------------------------------------------------- checks
    def check_market_data(self, out: list[Event], books: dict[str, tuple[list, list]]) -> None:
        """Premium samples taken before anything in this command touched a book are P of the book as it was."""
        neutral = (PremiumIndexSampled, MarkPriceUpdated, IndexPriceUpdated, FundingSettled, FundingPayment,
                   PositionUpdated, BalanceUpdated, InsuranceFundUpdated, AdlQuantiles, MarginCall)
        want = {s: expected_premium(self.index[s], *books[s], s) for s in SYMBOLS}
        pristine = True
        for e in out:
            if isinstance(e, PremiumIndexSampled):
                self.premiums[e.symbol].append(e.premium)
                if pristine:
                    assert e.premium == want[e.symbol], (e, want[e.symbol])
                    self.stats["premium_samples_checked"] += 1
                    self.stats[f"premium_{'pos' if e.premium > 0 else 'neg' if e.premium < 0 else 'zero'}"] += 1
            elif not isinstance(e, neutral):
                pristine = False

    def check_funding(self, out: list[Event], snap: dict[str, Any], before: int) -> int:
        """Every FundingSettled of the command and its payments; returns Σ remainders."""
        balances = dict(snap["balances"])
        remainders = 0
        for i, e in enumerate(out):
            if not isinstance(e, FundingSettled):
                continue
            s = e.symbol
            # the runner reaches each funding time from T − 1 ms: nothing but the sample at T comes before it
            assert before == e.funding_time - 1 and e.funding_time % (self.hours * HOUR) == 0
            assert e.mark_price == self.mark_set[s]
            rate = expected_rate(self.premiums[s], self.hours)
            self.premiums[s] = []
            assert e.rate == rate, (e, rate)
            mark = self.mark_set[s]
            payments = {(p.account, p.position_side): p for p in out[i + 1:]
                        if isinstance(p, FundingPayment) and p.symbol == s and p.funding_time == e.funding_time}
            expected = snap["positions"][s]
            assert set(payments) == set(expected)
            assert e.positions == len(expected)
            paid = received = shortfall = 0
            for (account, side), (qty, isolated) in sorted(expected.items(), key=lambda kv: (kv[0][0],
                                                                                                kv[0][1].value)):
                key = ("isolated", account, s, side) if isolated else ("wallet", account)
                balance = balances[key]
                exact = owed(qty, mark, rate, s)
                if exact > 0:  # pays: rounded up; a cross wallet in full (its position backs a debt: it may go
                    # below zero), an isolated margin or the fund's wallet at most what it has; the fund pays the rest
                    due = math.ceil(exact)
                    pays = due if not isolated and account != FUND_ACCOUNT else min(due, max(balance, 0))
                    paid += due
                    shortfall += due - pays
                    amount = -pays
                    self.stats["payers"] += 1
                else:  # receives: rounded down
                    amount = math.floor(-exact)
                    received += amount
                    self.stats["receivers"] += 1
                balances[key] = balance + amount
                p = payments[(account, side)]
                assert (p.qty, p.amount, p.balance) == (qty, amount, balances[key]), (p, amount, balances[key])
                assert p.balance >= 0 or not isolated
                self.stats["payments"] += 1
                self.stats["isolated_payments" if isolated else "cross_payments"] += 1
                if side is not BOTH:
                    self.stats["hedge_payments"] += 1
                if isolated:
                    updates = [x for x in out[i + 1:] if isinstance(x, PositionUpdated) and x.reason == "FUNDING_FEE"
                               and (x.account, x.symbol, x.position_side) == (account, s, side)]
                    assert [x.isolated_margin for x in updates[:1]] == [balances[key]], updates
            assert (e.paid, e.received, e.shortfall) == (paid, received, shortfall), (e, paid, received, shortfall)
            assert e.remainder == paid - received and e.paid == e.received + e.remainder
            assert 0 <= e.remainder < max(len(expected), 1)
            if shortfall:
                self.stats["shortfalls"] += 1
                assert any(isinstance(x, InsuranceFundUpdated) and x.cause == "FUNDING_SHORTFALL"
                           and x.delta == -shortfall and x.symbol == s for x in out[i + 1:])
            remainders += e.remainder
            self.stats["fundings"] += 1
            self.stats["remainder_atoms"] += e.remainder
            self.stats[f"rate_{'pos' if rate > 0 else 'neg' if rate < 0 else 'zero'}"] += 1
            self.stats["capped"] += abs(rate) == CAP
        return remainders


def run_plan(hours: int, accounts: list[AccountPlan], intervals: list[IntervalPlan], both_legs: bool,
             stats: Counter[str]) -> None:
    plans = dict(zip(USERS, accounts, strict=True))
    forced: list[TradePlan] = []
    if both_legs:
        # account 1: hedge, cross in BTCUSDT, LONG 0.02 bought from and SHORT 0.02 sold to the market maker
        a1 = plans[1]
        plans[1] = AccountPlan(True, (False, a1.isolated[1]), a1.leverage, max(a1.deposit, 5_000))
        forced = [TradePlan(0, 1, MAKER, 2, 0, 0b01), TradePlan(0, MAKER, 1, 2, 0, 0b00)]
    run = FundingRun(hours, plans, both_legs)
    run.prelude()
    for n, iv in enumerate(intervals, 1):
        run.interval(n, iv, forced if n == 1 else [])
    stats.update(run.stats)


def session_test(hours_options: list[int], max_examples: int, min_intervals: int, max_intervals: int,
                 both_legs: bool, stats: Counter[str]) -> None:
    # No shrinking: a session takes about a second, and shrinking one took more than five minutes; a failing
    # session is reported as it was drawn (derandomized, so it is the same on every run).
    phases = [Phase.explicit, Phase.generate]

    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None, phases=phases,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.sampled_from(hours_options), st.lists(ACCOUNT_PLANS, min_size=len(USERS), max_size=len(USERS)),
           st.lists(INTERVAL_PLANS, min_size=min_intervals, max_size=max_intervals))
    def run(hours: int, accounts: list[AccountPlan], intervals: list[IntervalPlan]) -> None:
        run_plan(hours, accounts, intervals, both_legs, stats)

    run()


def test_funding_invariants_n_hour_schedule() -> None:
    """1 h and 2 h funding intervals (the rate divided by 8/N), three or four funding times per session."""
    stats: Counter[str] = Counter()
    session_test([1, 2], max_examples=12, min_intervals=3, max_intervals=4, both_legs=False, stats=stats)
    # the sessions did what they are for
    assert stats["fundings"] >= 12 * 3 * 2, stats
    assert stats["payments"] >= 300, stats
    assert stats["isolated_payments"] >= 30 and stats["cross_payments"] >= 30, stats
    assert stats["hedge_payments"] >= 20, stats
    assert stats["payers"] >= 100 and stats["receivers"] >= 100, stats
    assert stats["rate_pos"] >= 5 and stats["rate_neg"] >= 5, stats
    assert stats["remainder_atoms"] > 0, stats  # some payments were not whole atoms
    assert stats["premium_pos"] >= 100 and stats["premium_neg"] >= 100, stats
    assert stats["premium_samples_checked"] >= 5_000, stats
    assert stats["trades"] >= 200, stats
    assert stats["liquidations"] > 0, stats  # conservation was checked across liquidations too


def test_funding_invariants_default_8_hour_schedule() -> None:
    """The Binance default, 8 h (slower: 28,800 mark ticks per symbol per interval), where the rate can reach the
    ±0.75 % cap (P̄ beyond ±0.8 %)."""
    stats: Counter[str] = Counter()
    session_test([8], max_examples=2, min_intervals=2, max_intervals=2, both_legs=False, stats=stats)
    assert stats["fundings"] == 2 * 2 * 2, stats
    assert stats["payments"] >= 20, stats


def test_funding_invariants_hedge_cross_both_legs() -> None:
    """The same sessions, hedge cross accounts free to hold both legs (account 1 always does)."""
    session_test([1], max_examples=3, min_intervals=2, max_intervals=2, both_legs=True, stats=Counter())


# ---------------------------------------------------------------------------- a payer that cannot pay
def _isolated_payer_at_the_cap(fund_usdt: int) -> tuple[Any, list[Event], dict[str, int]]:
    """Default 8 h schedule; only BTCUSDT has an index (80,000.0).

    Account 1: isolated 150x long 0.1 BTC @ 80,000 bought from account 2 (cross short). Its margin is the
    initial margin, 8,000 / 150 = 53.333… USDT, rounded up to the atom (owed to the position): 53.33333334.
    Account 3 quotes a bid of 0.4 BTC at 80,800.0 and an ask of 0.4 BTC at 80,900.0 for the whole interval:
    each side holds more than the 30,000 USDT impact notional, so the impact bid is 80,800 and the impact
    ask 80,900: P = (80,800 − 80,000) / 80,000 = 1 % in every sample, P̄ = 1 %,
    F = 1 % + clamp(0.01 % − 1 %, ±0.05 %) = 0.95 %, capped to 0.75 %.
    The mark stays 80,000 (Price1 = the index, the last funding rate being 0; last price 80,000; Price2 above
    both: the median is 80,000). At 8 h the long owes 0.1 × 80,000 × 0.75 % = 60 USDT exactly; it has
    53.33333334: it pays those, and the insurance fund pays the 6.66666666 left; the short receives 60.
    """
    engine = build_exchange(insurance_fund={USDT: fund_usdt * U} if fund_usdt else None)
    events: list[Event] = []

    def ok(cmd: Any) -> list[Event]:
        out = engine.apply(cmd)
        assert not [e for e in out if isinstance(e, OrderRejected)], out
        events.extend(out)
        return out

    for account in (1, 2, 3):
        ok(Deposit(account=account, asset=USDT, amount=100_000 * U))
    ok(UpdateIndex(symbol=BTC, sources=[("venue", 1, 800_000)]))
    ok(SetMarginMode(account=1, symbol=BTC, margin_mode=MarginMode.ISOLATED))
    ok(SetLeverage(account=1, symbol=BTC, leverage=150))
    ok(PlaceOrder(account=2, symbol=BTC, side=Side.SELL, qty=100, price=800_000))
    ok(PlaceOrder(account=1, symbol=BTC, side=Side.BUY, qty=100, price=800_000))
    assert engine.clearing.accounts[1].positions[(BTC, BOTH)].isolated_margin == 5_333_333_334
    ok(PlaceOrder(account=3, symbol=BTC, side=Side.BUY, qty=400, price=808_000))
    ok(PlaceOrder(account=3, symbol=BTC, side=Side.SELL, qty=400, price=809_000))
    wallets = {a: engine.clearing.accounts[a].wallet[USDT] for a in (1, 2)}
    ok(AdvanceClock(ts=8 * HOUR))
    return engine, events, wallets


def test_a_payer_whose_isolated_margin_cannot_pay_is_paid_for_by_the_insurance_fund() -> None:
    engine, events, wallets = _isolated_payer_at_the_cap(1_000)
    (settled,) = [e for e in events if isinstance(e, FundingSettled)]
    assert settled.rate == CAP  # 0.75 %
    assert settled.mark_price == 800_000
    # paid: what the payer owed (60 USDT); received 60; nothing left over (60 is a whole number of atoms)
    assert (settled.paid, settled.received, settled.remainder) == (60 * U, 60 * U, 0)
    assert settled.shortfall == 60 * U - 5_333_333_334 == 666_666_666
    pay = {e.account: (e.amount, e.balance) for e in events if isinstance(e, FundingPayment)}
    # the long paid its whole margin and is left with 0; the short's wallet got the full 60
    assert pay == {1: (-5_333_333_334, 0), 2: (60 * U, wallets[2] + 60 * U)}
    (fund,) = [e for e in events if isinstance(e, InsuranceFundUpdated)]
    assert (fund.cause, fund.delta, fund.balance, fund.symbol) == ("FUNDING_SHORTFALL", -666_666_666,
                                                                   1_000 * U - 666_666_666, BTC)
    (update,) = [e for e in events if isinstance(e, PositionUpdated) and e.reason == "FUNDING_FEE"]
    assert (update.account, update.isolated_margin, update.wallet_balance) == (1, 0, wallets[1])
    c = engine.clearing
    assert c.held(USDT) == c.treasury.deposits[USDT]
    assert c.treasury.insurance[USDT] == 1_000 * U - 666_666_666


def test_a_funding_shortfall_never_makes_the_insurance_fund_negative() -> None:
    """An empty fund carries nothing (mechanics.md Part 1 "Insurance fund": never negative): the 6.66666666 the
    payer could not pay is cut from the receiver (the only one: all of it), who gets 60 − 6.66666666 =
    53.33333334, exactly what the payer paid; paid = received + remainder + socialized."""
    engine, events, wallets = _isolated_payer_at_the_cap(0)
    c = engine.clearing
    assert c.held(USDT) == c.treasury.deposits[USDT]
    assert [e.balance for e in events if isinstance(e, InsuranceFundUpdated) and e.balance < 0] == []
    assert c.treasury.insurance.get(USDT, 0) >= 0
    (settled,) = [e for e in events if isinstance(e, FundingSettled)]
    assert (settled.paid, settled.shortfall, settled.socialized) == (60 * U, 0, 666_666_666)
    assert (settled.received, settled.remainder) == (5_333_333_334, 0)
    assert settled.paid == settled.received + settled.remainder + settled.socialized
    pay = {e.account: (e.amount, e.balance) for e in events if isinstance(e, FundingPayment)}
    assert pay == {1: (-5_333_333_334, 0), 2: (5_333_333_334, wallets[2] + 5_333_333_334)}
    assert not [e for e in events if isinstance(e, InsuranceFundUpdated) and e.cause == "FUNDING_SHORTFALL"]


def test_testkit_clock_reaches_the_funding_time_of_the_run() -> None:
    """The runner's arithmetic of funding times agrees with the test kit's clock (N h from the epoch)."""
    run = FundingRun(2, {}, both_legs=False)
    run.apply(UpdateIndex(symbol=BTC, sources=[("venue", 1, 800_000)]))
    assert EngineClock(run.engine).next_scheduled("funding") == 2 * HOUR
