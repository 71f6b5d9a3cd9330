"""Clearing: accounts, wallets, positions and margin; the rules that move money.

The engine asks it two things on the order path (may this order be placed,
and book this fill) and hands it every account command. All amounts are
integers (atoms, lots, ticks); every division rounds explicitly, in favour of
the exchange for what is owed and against the payee for what is paid out,
and never creates an atom (mechanics.md Part 1 "Units").

Conservation, checked by the tests after every command: for any one common
price per symbol, Σ wallets (spot and futures) + Σ isolated margins + Σ
unrealised PnL + fee income + insurance fund = Σ deposits − Σ withdrawals.
(Positions net to zero per symbol, so the unrealised PnL of all positions at
one price is −Σ cost: the sum does not depend on the price chosen.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from exchange.accounts import Account, Exposure, Position
from exchange.brackets import PPM, BracketTable, default_table
from exchange.commands import (
    AdjustIsolatedMargin,
    Deposit,
    PlaceOrder,
    SetAutoMarginAddition,
    SetFeeTier,
    SetLeverage,
    SetMarginMode,
    SetPositionMode,
    Transfer,
    Withdraw,
)
from exchange.enums import (
    BalanceReason,
    MarginMode,
    OrderType,
    PositionMode,
    PositionReason,
    PositionSide,
    RejectReason,
    Side,
    WalletKind,
)
from exchange.events import (
    AccountConfigUpdated,
    BalanceUpdated,
    Event,
    FundingPayment,
    FundingSettled,
    InsuranceFundUpdated,
    PositionUpdated,
)
from exchange.funding import funding_payments
from exchange.margin import (
    Leg,
    bankruptcy_ticks,
    ceil_div,
    isolated_reduce,
    liquidation_ticks,
    position_prices,
    realized_on_close,
)
from exchange.market import Market
from exchange.orders import Order
from exchange.venue import BINANCE, MaintenanceBase, VenueProfile

#: The insurance fund's own account (its futures wallet is the fund's balance).
FUND_ACCOUNT = 0

#: Binance VIP 0 USDⓈ-M fee rates: maker 0.02%, taker 0.05%.
DEFAULT_MAKER_FEE_PPM = 200
DEFAULT_TAKER_FEE_PPM = 500

_BUY = Side.BUY
_BOTH = PositionSide.BOTH
_LONG = PositionSide.LONG
_SHORT = PositionSide.SHORT
_CROSS = MarginMode.CROSS
_ISOLATED = MarginMode.ISOLATED
_MARK_NOTIONAL = MaintenanceBase.MARK_NOTIONAL
_ONE_WAY = PositionMode.ONE_WAY

#: stamp(market or None) -> (seq, symbol_seq, ts) for the next event.
Stamp = Callable[[Market | None], tuple[int, int, int]]


class Treasury:
    """The exchange's own ledgers per settlement asset, and what came in and went out."""

    __slots__ = ("deposits", "fee_income", "insurance")

    def __init__(self) -> None:
        self.fee_income: dict[str, int] = {}
        self.insurance: dict[str, int] = {}  # the fund account's futures wallet (the same dict)
        self.deposits: dict[str, int] = {}  # Σ deposits − Σ withdrawals (the insurance fund's opening included)

    def credit(self, ledger: dict[str, int], asset: str, amount: int) -> None:
        ledger[asset] = ledger.get(asset, 0) + amount


class Clearing:
    """Margin accounting for every account of one engine."""

    def __init__(
        self,
        profile: VenueProfile = BINANCE,
        brackets: dict[str, BracketTable] | None = None,
        maker_fee_ppm: int = DEFAULT_MAKER_FEE_PPM,
        taker_fee_ppm: int = DEFAULT_TAKER_FEE_PPM,
        insurance_fund: dict[str, int] | None = None,
    ) -> None:
        self.profile = profile
        self._brackets = dict(brackets or {})
        self.maker_fee_ppm = maker_fee_ppm
        self.taker_fee_ppm = taker_fee_ppm
        self.accounts: dict[int, Account] = {}
        self.treasury = Treasury()
        fund = self.fund_account()
        for asset, amount in (insurance_fund or {}).items():
            self.treasury.credit(fund.wallet, asset, amount)
            self.treasury.credit(self.treasury.deposits, asset, amount)
        self.markets: dict[str, Market] = {}
        self.assets: set[str] = set()
        self.touched: set[int] = set()  # accounts changed since the engine last looked (for the risk monitor)
        # open positions per symbol, (account, position side) -> position: funding, ADL and quantiles read it
        self.open_positions: dict[str, dict[tuple[int, PositionSide], Position]] = {}
        self.clearance_fees = 0  # cumulative, atoms (all assets): what liquidations paid the fund as fees
        self.shortfalls = 0  # cumulative: losses beyond a margin in fills, that the fund carried
        self.liquidation_shortfalls = 0  # the part of `shortfalls` in liquidation fills
        self.fund_history: list[InsuranceFundUpdated] = []  # every change of the fund, as published
        self._stamp: Stamp = _unattached
        #: (account, symbol or None) -> whether it has conditional orders waiting; the engine's, once attached
        self.stops_open: Callable[[int, str | None], bool] = lambda account, symbol: False

    def fund_account(self) -> Account:
        """The insurance fund's account (created on first use; its wallet is `treasury.insurance`)."""
        acct = self.accounts.get(FUND_ACCOUNT)
        if acct is None:
            acct = self.accounts[FUND_ACCOUNT] = Account(FUND_ACCOUNT, 0, 0)
            acct.wallet = self.treasury.insurance
        return acct

    def stamp(self, m: Market | None) -> tuple[int, int, int]:
        return self._stamp(m)

    def fund_event(self, out: list[Event], m: Market | None, asset: str, delta: int, cause: str, account: int = 0,
                   liquidation_id: int = 0, balance: int | None = None) -> None:
        """Publish a change of the insurance fund (already booked); `balance` after it (default: now)."""
        if not delta:
            return
        seq, sseq, ts = self._stamp(m)
        after = self.fund_account().wallet.get(asset, 0) if balance is None else balance
        ev = InsuranceFundUpdated(seq, sseq, ts, asset, delta, after, cause, liquidation_id, account,
                                  m.instrument.symbol if m is not None else "")
        out.append(ev)
        self.fund_history.append(ev)

    def held(self, asset: str) -> int:
        """Σ spot and futures wallets (the fund's included) + isolated margins − position costs + fee income.

        Equals `treasury.deposits[asset]` to the atom after every command (the conservation invariant).
        """
        total = self.treasury.fee_income.get(asset, 0)
        for acct in self.accounts.values():
            total += acct.wallet.get(asset, 0) + acct.spot.get(asset, 0)
            for pos in acct.positions.values():
                if self.markets[pos.symbol].instrument.settlement_asset == asset:
                    total += pos.isolated_margin - pos.cost
        return total

    def attach(self, markets: dict[str, Market], stamp: Stamp,
               stops_open: Callable[[int, str | None], bool] | None = None) -> None:
        """Called once by the engine: the markets it trades, how to stamp events, and whether an account has
        conditional orders waiting (in a symbol, or any)."""
        self.markets = markets
        self._stamp = stamp
        if stops_open is not None:
            self.stops_open = stops_open
        for symbol, m in markets.items():
            self.assets.add(m.instrument.settlement_asset)
            self.open_positions.setdefault(symbol, {})
            if symbol not in self._brackets:
                self._brackets[symbol] = default_table(symbol, m.instrument.money_atom)

    def brackets(self, symbol: str) -> BracketTable:
        return self._brackets[symbol]

    # ------------------------------------------------------------ figures
    def reference_price(self, m: Market) -> int:
        """The price margin is valued at: the mark, else the last trade (0: none yet)."""
        return m.mark_price or m.last_price

    def position_figures(self, pos: Position) -> tuple[int, int, int]:
        """(notional at mark, maintenance margin, unrealised PnL) of one position, in atoms."""
        symbol = pos.symbol
        m = self.markets[symbol]
        price = m.mark_price or m.last_price  # reference_price
        cost = pos.cost
        if not price:  # no price yet: valued at entry, where the PnL is 0
            bracket = self._brackets[symbol].for_notional(abs(cost))
            return abs(cost), ceil_div(abs(cost) * bracket.mmr, PPM) - bracket.cum, 0
        # margin.maintenance_margin and margin.unrealized_pnl, inlined (this is on every fill's path)
        qk = pos.qty * m.instrument.atoms_per_tick_lot
        notional = abs(qk) * price
        mm_base = notional if self.profile.maintenance_base is _MARK_NOTIONAL else abs(cost)
        bracket = self._brackets[symbol].for_notional(mm_base)
        return notional, -((-mm_base * bracket.mmr) // PPM) - bracket.cum, qk * price - cost

    def cross_totals(self, acct: Account, asset: str, skip_symbol: str | None = None) -> tuple[int, int, int]:
        """(Σ maintenance margin, Σ unrealised PnL, Σ initial margin at mark) of the cross positions in `asset`."""
        mm = upnl = im = 0
        for pos in acct.positions.values():
            if not pos.qty or pos.settings.margin_mode is _ISOLATED or pos.symbol == skip_symbol:
                continue
            if self.markets[pos.symbol].instrument.settlement_asset != asset:
                continue
            notional, p_mm, p_upnl = self.position_figures(pos)
            mm += p_mm
            upnl += p_upnl
            im -= (-notional) // pos.settings.leverage  # + ceil_div(notional, leverage)
        return mm, upnl, im

    def order_margin(self, acct: Account, symbol: str, side: PositionSide,
                     extra_buy: tuple[int, int] = (0, 0), extra_sell: tuple[int, int] = (0, 0)) -> int:
        """Initial margin held by the open orders of one position (one-way: the worse side; hedge: its opening side).

        An order only holds margin for the part that would open or increase
        the position: buys beyond an open short, sells beyond an open long.
        `extra_*` are (qty, notional in tick·lots) of an order being tried.
        """
        e = acct.exposure.get((symbol, side))
        bq, bn = extra_buy
        sq, sn = extra_sell
        if e is not None:
            bq += e.buy_qty
            bn += e.buy_notional
            sq += e.sell_qty
            sn += e.sell_notional
        if not bq and not sq:
            return 0
        pos = acct.positions.get((symbol, side))
        q = pos.qty if pos is not None else 0
        k = self.markets[symbol].instrument.atoms_per_tick_lot
        return _orders_im(q, side, acct.symbol_settings(symbol).leverage, k, bq, bn, sq, sn)

    def may_owe(self, acct: Account, asset: str) -> bool:
        """May the account's futures wallet in `asset` stay below zero? While it holds a cross position there.

        A cross account's realised losses, fees and funding come out of its
        wallet even when they exceed it: its margin balance (wallet + cross
        UPNL, mechanics.md §3.1) is what must stay above maintenance, and the
        liquidation monitor acts on that, not on the wallet. So a loss on one
        symbol is carried by the profit on another, as on Binance, and the
        insurance fund pays only for an account left owing with nothing to
        back it ("If an account becomes bankrupt (negative wallet balance),
        the Insurance Fund will balance the account back to 0", §3.4 step 4):
        when its last cross position closes. The fund's own account never
        owes: its wallet is the fund's balance, never negative (mechanics.md
        Part 1); the liquidator's guard keeps what it can lose above it.
        """
        return acct.id != FUND_ACCOUNT and bool(self.cross_positions(acct, asset))

    def cross_positions(self, acct: Account, asset: str) -> list[Position]:
        """The account's open cross positions settled in `asset`."""
        ms = self.markets
        return [p for p in acct.positions.values() if p.qty and p.settings.margin_mode is not _ISOLATED
                and ms[p.symbol].instrument.settlement_asset == asset]

    def available(self, acct: Account, asset: str) -> int:
        """Free margin: wallet + cross UPNL − cross position IM − all open-order IM (Binance availableBalance)."""
        return self._available(acct, asset, None, 0)

    def _available(self, acct: Account, asset: str, known: tuple[str, PositionSide] | None, known_margin: int) -> int:
        """`available`, given the order margin of the position `known` already (`known_margin`)."""
        _, upnl, im = self.cross_totals(acct, asset)
        held = 0
        markets = self.markets
        for key in acct.exposure:
            symbol = key[0]
            if markets[symbol].instrument.settlement_asset == asset:
                held += known_margin if key == known else self.order_margin(acct, symbol, key[1])
        return acct.wallet.get(asset, 0) + upnl - im - held

    def max_withdrawable(self, acct: Account, asset: str) -> int:
        """What can leave the futures wallet: min(available, wallet) (Binance maxWithdrawAmount)."""
        return max(0, min(self.available(acct, asset), acct.wallet.get(asset, 0)))

    def refresh_prices(self, pos: Position) -> None:
        """Recompute the position's liquidation and bankruptcy price (mechanics.md §3.1)."""
        qty = pos.qty
        if not qty:
            pos.liq_ticks = pos.bankruptcy_ticks = 0
            return
        symbol = pos.symbol
        m = self.markets[symbol]
        ins = m.instrument
        k = ins.atoms_per_tick_lot
        table = self._brackets[symbol]
        base = self.profile.maintenance_base
        price = m.mark_price or m.last_price  # reference_price
        tmm = upnl = 0
        if pos.settings.margin_mode is _ISOLATED:
            wb = pos.isolated_margin
        else:
            # cross: every cross leg of this symbol shares one LP; the other symbols enter as TMM1 and UPNL1
            asset = ins.settlement_asset
            acct = self.accounts[pos.account]
            wb = acct.wallet.get(asset, 0)
            if len(acct.positions) > 1:  # (an account's only position is this one: no other leg, TMM1 = UPNL1 = 0)
                # one pass over the positions: the legs of this symbol, and `cross_totals` of the others
                same: list[Position] = []
                markets = self.markets
                for p in acct.positions.values():
                    if not p.qty or p.settings.margin_mode is _ISOLATED:
                        continue
                    if p.symbol == symbol:
                        same.append(p)
                    elif markets[p.symbol].instrument.settlement_asset == asset:
                        _, p_mm, p_upnl = self.position_figures(p)
                        tmm += p_mm
                        upnl += p_upnl
                if len(same) > 1:  # hedge mode, LONG and SHORT both open
                    legs = [Leg(p.qty, p.cost, table) for p in same]
                    long = sum(p.qty for p in same) > 0
                    pos.liq_ticks = liquidation_ticks(legs, wb, tmm, upnl, k, base, price, long)
                    pos.bankruptcy_ticks = bankruptcy_ticks(legs, wb, tmm, upnl, k, long)
                    return
        # one leg (isolated, or the symbol's only cross leg): the single-leg forms, no Leg built
        pos.liq_ticks, pos.bankruptcy_ticks = position_prices(qty, pos.cost, table, wb, tmm, upnl, k, base, price)

    # ------------------------------------------------------------ events
    def _position_event(self, out: list[Event], pos: Position, reason: PositionReason, pnl: int = 0, fee: int = 0,
                        trade_id: int = 0) -> None:
        m = self.markets[pos.symbol]
        seq, sseq, ts = self._stamp(m)
        acct = self.accounts[pos.account]
        out.append(PositionUpdated(
            seq, sseq, ts, pos.symbol, pos.account, pos.position_side, reason, pos.qty, pos.cost,
            pos.settings.margin_mode, pos.settings.leverage, pos.isolated_margin,
            acct.wallet.get(m.instrument.settlement_asset, 0), pos.realized_pnl, pnl, fee,
            pos.liq_ticks, pos.bankruptcy_ticks, trade_id,
        ))

    def _balance_event(self, out: list[Event], acct: Account, asset: str, wallet: WalletKind, reason: BalanceReason,
                       delta: int, symbol: str = "") -> None:
        self.touched.add(acct.id)  # its margin changed: the risk monitor checks it after the command
        seq, sseq, ts = self._stamp(self.markets.get(symbol) if symbol else None)
        balance = (acct.wallet if wallet is WalletKind.FUTURES else acct.spot).get(asset, 0)
        out.append(BalanceUpdated(seq, sseq, ts, acct.id, asset, wallet, reason, delta, balance, symbol))

    def _config_event(self, out: list[Event], acct: Account, symbol: str, side: PositionSide | None = None) -> None:
        """AccountConfigUpdated: account-wide (symbol ""), or per position side of `symbol` (only `side` if given)."""
        if not symbol:
            seq, sseq, ts = self._stamp(None)
            out.append(AccountConfigUpdated(seq, sseq, ts, acct.id, "", 0, _CROSS, acct.position_mode, False,
                                            acct.maker_fee_ppm, acct.taker_fee_ppm, _BOTH))
            return
        s = acct.symbol_settings(symbol)
        m = self.markets.get(symbol)
        if side is not None:
            sides = [side]
        else:
            sides = [_BOTH] if acct.position_mode is PositionMode.ONE_WAY else [_LONG, _SHORT]
        for ps in sides:
            pos = acct.positions.get((symbol, ps))
            seq, sseq, ts = self._stamp(m)
            out.append(AccountConfigUpdated(
                seq, sseq, ts, acct.id, symbol, s.leverage, s.margin_mode, acct.position_mode,
                pos.auto_add if pos is not None else False, acct.maker_fee_ppm, acct.taker_fee_ppm, ps,
            ))

    def refresh_position(self, out: list[Event], pos: Position) -> None:
        """`refresh_prices`, published: a PositionUpdated (RISK) when the liquidation or bankruptcy price moved."""
        before = (pos.liq_ticks, pos.bankruptcy_ticks)
        self.refresh_prices(pos)
        if pos.qty and (pos.liq_ticks, pos.bankruptcy_ticks) != before:
            self._position_event(out, pos, PositionReason.RISK)

    def refresh_cross(self, out: list[Event], acct: Account, asset: str, skip: Position | None = None) -> None:
        """Recompute the LPs of an account's cross positions after its wallet or another position changed."""
        for pos in acct.positions.values():
            if pos is skip or not pos.qty or pos.settings.margin_mode is _ISOLATED:
                continue
            if self.markets[pos.symbol].instrument.settlement_asset != asset:
                continue
            before = (pos.liq_ticks, pos.bankruptcy_ticks)
            self.refresh_prices(pos)
            if (pos.liq_ticks, pos.bankruptcy_ticks) != before:
                self._position_event(out, pos, PositionReason.RISK)

    # ------------------------------------------------------------ order path
    def check_order(self, m: Market, cmd: PlaceOrder) -> RejectReason | None:
        """Account, position side, reduce-only and initial margin rules for a new order."""
        acct = self.accounts.get(cmd.account)
        if acct is None or acct.id == FUND_ACCOUNT:  # the insurance fund trades only through the liquidation engine
            return RejectReason.UNKNOWN_ACCOUNT
        ps = cmd.position_side
        if acct.position_mode is _ONE_WAY:
            if ps is not _BOTH:
                return RejectReason.POSITION_SIDE_MISMATCH
        elif ps is not _LONG and ps is not _SHORT:
            return RejectReason.POSITION_SIDE_MISMATCH
        elif cmd.reduce_only:
            return RejectReason.REDUCE_ONLY_REJECTED  # hedge mode: closing is said by the side, not the flag
        symbol = m.instrument.symbol
        is_buy = cmd.side is _BUY
        # closing: one-way, the reduce-only flag; hedge, selling a LONG or buying a SHORT
        if cmd.reduce_only if ps is _BOTH else (ps is _LONG) != is_buy:
            # a market order is clipped to what the position has left to close instead (`closable`)
            return self._closing_rule(acct, symbol, ps, is_buy, cmd.qty if cmd.order_type is OrderType.LIMIT else 0)
        price = cmd.price or self._market_order_price(m, is_buy)
        if not price:
            return None  # nothing to value a market order at: it will find no liquidity either
        return self._opening_rules(acct, m, ps, is_buy, cmd.qty, price * cmd.qty, price)

    def check_amend(self, m: Market, order: Order, qty: int, price: int) -> RejectReason | None:
        """The rules of `check_order` for a resting order amended to `qty` (in all) at `price`: what it may
        still add to the position (reduce-only: still only reduce), the position cap and the initial margin of
        the change, its old open quantity counted as gone."""
        acct = self.accounts[order.account]
        is_buy = order.side is _BUY
        leaves = qty - order.filled
        if order.reduce_only:
            return self._closing_rule(acct, order.symbol, order.position_side, is_buy, leaves - order.leaves)
        return self._opening_rules(acct, m, order.position_side, is_buy, leaves - order.leaves,
                                   leaves * price - order.leaves * order.price, price)

    def _closing_rule(self, acct: Account, symbol: str, ps: PositionSide, is_buy: bool, added: int
                      ) -> RejectReason | None:
        """A closing order (reduce-only) may only reduce: there must be a position on the other side, and the
        resting closing orders with `added` more lots may not exceed it (Binance -2022)."""
        pos = acct.positions.get((symbol, ps))
        q = pos.qty if pos is not None else 0
        if (q >= 0) if is_buy else (q <= 0):
            return RejectReason.REDUCE_ONLY_REJECTED
        if added > 0:
            e = acct.exposure.get((symbol, ps))
            resting = sum(o.leaves for o in e.reduce_only.values()) if e is not None else 0
            if resting + added > abs(q):
                return RejectReason.REDUCE_ONLY_REJECTED
        return None

    def _opening_rules(self, acct: Account, m: Market, ps: PositionSide, is_buy: bool, dq: int, dn: int,
                       price: int) -> RejectReason | None:
        """Orders that may open or add to a position: `dq` more lots of notional `dn` (tick·lots; either may be
        negative, an amend down) on one side, the order priced at `price`. The position cap of the leverage
        (Binance -2027) and the initial margin the change holds, with the taker fee of what it adds, against the
        available balance (-2019)."""
        symbol = m.instrument.symbol
        settings = acct.settings.get(symbol) or acct.symbol_settings(symbol)
        # Exceeding the position cap of the chosen leverage (Binance -2027)
        pos = acct.positions.get((symbol, ps))
        q = pos.qty if pos is not None else 0
        e = acct.exposure.get((symbol, ps))
        same_dir = (e.buy_qty if is_buy else e.sell_qty) if e is not None else 0
        after = (q if is_buy else -q) + same_dir + dq
        k = m.instrument.atoms_per_tick_lot
        if dq > 0 and after > 0 and after * price * k > self._brackets[symbol].max_notional_for_leverage(
                settings.leverage):
            return RejectReason.MAX_POSITION_EXCEEDED
        # the order margin of this position without and with the change (`order_margin`, its lookups done once)
        if e is not None:
            bq, bn, sq, sn = e.buy_qty, e.buy_notional, e.sell_qty, e.sell_notional
        else:
            bq = bn = sq = sn = 0
        lev = settings.leverage
        before = _orders_im(q, ps, lev, k, bq, bn, sq, sn) if bq or sq else 0
        if is_buy:
            bq += dq
            bn += dn
        else:
            sq += dq
            sn += dn
        needed = (_orders_im(q, ps, lev, k, bq, bn, sq, sn) if bq or sq else 0) - before
        if needed > 0:
            fee = -((-dn * k * acct.taker_fee_ppm) // PPM) if dn > 0 else 0  # ceil_div
            asset = m.instrument.settlement_asset
            free = self._available(acct, asset, (symbol, ps), before)
            if settings.margin_mode is _ISOLATED:
                # an isolated position's margin leaves the wallet: min(available, wallet), as for adding margin
                # by hand; cross UPNL cannot fund it (that would be cross debt the fund pays if the cross
                # positions close at a loss, for margin the account keeps in the isolated position)
                wallet = acct.wallet.get(asset, 0)
                if wallet < free:
                    free = wallet
            if needed + fee > free:
                return RejectReason.MARGIN_INSUFFICIENT
        return None

    def _market_order_price(self, m: Market, is_buy: bool) -> int:
        best = m.book.best_ask() if is_buy else m.book.best_bid()
        ref = self.reference_price(m)
        if best is None:
            return ref
        return max(best, ref) if is_buy else (min(best, ref) if ref else best)

    def closable(self, order: Order) -> int:
        """How much of a closing order may still fill: the position left to close (for clipping a taker)."""
        return self.closable_qty(order.account, order.symbol, order.position_side, order.side)

    def closable_qty(self, account: int, symbol: str, position_side: PositionSide, side: Side) -> int:
        """`closable` of an order not made yet: what a `side` order may close of the account's position."""
        pos = self.accounts[account].positions.get((symbol, position_side))
        q = pos.qty if pos is not None else 0
        return max(0, -q) if side is _BUY else max(0, q)

    def exposure_add(self, order: Order, qty: int) -> None:
        """A resting order's open quantity grew by `qty` (it rested, or an amend re-rested it)."""
        e = self.accounts[order.account].exposure_of(order.symbol, order.position_side)
        if order.reduce_only:
            e.reduce_only[order.order_id] = order
        elif order.side is _BUY:
            e.buy_qty += qty
            e.buy_notional += qty * order.price
        else:
            e.sell_qty += qty
            e.sell_notional += qty * order.price

    def exposure_remove(self, order: Order, qty: int, done: bool) -> None:
        """A resting order's open quantity fell by `qty` (filled, cancelled or amended down); `done`: it left."""
        e: Exposure = self.accounts[order.account].exposure[(order.symbol, order.position_side)]
        if order.reduce_only:
            if done:
                e.reduce_only.pop(order.order_id, None)
        elif order.side is _BUY:
            e.buy_qty -= qty
            e.buy_notional -= qty * order.price
        else:
            e.sell_qty -= qty
            e.sell_notional -= qty * order.price

    def excess_reduce_only(self, account: int, symbol: str, side: PositionSide) -> list[Order]:
        """Resting reduce-only orders that could now increase or flip the position: newest first, to cancel."""
        acct = self.accounts[account]
        e = acct.exposure.get((symbol, side))
        if e is None or not e.reduce_only:
            return []
        pos = acct.positions.get((symbol, side))
        q = pos.qty if pos is not None else 0
        orders = sorted(e.reduce_only.values(), key=lambda o: o.order_id, reverse=True)
        keep = 0
        excess = []
        for o in reversed(orders):  # oldest keep their place
            closes = (q < 0) if o.side is _BUY else (q > 0)
            if closes and keep + o.leaves <= abs(q):
                keep += o.leaves
            else:
                excess.append(o)
        excess.sort(key=lambda o: o.order_id, reverse=True)
        return excess

    # ------------------------------------------------------------ fills
    def book_fill(self, out: list[Event], m: Market, acct: Account, pside: PositionSide, side: Side, qty: int,
                  price: int, fee_ppm: int, trade_id: int, reason: PositionReason, liquidation: bool = False
                  ) -> tuple[int, int]:
        """Book `qty` lots bought or sold at `price` into a position; publish it. Returns (realised PnL, fee).

        Opening moves initial margin into an isolated position (at most what
        the wallet holds); closing realises PnL against exactly the cost
        removed; the fee rounds up. A cross wallet takes losses and fees below
        zero while the account may owe (`may_owe`: a cross position is still
        open to back the debt); otherwise the fee never exceeds what is left,
        and a loss beyond what backs it (an isolated position's margin, a cross
        wallet with no cross position left) is the insurance fund's: nobody is
        left owing. A liquidation (`liquidation`) keeps an isolated position's
        margin in place (nothing is released while it is being liquidated),
        pays its fee, the clearance fee, to the insurance fund, and takes that
        fee only from what is there (the wallet, or, when the account keeps
        cross positions, its margin balance above their maintenance).
        """
        ins = m.instrument
        k = ins.atoms_per_tick_lot
        asset = ins.settlement_asset
        pos = acct.positions.get((ins.symbol, pside)) or acct.position(ins.symbol, pside)
        settings = pos.settings
        isolated = settings.margin_mode is _ISOLATED
        treasury = self.treasury
        signed = qty if side is _BUY else -qty
        wallet = wallet_before = acct.wallet.get(asset, 0)
        pnl = shortfall = 0
        opened = qty
        if pos.qty and (pos.qty > 0) != (signed > 0):
            open_qty = pos.qty if pos.qty > 0 else -pos.qty
            closed = qty if qty < open_qty else open_qty  # min(qty, |q|)
            opened = qty - closed
            pnl, removed = realized_on_close(pos.qty, pos.cost, closed, price, k)
            if isolated and liquidation:
                pos.isolated_margin += pnl
            elif isolated:
                pos.isolated_margin, to_wallet, shortfall = isolated_reduce(pos.isolated_margin, open_qty, closed, pnl)
                wallet += to_wallet
            else:
                wallet += pnl
            pos.qty += closed if signed > 0 else -closed
            pos.cost -= removed
            pos.realized_pnl += pnl
        if opened:
            s_open = opened if signed > 0 else -opened
            pos.qty += s_open
            pos.cost += s_open * price * k
            if isolated:
                move = min(ceil_div(opened * price * k, settings.leverage), max(wallet, 0))
                wallet -= move
                pos.isolated_margin += move
        fee = -((-qty * price * k * fee_ppm) // PPM)  # ceil_div: the fee rounds up
        if isolated and liquidation:
            fee = min(fee, max(pos.isolated_margin, 0))
            pos.isolated_margin -= fee
            if pos.isolated_margin < 0:
                shortfall, pos.isolated_margin = -pos.isolated_margin, 0
        else:
            if fee > wallet:
                if not self.may_owe(acct, asset):
                    fee = wallet if wallet > 0 else 0  # fee = min(fee, max(wallet, 0))
                elif liquidation:
                    # the clearance fee of a cross account that keeps positions ("capped by what margin is
                    # left", mechanics.md Part 1 liquidation step 4): at most its margin balance above the
                    # maintenance of what stays, less one atom (wallet + UPNL − MM − 1), so that the fee alone
                    # does not take a compliant account back to a margin ratio of 100 % and liquidate the rest
                    mm, upnl, _ = self.cross_totals(acct, asset)
                    cap = wallet + upnl - mm - 1
                    if fee > cap:
                        fee = cap if cap > 0 else 0
            wallet -= fee
        if wallet < 0 and not self.may_owe(acct, asset):
            shortfall, wallet = shortfall - wallet, 0
        acct.wallet[asset] = wallet
        if liquidation:
            treasury.credit(self.fund_account().wallet, asset, fee)
            self.clearance_fees += fee
        else:
            treasury.credit(treasury.fee_income, asset, fee)
        if shortfall:
            treasury.credit(self.fund_account().wallet, asset, -shortfall)
            self.shortfalls += shortfall
            if liquidation:
                self.liquidation_shortfalls += shortfall  # the liquidator publishes it with the liquidation
            else:
                self.fund_event(out, m, asset, -shortfall, "SHORTFALL", acct.id)
        if not pos.qty and isolated and pos.isolated_margin and not liquidation:
            # a closed isolated position hands back what is left of its margin
            acct.wallet[asset] += pos.isolated_margin
            pos.isolated_margin = 0
        self.touched.add(acct.id)
        held = self.open_positions[ins.symbol]
        if pos.qty:
            held[(acct.id, pside)] = pos
        else:
            held.pop((acct.id, pside), None)
        self.refresh_prices(pos)
        self._position_event(out, pos, reason, pnl, fee, trade_id)
        if len(acct.positions) > 1 and (not isolated or acct.wallet[asset] != wallet_before):
            self.refresh_cross(out, acct, asset, skip=pos)  # (an account's only position is `pos` itself)
        return pnl, fee

    # ------------------------------------------------------------ funding
    def settle_funding(self, out: list[Event], m: Market, rate: int, funding_time: int) -> FundingSettled:
        """Pay funding between every position open in the symbol now, at the mark (mechanics.md §1.3).

        Payers' amounts round up and receivers' down (`funding_payments`); the
        remainder goes to fee income. A cross payer pays from its futures
        wallet in full, below zero if need be (its open position backs the
        debt: `may_owe`); an isolated payer from its isolated margin, and the
        fund from its wallet, at most what that balance held before this
        settlement; what they cannot pay (the shortfall) the insurance fund
        pays, down to zero ("Nobody owes money"; the fund is never negative).
        What the fund cannot carry either is `socialized`: cut from the
        receivers pro rata, each cut rounded up (paid out, rounded
        down), the rounding to fee income. So
        paid = received + remainder + socialized, to the atom.
        Two positions may share one balance (a hedge account's cross LONG and
        SHORT): every change is applied in turn to the running balance. Every
        position gets a FundingPayment event with its balance after it.
        """
        ins = m.instrument
        symbol = ins.symbol
        asset = ins.settlement_asset
        mark = self.reference_price(m)
        positions = [p for _, p in sorted(self.open_positions.get(symbol, {}).items(),
                                          key=lambda kv: (kv[0][0], kv[0][1].value))]
        settlement = funding_payments([p.qty for p in positions], mark, rate, ins.atoms_per_tick_lot)
        # what each payer can pay: at most what its balance held before the settlement (shared balances in turn)
        room: dict[tuple[int, PositionSide | None], int] = {}
        applied = list(settlement.payments)
        paid = received = short_total = 0
        for n, (pos, amount) in enumerate(zip(positions, settlement.payments, strict=True)):
            if amount >= 0:
                received += amount
                continue
            paid -= amount
            if pos.settings.margin_mode is not _ISOLATED and pos.account != FUND_ACCOUNT:
                continue  # a cross payer pays in full
            key = self._funding_balance_key(pos)
            left = room.get(key)
            if left is None:
                left = max(0, self._funding_balance(pos, asset))
            take = min(-amount, left)
            room[key] = left - take
            short_total += -amount - take
            applied[n] = -take
        fund_wallet = self.fund_account().wallet
        fund_own = sum(a for p, a in zip(positions, applied, strict=True) if p.account == FUND_ACCOUNT and a < 0)
        carried = min(short_total, max(0, fund_wallet.get(asset, 0) + fund_own))
        socialized = short_total - carried
        if socialized:
            cut = min(socialized, received)
            for n, amount in enumerate(settlement.payments):
                if amount > 0:
                    applied[n] = amount - min(amount, -(-cut * amount // received))  # the cut rounds up
        received = sum(a for a in applied if a > 0)
        remainder = paid - short_total + carried - received  # collected + the fund's part − paid out
        seq, sseq, ts = self._stamp(m)
        summary = FundingSettled(seq, sseq, ts, symbol, funding_time, rate, mark, len(positions), paid, received,
                                 remainder, carried, socialized)
        out.append(summary)
        for pos, amount in zip(positions, applied, strict=True):
            acct = self.accounts[pos.account]
            if pos.settings.margin_mode is _ISOLATED:
                pos.isolated_margin += amount
                balance = pos.isolated_margin
            else:
                balance = acct.wallet[asset] = acct.wallet.get(asset, 0) + amount
            self.touched.add(acct.id)
            seq, sseq, ts = self._stamp(m)
            out.append(FundingPayment(seq, sseq, ts, symbol, acct.id, pos.position_side, pos.qty, amount, balance,
                                      funding_time))
        self.treasury.credit(self.treasury.fee_income, asset, remainder)
        if carried:
            self.treasury.credit(fund_wallet, asset, -carried)
            self.fund_event(out, m, asset, -carried, "FUNDING_SHORTFALL")
        for acct_id in sorted({p.account for p in positions}):
            acct = self.accounts[acct_id]
            for pos in acct.positions.values():
                if pos.symbol == symbol and pos.qty and pos.settings.margin_mode is _ISOLATED:
                    # its isolated margin paid or got the funding: new liquidation and bankruptcy prices
                    self.refresh_prices(pos)
                    self._position_event(out, pos, PositionReason.FUNDING_FEE)
            self.refresh_cross(out, acct, asset)
        return summary

    @staticmethod
    def _funding_balance_key(pos: Position) -> tuple[int, PositionSide | None]:
        """Which balance a position's funding moves: its isolated margin, or its account's futures wallet."""
        return (pos.account, pos.position_side) if pos.settings.margin_mode is _ISOLATED else (pos.account, None)

    def _funding_balance(self, pos: Position, asset: str) -> int:
        if pos.settings.margin_mode is _ISOLATED:
            return pos.isolated_margin
        return self.accounts[pos.account].wallet.get(asset, 0)

    # ------------------------------------------------------------ account commands
    def _known_asset(self, asset: object) -> bool:
        return type(asset) is str and asset in self.assets

    def deposit(self, cmd: Deposit, out: list[Event]) -> RejectReason | None:
        if type(cmd.account) is not int or not self._known_asset(cmd.asset) or type(cmd.wallet) is not WalletKind:
            return RejectReason.UNKNOWN_ASSET if type(cmd.account) is int else RejectReason.MALFORMED
        if type(cmd.amount) is not int or cmd.amount <= 0:
            return RejectReason.AMOUNT_NOT_POSITIVE
        acct = self.accounts.get(cmd.account)
        if acct is None:
            acct = self.accounts[cmd.account] = Account(cmd.account, self.maker_fee_ppm, self.taker_fee_ppm)
        wallets = acct.wallet if cmd.wallet is WalletKind.FUTURES else acct.spot
        wallets[cmd.asset] = wallets.get(cmd.asset, 0) + cmd.amount
        self.treasury.credit(self.treasury.deposits, cmd.asset, cmd.amount)
        self._balance_event(out, acct, cmd.asset, cmd.wallet, BalanceReason.DEPOSIT, cmd.amount)
        if cmd.wallet is WalletKind.FUTURES:
            self.refresh_cross(out, acct, cmd.asset)
        return None

    def _debit_check(self, acct: Account, asset: str, wallet: WalletKind, amount: int) -> RejectReason | None:
        if type(amount) is not int or amount <= 0:
            return RejectReason.AMOUNT_NOT_POSITIVE
        if wallet is WalletKind.FUTURES:
            if amount > self.max_withdrawable(acct, asset):
                return RejectReason.BALANCE_INSUFFICIENT
        elif amount > acct.spot.get(asset, 0):
            return RejectReason.BALANCE_INSUFFICIENT
        return None

    def withdraw(self, cmd: Withdraw, out: list[Event]) -> RejectReason | None:
        acct = self.accounts.get(cmd.account) if type(cmd.account) is int else None
        if acct is None:
            return RejectReason.UNKNOWN_ACCOUNT
        if not self._known_asset(cmd.asset) or type(cmd.wallet) is not WalletKind:
            return RejectReason.UNKNOWN_ASSET
        reason = self._debit_check(acct, cmd.asset, cmd.wallet, cmd.amount)
        if reason is not None:
            return reason
        wallets = acct.wallet if cmd.wallet is WalletKind.FUTURES else acct.spot
        wallets[cmd.asset] -= cmd.amount
        self.treasury.credit(self.treasury.deposits, cmd.asset, -cmd.amount)
        self._balance_event(out, acct, cmd.asset, cmd.wallet, BalanceReason.WITHDRAW, -cmd.amount)
        if cmd.wallet is WalletKind.FUTURES:
            self.refresh_cross(out, acct, cmd.asset)
        return None

    def transfer(self, cmd: Transfer, out: list[Event]) -> RejectReason | None:
        acct = self.accounts.get(cmd.account) if type(cmd.account) is int else None
        if acct is None:
            return RejectReason.UNKNOWN_ACCOUNT
        if not self._known_asset(cmd.asset):
            return RejectReason.UNKNOWN_ASSET
        if (type(cmd.from_wallet) is not WalletKind or type(cmd.to_wallet) is not WalletKind
                or cmd.from_wallet is cmd.to_wallet):
            return RejectReason.MALFORMED
        reason = self._debit_check(acct, cmd.asset, cmd.from_wallet, cmd.amount)
        if reason is not None:
            return reason
        src = acct.wallet if cmd.from_wallet is WalletKind.FUTURES else acct.spot
        dst = acct.wallet if cmd.to_wallet is WalletKind.FUTURES else acct.spot
        src[cmd.asset] -= cmd.amount
        dst[cmd.asset] = dst.get(cmd.asset, 0) + cmd.amount
        self._balance_event(out, acct, cmd.asset, cmd.from_wallet, BalanceReason.TRANSFER, -cmd.amount)
        self._balance_event(out, acct, cmd.asset, cmd.to_wallet, BalanceReason.TRANSFER, cmd.amount)
        self.refresh_cross(out, acct, cmd.asset)
        return None

    def _account_symbol(self, account: object, symbol: object) -> tuple[Account | None, RejectReason | None]:
        acct = self.accounts.get(account) if type(account) is int else None  # type: ignore[arg-type]
        if acct is None:
            return None, RejectReason.UNKNOWN_ACCOUNT
        if type(symbol) is not str or symbol not in self.markets:
            return None, RejectReason.UNKNOWN_SYMBOL
        return acct, None

    def _symbol_positions(self, acct: Account, symbol: str) -> list[Position]:
        return [p for p in acct.positions.values() if p.symbol == symbol and p.qty]

    def _has_orders(self, acct: Account, symbol: str | None) -> bool:
        """Open orders of the account (in `symbol`, or any): in the book, or conditional orders waiting for their
        trigger (Binance counts both: a stop left behind a margin- or position-mode change would fail when it
        fired)."""
        if self.stops_open(acct.id, symbol):
            return True
        if symbol is not None:
            return bool(self.markets[symbol].open_by_account.get(acct.id))
        return any(m.open_by_account.get(acct.id) for m in self.markets.values())

    def set_leverage(self, cmd: SetLeverage, out: list[Event]) -> RejectReason | None:
        acct, reason = self._account_symbol(cmd.account, cmd.symbol)
        if acct is None:
            return reason
        table = self._brackets[cmd.symbol]
        lev = cmd.leverage
        if type(lev) is not int or not 1 <= lev <= table.max_leverage:
            return RejectReason.INVALID_LEVERAGE
        settings = acct.symbol_settings(cmd.symbol)
        positions = self._symbol_positions(acct, cmd.symbol)
        m = self.markets[cmd.symbol]
        k = m.instrument.atoms_per_tick_lot
        price = self.reference_price(m)
        cap = table.max_notional_for_leverage(lev)
        old = settings.leverage
        for pos in positions:
            notional = abs(pos.qty) * price * k if price else abs(pos.cost)
            if notional > cap:
                return RejectReason.LEVERAGE_TOO_HIGH_FOR_POSITION
            if lev < old and pos.isolated and pos.isolated_margin < ceil_div(notional, lev):
                return RejectReason.LEVERAGE_MARGIN_INSUFFICIENT  # it would leave the position under its initial margin
        # the open orders count towards the cap, as at order entry (`_opening_rules`): per position side and
        # direction, the position with the same-direction orders after netting, valued at the orders' average price
        for (symbol, side), e in acct.exposure.items():
            if symbol != cmd.symbol:
                continue
            pos = acct.positions.get((symbol, side))
            q = pos.qty if pos is not None else 0
            for after, qty, notional in ((q + e.buy_qty, e.buy_qty, e.buy_notional),
                                         (-q + e.sell_qty, e.sell_qty, e.sell_notional)):
                if qty and after > 0 and after * notional * k // qty > cap:
                    return RejectReason.LEVERAGE_TOO_HIGH_FOR_POSITION
        settings.leverage = lev
        if self.available(acct, m.instrument.settlement_asset) < 0 and lev < old:
            settings.leverage = old
            return RejectReason.LEVERAGE_MARGIN_INSUFFICIENT
        self._config_event(out, acct, cmd.symbol)
        for pos in positions:
            self._position_event(out, pos, PositionReason.LEVERAGE)
        return None

    def set_margin_mode(self, cmd: SetMarginMode, out: list[Event]) -> RejectReason | None:
        acct, reason = self._account_symbol(cmd.account, cmd.symbol)
        if acct is None:
            return reason
        if type(cmd.margin_mode) is not MarginMode:
            return RejectReason.MALFORMED
        settings = acct.symbol_settings(cmd.symbol)
        if settings.margin_mode is cmd.margin_mode:
            return RejectReason.MARGIN_MODE_UNCHANGED
        if self._has_orders(acct, cmd.symbol):
            return RejectReason.MARGIN_MODE_OPEN_ORDERS
        if self._symbol_positions(acct, cmd.symbol):
            return RejectReason.MARGIN_MODE_HAS_POSITION
        settings.margin_mode = cmd.margin_mode
        self._config_event(out, acct, cmd.symbol)
        return None

    def set_position_mode(self, cmd: SetPositionMode, out: list[Event]) -> RejectReason | None:
        acct = self.accounts.get(cmd.account) if type(cmd.account) is int else None
        if acct is None:
            return RejectReason.UNKNOWN_ACCOUNT
        if type(cmd.position_mode) is not PositionMode:
            return RejectReason.MALFORMED
        if acct.position_mode is cmd.position_mode:
            return RejectReason.POSITION_MODE_UNCHANGED
        if acct.open_positions():
            return RejectReason.POSITION_MODE_HAS_POSITION
        if self._has_orders(acct, None):
            return RejectReason.POSITION_MODE_OPEN_ORDERS
        acct.position_mode = cmd.position_mode
        self._config_event(out, acct, "")
        return None

    def set_fee_tier(self, cmd: SetFeeTier, out: list[Event]) -> RejectReason | None:
        acct = self.accounts.get(cmd.account) if type(cmd.account) is int else None
        if acct is None:
            return RejectReason.UNKNOWN_ACCOUNT
        for rate in (cmd.maker_fee_ppm, cmd.taker_fee_ppm):
            if type(rate) is not int or not 0 <= rate <= PPM // 10:
                return RejectReason.MALFORMED
        acct.maker_fee_ppm, acct.taker_fee_ppm = cmd.maker_fee_ppm, cmd.taker_fee_ppm
        self._config_event(out, acct, "")
        return None

    def _isolated_position(self, account: object, symbol: object, side: object
                           ) -> tuple[Account | None, Position | None, RejectReason | None]:
        acct, reason = self._account_symbol(account, symbol)
        if acct is None:
            return None, None, reason
        if type(side) is not PositionSide or (side is _BOTH) != (acct.position_mode is PositionMode.ONE_WAY):
            return acct, None, RejectReason.POSITION_SIDE_MISMATCH
        pos = acct.positions.get((symbol, side))  # type: ignore[arg-type]
        settings = acct.symbol_settings(symbol)  # type: ignore[arg-type]
        if settings.margin_mode is not _ISOLATED:
            return acct, None, RejectReason.NOT_ISOLATED
        if pos is None or not pos.qty:
            return acct, None, RejectReason.NO_POSITION
        return acct, pos, None

    def adjust_margin(self, cmd: AdjustIsolatedMargin, out: list[Event]) -> RejectReason | None:
        acct, pos, reason = self._isolated_position(cmd.account, cmd.symbol, cmd.position_side)
        if pos is None or acct is None:
            return reason
        amount = cmd.amount
        if type(amount) is not int or amount == 0:
            return RejectReason.AMOUNT_NOT_POSITIVE
        asset = self.markets[pos.symbol].instrument.settlement_asset
        if amount > 0:
            if amount > self.max_withdrawable(acct, asset):
                return RejectReason.BALANCE_INSUFFICIENT
        else:
            notional, mm, upnl = self.position_figures(pos)
            # what may leave: the margin above the initial margin at mark, net of an unrealised loss
            free = pos.isolated_margin + min(upnl, 0) - max(ceil_div(notional, pos.settings.leverage), mm)
            if -amount > free:
                return RejectReason.ISOLATED_BALANCE_INSUFFICIENT
        self.move_isolated_margin(out, acct, pos, amount, BalanceReason.MARGIN_TRANSFER,
                                  PositionReason.MARGIN_TRANSFER)
        return None

    def move_isolated_margin(self, out: list[Event], acct: Account, pos: Position, amount: int,
                             balance_reason: BalanceReason, position_reason: PositionReason) -> None:
        """Move `amount` from the futures wallet into the position's isolated margin (negative: back)."""
        asset = self.markets[pos.symbol].instrument.settlement_asset
        acct.wallet[asset] = acct.wallet.get(asset, 0) - amount
        pos.isolated_margin += amount
        self._balance_event(out, acct, asset, WalletKind.FUTURES, balance_reason, -amount, pos.symbol)
        self.refresh_prices(pos)
        self._position_event(out, pos, position_reason)
        self.refresh_cross(out, acct, asset)

    def set_auto_add(self, cmd: SetAutoMarginAddition, out: list[Event]) -> RejectReason | None:
        acct, reason = self._account_symbol(cmd.account, cmd.symbol)
        if acct is None:
            return reason
        if type(cmd.enabled) is not bool or type(cmd.position_side) is not PositionSide:
            return RejectReason.MALFORMED
        if (cmd.position_side is _BOTH) != (acct.position_mode is PositionMode.ONE_WAY):
            return RejectReason.POSITION_SIDE_MISMATCH
        if acct.symbol_settings(cmd.symbol).margin_mode is not _ISOLATED:
            return RejectReason.NOT_ISOLATED
        pos = acct.position(cmd.symbol, cmd.position_side)
        pos.auto_add = cmd.enabled
        self._config_event(out, acct, cmd.symbol, cmd.position_side)
        return None

    # ------------------------------------------------------------ queries
    def all_positions(self) -> Iterable[Position]:
        for acct in self.accounts.values():
            yield from acct.positions.values()


def _orders_im(q: int, side: PositionSide, lev: int, k: int, bq: int, bn: int, sq: int, sn: int) -> int:
    """The initial margin of open orders (Σ buy qty `bq`, notional `bn` in tick·lots; `sq`, `sn` the sells) of a
    position of `q` lots: only the part that would open or increase it holds margin; one-way the worse side.

    One-way: buy_open = max(0, bq − max(0, −q)), sell_open = max(0, sq − max(0, q)); hedge: the position's opening
    side only. Each side's IM = ceil(notional × open / (qty × leverage)). (Comparisons rather than max() and
    ceil_div() calls: every order's margin check comes here twice.)
    """
    if side is _BOTH:
        buy_open = bq + q if q < 0 else bq  # orders first close the short
        sell_open = sq - q if q > 0 else sq  # ... or the long
        if buy_open < 0:
            buy_open = 0
        if sell_open < 0:
            sell_open = 0
    elif side is _LONG:
        buy_open, sell_open = bq, 0
    else:
        buy_open, sell_open = 0, sq
    buy_im = -((-bn * buy_open * k) // (bq * lev)) if buy_open else 0
    sell_im = -((-sn * sell_open * k) // (sq * lev)) if sell_open else 0
    return buy_im if buy_im > sell_im else sell_im


def _unattached(m: Market | None) -> tuple[int, int, int]:
    raise RuntimeError("Clearing is not attached to an engine")
