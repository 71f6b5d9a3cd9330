"""The per-symbol state the engine keeps beside the book."""

from __future__ import annotations

from exchange.book import OrderBook
from exchange.conditional import TriggerIndex, WorkingType
from exchange.instrument import Instrument
from exchange.market_data import MarketData
from exchange.orders import Order


class Market:
    """One symbol: its instrument, book, counters and reference prices."""

    __slots__ = ("book", "data", "instrument", "last_price", "mark_price", "open_by_account", "seq",
                 "stop_checked_last", "stops", "trade_seq")

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.book = OrderBook(instrument.symbol)
        self.seq = 0  # last symbol_seq handed out
        self.trade_seq = 0  # last trade id
        self.last_price = 0  # ticks; 0 until the first trade
        self.mark_price = 0  # ticks; 0 until set
        self.open_by_account: dict[int, dict[int, Order]] = {}  # account -> order id -> open order
        self.stops = {WorkingType.MARK_PRICE: TriggerIndex(), WorkingType.CONTRACT_PRICE: TriggerIndex()}
        self.stop_checked_last = 0  # the last price the CONTRACT_PRICE stops were last checked against
        self.data: MarketData | None = None  # index, mark and funding model (set by the engine)
