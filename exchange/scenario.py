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
    adl_ranking: Literal["PNL_LEVERAGE", "RANDOM_OFFSET"] = "PNL_LEVERAGE"
    margin_call: str = "80%"  # margin ratio at which a margin call is published


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


class FeesSpec(_Spec):
    maker: str = "0.0002"
    taker: str = "0.0005"


class InsuranceSpec(_Spec):
    balance: str = "1000000"
    floor: str = "0"


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
        msg = str(e)
        m = re.search(r"at `\$(.*)`", msg)
        where = m.group(1) if m else ""
        line = _line_of(text, where)
        raise ScenarioError(f"{p.name}:{line}: {where.lstrip('.') or 'document'}: {msg.split(' - at ')[0]}") from None
    _validate(scenario, text, p)
    return scenario, p


def _line_of(text: str, where: str) -> int:
    """The line a msgspec path like `.traders[1].count` points at: its key, else its table (best effort)."""
    lines = text.splitlines()
    start, line, prefix = 0, 1, ""
    for name, idx in re.findall(r"\.(\w+)(?:\[(\d+)\])?", where):
        key = prefix + name
        prefix = key + "."
        if idx:  # an array of tables: its idx-th [[key]] header
            hits = [i for i, text_line in enumerate(lines) if text_line.strip() == f"[[{key}]]"]
            if int(idx) < len(hits):
                start = hits[int(idx)]
                line = start + 1
            continue
        header = [i for i in range(start, len(lines)) if lines[i].strip() == f"[{key}]"]
        if header:
            start = header[0]
            line = start + 1
            continue
        for i in range(start, len(lines)):
            if re.match(rf"\s*{re.escape(name)}\s*=", lines[i]):
                start = i
                line = i + 1
                break
    return line


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
    """Checks msgspec's types cannot express; each error names its field and line."""
    def fail(where: str, msg: str) -> None:
        raise ScenarioError(f"{p.name}:{_line_of(text, where)}: {where.lstrip('.')}: {msg}")

    symbols = {m.symbol for m in s.markets}
    if not s.markets:
        fail(".markets", "at least one market")
    for where, value in (("scenario.duration", s.scenario.duration), ("scenario.step", s.scenario.step)):
        try:
            if duration_ms(value) <= 0:
                fail("." + where, "must be positive")
        except ValueError as e:
            fail("." + where, str(e))
    try:
        venue_profile(s.scenario.profile)
    except ValueError as e:
        fail(".scenario.profile", str(e))
    for i, m in enumerate(s.markets):
        idx = m.index
        if idx.kind == "random_walk" and not idx.start:
            fail(f".markets[{i}].index.start", "a random walk needs a start price")
        if idx.kind == "points" and not idx.points:
            fail(f".markets[{i}].index.points", "at least one point")
        if idx.kind == "csv" and not (p.parent / idx.file).exists():
            fail(f".markets[{i}].index.file", f"no such file: {idx.file}")
        for j, sh in enumerate(idx.shocks):
            try:
                duration_ms(sh.at)
                duration_ms(sh.over)
                duration_ms(sh.retrace_over)
                ppm(sh.move, "move")
                ppm(sh.retrace, "retrace")
            except ValueError as e:
                fail(f".markets[{i}].index.shocks[{j}]", str(e))
    for i, a in enumerate(s.accounts):
        if a.position is not None and a.position.symbol not in symbols:
            fail(f".accounts[{i}].position.symbol", f"no market {a.position.symbol}")
    for i, t in enumerate(s.traders):
        if t.symbol not in symbols:
            fail(f".traders[{i}].symbol", f"no market {t.symbol} (markets: {', '.join(sorted(symbols))})")
        if t.count < 0 or t.every < 1:
            fail(f".traders[{i}].count", "count ≥ 0 and every ≥ 1")
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
        brackets=brackets or None, adl_ranking=AdlRanking(run.adl_ranking), adl_seed=seed,
        margin_call_ratio_ppm=ppm(run.margin_call, "margin_call"),
        funding_schedule=FundingSchedule.every_hours(scenario.markets[0].funding_interval_hours),
    )
    maker, taker = ppm(scenario.fees.maker, "maker"), ppm(scenario.fees.taker, "taker")
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

    def account_setup(acct: int, balance: str, leverage: int, symbol: str, isolated: bool) -> None:
        setup.append(Deposit(account=acct, asset="USDT", amount=usdt.money_atoms(balance)))
        setup.append(SetFeeTier(account=acct, maker_fee_ppm=maker, taker_fee_ppm=taker))
        if isolated:
            setup.append(SetMarginMode(account=acct, symbol=symbol, margin_mode=MarginMode.ISOLATED))
        setup.append(SetLeverage(account=acct, symbol=symbol, leverage=leverage))

    opening = [a for a in scenario.accounts if a.position is not None]
    if opening:
        setup.append(Deposit(account=HOUSE_ACCOUNT, asset="USDT", amount=usdt.money_atoms("1000000000")))
    for a in scenario.accounts:
        symbol = a.position.symbol if a.position is not None else scenario.markets[0].symbol
        setup.append(Deposit(account=a.id, asset="USDT", amount=usdt.money_atoms(a.balance)))
        setup.append(SetFeeTier(account=a.id, maker_fee_ppm=maker, taker_fee_ppm=taker))
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
            account_setup(acct, t.balance, t.leverage, t.symbol, t.margin_mode == "isolated")
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

    The header holds the scenario's TOML text, seed, population and length, so
    a replay rebuilds the same engine without the file; the set-up commands
    are in the journal itself.
    """
    run = config.get("run", config)
    scenario = msgspec.convert(tomllib.loads(run["scenario_toml"]), Scenario)
    return build(scenario, Path("."), run.get("seed"), run.get("accounts"), run.get("until")).engine
