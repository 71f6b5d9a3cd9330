"""The liquidation flow: margin calls, liquidation, insurance-fund take-over and ADL.

mechanics.md Part 1 "Liquidation process" steps 1–6, "Insurance fund", "ADL",
"Auto margin addition", "Nobody owes money". The liquidator is driven by the
engine: after every mark update (`on_mark`) and after every command that
touched an account (`after_command`). It reaches the book only through the
`LiquidationVenue` protocol (cancel an account's orders, send an IOC), so it
depends on the domain model, not on the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any, Protocol

from adl.ranking import AdlRanking, profitable, quantiles, random_offsets, rank
from exchange.accounts import Account, Position
from exchange.clearing import FUND_ACCOUNT, Clearing
from exchange.enums import (
    BalanceReason,
    CancelReason,
    MarginMode,
    OrderType,
    PositionReason,
    PositionSide,
    Side,
)
from exchange.events import (
    AdlExecuted,
    AdlQuantiles,
    Event,
    LiquidationRecorded,
    MarginCall,
    PositionTakenOver,
)
from exchange.instrument import BAND_DEN
from exchange.market import Market
from insurance.fund import InsuranceFund
from liquidation.auto_margin import auto_add_amount
from liquidation.monitor import SIDE_OF_VALUE, RiskMonitor, UnitKey, Verdict

_ISOLATED = MarginMode.ISOLATED
_BUY = Side.BUY
_SELL = Side.SELL
_CALL, _LIQUIDATE = Verdict.CALL, Verdict.LIQUIDATE
#: A cascade re-checks the accounts its own fills touched; this bounds the rounds (each closes positions).
_MAX_ROUNDS = 1000


class LiquidationVenue(Protocol):
    """What the liquidator needs from the matching engine."""

    markets: dict[str, Market]

    def cancel_account_orders(self, out: list[Event], account: int, symbol: str | None,
                              reason: CancelReason = CancelReason.LIQUIDATION) -> None: ...

    def cancel_account_stops(self, out: list[Event], account: int, symbol: str | None,
                             reason: CancelReason = CancelReason.LIQUIDATION) -> None: ...

    def send_ioc(self, out: list[Event], m: Market, account: int, position_side: PositionSide, side: Side,
                 qty: int, price: int, order_type: OrderType) -> tuple[int, int]:
        """An IOC limit order; returns (filled lots, Σ price × qty of its fills in tick·lots)."""
        ...


class _Record:
    """Running figures of one liquidation step, published as a LiquidationRecorded event."""

    __slots__ = ("adl", "book", "entry_cost", "entry_qty", "fee_before", "fund_before", "insurance", "long",
                 "notional", "pnl_before", "qty", "shortfall_before", "bp")

    def __init__(self, pos: Position, fund_before: int, fee_before: int) -> None:
        self.qty = self.book = self.insurance = 0
        self.notional = 0
        self.adl: list[tuple[int, int]] = []
        self.fund_before = fund_before
        self.pnl_before = pos.realized_pnl
        self.fee_before = fee_before
        self.entry_cost = abs(pos.cost)  # entry price = entry_cost / (entry_qty × k)
        self.entry_qty = abs(pos.qty)
        self.long = pos.qty > 0
        self.shortfall_before = 0
        self.bp = 0  # the bankruptcy price the liquidation orders were sent at


class Liquidator:
    def __init__(
        self, clearing: Clearing, venue: LiquidationVenue, fund: InsuranceFund | None = None,
        monitor: RiskMonitor | None = None, adl_ranking: AdlRanking = AdlRanking.PNL_LEVERAGE, adl_seed: int = 0,
        adl_interval_ms: int = 30_000,
    ) -> None:
        self.clearing = clearing
        self.venue = venue
        self.fund = fund if fund is not None else InsuranceFund(clearing)
        self.monitor = monitor if monitor is not None else RiskMonitor(clearing)
        self.adl_ranking = adl_ranking
        self.adl_seed = adl_seed
        self.adl_interval_ms = adl_interval_ms
        self.next_adl_publish = adl_interval_ms  # the first publication after one interval
        self.next_id = 1
        self.records: dict[int, list[LiquidationRecorded]] = {}  # account -> its liquidation records
        self._busy = False
        self._epoch = 0  # counts the updates (mark, command, tick) a cached ADL ranking is valid within
        # (symbol, long) -> ((epoch, mark), the ranked side; RANDOM_OFFSET: its (profitable, losing) groups)
        self._rank_cache: dict[tuple[str, bool], tuple[tuple[int, int], Any]] = {}

    # ------------------------------------------------------------ triggers
    def after_command(self, out: list[Event]) -> None:
        """Check every unit of the accounts the last command touched (exactly: their index entries are stale
        until the next mark tick re-indexes them), until a cascade settles."""
        if self._busy:
            return
        self._epoch += 1
        self._busy = True
        try:
            for _ in range(_MAX_ROUNDS):
                touched = self.clearing.touched
                if not touched:
                    break
                self.clearing.touched = set()
                keys: list[UnitKey] = []
                accounts, touch = self.clearing.accounts, self.monitor.touch
                for account in sorted(touched):
                    keys += touch(accounts[account])  # its units (none for the fund); its index entries now stale
                for key in keys:
                    self._check_exact(key, out)
        finally:
            self._busy = False

    def on_mark(self, m: Market, out: list[Event]) -> None:
        """A new mark price: check the units it may have put at risk, then offload the fund."""
        self._epoch += 1
        mark = m.mark_price
        symbol = m.instrument.symbol
        self.monitor.refresh()
        # cross accounts holding several symbols: this mark moves their other symbols' liquidation prices
        for key in self.monitor.multi_units(symbol):
            acct = self.clearing.accounts.get(key[0])
            if acct is not None:
                self.clearing.refresh_cross(out, acct, key[2])
        for key in self.monitor.candidates(symbol, mark):
            self._check(key, out)
        self._offload(m, out)
        self._guard_fund(m, out)
        self.after_command(out)

    def on_time(self, now: int, out: list[Event]) -> None:
        """Clock ticks: publish ADL quantiles every `adl_interval_ms` of virtual time."""
        if self.adl_interval_ms and now >= self.next_adl_publish:
            self.next_adl_publish = now - now % self.adl_interval_ms + self.adl_interval_ms
            self.publish_quantiles(out)

    def _check(self, key: UnitKey, out: list[Event]) -> None:
        """A unit the index found: checked exactly unless its (fresh) entry already says it is safe."""
        if self.monitor.safe_by_index(key):  # the exact ratio would say SAFE, and the unit is not in margin call
            return
        self._check_exact(key, out)

    def _check_exact(self, key: UnitKey, out: list[Event]) -> None:
        """Liquidate, call or release a unit by its exact margin ratio."""
        figures = self.monitor.figures(key)
        if figures is None:  # no open position left in the unit
            return
        verdict = self.monitor.verdict_of(*figures)
        if verdict is _LIQUIDATE:
            self.liquidate(key, out)
        elif verdict is _CALL:
            if key not in self.monitor.called:
                self._margin_call(key, out)
                self.monitor.set_called(key, True)
        elif key in self.monitor.called:
            self.monitor.set_called(key, False)

    def _margin_call(self, key: UnitKey, out: list[Event]) -> None:
        mm, mb = self.monitor.ratio(key)
        ratio = mm * 1_000_000 // mb if mb > 0 else 10**12
        m = self.clearing.markets.get(key[1]) if key[1] else None
        seq, sseq, ts = self.clearing.stamp(m)
        side = SIDE_OF_VALUE[key[2]] if key[1] else PositionSide.BOTH
        out.append(MarginCall(seq, sseq, ts, key[0], key[1], side, ratio, mm, mb))

    # ------------------------------------------------------------ the flow
    def liquidate(self, key: UnitKey, out: list[Event]) -> None:
        """Steps 1–6 for one unit (an isolated position or a cross account)."""
        c = self.clearing
        acct = c.accounts[key[0]]
        monitor = self.monitor
        liq_id = self.next_id
        self.next_id += 1
        # 1. cancel the orders that hold its margin (isolated: that symbol's; cross: all), re-check
        self.venue.cancel_account_orders(out, acct.id, key[1] or None)
        if monitor.verdict(key) is not Verdict.LIQUIDATE:
            return self._settle_state(key, out)
        # it is liquidated: its conditional orders go too (binance-api.md §3.4 step 2), so that none reopens a
        # position it no longer has the margin for (they hold no margin: cancelling them could not have saved it)
        self.venue.cancel_account_stops(out, acct.id, key[1] or None)
        if key[1]:
            pos = acct.positions[(key[1], SIDE_OF_VALUE[key[2]])]
            # 2. auto margin addition, where the position has it on
            if pos.auto_add and self._auto_add(acct, pos, out) and monitor.verdict(key) is not Verdict.LIQUIDATE:
                return self._settle_state(key, out)
            self._liquidate_position(acct, pos, key, liq_id, out)
        else:
            asset = key[2]
            self._net_hedged_legs(acct, asset, out)
            # 6. several positions share the margin: one at a time, largest maintenance margin first
            for _ in range(64):
                if monitor.verdict(key) is not Verdict.LIQUIDATE:
                    break
                positions = self.clearing.cross_positions(acct, asset)
                if not positions:
                    break
                pos = min(positions, key=lambda p: self._priority(p))
                self._liquidate_position(acct, pos, key, liq_id, out)
        c.touched.add(acct.id)
        self._settle_state(key, out)

    def _settle_state(self, key: UnitKey, out: list[Event]) -> None:
        """After a liquidation attempt: re-index the unit and update its call state."""
        acct = self.clearing.accounts[key[0]]
        self.monitor.reindex_account(acct)
        figures = self.monitor.figures(key)
        verdict = self.monitor.verdict_of(*figures) if figures is not None else Verdict.SAFE
        self.monitor.set_called(key, verdict is not Verdict.SAFE)

    def _priority(self, pos: Position) -> tuple[int, int, str, str]:
        """Cross order: descending maintenance margin, then larger unrealised loss, then symbol."""
        _, mm, upnl = self.clearing.position_figures(pos)
        return (-mm, upnl, pos.symbol, pos.position_side.value)

    def _asset(self, pos: Position) -> str:
        return self.clearing.markets[pos.symbol].instrument.settlement_asset

    def _auto_add(self, acct: Account, pos: Position, out: list[Event]) -> bool:
        c = self.clearing
        m = c.markets[pos.symbol]
        available = c.max_withdrawable(acct, self._asset(pos))
        amount = auto_add_amount(c.profile.auto_add_rule, pos, c.brackets(pos.symbol), c.reference_price(m),
                                 m.instrument.atoms_per_tick_lot, available)
        if amount <= 0:
            return False
        c.move_isolated_margin(out, acct, pos, amount, BalanceReason.AUTO_MARGIN_ADD, PositionReason.AUTO_MARGIN_ADD)
        return True

    def _net_hedged_legs(self, acct: Account, asset: str, out: list[Event]) -> None:
        """Cross hedge mode: close LONG against SHORT of the same symbol at the mark first (no fee)."""
        c = self.clearing
        for symbol in sorted({p.symbol for p in self.clearing.cross_positions(acct, asset)}):
            long = acct.positions.get((symbol, PositionSide.LONG))
            short = acct.positions.get((symbol, PositionSide.SHORT))
            if long is None or short is None or not long.qty or not short.qty:
                continue
            qty = min(long.qty, -short.qty)
            m = c.markets[symbol]
            price = c.reference_price(m)
            c.book_fill(out, m, acct, PositionSide.LONG, _SELL, qty, price, 0, 0, PositionReason.LIQUIDATION)
            c.book_fill(out, m, acct, PositionSide.SHORT, _BUY, qty, price, 0, 0, PositionReason.LIQUIDATION)

    def _liquidate_position(self, acct: Account, pos: Position, key: UnitKey, liq_id: int, out: list[Event]
                            ) -> None:
        """Steps 3–6 for one position: bracket-down IOCs, then the rest, then the fund or ADL."""
        c = self.clearing
        m = c.markets[pos.symbol]
        ins = m.instrument
        k = ins.atoms_per_tick_lot
        mark = c.reference_price(m)
        table = c.brackets(pos.symbol)
        close_side = _SELL if pos.qty > 0 else _BUY
        # 3. partial: while above bracket 1, bring the notional down to the floor of its bracket, re-checking
        while pos.qty and mark:
            bracket = table.for_notional(abs(pos.qty) * mark * k)
            if bracket.number == 1:
                break
            keep = bracket.floor // (mark * k)
            qty = abs(pos.qty) - keep
            if qty <= 0:
                break
            rec = self._start(pos)
            rec.bp = self._bankruptcy(pos, mark)
            filled, notional = self.venue.send_ioc(out, m, acct.id, pos.position_side, close_side, qty, rec.bp,
                                                   OrderType.LIQUIDATION)
            rec.qty = rec.book = filled
            rec.notional = notional
            if filled:
                self._fund_flows(out, acct, pos, rec, liq_id)
                self._record(out, acct, pos, rec, liq_id, mark, partial=True)
            if not filled or self.monitor.verdict(key) is not Verdict.LIQUIDATE:
                if filled:
                    return
                break
        if not pos.qty:
            return
        # 4. full: an IOC for the rest at the bankruptcy price, taking liquidity like any taker
        rec = self._start(pos)
        bp = rec.bp = self._bankruptcy(pos, mark)
        qty = abs(pos.qty)
        filled, notional = self.venue.send_ioc(out, m, acct.id, pos.position_side, close_side, qty, bp,
                                               OrderType.LIQUIDATION)
        rec.qty, rec.book, rec.notional = filled, filled, notional
        rest = abs(pos.qty)
        if rest:
            bp = self._bankruptcy(pos, mark)
            taken = self._take_over(out, acct, pos, rest, bp, mark, liq_id)
            rec.qty += taken
            rec.insurance = taken
            rec.notional += taken * bp
            rest -= taken
        if rest:
            for account, qty_adl in self._deleverage(out, acct, pos, rest, bp, mark, liq_id):
                rec.adl.append((account, qty_adl))
                rec.qty += qty_adl
                rec.notional += qty_adl * bp
        self._fund_flows(out, acct, pos, rec, liq_id)
        self._sweep_leftover(out, acct, pos, liq_id)
        self._record(out, acct, pos, rec, liq_id, mark, partial=False)

    def _sweep_leftover(self, out: list[Event], acct: Account, pos: Position, liq_id: int) -> None:
        """Step 4: when the last position backed by a margin is liquidated in full, what is left goes to the fund."""
        if pos.qty:
            return
        asset = self._asset(pos)
        if pos.settings.margin_mode is _ISOLATED:
            left, pos.isolated_margin = pos.isolated_margin, 0
        elif not self.clearing.cross_positions(acct, asset):
            left, acct.wallet[asset] = acct.wallet.get(asset, 0), 0
        else:
            return
        if left > 0:
            self.fund.credit(out, asset, left, "LEFTOVER_MARGIN", liq_id, acct.id, pos.symbol)

    def _bankruptcy(self, pos: Position, mark: int) -> int:
        """The position's bankruptcy price on the tick grid (against the position); the mark if it has none."""
        self.clearing.refresh_prices(pos)
        return pos.bankruptcy_ticks or mark

    def _take_over(self, out: list[Event], acct: Account, pos: Position, qty: int, bp: int, mark: int,
                   liq_id: int) -> int:
        """5. The fund takes `qty` over at the bankruptcy price if it can carry it; returns what it took."""
        c = self.clearing
        m = c.markets[pos.symbol]
        k = m.instrument.atoms_per_tick_lot
        asset = m.instrument.settlement_asset
        long = pos.qty > 0
        loss = qty * (bp - mark) * k if long else qty * (mark - bp) * k  # the fund buys a long at bp, worth mark
        fund_acct = c.fund_account()
        held = fund_acct.positions.get((pos.symbol, PositionSide.BOTH))
        held_qty = held.qty if held is not None else 0
        after = abs(held_qty + (qty if long else -qty)) * mark * k
        if not self.fund.can_take_over(asset, max(loss, 0), after):
            return 0
        close_side = _SELL if long else _BUY
        # at the bankruptcy price no margin is left to pay a clearance fee from (the fee is capped by it)
        c.book_fill(out, m, acct, pos.position_side, close_side, qty, bp, 0, 0, PositionReason.LIQUIDATION,
                    liquidation=True)
        c.book_fill(out, m, fund_acct, PositionSide.BOTH, _BUY if long else _SELL, qty, bp, 0, 0,
                    PositionReason.LIQUIDATION)
        seq, sseq, ts = c.stamp(m)
        out.append(PositionTakenOver(seq, sseq, ts, liq_id, pos.symbol, acct.id, qty if long else -qty, bp))
        self._offload(m, out)
        return qty

    def _deleverage(self, out: list[Event], acct: Account, pos: Position, qty: int, bp: int, mark: int,
                    liq_id: int) -> list[tuple[int, int]]:
        """6. ADL: close ranked opposite-side positions at the bankruptcy price, no fee, until `qty` is covered."""
        c = self.clearing
        m = c.markets[pos.symbol]
        k = m.instrument.atoms_per_tick_lot
        long = pos.qty > 0
        # filtered lazily, as the loop below reaches them: an ADL pays for the positions it visits, not for
        # the whole side (the loop changes only positions it has already passed, so this is the same list)
        ranked: Iterable[Position] = (p for p in self._ranking(pos.symbol, not long, mark, k, liq_id, out)
                                      if p.qty and (p.qty < 0) == long and p.account not in (acct.id, FUND_ACCOUNT))
        fund_acct = c.accounts.get(FUND_ACCOUNT)
        fund_pos = fund_acct.positions.get((pos.symbol, PositionSide.BOTH)) if fund_acct else None
        if fund_pos is not None and fund_pos.qty and (fund_pos.qty < 0) == long:
            ranked = chain(ranked, (fund_pos,))  # the fund's own opposite position, last
        done: list[tuple[int, int]] = []
        close_side = _SELL if long else _BUY
        for n, other in enumerate(ranked, start=1):
            if not qty:
                break
            take = min(qty, abs(other.qty))
            other_acct = c.accounts[other.account]
            self.venue.cancel_account_orders(out, other.account, pos.symbol, CancelReason.ADL)
            # at the bankruptcy price no margin is left to pay a clearance fee from (the fee is capped by it)
            c.book_fill(out, m, acct, pos.position_side, close_side, take, bp, 0, 0, PositionReason.LIQUIDATION,
                        liquidation=True)
            c.book_fill(out, m, other_acct, other.position_side, _BUY if close_side is _SELL else _SELL, take, bp, 0,
                        0, PositionReason.ADL)
            seq, sseq, ts = c.stamp(m)
            out.append(AdlExecuted(seq, sseq, ts, liq_id, pos.symbol, other.account, other.position_side, take, bp, n))
            done.append((other.account, take))
            qty -= take
        return done

    def _ranking(self, symbol: str, long: bool, mark: int, k: int, liq_id: int, out: list[Event]
                 ) -> Iterable[Position]:
        """The ADL order of one symbol's longs (or shorts), ranked once per mark update and reused by every
        liquidation of that update (a cascade): O(n log n) per update, not per liquidation. Positions that a
        liquidation of the same update closed or reduced stay in the list; the caller skips the closed ones.
        RANDOM_OFFSET: the cached account order from the liquidation's seeded start (as `rank` gives it),
        iterated in place rather than copied, so a liquidation pays for the positions it visits."""
        key = (symbol, long)
        cached = self._rank_cache.get(key)
        if cached is None or cached[0] != (self._epoch, mark):
            c = self.clearing
            side = [p for (account, _), p in sorted(c.open_positions.get(symbol, {}).items(),
                                                   key=lambda kv: (kv[0][0], kv[0][1].value))
                    if (p.qty > 0) == long and account != FUND_ACCOUNT]
            for p in side:
                c.refresh_position(out, p)  # bankruptcy prices at this mark (published where they moved)
            if self.adl_ranking is AdlRanking.PNL_LEVERAGE:
                order: list[Position] | tuple[list[Position], list[Position]] = rank(side, mark, k)
            else:  # one symbol, in (account, position side) order: `rank`'s groups, profitable first
                order = ([p for p in side if profitable(p, mark, k)], [p for p in side if not profitable(p, mark, k)])
            cached = self._rank_cache[key] = ((self._epoch, mark), order)
        if self.adl_ranking is AdlRanking.RANDOM_OFFSET:
            # each group from its seeded start (as `rank` draws them), walked in place, not copied
            return (g[i] for g, start in random_offsets(cached[1], self.adl_seed ^ liq_id)
                    for i in chain(range(start, len(g)), range(start)))
        return cached[1]

    def _offload(self, m: Market, out: list[Event]) -> None:
        """The fund offloads what it holds with IOCs inside the price band, at most one bracket-1 notional a tick."""
        c = self.clearing
        fund_acct = c.accounts.get(FUND_ACCOUNT)
        if fund_acct is None:
            return
        pos = fund_acct.positions.get((m.instrument.symbol, PositionSide.BOTH))
        mark = c.reference_price(m)
        if pos is None or not pos.qty or not mark:
            return
        ins = m.instrument
        k = ins.atoms_per_tick_lot
        chunk_notional = c.brackets(ins.symbol).brackets[0].cap
        qty = min(abs(pos.qty), max(1, chunk_notional // (mark * k)))
        if pos.qty > 0:
            side, price = _SELL, -((-mark * (BAND_DEN - ins.band_down_num)) // BAND_DEN)
        else:
            side, price = _BUY, mark * (BAND_DEN + ins.band_up_num) // BAND_DEN
        # never sell below (buy above) the price at which the fund's balance could meet its floor
        floor_price = self._fund_floor_price(fund_acct, pos, m)
        price = max(price, floor_price) if pos.qty > 0 else min(price, floor_price)
        asset = ins.settlement_asset
        before = self.fund.balance(asset)
        self.venue.send_ioc(out, m, FUND_ACCOUNT, PositionSide.BOTH, side, qty, price, OrderType.LIMIT)
        self.fund.record(out, asset, self.fund.balance(asset) - before, "OFFLOAD_PNL", symbol=ins.symbol)

    def _guard_fund(self, m: Market, out: list[Event]) -> None:
        """The fund is never negative: when a position it holds would take its equity below its floor, that
        position is deleveraged against ranked counterparties at the price where the equity equals the floor.

        What it may lose on a position is its wallet less its floor less the unrealised losses of its other
        positions (their profits are not counted: realising this loss first would otherwise take its wallet,
        the fund's balance, below zero while a profit elsewhere is still unrealised). The price P solves
        wallet + Σ min(UPNL, 0) of the others + q·k·P − cost = floor, rounded in the fund's favour.
        """
        c = self.clearing
        fund_acct = c.accounts.get(FUND_ACCOUNT)
        if fund_acct is None:
            return
        ins = m.instrument
        pos = fund_acct.positions.get((ins.symbol, PositionSide.BOTH))
        mark = c.reference_price(m)
        if pos is None or not pos.qty or not mark:
            return
        asset = ins.settlement_asset
        price = self._fund_floor_price(fund_acct, pos, m)
        if (mark > price) if pos.qty > 0 else (mark < price):
            return  # its equity at the mark is above its floor
        price = max(price, 1)
        liq_id = self.next_id
        self.next_id += 1
        rec = self._start(pos)
        rec.bp = price
        for account, qty in self._deleverage(out, fund_acct, pos, abs(pos.qty), price, mark, liq_id):
            rec.adl.append((account, qty))
            rec.qty += qty
            rec.notional += qty * price
        self.fund.record(out, asset, self.fund.balance(asset) - rec.fund_before, "FUND_DELEVERAGED", liq_id,
                         symbol=ins.symbol)
        self._record(out, fund_acct, pos, rec, liq_id, mark, partial=False)

    def _fund_floor_price(self, fund_acct: Account, pos: Position, m: Market) -> int:
        """The price of `pos` at which the fund's equity equals its floor, on the tick grid in its favour.

        Solves wallet + Σ min(UPNL, 0) of its other positions + q·k·P − cost = floor (`_guard_fund`); a long
        rounds up, a short down.
        """
        c = self.clearing
        asset = m.instrument.settlement_asset
        upnl_other = sum(min(c.position_figures(p)[2], 0) for p in fund_acct.positions.values()
                         if p.qty and p is not pos and c.markets[p.symbol].instrument.settlement_asset == asset)
        num = self.fund.floor.get(asset, 0) - fund_acct.wallet.get(asset, 0) - upnl_other + pos.cost
        den = pos.qty * m.instrument.atoms_per_tick_lot
        return -((-num) // den) if pos.qty > 0 else num // den

    # ------------------------------------------------------------ records
    def _fund_flows(self, out: list[Event], acct: Account, pos: Position, rec: _Record, liq_id: int) -> None:
        """Publish what the fills of this step paid the fund (clearance fees) or cost it (shortfalls)."""
        c = self.clearing
        asset = self._asset(pos)
        fee, short = c.clearance_fees - rec.fee_before, c.liquidation_shortfalls - rec.shortfall_before
        balance = self.fund.balance(asset)  # after both: the fee event's balance is before the shortfall
        self.fund.record(out, asset, fee, "CLEARANCE_FEE", liq_id, acct.id, pos.symbol, balance + short)
        self.fund.record(out, asset, -short, "SHORTFALL", liq_id, acct.id, pos.symbol, balance)

    def _start(self, pos: Position) -> _Record:
        rec = _Record(pos, self.fund.balance(self._asset(pos)), self.clearing.clearance_fees)
        rec.shortfall_before = self.clearing.liquidation_shortfalls
        return rec

    def _record(self, out: list[Event], acct: Account, pos: Position, rec: _Record, liq_id: int, mark: int,
                partial: bool) -> None:
        c = self.clearing
        m = c.markets[pos.symbol]
        asset = m.instrument.settlement_asset
        fee = c.clearance_fees - rec.fee_before
        fund_delta = self.fund.balance(asset) - rec.fund_before
        k = m.instrument.atoms_per_tick_lot
        seq, sseq, ts = c.stamp(m)
        ev = LiquidationRecorded(
            seq, sseq, ts, liq_id, pos.symbol, acct.id, pos.position_side, "LONG" if rec.long else "SHORT", partial,
            pos.settings.margin_mode, pos.settings.leverage, rec.entry_cost, max(1, rec.entry_qty) * k,
            mark, rec.bp, rec.qty, rec.book, rec.insurance, sum(q for _, q in rec.adl),
            rec.notional, pos.realized_pnl - rec.pnl_before, fee,
            pos.isolated_margin if pos.settings.margin_mode is _ISOLATED else acct.wallet.get(asset, 0),
            fund_delta, rec.adl,
        )
        out.append(ev)
        self.records.setdefault(acct.id, []).append(ev)

    def publish_quantiles(self, out: list[Event]) -> None:
        """Each open position's ADL quantile per symbol (the 'lights'); O(n log n) per publication."""
        c = self.clearing
        by_symbol: dict[str, list[Position]] = {
            symbol: [p for (account, _), p in sorted(held.items(), key=lambda kv: (kv[0][0], kv[0][1].value))
                     if account != FUND_ACCOUNT]
            for symbol, held in c.open_positions.items() if held
        }
        for symbol in sorted(by_symbol):
            m = c.markets[symbol]
            mark = c.reference_price(m)
            if not mark:
                continue
            k = m.instrument.atoms_per_tick_lot
            rows: list[tuple[int, PositionSide, int]] = []
            for want_long in (True, False):
                side = [p for p in by_symbol[symbol] if (p.qty > 0) == want_long]
                for p in side:
                    c.refresh_position(out, p)  # current bankruptcy prices for the score, published if moved
                for p, q in quantiles(rank(side, mark, k, self.adl_ranking, self.adl_seed)):
                    rows.append((p.account, p.position_side, q))
            rows.sort(key=lambda r: (r[0], r[1].value))
            seq, sseq, ts = c.stamp(m)
            out.append(AdlQuantiles(seq, sseq, ts, symbol, rows))
