"""Scenario files: a market, its accounts and traders, its index path and its run length, as TOML.

`load_scenario(path)` parses and validates a file (msgspec, unknown fields
refused); every error names the file, the line and the field. `build(...)`
turns a scenario into a ready engine, the commands that set it up, the index
feeds and the simulated traders — everything deterministic given the seed.
docs/scenarios.md documents every field with a complete example.
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from adl.ranking import AdlRanking
from exchange.assembly import build_exchange
from exchange.brackets import BracketTable
from exchange.commands import (
    Command,
    Deposit,
    PlaceOrder,
    SetAutoMarginAddition,
    SetFeeTier,
    SetLeverage,
    SetMarginMode,
    SetPositionMode,
)
from exchange.engine import Engine
from exchange.enums import MarginMode, OrderType, PositionMode, Side
from exchange.funding import FundingSchedule
from exchange.instrument import Instrument, btcusdt, ethusdt
from exchange.price_paths import IndexFeed, PointsPath, RandomWalk, Shock, WeightedSource, csv_path
from exchange.traders import HoldAndHope, MarketMaker, NoiseTaker, PartialCloser, Trader, TrendFollower
from exchange.venue import profile as venue_profile

BUILTIN = ("calm", "crash", "wick", "funding-squeeze", "add-margin-vs-partial-close")


class ScenarioError(ValueError):
    """A scenario that cannot be loaded or built; the message names the file, line and field."""


# ---------------------------------------------------------------- schema
class _Spec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RunSpec(_Spec):
    name: str = "scenario"
    description: str = ""
    seed: int = 1
    duration: str = "1h"  # virtual time: "90s", "30m", "2h"
    step: str = "1s"  # how often traders act and the index updates
    profile: str = "binance"  # venue profile: binance | entry-notional
    adl_ranking: Literal["PNL_LEVERAGE", "RANDOM_OFFSET"] | None = None  # None: the venue profile's
    margin_call: str = "80%"  # margin ratio at which a margin call is published
    adl_interval: str = "30s"  # how often the ADL quantiles ("lights") are published


class ShockSpec(_Spec):
    at: str  # when it starts: "30m"
    move: str = "-12%"
    over: str = "90s"
    retrace: str = "50%"  # share of the move given back afterwards
    retrace_over: str = "90s"


class PathSpec(_Spec):
    kind: Literal["random_walk", "points", "csv"] = "random_walk"
    start: str = ""  # random walk: the opening price
    volatility: str = "0.0005"  # random walk: standard deviation of one step's return
    drift: str = "0"  # random walk: mean return per step
    points: list[tuple[str, str]] = []  # points: (time, price), e.g. ["10m", "79000"]
    linear: bool = True  # points/csv: interpolate between points (else hold)
    file: str = ""  # csv: columns ts_ms, price (relative to the scenario file)
    seed: int | None = None  # random walk: defaults to the run's seed
    shocks: list[ShockSpec] = []


class SourceSpec(_Spec):
    venue: str
    weight: int = 1
    path: PathSpec | None = None  # default: the market's index path


class BracketSpec(_Spec):
    floor: str
    cap: str
    max_leverage: int
    mmr: str


class MarketSpec(_Spec):
    symbol: Literal["BTCUSDT", "ETHUSDT"] = "BTCUSDT"
    funding_interval_hours: int = 8
    index: PathSpec = msgspec.field(default_factory=PathSpec)
    sources: list[SourceSpec] = []
    brackets: list[BracketSpec] = []


class FeeTierSpec(_Spec):
    maker: str  # e.g. "0.00016" (0.016%)
    taker: str


class FeesSpec(_Spec):
    maker: str = "0.0002"  # the default tier's rates
    taker: str = "0.0005"
    tiers: dict[str, FeeTierSpec] = {}  # named tiers an account or trader population can take (`fee_tier`)


class InsuranceSpec(_Spec):
    balance: str = "1000000"
    floor: str = "0"
    max_notional: str = "100%"  # the fund's net notional may reach this share of its balance


class PositionSpec(_Spec):
    symbol: str = "BTCUSDT"
    side: Literal["long", "short"] = "long"
    qty: str = "0.01"


class AccountSpec(_Spec):
    id: int
    balance: str = "10000"
    leverage: int = 20
    margin_mode: Literal["cross", "isolated"] = "cross"
    position_mode: Literal["one-way", "hedge"] = "one-way"
    auto_margin_addition: bool = False
    fee_tier: str = ""  # a name in [fees.tiers]; "": the default rates of [fees]
    position: PositionSpec | None = None


class TraderSpec(_Spec):
    kind: Literal["market_maker", "noise", "trend", "hold_and_hope", "partial_closer"]
    count: int = 1
    symbol: str = "BTCUSDT"
    balance: str = "10000"
    leverage: int = 10
    margin_mode: Literal["cross", "isolated"] = "cross"
    qty: str = "0.01"  # order size (base units)
    every: int = 1  # acts every N steps (with a random phase)
    fee_tier: str = ""  # a name in [fees.tiers]; "": the default rates of [fees]
    # market maker
    levels: int = 5
    spread: str = "1"  # quote spread, in price units
    level_step: str = "1"  # distance between levels, price units
    skew_per_qty: str = "0"  # price units the quotes move per base unit of inventory
    max_inventory: str = "0"  # base units; 0: none
    pull_on_move: str = "0%"  # market maker: pull quotes while the index moved more than this over `lookback` steps
    premium: str = "0%"  # market maker: centre quotes this far above the index (negative: below)
    # noise
    rate: str = "0.2"  # probability of an order per step
    # trend
    lookback: int = 30
    threshold: str = "0.2%"
    stop_loss: str = "0%"  # 0: none
    # hold and hope / partial closer
    side: Literal["long", "short"] = "long"
    add_margin: str = "100"
    trigger: str = "3%"  # how near the liquidation price the mark must be
    close_fraction: str = "50%"


class Scenario(_Spec):
    scenario: RunSpec = msgspec.field(default_factory=RunSpec)
    markets: list[MarketSpec] = msgspec.field(default_factory=lambda: [MarketSpec()])
    fees: FeesSpec = msgspec.field(default_factory=FeesSpec)
    insurance_fund: InsuranceSpec = msgspec.field(default_factory=InsuranceSpec)
    accounts: list[AccountSpec] = []
    traders: list[TraderSpec] = []


# ---------------------------------------------------------------- loading
def builtin_path(name: str) -> Path:
    return Path(str(resources.files("exchange") / "scenarios" / f"{name}.toml"))


def resolve(name_or_path: str) -> Path:
    """A built-in scenario's name, or a path to a TOML file."""
    if name_or_path in BUILTIN:
        return builtin_path(name_or_path)
    p = Path(name_or_path)
    if not p.exists():
        raise ScenarioError(f"{name_or_path}: no such file, and not a built-in scenario ({', '.join(BUILTIN)})")
    return p


def load_scenario(path: str | Path) -> tuple[Scenario, Path]:
    p = resolve(str(path))
    text = p.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{p.name}: {e}") from None
    try:
        scenario = msgspec.convert(data, Scenario)
    except msgspec.ValidationError as e:
        msg, _, at = str(e).partition(" - at ")
        where = _msgspec_path(at.strip("`"))
        named = _UNKNOWN_OR_MISSING.match(msg)
        if named:  # msgspec's path stops at the object; the field is in the message
            where += (named.group(1),)
        raise ScenarioError(f"{p.name}:{_line_of(text, where)}: {_dotted(where) or 'document'}: {msg}") from None
    _validate(scenario, text, p)
    return scenario, p


#: A step of a key path: a table's or inline table's key, or an array's (or array of tables') index.
KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_SCALAR = re.compile(r"[^,\]}#\n]*")
_UNKNOWN_OR_MISSING = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]+)`")


class _KeyLines:
    """Every key path of a TOML document and the 1-based line where it is defined.

    A small scan of the text, for error messages: tomllib gives values but no
    positions, and a regex over lines cannot tell a key of an inline table,
    a dotted key, a quoted key or the n-th `[[array]]` element from a same-named
    key elsewhere. The scan follows TOML's structure — tables and arrays of
    tables (each element its index, nested ones counted per parent element),
    dotted and quoted keys, inline tables, arrays (an element at the line it
    starts), strings of the four kinds (so a `#`, `=` or bracket inside one is
    not mistaken for syntax) and comments — and records, for instance,
    ("traders", 1, "every") at the line of that `every = ...`. It assumes a
    document tomllib has accepted; it does not validate.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self._elements: dict[KeyPath, int] = {}  # an array of tables' concrete path -> its elements so far
        self._scan()

    # -------------------------------------------------------------- characters
    def _peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def _advance(self, n: int = 1) -> None:
        self.line += self.s.count("\n", self.i, self.i + n)
        self.i += n

    def _skip_blank(self, newlines: bool) -> None:
        """Spaces and tabs (and \\r); with `newlines`, also line ends and comments."""
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self._advance()
            elif newlines and c == "#":
                self._skip_comment()
            else:
                return

    def _skip_comment(self) -> None:
        end = self.s.find("\n", self.i)
        self._advance((len(self.s) if end < 0 else end) - self.i)

    def _record(self, path: KeyPath, line: int, *, override: bool = False) -> None:
        if override or path not in self.lines:
            self.lines[path] = line

    # -------------------------------------------------------------- structure
    def _scan(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip_blank(newlines=True)
            if self.i >= len(self.s):
                return
            if self._peek() == "[":
                table = self._header()
            else:
                self._key_value(table)
            self._skip_blank(newlines=False)
            if self._peek() == "#":
                self._skip_comment()

    def _header(self) -> KeyPath:
        """A `[table]` or `[[array.of.tables]]` header; the concrete path of the table it opens."""
        line = self.line
        double = self._peek(2) == "[["
        self._advance(2 if double else 1)
        keys = self._key()
        self._skip_blank(newlines=False)
        self._advance(2 if double else 1)  # the closing bracket(s)
        path: KeyPath = ()
        for k in keys[:-1]:  # a super-table that is an array of tables means its last element
            path += (k,)
            self._record(path, line)
            if path in self._elements:
                path += (self._elements[path] - 1,)
        path += (keys[-1],)
        if double:
            n = self._elements.get(path, 0)
            self._elements[path] = n + 1
            self._record(path, line)
            path += (n,)
        self._record(path, line, override=True)  # an explicit header beats an implicit mention above
        return path

    def _key_value(self, table: KeyPath) -> None:
        """`key = value` (dotted and quoted keys too), in `table` or an inline table."""
        line = self.line
        path = table
        for k in self._key():
            path += (k,)
            self._record(path, line)
        self._skip_blank(newlines=False)
        self._advance()  # "="
        self._skip_blank(newlines=False)
        self._value(path)

    def _key(self) -> list[str]:
        """A simple or dotted key, each part as TOML reads it (quotes and escapes resolved)."""
        parts: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            c = self._peek()
            if c in ('"', "'"):
                start = self.i
                self._string()
                parts.append(tomllib.loads(f"k = {self.s[start:self.i]}")["k"])
            else:
                m = _BARE_KEY.match(self.s, self.i)
                if m is None:
                    raise ValueError(f"no key at line {self.line}")
                parts.append(m.group())
                self._advance(m.end() - self.i)
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._advance()

    def _value(self, path: KeyPath) -> None:
        c = self._peek()
        if c in ('"', "'"):
            self._string()
        elif c == "[":
            self._advance()
            n = 0
            while True:
                self._skip_blank(newlines=True)
                start = self.i
                if self._peek() in ("]", ""):
                    self._advance()
                    return
                self._record((*path, n), self.line)
                self._value((*path, n))
                self._skip_blank(newlines=True)
                if self._peek() == ",":
                    self._advance()
                if self.i == start:
                    raise ValueError(f"stuck in an array at line {self.line}")
                n += 1
        elif c == "{":
            self._advance()
            while True:
                self._skip_blank(newlines=True)  # TOML 1.0 keeps an inline table on one line; 1.1 need not
                if self._peek() in ("}", ""):
                    self._advance()
                    return
                self._key_value(path)
                self._skip_blank(newlines=True)
                if self._peek() == ",":
                    self._advance()
        else:  # a number, boolean or date-time (which may hold a space): up to what ends a value
            m = _SCALAR.match(self.s, self.i)
            self._advance(m.end() - self.i if m else 0)

    def _string(self) -> None:
        """Any of TOML's four strings; multi-line ones may end in up to two extra quotes (theirs)."""
        q = self._peek()
        multi = self._peek(3) == q * 3
        self._advance(3 if multi else 1)
        while self.i < len(self.s):
            if q == '"' and self._peek() == "\\":
                self._advance(2)
            elif multi and self._peek(3) == q * 3:
                self._advance(3)
                for _ in range(2):
                    if self._peek() == q:
                        self._advance()
                return
            elif not multi and self._peek() == q:
                self._advance()
                return
            else:
                self._advance()


def key_lines(text: str) -> dict[KeyPath, int]:
    """Every key path of the TOML `text` (as tomllib reads it) and the 1-based line where it is defined.

    A table's path is its header's line (or that of the first key that
    implies it); an array element's, the line where the element starts.
    """
    return _KeyLines(text).lines


def _msgspec_path(where: str) -> KeyPath:
    """msgspec's error path (`$.traders[1].count`, `.markets[0].index.points[2][0]`) as a key path."""
    return tuple(name if name else int(idx) for name, idx in _PATH_STEP.findall(where))


def _line_of(text: str, where: KeyPath) -> int:
    """The line that defines `where` in the TOML `text`, else that of its nearest enclosing key, else 1.

    A field that is absent (a default, or a required field that is missing)
    points at its table.
    """
    try:
        lines = key_lines(text)
    except (ValueError, IndexError, tomllib.TOMLDecodeError):  # a bug of the scan must not hide the real error
        return 1
    for n in range(len(where), 0, -1):
        if where[:n] in lines:
            return lines[where[:n]]
    return 1


def _dotted(where: KeyPath) -> str:
    """A key path as the error messages name it: `traders[1].every`."""
    out = ""
    for step in where:
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out.lstrip(".")


def _parse(value: str, what: str) -> Decimal:
    try:
        d = Decimal(value.strip().rstrip("%"))
    except (InvalidOperation, AttributeError):
        raise ValueError(f"{what}: not a number: {value!r}") from None
    return d / 100 if value.strip().endswith("%") else d


def duration_ms(value: str, what: str = "duration") -> int:
    """"90s", "30m", "2h", "1500ms" or a number of seconds, as milliseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
    if not m:
        raise ValueError(f"{what}: not a duration (like 90s, 30m, 2h): {value!r}")
    unit = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2) or "s"]
    return int(Decimal(m.group(1)) * unit)


def ppm(value: str, what: str) -> int:
    return int(_parse(value, what) * 1_000_000)


def _validate(s: Scenario, text: str, p: Path) -> None:
    """Checks msgspec's types cannot express; each error names its field and line.

    `where` is a path in msgspec's notation (`.traders[1].every`); the error
    points at the line of that very key, or of its table when the key is
    absent (a default that does not fit the rest of the file).
    """
    def fail(where: str, msg: str) -> None:
        path = _msgspec_path(where)
        msg = msg.removeprefix(f"{path[-1]}: ")  # the parsers name the field too: once is enough
        raise ScenarioError(f"{p.name}:{_line_of(text, path)}: {_dotted(path)}: {msg}")

    symbols = {m.symbol for m in s.markets}
    if not s.markets:
        fail(".markets", "at least one market")
    for where, value in (("scenario.duration", s.scenario.duration), ("scenario.step", s.scenario.step),
                         ("scenario.adl_interval", s.scenario.adl_interval)):
        try:
            if duration_ms(value) <= 0:
                fail("." + where, "must be positive")
        except ValueError as e:
            fail("." + where, str(e))
    try:
        venue_profile(s.scenario.profile)
    except ValueError as e:
        fail(".scenario.profile", str(e))
    try:
        if ppm(s.insurance_fund.max_notional, "max_notional") < 0:
            fail(".insurance_fund.max_notional", "must be ≥ 0")
    except ValueError as e:
        fail(".insurance_fund.max_notional", str(e))
    for i, m in enumerate(s.markets):
        if m.funding_interval_hours <= 0:
            fail(f".markets[{i}].funding_interval_hours", f"must be ≥ 1 (hours), not {m.funding_interval_hours}")
        if [x.symbol for x in s.markets].count(m.symbol) > 1:
            fail(f".markets[{i}].symbol", f"{m.symbol} is listed twice")
        idx = m.index
        if idx.kind == "random_walk" and not idx.start:
            fail(f".markets[{i}].index.start", "a random walk needs a start price")
        if idx.kind == "points" and not idx.points:
            fail(f".markets[{i}].index.points", "at least one point")
        if idx.kind == "csv" and not (p.parent / idx.file).exists():
            fail(f".markets[{i}].index.file", f"no such file: {idx.file}")
        for j, sh in enumerate(idx.shocks):
            for name in ("at", "over", "retrace_over", "move", "retrace"):
                try:
                    if name in ("move", "retrace"):
                        ppm(getattr(sh, name), name)
                    else:
                        duration_ms(getattr(sh, name), name)
                except ValueError as e:
                    fail(f".markets[{i}].index.shocks[{j}].{name}", str(e))
    for name, tier in s.fees.tiers.items():
        for side in ("maker", "taker"):
            try:
                if not 0 <= ppm(getattr(tier, side), side) <= 100_000:
                    fail(f".fees.tiers.{name}.{side}", "must be between 0 and 10%")
            except ValueError as e:
                fail(f".fees.tiers.{name}.{side}", str(e))
    known_tiers = ", ".join(sorted(s.fees.tiers)) or "none defined"
    for what, rows in (("accounts", s.accounts), ("traders", s.traders)):
        for i, row in enumerate(rows):
            if row.fee_tier and row.fee_tier not in s.fees.tiers:
                fail(f".{what}[{i}].fee_tier", f"no tier {row.fee_tier!r} in [fees.tiers] ({known_tiers})")
    for i, a in enumerate(s.accounts):
        if a.position is not None and a.position.symbol not in symbols:
            fail(f".accounts[{i}].position.symbol", f"no market {a.position.symbol}")
    for i, t in enumerate(s.traders):
        if t.symbol not in symbols:
            fail(f".traders[{i}].symbol", f"no market {t.symbol} (markets: {', '.join(sorted(symbols))})")
        if t.count < 0:
            fail(f".traders[{i}].count", f"must be ≥ 0, not {t.count}")
        if t.every < 1:
            fail(f".traders[{i}].every", f"must be ≥ 1 (acts every N steps), not {t.every}")
        for name in ("qty", "balance", "rate", "threshold", "stop_loss", "add_margin", "trigger", "close_fraction",
                     "spread", "level_step", "skew_per_qty", "max_inventory", "pull_on_move", "premium"):
            try:
                _parse(getattr(t, name), name)
            except ValueError as e:
                fail(f".traders[{i}].{name}", str(e))


# ---------------------------------------------------------------- building
INSTRUMENTS = {"BTCUSDT": btcusdt, "ETHUSDT": ethusdt}

#: The account that provides the other side of accounts' opening positions.
HOUSE_ACCOUNT = 999_999_999


@dataclass
class ScheduledTrader:
    trader: Trader
    every: int
    phase: int


@dataclass
class Built:
    """A scenario made ready to run."""

    scenario: Scenario
    engine: Engine
    setup: list[Command]
    feeds: dict[str, IndexFeed]
    traders: list[ScheduledTrader]
    duration_ms: int
    step_ms: int
    seed: int
    instruments: dict[str, Instrument] = field(default_factory=dict)


def _path(spec: PathSpec, ins: Instrument, seed: int, step_ms: int, base_dir: Path):
    if spec.kind == "random_walk":
        vol = ppm(spec.volatility, "volatility")
        path = RandomWalk(ins.price_ticks(spec.start), spec.seed if spec.seed is not None else seed, vol, step_ms,
                          drift_ppm=ppm(spec.drift, "drift"))
    elif spec.kind == "points":
        path = PointsPath([(duration_ms(t), ins.price_ticks(px)) for t, px in spec.points], linear=spec.linear)
    else:
        path = csv_path(base_dir / spec.file, ins, linear=spec.linear)
    for sh in spec.shocks:
        path = Shock(path, duration_ms(sh.at), ppm(sh.move, "move"), duration_ms(sh.over), ppm(sh.retrace, "retrace"),
                     duration_ms(sh.retrace_over))
    return path


def build_engine(scenario: Scenario, seed: int) -> tuple[Engine, dict[str, Instrument]]:
    """The scenario's engine before any command, and its instruments.

    It depends on the markets, brackets, venue profile, insurance fund, ADL
    ranking, margin-call ratio and funding schedule, and on the seed; not on
    the index paths (the index prices reach the engine as commands) nor on the
    traders (their deposits and orders are commands too). So a journal, which
    holds every command, replays with this engine alone: a csv index file is
    never opened again.
    """
    run = scenario.scenario
    instruments = {m.symbol: INSTRUMENTS[m.symbol]() for m in scenario.markets}
    usdt = instruments[scenario.markets[0].symbol]
    brackets = {}
    for m in scenario.markets:
        if m.brackets:
            brackets[m.symbol] = BracketTable.from_tiers(
                [(b.floor, b.cap, b.max_leverage, str(_parse(b.mmr, "mmr"))) for b in m.brackets],
                instruments[m.symbol].money_atom)
    engine = build_exchange(
        instruments.values(), profile=venue_profile(run.profile),
        insurance_fund={"USDT": usdt.money_atoms(scenario.insurance_fund.balance)},
        insurance_floor={"USDT": usdt.money_atoms(scenario.insurance_fund.floor)},
        brackets=brackets or None, adl_ranking=AdlRanking(run.adl_ranking) if run.adl_ranking else None, adl_seed=seed,
        margin_call_ratio_ppm=ppm(run.margin_call, "margin_call"),
        adl_interval_ms=duration_ms(run.adl_interval, "adl_interval"),
        insurance_max_notional_ppm=ppm(scenario.insurance_fund.max_notional, "max_notional"),
        funding_schedule={m.symbol: FundingSchedule.every_hours(m.funding_interval_hours) for m in scenario.markets},
    )
    return engine, instruments


def build(scenario: Scenario, base_dir: Path, seed: int | None = None, accounts: int | None = None,
          until: str | None = None) -> Built:
    """The engine, its set-up commands, index feeds and scheduled traders of a scenario.

    `accounts` scales the traders' population (every count but the market
    makers' in proportion, at least one of each kind that has any; the
    market makers quote as much more size instead); `until` cuts the run.
    """
    run = scenario.scenario
    seed = run.seed if seed is None else seed
    step = duration_ms(run.step)
    length = duration_ms(until) if until else duration_ms(run.duration)
    engine, instruments = build_engine(scenario, seed)
    usdt = instruments[scenario.markets[0].symbol]
    tiers = {"": (ppm(scenario.fees.maker, "maker"), ppm(scenario.fees.taker, "taker"))}
    tiers.update({name: (ppm(t.maker, "maker"), ppm(t.taker, "taker")) for name, t in scenario.fees.tiers.items()})
    feeds: dict[str, IndexFeed] = {}
    for m in scenario.markets:
        ins = instruments[m.symbol]
        main = _path(m.index, ins, seed, step, base_dir)
        sources = m.sources or [SourceSpec(venue="binance")]
        feeds[m.symbol] = IndexFeed([
            WeightedSource(s.venue, s.weight, _path(s.path, ins, seed + n + 1, step, base_dir) if s.path else main)
            for n, s in enumerate(sources)
        ])
    setup: list[Command] = []

    def fee_tier(acct: int, tier: str) -> None:
        maker, taker = tiers[tier]
        setup.append(SetFeeTier(account=acct, maker_fee_ppm=maker, taker_fee_ppm=taker))

    def account_setup(acct: int, balance: str, leverage: int, symbol: str, isolated: bool, tier: str) -> None:
        setup.append(Deposit(account=acct, asset="USDT", amount=usdt.money_atoms(balance)))
        fee_tier(acct, tier)
        if isolated:
            setup.append(SetMarginMode(account=acct, symbol=symbol, margin_mode=MarginMode.ISOLATED))
        setup.append(SetLeverage(account=acct, symbol=symbol, leverage=leverage))

    opening = [a for a in scenario.accounts if a.position is not None]
    if opening:
        setup.append(Deposit(account=HOUSE_ACCOUNT, asset="USDT", amount=usdt.money_atoms("1000000000")))
    for a in scenario.accounts:
        symbol = a.position.symbol if a.position is not None else scenario.markets[0].symbol
        setup.append(Deposit(account=a.id, asset="USDT", amount=usdt.money_atoms(a.balance)))
        fee_tier(a.id, a.fee_tier)
        if a.position_mode == "hedge":
            setup.append(SetPositionMode(account=a.id, position_mode=PositionMode.HEDGE))
        if a.margin_mode == "isolated":
            setup.append(SetMarginMode(account=a.id, symbol=symbol, margin_mode=MarginMode.ISOLATED))
        setup.append(SetLeverage(account=a.id, symbol=symbol, leverage=a.leverage))
    traders: list[ScheduledTrader] = []
    total = sum(t.count for t in scenario.traders if t.kind != "market_maker")
    next_id = 1_000
    phase_rng = random.Random(seed)
    for t in scenario.traders:
        # every population but the market makers scales in proportion; the market makers quote that much
        # more size instead, so that the book keeps up with the population without a crowd of makers
        scaled = t.kind != "market_maker" and accounts is not None and total
        count = max(1 if t.count else 0, t.count * accounts // total) if scaled else t.count
        size = max(1, accounts // total) if accounts is not None and total and not scaled else 1
        ins = instruments[t.symbol]
        for _ in range(count):
            acct = next_id
            next_id += 1
            account_setup(acct, t.balance, t.leverage, t.symbol, t.margin_mode == "isolated", t.fee_tier)
            trader = _trader(t, acct, ins, seed, size)
            traders.append(ScheduledTrader(trader, t.every, phase_rng.randrange(t.every)))
    return Built(scenario, engine, setup, feeds, traders, length, step, seed, instruments)


def opening_commands(built: Built, at_price: dict[str, int]) -> list[Command]:
    """Open the accounts' configured positions against the house account at the first index price."""
    cmds: list[Command] = []
    for a in built.scenario.accounts:
        if a.position is None:
            continue
        ins = built.instruments[a.position.symbol]
        qty = ins.qty_lots(a.position.qty)
        price = at_price[a.position.symbol]
        long = a.position.side == "long"
        cmds.append(PlaceOrder(account=HOUSE_ACCOUNT, symbol=ins.symbol, side=Side.SELL if long else Side.BUY,
                               qty=qty, price=price))
        cmds.append(PlaceOrder(account=a.id, symbol=ins.symbol, side=Side.BUY if long else Side.SELL, qty=qty,
                               order_type=OrderType.MARKET))
        if a.auto_margin_addition and a.margin_mode == "isolated":
            cmds.append(SetAutoMarginAddition(account=a.id, symbol=ins.symbol, enabled=True))
    return cmds


def _trader(t: TraderSpec, acct: int, ins: Instrument, seed: int, size: int = 1) -> Trader:
    qty = ins.qty_lots(str(_parse(t.qty, "qty"))) * size
    symbol = ins.symbol
    if t.kind == "market_maker":
        tick = ins.tick
        return MarketMaker(acct, symbol, seed, qty, t.levels, int(_parse(t.spread, "spread") / tick),
                           int(_parse(t.level_step, "level_step") / tick),
                           int(_parse(t.skew_per_qty, "skew_per_qty") / tick * ins.lot),
                           ins.qty_lots(str(_parse(t.max_inventory, "max_inventory"))),
                           ppm(t.pull_on_move, "pull_on_move"), t.lookback, ppm(t.premium, "premium"))
    if t.kind == "noise":
        return NoiseTaker(acct, symbol, seed, qty, ppm(t.rate, "rate"),
                          ins.qty_lots(str(_parse(t.max_inventory, "max_inventory"))))
    if t.kind == "trend":
        return TrendFollower(acct, symbol, seed, qty, t.lookback, ppm(t.threshold, "threshold"),
                             ppm(t.stop_loss, "stop_loss"))
    if t.kind == "hold_and_hope":
        return HoldAndHope(acct, symbol, seed, qty, ins.money_atoms(str(_parse(t.add_margin, "add"))),
                           t.side == "long", ppm(t.trigger, "trigger"))
    return PartialCloser(acct, symbol, seed, qty, t.side == "long", ppm(t.trigger, "trigger"),
                         ppm(t.close_fraction, "close_fraction"))


def engine_from_config(config: dict) -> Engine:
    """The engine a scenario run's journal header describes (`exchange replay` calls this).

    The header holds the scenario's TOML text and seed, so a replay rebuilds
    the same engine without the scenario file, from any working directory.
    Only the engine is built (`build_engine`), not the index feeds or the
    traders: every set-up command, index update and order is in the journal
    itself, so a csv index file named in the TOML (relative to a scenario
    file that may have moved or changed since) is not needed and not read.
    """
    run = config.get("run", config)
    scenario = msgspec.convert(tomllib.loads(run["scenario_toml"]), Scenario)
    seed = run.get("seed")
    return build_engine(scenario, scenario.scenario.seed if seed is None else seed)[0]
