"""The MQTT topic tree, the routing of events to topics, and the payload envelope.

Topics (relative to a configurable prefix, `perpex` by default; docs/events.md has the full tree):

    market/{symbol}/trades          public   Trade
    market/{symbol}/book            public   book changes by order: OrderAccepted, OrderCanceled, OrderAmended
    market/{symbol}/mark            public   MarkPriceUpdated (mark, index, funding rate)       (retained)
    market/{symbol}/index           public   IndexPriceUpdated                                  (retained)
    market/{symbol}/premium         public   PremiumIndexSampled
    market/{symbol}/funding         public   FundingSettled                                     (retained)
    market/{symbol}/liquidations    public   LiquidationRecorded of that symbol
    market/{symbol}/adl             public   AdlQuantiles
    exchange/insurance              public   InsuranceFundUpdated                               (retained)
    exchange/liquidations           public   LiquidationRecorded, every symbol
    exchange/events                 public   events of no symbol and no account (the default)
    exchange/system                 public   notices of the publisher itself (a counted gap)
    account/{account}/orders        private  OrderAccepted, OrderRejected, OrderCanceled, OrderAmended, Stop*
    account/{account}/fills         private  Trade (to the taker's and to the maker's account)
    account/{account}/positions     private  PositionUpdated, PositionTakenOver
    account/{account}/balances      private  BalanceUpdated, FundingPayment
    account/{account}/config        private  AccountConfigUpdated
    account/{account}/margin        private  MarginCall
    account/{account}/liquidations  private  LiquidationRecorded
    account/{account}/adl           private  AdlExecuted

Routing is a table keyed by the event's type (its tag, the class name), each
entry a tuple of templates whose `{field}` parts are filled from the event.
An event type missing from the table is routed by `infer_templates`: the
scope comes from its fields (any `account` or `*_account` field: private,
one topic per account; else a `symbol` field: that market; else exchange-wide)
and the stream from its name (Liquidation, Funding, Insurance, ...; else
`events`). So a new event type is published, and never to a public topic if
it names an account, before anyone edits this file; an explicit entry in
`ROUTES` (or `register_route`) overrides the inference.

Payloads. Every event is msgspec-encoded once. A per-event message is that
object with `schema` and `topic_seq` spliced in front of its fields:

    {"schema":1,"topic_seq":7,"type":"Trade","seq":120,"symbol_seq":88,"ts":5000,...}

A batch is an envelope (`BatchEnvelope`, encoded with one msgspec call over
the list of the events' bytes) around the events of one topic, in topic order
and without holes:

    {"type":"batch","schema":1,"topic":"perpex/market/BTCUSDT/trades","count":2,
     "first_seq":120,"last_seq":131,"first_topic_seq":7,"last_topic_seq":8,"events":[{...},{...}]}

In a batch an event's `schema` and `topic_seq` are the envelope's: event i
has topic_seq `first_topic_seq + i` (its position), so the events stay the
engine's encoding, unchanged (in JSON, the bytes the journal holds). Every payload of a batch starts with
`BATCH_PREFIX[format]`. `decode_payload` turns either form back into a list
of dicts, each with its `schema` and `topic_seq`. `topic_seq` counts events
(not messages) per topic, from 1, in both modes, so a subscriber detects a
gap by comparing it with the last one it saw; a repeated or lower topic_seq
is a duplicate (QoS 1 is at least once) and is to be skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from operator import attrgetter
from typing import Any

import msgspec

from exchange.events import SCHEMA_VERSION, Event

DEFAULT_PREFIX = "perpex"

#: Explicit routes: event type tag -> topic templates (relative to the prefix).
ROUTES: dict[str, tuple[str, ...]] = {
    "Trade": ("market/{symbol}/trades", "account/{taker_account}/fills", "account/{maker_account}/fills"),
    "OrderAccepted": ("market/{symbol}/book", "account/{account}/orders"),
    "OrderCanceled": ("market/{symbol}/book", "account/{account}/orders"),
    "OrderAmended": ("market/{symbol}/book", "account/{account}/orders"),
    "OrderRejected": ("account/{account}/orders",),
    "MarkPriceUpdated": ("market/{symbol}/mark",),
    "IndexPriceUpdated": ("market/{symbol}/index",),
    "PremiumIndexSampled": ("market/{symbol}/premium",),
    "FundingSettled": ("market/{symbol}/funding",),
    "FundingPayment": ("account/{account}/balances",),
    "BalanceUpdated": ("account/{account}/balances",),
    "PositionUpdated": ("account/{account}/positions",),
    "PositionTakenOver": ("account/{account}/positions",),
    "AccountConfigUpdated": ("account/{account}/config",),
    "MarginCall": ("account/{account}/margin",),
    "InsuranceFundUpdated": ("exchange/insurance",),
    "LiquidationRecorded": (
        "market/{symbol}/liquidations", "exchange/liquidations", "account/{account}/liquidations",
    ),
    "AdlExecuted": ("account/{account}/adl",),
    "AdlQuantiles": ("market/{symbol}/adl",),
    "StopOrderAccepted": ("account/{account}/orders",),
    "StopOrderCanceled": ("account/{account}/orders",),
    "StopTriggered": ("account/{account}/orders",),
}

#: Topics whose last segment is one of these are published with the MQTT retain flag,
#: so that a subscriber joining late gets the latest state at once.
RETAINED_STREAMS = frozenset({"mark", "index", "funding", "insurance"})

#: Where the publisher itself reports (a gap counted by the overflow policy).
SYSTEM_TOPIC = "exchange/system"

#: Name keywords -> stream, for event types missing from ROUTES (first match wins).
_STREAM_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("liquidat", "liquidations"),
    ("adl", "adl"),
    ("insurance", "insurance"),
    ("funding", "funding"),
    ("marginc", "margin"),
    ("mark", "mark"),
    ("position", "positions"),
    ("balance", "balances"),
    ("wallet", "balances"),
    ("transfer", "balances"),
    ("order", "orders"),
    ("trade", "trades"),
    ("fill", "fills"),
)

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNSAFE = re.compile(r"[/+#\x00]")


def _fill(values: Iterator[Any], _match: re.Match[str]) -> str:
    return _UNSAFE.sub("_", str(next(values)))


def register_route(event_type: type | str, templates: Iterable[str]) -> None:
    """Route `event_type` (a class or its tag) to `templates`; takes effect for routers built afterwards."""
    name = event_type if isinstance(event_type, str) else event_tag(event_type)
    ROUTES[name] = tuple(templates)


def event_tag(cls: type) -> str:
    """The value of an event class's `type` tag (the class name unless the class says otherwise)."""
    info = getattr(cls, "__struct_config__", None)
    tag = getattr(info, "tag", None)
    return tag if isinstance(tag, str) else cls.__name__


def _account_fields(fields: Iterable[str]) -> list[str]:
    return [f for f in fields if f == "account" or f.endswith("_account")]


def infer_templates(cls: type) -> tuple[str, ...]:
    """Topic templates for an event type that ROUTES does not name (the documented default)."""
    return infer_templates_for(event_tag(cls), getattr(cls, "__struct_fields__", ()))


def infer_templates_for(tag: str, fields: Iterable[str]) -> tuple[str, ...]:
    """`infer_templates` from the type's tag and field names."""
    fields = tuple(fields)
    lname = tag.lower()
    stream = next((s for key, s in _STREAM_KEYWORDS if key in lname), "events")
    accounts = _account_fields(fields)
    if accounts:
        if stream == "trades":
            stream = "fills"
        return tuple(f"account/{{{f}}}/{stream}" for f in accounts)
    if stream in ("fills", "orders", "positions", "balances", "margin"):
        stream = "events"  # a private stream name on an event that names no account
    if stream == "insurance":
        return ("exchange/insurance",)
    if "symbol" in fields:
        if stream == "liquidations":
            return ("market/{symbol}/liquidations", "exchange/liquidations")
        return (f"market/{{symbol}}/{stream}",)
    return (f"exchange/{stream}",)


def templates_for(cls: type) -> tuple[str, ...]:
    return ROUTES.get(event_tag(cls)) or infer_templates(cls)


def event_types() -> list[type]:
    """Every tagged Event subclass defined so far (the union grows as modules add types)."""
    out, todo = [], list(Event.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if getattr(getattr(cls, "__struct_config__", None), "tag", None) is not None:
            out.append(cls)
    return out


class TopicState:
    """One topic: its name, retain flag, last topic_seq handed out, and the batch being built."""

    __slots__ = ("add", "name", "name_bytes", "pending", "retain", "seq")

    def __init__(self, name: str, retain: bool) -> None:
        self.name = name
        self.name_bytes = name.encode()
        self.retain = retain
        self.seq = 0  # last topic_seq assigned (published or counted as dropped)
        self.pending: list[Any] = []  # the encoded events (parts, Codec.parts) of the batch being built
        self.add = self.pending.append


class Router:
    """Maps each event to the TopicStates it is published on; compiled and cached per event class."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, routes: dict[str, tuple[str, ...]] | None = None) -> None:
        self.prefix = prefix.strip("/")
        self.routes = dict(ROUTES if routes is None else routes)
        self.topics: dict[str, TopicState] = {}
        # per event class: (routing key getter, key -> topics, templates, number of fields, fields); `route`
        # is the slow path of the sink's cached lookup `compiled[type(ev)][1].get(compiled[type(ev)][0](ev))`
        self.compiled: dict[Any, tuple] = {}

    def full(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def topic(self, relative: str) -> TopicState:
        """The state of a topic given relative to the prefix (created on first use)."""
        name = self.full(relative)
        st = self.topics.get(name)
        if st is None:
            st = self.topics[name] = TopicState(name, relative.rsplit("/", 1)[-1] in RETAINED_STREAMS)
        return st

    def topic_named(self, name: str) -> TopicState:
        """The state of a topic given by its full name."""
        st = self.topics.get(name)
        if st is None:
            relative = name[len(self.prefix) + 1:] if self.prefix else name
            st = self.topic(relative)
        return st

    def templates(self, cls: type) -> tuple[str, ...]:
        return self.routes.get(event_tag(cls)) or infer_templates(cls)

    def route(self, ev: Event) -> tuple[TopicState, ...]:
        """The topics `ev` goes to, in template order, without repeats."""
        cls = type(ev)
        compiled = self.compiled.get(cls)
        if compiled is None:
            compiled = self._compile(cls)
        getter, cache, parts, nfields, _fields = compiled
        key = getter(ev)
        states = cache.get(key)
        if states is None:
            states = cache[key] = self._resolve(parts, key if nfields > 1 else (key,))
        return states

    def _compile(self, cls: type) -> tuple:
        compiled = self._compile_templates(self.templates(cls))
        self.compiled[cls] = compiled
        return compiled

    def _compile_templates(self, templates: tuple[str, ...]) -> tuple:
        fields: list[str] = []
        parts = []
        for t in templates:
            names = _FIELD.findall(t)
            for n in names:
                if n not in fields:
                    fields.append(n)
            parts.append((t, names))
        # the cache key: the one field's value, or a tuple of the fields' values
        if not fields:
            getter: Callable[[Any], Any] = lambda ev: None  # noqa: E731
        else:
            getter = attrgetter(*fields)
        return (getter, {}, [(t, [fields.index(n) for n in names]) for t, names in parts], len(fields), fields)

    def _resolve(self, parts: list, key: tuple) -> tuple[TopicState, ...]:
        out: list[TopicState] = []
        for template, idx in parts:
            values = [key[i] for i in idx]
            if any(v is None or v == "" for v in values):
                continue  # e.g. a reject of an unknown symbol: no market topic
            relative = _FIELD.sub(partial(_fill, iter(values)), template)
            st = self.topic(relative)
            if st not in out:
                out.append(st)
        if not out:
            out.append(self.topic("exchange/events"))
        return tuple(out)


# --------------------------------------------------------------------------- payloads
class _SeqOnly(msgspec.Struct, gc=False):
    seq: int


class BatchEnvelope(msgspec.Struct, gc=False):
    """The batch payload: the events of one topic, consecutive in topic order (event i has topic_seq
    `first_topic_seq + i`), with the global seq of the first and the last."""

    type: str
    schema: int
    topic: str
    count: int
    first_seq: int
    last_seq: int
    first_topic_seq: int
    last_topic_seq: int
    events: list[Any]


#: How every batch payload starts (the envelope's first key is `type`), in either format: a subscriber
#: tells a batch from a per-event message by this prefix without decoding it.
BATCH_PREFIX = {"json": b'{"type":"batch"', "msgpack": b"\x89\xa4type\xa5batch"}


#: JSON: how every encoded event starts (msgspec writes the tag first), and what separates two events in an
#: encoded list. A `"` inside a JSON string is always escaped, so the separator occurs in an encoded list of
#: events only between two of them, as long as no event nests an object whose first key is "type" (none
#: does; `Codec.parts` checks the count and falls back to a full decode if one ever did).
_JSON_HEAD = b'{"type":"'
_JSON_SEP = b',{"type":"'


class Codec:
    """Encodes events and wraps them as per-event or batch payloads, in JSON or msgpack.

    The publisher works on *parts*: an encoded list of events is cut into one part per event once
    (`parts`), and each part is copied verbatim into every payload that carries it (`batch_of_parts`,
    `single_of_part`). In JSON a part is the event's encoding minus its leading `{"type":"` (a cut at a
    fixed separator, with no parsing); in msgpack it is a msgspec.Raw of the event's encoding."""

    def __init__(self, fmt: str = "json", schema: int = SCHEMA_VERSION) -> None:
        if fmt not in ("json", "msgpack"):
            raise ValueError(f"payload format must be json or msgpack, not {fmt!r}")
        self.format = fmt
        self.schema = schema
        self.encode: Callable[[Any], bytes]
        if fmt == "json":
            self.encode = msgspec.json.Encoder().encode
            self._seq_decode = msgspec.json.Decoder(_SeqOnly).decode
            self._raw_list = msgspec.json.Decoder(list[msgspec.Raw]).decode
            self._head = b'{"schema":%d,"topic_seq":' % schema
        else:
            self._mp = msgspec.msgpack.Encoder()
            self.encode = self._mp.encode
            self._seq_decode = msgspec.msgpack.Decoder(_SeqOnly).decode
            self._raw_list = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
            self._mp_schema = b"\xa6schema" + self._mp.encode(schema) + b"\xa9topic_seq"

    def single(self, encoded: bytes, topic_seq: int) -> bytes:
        """The per-event payload: `encoded` with `schema` and `topic_seq` in front of its fields."""
        if self.format == "json":
            return b"".join((self._head, str(topic_seq).encode(), b",", encoded[1:]))
        return _mp_splice(encoded, self._mp_schema + self._mp.encode(topic_seq), 2)

    # ------------------------------------------------------------------ parts
    def parts(self, encoded_list: Any, n: int) -> list[Any]:
        """The parts of `encoded_list` (bytes-like), the encoding of a list of `n` events."""
        if self.format == "json":
            data = bytes(encoded_list)
            out = data.split(_JSON_SEP)
            if len(out) == n and data.startswith(b"[" + _JSON_HEAD):
                out[0] = out[0][len(_JSON_HEAD) + 1:]
                out[-1] = out[-1][:-1]  # (the list's closing bracket)
                return out
            cut = len(_JSON_HEAD)  # a nested {"type": ...}: decode the list to find the events
            return [bytes(raw)[cut:] for raw in self._raw_list(data)]
        return self._raw_list(encoded_list)

    def part_of(self, ev: Any) -> Any:
        """The part of one event (a Struct, its encoding as bytes, or a msgspec.Raw)."""
        if not isinstance(ev, bytes | bytearray | memoryview | msgspec.Raw):
            ev = self.encode(ev)
        if self.format == "json":
            return bytes(ev)[len(_JSON_HEAD):]
        return msgspec.Raw(ev) if not isinstance(ev, msgspec.Raw) else ev

    def _part_seq(self, part: Any) -> int:
        """The global seq of the event a part holds."""
        return self._seq_decode(_JSON_HEAD + part if self.format == "json" else part).seq

    def single_of_part(self, part: Any, topic_seq: int) -> bytes:
        """The per-event payload of a part (as `single`)."""
        if self.format == "json":
            return b"".join((self._head, str(topic_seq).encode(), b',"type":"', part))
        return self.single(bytes(part), topic_seq)

    def batch_of_parts(self, st: TopicState, parts: list[Any], first_topic_seq: int) -> bytes:
        """The batch payload of `parts`, the events of topic `st` with topic_seq first_topic_seq, +1, ...;
        every part copied once, verbatim."""
        n = len(parts)
        env = BatchEnvelope("batch", self.schema, st.name, n, self._part_seq(parts[0]), self._part_seq(parts[-1]),
                            first_topic_seq, first_topic_seq + n - 1, [] if self.format == "json" else parts)
        if self.format == "json":  # the envelope with an empty list, the events joined into it
            head = self.encode(env)
            return b"".join((head[:-2], _JSON_HEAD, _JSON_SEP.join(parts), b"]}"))
        return self.encode(env)

    def batch(self, st: TopicState, items: list[Any], first_topic_seq: int) -> bytes:
        """The batch payload of `items` (event Structs, or encoded events as bytes or msgspec.Raw), the events
        of topic `st` with topic_seq first_topic_seq, +1, ..."""
        return self.batch_of_parts(st, [self.part_of(ev) for ev in items], first_topic_seq)

    def notice(self, obj: dict[str, Any], topic_seq: int) -> bytes:
        """A publisher notice (not an engine event) on the system topic."""
        return self.single(self.encode(obj), topic_seq)


def _mp_map_len(data: bytes) -> tuple[int, int]:
    """(number of entries, header length) of the msgpack map at the start of `data`."""
    b0 = data[0]
    if 0x80 <= b0 <= 0x8F:
        return b0 & 0x0F, 1
    if b0 == 0xDE:
        return int.from_bytes(data[1:3], "big"), 3
    if b0 == 0xDF:
        return int.from_bytes(data[1:5], "big"), 5
    raise ValueError("not a msgpack map")


def _mp_map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def _mp_splice(encoded: bytes, front: bytes, front_keys: int) -> bytes:
    """A msgpack map with `front` (`front_keys` already encoded key/value pairs) put before its entries."""
    n, hl = _mp_map_len(encoded)
    return b"".join((_mp_map_header(n + front_keys), front, encoded[hl:]))


# --------------------------------------------------------------------------- decoding (subscribers)
_json_decode = msgspec.json.Decoder().decode
_mp_decode = msgspec.msgpack.Decoder().decode


def decode_payload(payload: bytes, fmt: str = "json") -> list[dict[str, Any]]:
    """The events of one message, per-event or batch, each a dict with `schema` and `topic_seq`."""
    obj = (_json_decode if fmt == "json" else _mp_decode)(payload)
    if obj.get("type") == "batch":
        first, schema = obj["first_topic_seq"], obj["schema"]
        out = []
        for i, ev in enumerate(obj["events"]):
            ev["schema"] = schema
            ev["topic_seq"] = first + i
            out.append(ev)
        return out
    return [obj]


def sniff_format(payload: bytes) -> str:
    """json or msgpack, from the first byte of a payload (a JSON object starts with `{`)."""
    return "json" if payload[:1] == b"{" else "msgpack"


class GapChecker:
    """Per-topic topic_seq bookkeeping for a subscriber: gaps, duplicates, counts."""

    def __init__(self, from_one: bool = False) -> None:
        self.from_one = from_one  # every topic starts at topic_seq 1 (a subscriber there from the start)
        self.last: dict[str, int] = {}
        self.gaps: list[tuple[str, int, int]] = []  # (topic, first missing, last missing)
        self.duplicates = 0
        self.events = 0

    def check(self, topic: str, topic_seq: int) -> str:
        """'ok', 'dup' (already seen: skip it) or 'gap' (some were missed; accepted)."""
        last = self.last.get(topic, 0 if self.from_one else None)
        if last is not None and topic_seq <= last:
            self.duplicates += 1
            return "dup"
        self.last[topic] = topic_seq
        self.events += 1
        if last is not None and topic_seq != last + 1:
            self.gaps.append((topic, last + 1, topic_seq - 1))
            return "gap"
        return "ok"

    @property
    def missing(self) -> int:
        return sum(b - a + 1 for _, a, b in self.gaps)


# --------------------------------------------------------------------------- documentation
_SAMPLE_INTS = {"seq": 1234, "symbol_seq": 567, "ts": 60_000, "account": 7, "taker_account": 7, "maker_account": 9,
                "price": 800_001, "mark_price": 800_000, "index_price": 799_950, "qty": 250, "trade_id": 42,
                "order_id": 1001, "taker_order_id": 1002, "maker_order_id": 1001, "leverage": 20}


def example_event(cls: type) -> Any:
    """An instance of event type `cls` with plausible values (for docs/events.md)."""
    import enum

    info = msgspec.inspect.type_info(cls)
    values: dict[str, Any] = {}
    for f in info.fields:  # type: ignore[attr-defined]
        t = f.type
        while isinstance(t, msgspec.inspect.UnionType):
            t = next((x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)), t.types[0])
        if f.name == "symbol":
            values[f.name] = "BTCUSDT"
        elif isinstance(t, msgspec.inspect.IntType):
            values[f.name] = _SAMPLE_INTS.get(f.name, 0 if "leaves" in f.name else 1)
        elif isinstance(t, msgspec.inspect.EnumType):
            values[f.name] = next(iter(t.cls)).value if issubclass(t.cls, enum.Enum) else None
        elif isinstance(t, msgspec.inspect.BoolType):
            values[f.name] = False
        elif isinstance(t, msgspec.inspect.StrType):
            values[f.name] = "USDT" if f.name == "asset" else ""
        elif isinstance(t, msgspec.inspect.FloatType):
            values[f.name] = 0.0
        elif isinstance(t, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
            values[f.name] = []
        elif isinstance(t, msgspec.inspect.DictType):
            values[f.name] = {}
        elif f.default is not msgspec.inspect.NODEFAULT:
            values[f.name] = f.default
        else:
            values[f.name] = None
    return msgspec.convert(values, cls, strict=False)


def doc_section(cls: type, prefix: str = DEFAULT_PREFIX) -> str:
    """The docs/events.md section of one event type: topics, fields, example per-event payload."""
    info = msgspec.inspect.type_info(cls)
    tag = event_tag(cls)
    lines = [f"### {tag}", ""]
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    if doc:
        lines += [doc, ""]
    tmpl = ROUTES.get(tag) or infer_templates(cls)
    lines += ["Topics: " + ", ".join(f"`{prefix}/{t}`" for t in tmpl), "", "| field | type |", "| --- | --- |"]
    lines.append("| `type` | `\"" + tag + "\"` |")
    ann = getattr(cls, "__annotations__", {})
    for f in info.fields:  # type: ignore[attr-defined]
        typ = ann.get(f.name)
        if typ is None:
            for base in cls.__mro__:
                typ = getattr(base, "__annotations__", {}).get(f.name)
                if typ is not None:
                    break
        lines.append(f"| `{f.name}` | {str(typ).replace('|', 'or')} |")
    ev = example_event(cls)
    st = Router(prefix).route(ev)[0]
    payload = Codec("json").single(msgspec.json.encode(ev), 1).decode()
    lines += ["", f"Example (per-event payload on `{st.name}`):", "", "```json", payload, "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m exchange.topics [TYPE ...]: print the docs sections
    import sys

    wanted = set(sys.argv[1:])
    for c in event_types():
        if not wanted or event_tag(c) in wanted:
            print(doc_section(c))
