"""The run summary: what a run did, in a few figures, from its events and the engine's final state.

`RunSummary` is fed every event of a run, one at a time (`add`), or a step's
list at once (`add_events`, `on_step` for `scenario_run.drive`). It must keep
up with millions of events, so it dispatches on the event's exact type
through a dict and keeps only counters and a few running figures; nothing
is stored per event. `finish(engine, wall_seconds, chart_path)` then reads
the engine's final state and returns the summary as a dict (money as decimal
strings of the settlement asset, counts as ints); `render_table` prints it.

Figures (`asset`, USDT by default, is the settlement asset reported):

* ``events``: every event fed. ``trades``: `Trade` events (fills in the book;
  fund take-overs and ADL closes are not trades). ``liquidations_full`` /
  ``liquidations_partial``: `LiquidationRecorded` by its `partial` flag (one
  record per liquidated position and step). ``margin_calls``: `MarginCall`.
  ``adl_events``: `AdlExecuted` (one per deleveraged counterparty).
  ``orders_rejected``: `OrderRejected`.
* ``insurance_fund_start``: the fund's balance before the first event (given
  to the constructor; `for_engine` reads it). ``insurance_fund_min``: the
  lowest balance the fund's events showed, the start and end included (see
  `FundBalance`). ``insurance_fund_end``: the fund's balance in the engine at
  the end.
* ``deposits_total``: everything that ever came in, the fund's opening
  balance included: ``treasury.deposits[asset]`` (which the clearing keeps as
  Σ deposits − Σ withdrawals, opening balance included) plus
  ``withdrawals_total``, the Σ of the `BalanceUpdated` events of reason
  WITHDRAW (their −delta) that were fed. So it is exact when the summary saw
  every event since the engine was built; a summary started later misses the
  withdrawals before it (and counts their deposits anyway).
* ``balances_total``: every wallet (futures and spot, the fund's included),
  every isolated margin, fee income, and the unrealised PnL of every open
  position at its symbol's final mark (the last price where there is no mark).
  It equals ``deposits_total − withdrawals_total`` to the atom
  (``conserved``), see `balances_total`.
* ``funding_paid`` / ``funding_received`` / ``funding_remainder`` /
  ``funding_shortfall`` / ``funding_socialized``: Σ over `FundingSettled`;
  paid = received + remainder + socialized to the atom (the remainder goes to
  fee income; the shortfall is the part of what payers could not pay that the
  fund carried, the socialized part what it could not carry either, cut from
  the receivers: 0 while the fund has money).
* ``virtual_seconds``: virtual time from the first event to the last.
  ``wall_seconds``, ``events_per_sec``: as given / measured by the caller.
  ``chart``: the chart's path as given (None: none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.clearing import FUND_ACCOUNT
from exchange.enums import BalanceReason, WalletKind
from exchange.events import (
    AdlExecuted,
    BalanceUpdated,
    Event,
    FundingPayment,
    FundingSettled,
    InsuranceFundUpdated,
    LiquidationRecorded,
    MarginCall,
    OrderRejected,
    PositionUpdated,
    Trade,
)
from exchange.instrument import USDT_ATOM
from exchange.margin import unrealized_pnl
from exchange.units import from_units

if TYPE_CHECKING:
    from exchange.engine import Engine

_WITHDRAW = BalanceReason.WITHDRAW
_FUTURES = WalletKind.FUTURES


def fund_balance(engine: Engine, asset: str = "USDT") -> int:
    """The insurance fund's balance in `asset` now (atoms): the fund account's futures wallet."""
    clearing = engine.clearing
    if clearing is None:
        return 0
    return clearing.treasury.insurance.get(asset, 0)


def foreign_symbols(engine: Engine, asset: str) -> frozenset[str]:
    """The engine's symbols settled in another asset than `asset` (their money figures are not `asset`'s)."""
    return frozenset(s for s, m in engine.markets.items() if m.instrument.settlement_asset != asset)


class FundBalance:
    """The insurance fund's balance in one asset, followed from events alone.

    Every change of the fund's wallet is visible in an event that carries the
    balance after it, except one: a funding shortfall, which the fund pays
    after the `FundingPayment` events of its settlement:

    * `InsuranceFundUpdated.balance` (fees, leftover margin, shortfalls of a
      liquidation, offload PnL);
    * `PositionUpdated.wallet_balance` of the fund's account (its take-over,
      offload and ADL fills);
    * `BalanceUpdated.balance` of the fund's futures wallet (a deposit to it);
    * `FundingPayment.balance` of the fund's own position, less the pending
      shortfall of that settlement, and `FundingSettled.shortfall`.

    `low` is the lowest balance seen. The caller routes the events (only the
    fund account's `PositionUpdated`/`FundingPayment`/`BalanceUpdated` matter).
    """

    __slots__ = ("asset", "balance", "foreign", "low", "pending_shortfall")

    def __init__(self, start: int, asset: str = "USDT", foreign: frozenset[str] = frozenset()) -> None:
        self.asset = asset
        self.balance = start
        self.low = start
        self.foreign = foreign  # symbols settled in another asset
        self.pending_shortfall = 0

    def set(self, balance: int) -> None:
        self.balance = balance
        if balance < self.low:
            self.low = balance

    def fund_updated(self, ev: InsuranceFundUpdated) -> bool:
        if ev.asset != self.asset:
            return False
        self.set(ev.balance)
        return True

    def position(self, ev: PositionUpdated) -> bool:
        if ev.symbol in self.foreign:
            return False
        self.set(ev.wallet_balance)
        return True

    def balance_updated(self, ev: BalanceUpdated) -> bool:
        if ev.asset != self.asset or ev.wallet is not _FUTURES:
            return False
        self.set(ev.balance)
        return True

    def funding_settled(self, ev: FundingSettled) -> bool:
        if ev.symbol in self.foreign:
            self.pending_shortfall = 0
            return False
        self.pending_shortfall = ev.shortfall
        if ev.shortfall:
            self.set(self.balance - ev.shortfall)
            return True
        return False

    def funding_payment(self, ev: FundingPayment) -> bool:
        if ev.symbol in self.foreign:
            return False
        self.set(ev.balance - self.pending_shortfall)
        return True


class RunSummary:
    """Counters and running figures of a run, fed event by event; `finish` gives the summary dict."""

    def __init__(self, insurance_fund_start: int = 0, asset: str = "USDT",
                 foreign: frozenset[str] = frozenset()) -> None:
        """`insurance_fund_start`: the fund's balance in `asset` before the first event (atoms);
        `foreign`: symbols settled in another asset (their funding and fund fills are left out)."""
        self.asset = asset
        self.insurance_fund_start = insurance_fund_start
        self.fund = FundBalance(insurance_fund_start, asset, foreign)
        self.foreign = foreign
        self.counts: dict[type, int] = {}  # events by exact type
        self.liquidations_partial = 0
        self.withdrawals = 0  # atoms of `asset`, from BalanceUpdated WITHDRAW
        self.deposits_seen = 0  # atoms of `asset`, from BalanceUpdated DEPOSIT (a cross-check)
        self.funding_paid = 0
        self.funding_received = 0
        self.funding_remainder = 0
        self.funding_shortfall = 0
        self.funding_socialized = 0
        self.first_ts: int | None = None
        self.last_ts = 0
        self._dispatch: dict[type, Callable[[Any], None]] = {
            LiquidationRecorded: self._liquidation,
            InsuranceFundUpdated: self.fund.fund_updated,
            PositionUpdated: self._position,
            BalanceUpdated: self._balance,
            FundingSettled: self._funding_settled,
            FundingPayment: self._funding_payment,
        }

    @classmethod
    def for_engine(cls, engine: Engine, asset: str = "USDT") -> RunSummary:
        """A summary of what `engine` does from now on (the fund's balance now is the start)."""
        return cls(fund_balance(engine, asset), asset, foreign_symbols(engine, asset))

    # ------------------------------------------------------------ feeding
    def add(self, event: Event) -> None:
        cls = event.__class__
        counts = self.counts
        counts[cls] = counts.get(cls, 0) + 1
        if self.first_ts is None:
            self.first_ts = event.ts
        self.last_ts = event.ts
        handler = self._dispatch.get(cls)
        if handler is not None:
            handler(event)

    def add_events(self, events: Iterable[Event]) -> None:
        """`add` each of `events`, in order (the same result, with less call overhead)."""
        counts = self.counts
        dispatch = self._dispatch
        ts = None
        for event in events:
            cls = event.__class__
            counts[cls] = counts.get(cls, 0) + 1
            ts = event.ts
            if self.first_ts is None:
                self.first_ts = ts
            handler = dispatch.get(cls)
            if handler is not None:
                handler(event)
        if ts is not None:
            self.last_ts = ts

    def on_step(self, command: object, events: list[Event]) -> None:
        """A `(command, events)` step, as `scenario_run.drive` and the runtime's sinks hand them."""
        self.add_events(events)

    def _liquidation(self, ev: LiquidationRecorded) -> None:
        if ev.partial:
            self.liquidations_partial += 1

    def _position(self, ev: PositionUpdated) -> None:
        if ev.account == FUND_ACCOUNT:
            self.fund.position(ev)

    def _balance(self, ev: BalanceUpdated) -> None:
        if ev.asset == self.asset:
            if ev.reason is _WITHDRAW:
                self.withdrawals -= ev.delta
            elif ev.reason is BalanceReason.DEPOSIT:
                self.deposits_seen += ev.delta
        if ev.account == FUND_ACCOUNT:
            self.fund.balance_updated(ev)

    def _funding_settled(self, ev: FundingSettled) -> None:
        self.fund.funding_settled(ev)
        if ev.symbol in self.foreign:
            return
        self.funding_paid += ev.paid
        self.funding_received += ev.received
        self.funding_remainder += ev.remainder
        self.funding_shortfall += ev.shortfall
        self.funding_socialized += ev.socialized

    def _funding_payment(self, ev: FundingPayment) -> None:
        if ev.account == FUND_ACCOUNT:
            self.fund.funding_payment(ev)

    # ------------------------------------------------------------ figures
    def count(self, *types: type) -> int:
        return sum(self.counts.get(t, 0) for t in types)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    def balances_total(self, engine: Engine) -> int:
        """Σ wallets (futures and spot, the fund's included) + Σ isolated margins + fee income + Σ unrealised PnL.

        In `self.asset`, atoms, the unrealised PnL of each open position taken
        at its symbol's final mark (the last trade price where no mark was
        ever set), q × mark × k − cost, an exact integer (price × qty is a
        whole number of atoms). This is the same total as `Clearing.held`,
        which counts −cost in place of the unrealised PnL, because the PnL is
        taken at one common price per symbol: every fill has two sides (a
        take-over's other side is the fund's account, an ADL close's the
        deleveraged position), so the quantities of one symbol's positions
        net to zero and Σ q × price × k vanishes, leaving Σ uPnL = −Σ cost.
        With a different price per position it would not cancel. And
        `held(asset)` equals `treasury.deposits[asset]` (Σ deposits −
        Σ withdrawals, the fund's opening balance included) after every
        command: the clearing's conservation invariant. So the total is
        `deposits_total − withdrawals_total` to the atom.
        """
        clearing = engine.clearing
        if clearing is None:
            return 0
        asset = self.asset
        total = clearing.treasury.fee_income.get(asset, 0)
        for acct in clearing.accounts.values():
            total += acct.wallet.get(asset, 0) + acct.spot.get(asset, 0)
            for pos in acct.positions.values():
                m = clearing.markets[pos.symbol]
                if m.instrument.settlement_asset != asset:
                    continue
                total += pos.isolated_margin
                if pos.qty or pos.cost:
                    total += unrealized_pnl(pos.qty, pos.cost, clearing.reference_price(m),
                                            m.instrument.atoms_per_tick_lot)
        return total

    def finish(self, engine: Engine, wall_seconds: float, chart_path: str | Path | None = None) -> dict[str, Any]:
        """The summary figures (see the module docstring), the engine read at the end of the run."""
        money = money_formatter(engine, self.asset)
        clearing = engine.clearing
        fund_end = fund_balance(engine, self.asset)
        fund_min = min(self.fund.low, fund_end, self.insurance_fund_start)
        net_deposits = clearing.treasury.deposits.get(self.asset, 0) if clearing is not None else 0
        deposits_total = net_deposits + self.withdrawals
        balances = self.balances_total(engine)
        wall = max(float(wall_seconds), 0.0)
        events = self.events
        span_ms = self.last_ts - self.first_ts if self.first_ts is not None else 0
        return {
            "asset": self.asset,
            "events": events,
            "trades": self.count(Trade),
            "liquidations_full": self.count(LiquidationRecorded) - self.liquidations_partial,
            "liquidations_partial": self.liquidations_partial,
            "margin_calls": self.count(MarginCall),
            "adl_events": self.count(AdlExecuted),
            "orders_rejected": self.count(OrderRejected),
            "insurance_fund_start": money(self.insurance_fund_start),
            "insurance_fund_min": money(fund_min),
            "insurance_fund_end": money(fund_end),
            "deposits_total": money(deposits_total),
            "withdrawals_total": money(self.withdrawals),
            "balances_total": money(balances),
            "conserved": balances == deposits_total - self.withdrawals,
            "funding_paid": money(self.funding_paid),
            "funding_received": money(self.funding_received),
            "funding_remainder": money(self.funding_remainder),
            "funding_shortfall": money(self.funding_shortfall),
            "funding_socialized": money(self.funding_socialized),
            "virtual_seconds": span_ms / 1000,
            "wall_seconds": round(wall, 3),
            "events_per_sec": round(events / wall, 1) if wall > 0 else 0.0,
            "chart": str(chart_path) if chart_path is not None else None,
        }


def money_formatter(engine: Engine | None, asset: str = "USDT") -> Callable[[int], str]:
    """Atoms of `asset` -> decimal string with all the atom's decimals ("0.00000001", "0.00000000").

    The atom is that of an instrument settled in `asset` (`Instrument.money_atom`), else USDT's 1e-8; the
    string is `Instrument.money_str`'s, in fixed-point notation also for zero (which it writes "0E-8").
    """
    unit = USDT_ATOM
    if engine is not None:
        for m in engine.markets.values():
            if m.instrument.settlement_asset == asset:
                unit = m.instrument.money_atom
                break

    def money(atoms: int) -> str:
        return format(Decimal(from_units(atoms, unit)), "f")

    return money


#: Row labels of `render_table`, in order; keys not listed follow under their own name.
_LABELS: dict[str, str] = {
    "events": "events",
    "trades": "trades",
    "liquidations_full": "liquidations, full",
    "liquidations_partial": "liquidations, partial",
    "margin_calls": "margin calls",
    "adl_events": "ADL executions",
    "orders_rejected": "orders rejected",
    "insurance_fund_start": "insurance fund, start",
    "insurance_fund_min": "insurance fund, min",
    "insurance_fund_end": "insurance fund, end",
    "deposits_total": "deposits (fund's opening included)",
    "withdrawals_total": "withdrawals",
    "balances_total": "balances + uPnL at final mark",
    "conserved": "balances = deposits − withdrawals",
    "funding_paid": "funding paid",
    "funding_received": "funding received",
    "funding_remainder": "funding remainder (to fees)",
    "funding_shortfall": "funding shortfall (fund)",
    "funding_socialized": "funding socialized (cut)",
    "virtual_seconds": "virtual time (s)",
    "wall_seconds": "wall time (s)",
    "events_per_sec": "events / s",
    "chart": "chart",
}

_MONEY_KEYS = frozenset({
    "insurance_fund_start", "insurance_fund_min", "insurance_fund_end", "deposits_total", "withdrawals_total",
    "balances_total", "funding_paid", "funding_received", "funding_remainder", "funding_shortfall",
    "funding_socialized",
})


def _cell(key: str, value: object, asset: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if key == "events_per_sec" else f"{value:,.3f}"
    if key in _MONEY_KEYS:
        return f"{Decimal(str(value)):,f} {asset}"
    return str(value)


def _split_point(cell: str) -> tuple[str, str]:
    """A numeric cell cut at its decimal point ("1,234" ".5 USDT"); any other cell whole."""
    head, sep, tail = cell.partition(".")
    if sep and head.replace(",", "").lstrip("-").isdigit():
        return head, sep + tail
    return cell, ""


def render_table(summary: Mapping[str, Any]) -> str:
    """The summary as a two-column table for a terminal: labels left, values right-aligned on their units."""
    asset = str(summary.get("asset", "USDT"))
    keys = [k for k in _LABELS if k in summary] + [k for k in summary if k not in _LABELS and k != "asset"]
    rows = [(_LABELS.get(k, k), _cell(k, summary[k], asset)) for k in keys]
    if not rows:
        return ""
    label_w = max(len(label) for label, _ in rows)
    parts = [_split_point(v) for _, v in rows]  # numbers line up on their decimal point
    head_w = max(len(h) for h, _ in parts)
    tail_w = max(len(t) for _, t in parts)
    lines = []
    for (label, _), (head, tail) in zip(rows, parts, strict=True):
        lines.append(f"{label:<{label_w}}  {head:>{head_w}}{tail:<{tail_w}}".rstrip())
    return "\n".join(lines)
