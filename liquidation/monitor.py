"""The risk monitor: which positions a mark-price tick may have put at risk, without scanning them all.

Units of risk: an isolated position, or a cross account (per settlement
asset). A unit whose risk sits in one symbol is indexed per symbol and
direction by its *trigger price*: the price at which its margin ratio reaches
the margin-call threshold (80% by default; with calls disabled, 100%: the
liquidation price). The trigger is on the tick grid, rounded toward the mark,
so a unit is looked at early, never late; the decision itself is always the
exact integer margin ratio (mechanics.md Part 1 "Units").

- A mark tick looks at the index entries it crossed (longs at or above the
  mark, shorts at or below): O(log n + crossed).
- A unit in margin call (ratio ≥ threshold) leaves the index and is re-checked
  on every tick of its symbol until it is liquidated or recovers: O(called).
- A cross account holding several symbols cannot be put on one price axis; it
  is re-checked on every tick of each symbol it holds: O(such accounts holding
  the symbol). This is the stated cost of cross accounts with several symbols.

Index entries change only when a unit changes (a fill, a margin transfer, a
funding payment, a wallet change), and only the next mark tick reads them: a
command marks the accounts it touched stale (the caller checks their units
exactly at once), and a tick first re-indexes the stale accounts, each once
however many commands touched it since the last tick (`refresh`).
"""

from __future__ import annotations

from enum import Enum

from sortedcontainers import SortedList

from exchange.accounts import Account, Position
from exchange.brackets import PPM
from exchange.clearing import FUND_ACCOUNT, Clearing
from exchange.enums import MarginMode, PositionSide
from exchange.margin import Leg, liquidation_ticks, position_liquidation_ticks

#: (account, symbol, position side) for an isolated position; (account, "", asset) for a cross account.
UnitKey = tuple[int, str, str]

_ISOLATED = MarginMode.ISOLATED


class Verdict(Enum):
    SAFE = 0
    CALL = 1  # margin ratio at or above the call threshold
    LIQUIDATE = 2  # margin ratio at or above 100%


class SymbolRisk:
    """The per-symbol index: trigger prices of single-symbol units, and the units re-checked every tick."""

    __slots__ = ("called", "longs", "multi", "shorts")

    def __init__(self) -> None:
        self.longs: SortedList = SortedList()  # (trigger, key): at risk when mark ≤ trigger
        self.shorts: SortedList = SortedList()  # (trigger, key): at risk when mark ≥ trigger
        self.called: set[UnitKey] = set()
        self.multi: set[UnitKey] = set()


_SAFE, _CALL, _LIQUIDATE = Verdict.SAFE, Verdict.CALL, Verdict.LIQUIDATE
#: a unit key's position side (its value) back to the member: a dict read, not an enum call
SIDE_OF_VALUE = {side.value: side for side in PositionSide}


class RiskMonitor:
    def __init__(self, clearing: Clearing, call_ratio_ppm: int | None = None) -> None:
        self.clearing = clearing
        self.call_ppm = min(call_ratio_ppm if call_ratio_ppm is not None else clearing.profile.margin_call_ratio_ppm,
                            PPM)
        self.symbols: dict[str, SymbolRisk] = {}
        self._entry: dict[UnitKey, tuple[str, bool, int]] = {}  # key -> (symbol, long, trigger)
        self._places: dict[UnitKey, list[str]] = {}  # key -> symbols whose called/multi sets hold it
        self._indexed: dict[int, set[UnitKey]] = {}  # account -> its keys in _entry or _places
        self.called: set[UnitKey] = set()
        self.stale: set[int] = set()  # accounts changed since they were last indexed

    def _sym(self, symbol: str) -> SymbolRisk:
        s = self.symbols.get(symbol)
        if s is None:
            s = self.symbols[symbol] = SymbolRisk()
        return s

    # ------------------------------------------------------------ units
    @staticmethod
    def isolated_key(pos: Position) -> UnitKey:
        return (pos.account, pos.symbol, pos.position_side.value)

    def units_of(self, acct: Account) -> list[UnitKey]:
        """The risk units of an account: each open isolated position, and its cross book per asset."""
        positions = acct.positions
        if len(positions) == 1:  # the common case, one position: its unit without the list and set below
            (pos,) = positions.values()
            if not pos.qty:
                return []
            if pos.settings.margin_mode is _ISOLATED:
                return [self.isolated_key(pos)]
            return [(acct.id, "", self.clearing.markets[pos.symbol].instrument.settlement_asset)]
        keys: list[UnitKey] = []
        assets: set[str] = set()
        for pos in acct.positions.values():
            if not pos.qty:
                continue
            if pos.settings.margin_mode is _ISOLATED:
                keys.append(self.isolated_key(pos))
            else:
                assets.add(self.clearing.markets[pos.symbol].instrument.settlement_asset)
        keys.extend((acct.id, "", a) for a in sorted(assets))
        return keys

    def figures(self, key: UnitKey) -> tuple[int, int] | None:
        """(maintenance margin, margin balance) of a unit, exact, at current marks; None if the unit holds no
        open position (its account is unknown, its isolated position closed or no longer isolated, no cross
        position open in its asset)."""
        c = self.clearing
        acct = c.accounts.get(key[0])
        if acct is None:
            return None
        if key[1]:
            pos = acct.positions.get((key[1], SIDE_OF_VALUE[key[2]]))
            if pos is None or not pos.qty or pos.settings.margin_mode is not _ISOLATED:
                return None
            _, mm, upnl = c.position_figures(pos)
            return mm, pos.isolated_margin + upnl
        mm = upnl = 0
        found = False
        asset = key[2]
        ms = c.markets
        for pos in acct.positions.values():  # Clearing.cross_positions, without the list
            if (pos.qty and pos.settings.margin_mode is not _ISOLATED
                    and ms[pos.symbol].instrument.settlement_asset == asset):
                _, p_mm, p_upnl = c.position_figures(pos)
                mm += p_mm
                upnl += p_upnl
                found = True
        return (mm, acct.wallet.get(asset, 0) + upnl) if found else None

    def ratio(self, key: UnitKey) -> tuple[int, int]:
        """`figures`, with (0, 0) for a unit without an open position."""
        return self.figures(key) or (0, 0)

    def verdict(self, key: UnitKey) -> Verdict:
        return self.verdict_of(*self.ratio(key))

    def verdict_of(self, mm: int, mb: int) -> Verdict:
        """The verdict on a unit of maintenance margin `mm` and margin balance `mb`."""
        if not mm and mb >= 0:
            return _SAFE
        if mm >= mb:  # margin ratio MM / MB ≥ 100% (or MB ≤ 0)
            return _LIQUIDATE
        if mm * PPM >= self.call_ppm * mb:
            return _CALL
        return _SAFE

    # ------------------------------------------------------------ index
    def forget(self, key: UnitKey) -> None:
        entry = self._entry.pop(key, None)
        if entry is not None:
            symbol, long, trigger = entry
            s = self.symbols[symbol]
            (s.longs if long else s.shorts).remove((trigger, key))
        for symbol in self._places.pop(key, ()):
            s = self.symbols[symbol]
            s.called.discard(key)
            s.multi.discard(key)
        keys = self._indexed.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._indexed[key[0]]

    def touch(self, acct: Account) -> list[UnitKey]:
        """An account changed: its index entries are stale until the next `refresh`. Returns its units, for the
        caller that checks them exactly next."""
        if acct.id == FUND_ACCOUNT:
            return []
        self.stale.add(acct.id)
        return self.units_of(acct)

    def refresh(self) -> None:
        """Re-index the stale accounts (before the index is read: a mark tick's candidates)."""
        if self.stale:
            accounts = self.clearing.accounts
            for account in sorted(self.stale):
                acct = accounts.get(account)
                if acct is not None:
                    self.reindex_account(acct)
            self.stale.clear()

    def reindex_account(self, acct: Account) -> None:
        """Re-index every unit of an account after it changed (and drop the units it no longer has)."""
        if acct.id == FUND_ACCOUNT:
            return
        units = self.units_of(acct)
        indexed = self._indexed.get(acct.id)
        if indexed and not indexed.issubset(units):
            for key in sorted(indexed.difference(units)):
                self.forget(key)
                self.called.discard(key)
        if units and len(acct.positions) == 1:  # its only position is the unit's: index it from there
            (pos,) = acct.positions.values()
            key = units[0]
            self._index(key, [pos], pos.isolated_margin if key[1] else acct.wallet.get(key[2], 0))
        else:
            for key in sorted(units) if len(units) > 1 else units:
                self.reindex(key)

    def reindex(self, key: UnitKey) -> None:
        """Index a unit anew: at its trigger price, or in its symbols' re-checked sets (in margin call, or a
        cross account holding several symbols), or nowhere (no positions, no trigger)."""
        acct = self.clearing.accounts[key[0]]
        if key[1]:
            pos = acct.positions[(key[1], SIDE_OF_VALUE[key[2]])]
            self._index(key, [pos], pos.isolated_margin)
        else:
            self._index(key, self.clearing.cross_positions(acct, key[2]), acct.wallet.get(key[2], 0))

    def _index(self, key: UnitKey, positions: list[Position], wb: int) -> None:
        """`reindex`, given the unit's open positions and its wallet balance (isolated: the position's margin)."""
        c = self.clearing
        if not positions:
            self.forget(key)
            self.called.discard(key)
            return
        symbol = positions[0].symbol
        multi = len(positions) > 1 and any(p.symbol != symbol for p in positions)
        if multi or key in self.called:
            self.forget(key)
            symbols = sorted({p.symbol for p in positions})
            for sym in symbols:
                s = self._sym(sym)
                (s.called if key in self.called else s.multi).add(key)
            self._places[key] = symbols
            self._indexed.setdefault(key[0], set()).add(key)
            return
        m = c.markets[symbol]
        k = m.instrument.atoms_per_tick_lot
        base = c.profile.maintenance_base
        mark = m.mark_price or m.last_price  # c.reference_price(m)
        if len(positions) == 1:
            pos = positions[0]
            long = pos.qty > 0
            trigger = position_liquidation_ticks(pos.qty, pos.cost, c.brackets(symbol), wb, 0, 0, k, base, mark, long,
                                                 self.call_ppm)
        else:
            legs = [Leg(p.qty, p.cost, c.brackets(symbol)) for p in positions]
            long = sum(p.qty for p in positions) > 0
            trigger = liquidation_ticks(legs, wb, 0, 0, k, base, mark, long, self.call_ppm)
        entry = (symbol, long, trigger)
        if trigger and self._entry.get(key) == entry:
            return  # indexed at this trigger already (and only there: an entry excludes places)
        self.forget(key)
        if not trigger:
            return  # e.g. a fully collateralised long: no price puts it at risk
        s = self._sym(symbol)
        (s.longs if long else s.shorts).add((trigger, key))
        self._entry[key] = entry
        self._indexed.setdefault(key[0], set()).add(key)

    def safe_by_index(self, key: UnitKey) -> bool:
        """True if the unit's index entry says the current price is short of its trigger: its margin ratio is then
        below the call threshold (the trigger is rounded toward the price, so this is never wrong the other way).
        False where it cannot say: no entry (in margin call, several symbols, no trigger) or no price yet."""
        entry = self._entry.get(key)
        if entry is None:
            return False
        symbol, long, trigger = entry
        m = self.clearing.markets[symbol]
        price = m.mark_price or m.last_price
        if not price:
            return False
        return price > trigger if long else price < trigger

    def multi_units(self, symbol: str) -> list[UnitKey]:
        """The cross accounts holding `symbol` and at least one other symbol, in key order."""
        s = self.symbols.get(symbol)
        if s is None:
            return []
        # a unit in margin call sits in `called` instead of `multi`; its places say how many symbols it holds
        called = {k for k in s.called if not k[1] and len(self._places.get(k, ())) > 1}
        return sorted(s.multi | called)

    def candidates(self, symbol: str, mark: int) -> list[UnitKey]:
        """Units a mark of `symbol` may have put at or past the call threshold, in a fixed order."""
        s = self.symbols.get(symbol)
        if s is None:
            return []
        crossed = [key for _, key in s.longs.irange(minimum=(mark,))]
        crossed += [key for _, key in s.shorts.irange(maximum=(mark + 1,), inclusive=(True, False))]
        return sorted(set(crossed) | s.called | s.multi)

    def set_called(self, key: UnitKey, called: bool) -> None:
        if called == (key in self.called):
            return
        if called:
            self.called.add(key)
        else:
            self.called.discard(key)
        self.reindex(key)
