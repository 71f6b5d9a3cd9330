"""A small kit to write liquidation scenarios readably, with the invariants checked after every command.

    s = Scenario(fund="100000")
    s.deposit(1, "5010")
    s.isolated(1, BTC, leverage=10)
    s.mark(BTC, "80000")
    s.open(1, BTC, BUY, "0.25", "80000", counterparty=2)
    events = s.mark(BTC, "64257.0")
    [rec] = of_type(events, LiquidationRecorded)

Every command goes through `Scenario.apply`, which checks, after the command:

* conservation to the atom: `clearing.held(asset) == treasury.deposits[asset]` (wallets, isolated
  margins, position costs, fee income and the insurance fund together hold exactly what came in);
* no futures or spot wallet, isolated margin or insurance fund below zero (mechanics.md Part 1
  "Nobody owes money", "Insurance fund … Never negative");
* open interest balances: per symbol, Σ long quantity == Σ short quantity (the fund's included).

Amounts are given as decimal strings in the instrument's units (USDT, price, quantity) and converted
exactly (`usdt("162.5")`, `s.px(BTC, "64257.1")`, `s.lots(BTC, "0.25")`); a value off the grid raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TypeVar

from exchange.accounts import Position
from exchange.assembly import build_exchange
from exchange.clearing import FUND_ACCOUNT
from exchange.commands import (
    AdjustIsolatedMargin,
    CancelAll,
    Command,
    Deposit,
    PlaceOrder,
    SetAutoMarginAddition,
    SetLeverage,
    SetMarginMode,
    SetMarkPrice,
)
from exchange.engine import Engine
from exchange.enums import MarginMode, PositionSide, Side, TimeInForce
from exchange.events import Event, LiquidationRecorded, OrderRejected, Trade
from exchange.instrument import Instrument

BTC, ETH = "BTCUSDT", "ETHUSDT"
BUY, SELL = Side.BUY, Side.SELL
BOTH = PositionSide.BOTH
USDT = "USDT"
#: atoms per USDT (the atom is 1e-8 USDT)
U = 10**8

E = TypeVar("E", bound=Event)


def usdt(amount: str | int) -> int:
    """A USDT amount as atoms, exactly (error if finer than an atom)."""
    d = Decimal(str(amount)) * U
    if d != d.to_integral_value():
        raise ValueError(f"{amount} USDT is not a whole number of atoms")
    return int(d)


def of_type(events: Iterable[Event], *types: type[E]) -> list[E]:
    """The events of the given type(s), in order."""
    return [ev for ev in events if isinstance(ev, types)]


class InvariantError(AssertionError):
    pass


def check_invariants(engine: Engine, where: str = "") -> None:
    """Conservation to the atom, no negative balance, balanced open interest (see the module docstring)."""
    c = engine.clearing
    assert c is not None
    for asset in sorted(c.assets):
        held, deposits = c.held(asset), c.treasury.deposits.get(asset, 0)
        if held != deposits:
            raise InvariantError(f"{where}: conservation broken for {asset}: held {held} != deposits {deposits} "
                                 f"(diff {held - deposits} atoms)")
    oi: dict[str, int] = {}
    for acct in c.accounts.values():
        for asset, bal in list(acct.wallet.items()) + list(acct.spot.items()):
            if bal < 0:
                who = "insurance fund" if acct.id == FUND_ACCOUNT else f"account {acct.id}"
                raise InvariantError(f"{where}: {who} has a negative {asset} balance {bal}")
        for pos in acct.positions.values():
            if pos.isolated_margin < 0:
                raise InvariantError(f"{where}: account {acct.id} {pos.symbol} isolated margin {pos.isolated_margin}")
            oi[pos.symbol] = oi.get(pos.symbol, 0) + pos.qty
    for symbol, net in sorted(oi.items()):
        if net:
            raise InvariantError(f"{where}: open interest of {symbol} does not balance: Σ long − Σ short = {net}")


class Scenario:
    """One exchange (`build_exchange`) with USDT deposits, positions opened against counterparties, mark steps."""

    def __init__(self, fund: str | int = "100000", instruments: list[Instrument] | None = None,
                 **build_kwargs: Any) -> None:
        self.engine = build_exchange(instruments, insurance_fund={USDT: usdt(fund)}, **build_kwargs)
        assert self.engine.clearing is not None and self.engine.risk is not None
        self.clearing = self.engine.clearing
        self.risk: Any = self.engine.risk  # liquidation.process.Liquidator
        self.log: list[Event] = []
        self.commands = 0

    # ------------------------------------------------------------ units
    def ins(self, symbol: str) -> Instrument:
        return self.engine.market(symbol).instrument

    def px(self, symbol: str, price: str) -> int:
        return self.ins(symbol).price_ticks(price)

    def lots(self, symbol: str, qty: str) -> int:
        return self.ins(symbol).qty_lots(qty)

    # ------------------------------------------------------------ commands
    def apply(self, cmd: Command, allow_reject: bool = False) -> list[Event]:
        """Apply one command, check the invariants, keep the events."""
        events = self.engine.apply(cmd)
        self.commands += 1
        self.log += events
        check_invariants(self.engine, f"after command #{self.commands} {type(cmd).__name__}")
        if not allow_reject:
            rejects = of_type(events, OrderRejected)
            assert not rejects, f"{cmd} rejected: {rejects}"
        return events

    def deposit(self, account: int, amount: str | int) -> list[Event]:
        return self.apply(Deposit(account=account, asset=USDT, amount=usdt(amount)))

    def isolated(self, account: int, symbol: str, leverage: int) -> None:
        self.apply(SetMarginMode(account=account, symbol=symbol, margin_mode=MarginMode.ISOLATED))
        self.apply(SetLeverage(account=account, symbol=symbol, leverage=leverage))

    def cross(self, account: int, symbol: str, leverage: int) -> None:
        self.apply(SetLeverage(account=account, symbol=symbol, leverage=leverage))

    def auto_add(self, account: int, symbol: str, enabled: bool = True) -> list[Event]:
        return self.apply(SetAutoMarginAddition(account=account, symbol=symbol, enabled=enabled))

    def add_margin(self, account: int, symbol: str, amount: str | int) -> list[Event]:
        return self.apply(AdjustIsolatedMargin(account=account, symbol=symbol, amount=usdt(amount)))

    def mark(self, symbol: str, price: str) -> list[Event]:
        return self.apply(SetMarkPrice(symbol=symbol, price=self.px(symbol, price)))

    def limit(self, account: int, symbol: str, side: Side, qty: str, price: str,
              tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False) -> list[Event]:
        return self.apply(PlaceOrder(account=account, symbol=symbol, side=side, qty=self.lots(symbol, qty),
                                     price=self.px(symbol, price), tif=tif, reduce_only=reduce_only))

    def bid(self, account: int, symbol: str, price: str, qty: str) -> list[Event]:
        return self.limit(account, symbol, BUY, qty, price)

    def ask(self, account: int, symbol: str, price: str, qty: str) -> list[Event]:
        return self.limit(account, symbol, SELL, qty, price)

    def cancel_all(self, account: int, symbol: str) -> list[Event]:
        return self.apply(CancelAll(account=account, symbol=symbol))

    def open(self, account: int, symbol: str, side: Side, qty: str, price: str, counterparty: int,
             reduce_only: bool = False) -> list[Event]:
        """`counterparty` rests the other side at `price`; `account` takes all of it (an IOC at `price`)."""
        self.limit(counterparty, symbol, side.opposite, qty, price)
        events = self.limit(account, symbol, side, qty, price, TimeInForce.IOC, reduce_only)
        traded = sum(t.qty for t in of_type(events, Trade) if t.taker_account == account)
        assert traded == self.lots(symbol, qty), f"only {traded} of {qty} traded: {events}"
        return events

    def close(self, account: int, symbol: str, side: Side, qty: str, price: str, counterparty: int) -> list[Event]:
        """Reduce a position: `side` is the closing side (SELL closes a long)."""
        return self.open(account, symbol, side, qty, price, counterparty, reduce_only=True)

    # ------------------------------------------------------------ state
    def position(self, account: int, symbol: str, side: PositionSide = BOTH) -> Position:
        pos = self.clearing.accounts[account].positions.get((symbol, side))
        assert pos is not None, f"account {account} never had a {symbol} position"
        return pos

    def wallet(self, account: int) -> int:
        return self.clearing.accounts[account].wallet.get(USDT, 0)

    def fund(self) -> int:
        return self.clearing.accounts[FUND_ACCOUNT].wallet.get(USDT, 0)

    def records(self, account: int) -> list[LiquidationRecorded]:
        return list(self.risk.records.get(account, []))
