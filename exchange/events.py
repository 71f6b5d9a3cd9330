"""Events: every state change the engine makes, as data.

Events are the product: MQTT, the journal, the WebSocket streams and the tests
all read them and nothing else. Each carries `seq` (global, consecutive over
the engine's life), `symbol_seq` (consecutive per symbol; 0 for events of no
symbol) and `ts` (virtual milliseconds). Prices are ticks, quantities lots,
money atoms. The tag field `type` names the event.
"""

from __future__ import annotations

from typing import Union

import msgspec

from exchange.conditional import StopType, WorkingType
from exchange.enums import (
    BalanceReason,
    CancelReason,
    MarginMode,
    OrderStatus,
    OrderType,
    PositionMode,
    PositionReason,
    PositionSide,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    WalletKind,
)

#: Version of the event schema; bumped on any incompatible change.
SCHEMA_VERSION = 1


class Event(msgspec.Struct, tag_field="type", gc=False):
    seq: int
    symbol_seq: int
    ts: int


class OrderAccepted(Event, tag=True):
    """An order passed validation; trades (if it takes) and its rest or expiry follow."""

    symbol: str
    order_id: int
    account: int
    client_order_id: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    reduce_only: bool
    stp: SelfTradePrevention
    position_side: PositionSide = PositionSide.BOTH
    good_till_date: int = 0  # GTD: virtual ms at which the remainder expires (OrderCanceled GTD_EXPIRED)


class OrderRejected(Event, tag=True):
    """A command refused; nothing changed. `order_id` is set when it named an existing order."""

    symbol: str
    account: int
    command: str
    reason: RejectReason
    client_order_id: str = ""
    order_id: int = 0


class Trade(Event, tag=True):
    """One fill between a taker and a maker, at the maker's price.

    `taker_leaves`/`maker_leaves` are what each order has left open after
    this fill: 0 for the maker means it is FILLED.
    """

    symbol: str
    trade_id: int
    price: int
    qty: int
    taker_side: Side
    taker_order_id: int
    taker_account: int
    maker_order_id: int
    maker_account: int
    taker_leaves: int
    maker_leaves: int


class OrderCanceled(Event, tag=True):
    """An order's open quantity left the book (or never rested): cancelled or expired."""

    symbol: str
    order_id: int
    account: int
    client_order_id: str
    reason: CancelReason
    status: OrderStatus
    canceled_qty: int
    filled_qty: int


class OrderAmended(Event, tag=True):
    """A resting order's price or quantity changed; trades follow if it now crosses."""

    symbol: str
    order_id: int
    account: int
    price: int
    qty: int
    leaves: int
    priority_kept: bool


class MarkPriceUpdated(Event, tag=True):
    """The mark price (ticks), with the index and funding figures behind it (0 where not modelled).

    `funding_rate` is the estimated rate of the current interval in 1e-12 units
    (funding.RATE_DEN); `next_funding_time` virtual ms.
    """

    symbol: str
    mark_price: int
    index_price: int = 0
    funding_rate: int = 0
    next_funding_time: int = 0


class IndexPriceUpdated(Event, tag=True):
    symbol: str
    index_price: int  # 0 when no source has a price


class PremiumIndexSampled(Event, tag=True):
    """A 5 s premium index sample P (1e-12 units) and the funding rate the interval's samples give so far."""

    symbol: str
    premium: int
    estimated_rate: int


class FundingSettled(Event, tag=True):
    """A funding time: the rate, and the totals of the payments that follow (FundingPayment events)."""

    symbol: str
    funding_time: int
    rate: int  # 1e-12 units; positive: longs pay shorts
    mark_price: int
    positions: int
    paid: int  # Σ paid by payers, atoms (≥ 0)
    received: int  # Σ received by receivers (≥ 0)
    remainder: int  # paid − received − socialized: to fee income, never lost or created
    shortfall: int  # what payers could not pay, carried by the insurance fund
    socialized: int = 0  # what payers could not pay and the fund could not carry: cut from the receivers


class FundingPayment(Event, tag=True):
    """One position's funding: `amount` < 0 paid, > 0 received.

    `balance` is the futures wallet (cross; below zero if the payment took it there: a cross payer pays in
    full) or the isolated margin (isolated) after it.
    """

    symbol: str
    account: int
    position_side: PositionSide
    qty: int
    amount: int
    balance: int
    funding_time: int


class BalanceUpdated(Event, tag=True):
    """A wallet changed for a reason other than a trade (trades report the wallet in PositionUpdated)."""

    account: int
    asset: str
    wallet: WalletKind
    reason: BalanceReason
    delta: int
    balance: int  # after the change
    symbol: str = ""


class PositionUpdated(Event, tag=True):
    """A position's state after a change, complete enough to rebuild the account from events alone.

    `cost` is the signed entry notional in atoms (entry price = cost / (qty ×
    atoms per tick·lot)); `wallet_balance` the futures wallet after the change
    (below zero while a cross account owes a loss its cross positions back:
    docs/architecture.md "Who pays a loss");
    `fee` and `realized_pnl_delta` what this change booked. Liquidation and
    bankruptcy prices are on the tick grid, rounded toward the mark (0: none).
    """

    symbol: str
    account: int
    position_side: PositionSide
    reason: PositionReason
    qty: int
    cost: int
    margin_mode: MarginMode
    leverage: int
    isolated_margin: int
    wallet_balance: int
    realized_pnl: int  # cumulative
    realized_pnl_delta: int
    fee: int
    liquidation_price: int
    bankruptcy_price: int
    trade_id: int = 0


class AccountConfigUpdated(Event, tag=True):
    """Leverage, margin mode, position mode, auto margin addition or fee tier changed.

    `symbol` "" is an account-wide change (position mode, fee tier). A change in
    one symbol has one event per position side the account's mode has (BOTH; or
    LONG and SHORT in hedge mode), each with that position's own
    `auto_margin_addition` flag, so a subscriber can keep every flag from the
    events alone.
    """

    account: int
    symbol: str
    leverage: int
    margin_mode: MarginMode
    position_mode: PositionMode
    auto_margin_addition: bool
    maker_fee_ppm: int
    taker_fee_ppm: int
    position_side: PositionSide = PositionSide.BOTH


class MarginCall(Event, tag=True):
    """A position (isolated) or an account (cross; symbol "") reached the margin-call ratio (default 80%).

    Published once per crossing: again only after the ratio has fallen back below the threshold.
    """

    account: int
    symbol: str
    position_side: PositionSide
    margin_ratio_ppm: int  # MM / margin balance, ppm (1_000_000 = 100%: liquidation)
    maintenance_margin: int
    margin_balance: int


class InsuranceFundUpdated(Event, tag=True):
    """Every inflow and outflow of the insurance fund, with its cause."""

    asset: str
    delta: int
    balance: int  # after
    cause: str  # CLEARANCE_FEE | LEFTOVER_MARGIN | TAKEOVER_LOSS | OFFLOAD_PNL | SHORTFALL | OPENING
    liquidation_id: int = 0
    account: int = 0  # the account whose liquidation caused it (0: none)
    symbol: str = ""


class LiquidationRecorded(Event, tag=True):
    """What a trader asks after a liquidation: one record per liquidated position (partial or full)."""

    liquidation_id: int
    symbol: str
    account: int
    position_side: PositionSide
    side: str  # LONG | SHORT (the position's direction before it was liquidated)
    partial: bool
    margin_mode: MarginMode
    leverage: int
    entry_price_num: int  # entry price = num / den ticks (exact)
    entry_price_den: int
    trigger_price: int  # the mark that triggered it, ticks
    bankruptcy_price: int  # ticks
    qty: int  # lots liquidated in this record
    qty_book: int  # of which filled in the book
    qty_insurance: int  # taken over by the insurance fund
    qty_adl: int  # closed against ADL counterparties
    execution_notional: int  # Σ price × qty of all its fills, tick·lots (average price = this / qty)
    loss: int  # realised PnL of the liquidated quantity, atoms (negative: a loss)
    fee: int  # clearance fee to the insurance fund
    balance_left: int  # the isolated margin (isolated) or futures wallet (cross) after it
    insurance_fund_delta: int
    adl_counterparties: list[tuple[int, int]]  # (account, qty) in the order they were deleveraged


class PositionTakenOver(Event, tag=True):
    """The insurance fund took over what the book did not absorb, at the bankruptcy price."""

    liquidation_id: int
    symbol: str
    account: int
    qty: int  # signed: the position quantity the fund received
    price: int


class AdlExecuted(Event, tag=True):
    """An opposite-side position closed by auto-deleveraging at the liquidated order's bankruptcy price."""

    liquidation_id: int
    symbol: str
    account: int
    position_side: PositionSide
    qty: int
    price: int
    rank: int  # 1 = first deleveraged


class AdlQuantiles(Event, tag=True):
    """Each open position's ADL quantile (Binance adlQuantile 0..4; lights = quantile + 1), per symbol."""

    symbol: str
    quantiles: list[tuple[int, PositionSide, int]]  # (account, position side, quantile)


class StopOrderAccepted(Event, tag=True):
    symbol: str
    stop_id: int
    account: int
    client_order_id: str
    side: Side
    stop_type: StopType
    working_type: WorkingType
    trigger_price: int  # 0 for a trailing stop until it activates
    qty: int
    price: int
    reduce_only: bool
    close_position: bool
    position_side: PositionSide
    callback_ppm: int
    activation_price: int


class StopOrderCanceled(Event, tag=True):
    symbol: str
    stop_id: int
    account: int
    client_order_id: str
    reason: CancelReason


class StopTriggered(Event, tag=True):
    """A conditional order's trigger was reached: what became of it (PLACED, REJECTED or EXPIRED)."""

    symbol: str
    stop_id: int
    account: int
    client_order_id: str
    working_type: WorkingType
    trigger_price: int
    price: int  # the mark or last price that reached it
    outcome: str
    order_id: int = 0  # the order it placed (PLACED)
    reason: str = ""  # the reject reason (REJECTED) or why it expired (EXPIRED)


AnyEvent = Union[
    OrderAccepted, OrderRejected, Trade, OrderCanceled, OrderAmended, MarkPriceUpdated,
    BalanceUpdated, PositionUpdated, AccountConfigUpdated, MarginCall, InsuranceFundUpdated, LiquidationRecorded,
    PositionTakenOver, AdlExecuted, AdlQuantiles, StopOrderAccepted, StopOrderCanceled, StopTriggered,
    IndexPriceUpdated, PremiumIndexSampled, FundingSettled, FundingPayment,
]

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(list[AnyEvent])


def encode_events(events: list[Event]) -> bytes:
    """JSON bytes of a list of events (the byte-exact form the determinism tests compare)."""
    return _json_encoder.encode(events)


def decode_events(data: bytes) -> list[AnyEvent]:
    return _json_decoder.decode(data)
