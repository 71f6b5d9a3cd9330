"""The worked examples of the spec, checked through `exchange calc` and through the engine.

Every example of examples.json of the kinds liq_price_cross, margin_ratio,
maint_margin, bankruptcy_price, liq_price_isolated and auto_add_margin (the add
amounts only, see mechanics.md §8(b); the auto-add itself through the full
exchange of exchange.assembly, which has the risk monitor) is checked within its
tolerance:

* through the calculator (`exchange.calculator.calculate`, and once through
  the real `exchange calc` console script in a subprocess);
* through the engine, wherever the engine can hold the situation: the
  positions are built with real trades between accounts (deposits,
  SetLeverage / SetMarginMode, a resting order crossed at the entry price,
  SetMarkPrice), and the `liquidation_price` of the PositionUpdated event
  (ticks, rounded toward the mark: a long's up, a short's down) is compared
  with the exact formula value worked out here, independently of
  `exchange.margin`.

Then hand-worked cases (arithmetic in the comments): hedge mode (cross legs
of one symbol share one LP; isolated legs have their own) and a bracket
change at the liquidation price (the LP uses the bracket of the notional at
the LP, not at entry: Binance COIN-M FAQ, mechanics.md §2).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exchange.accounts import Position, SymbolSettings
from exchange.assembly import build_exchange
from exchange.brackets import PPM, BracketTable, default_table, fixed_table
from exchange.brackets import maintenance_margin as bracket_mm
from exchange.calculator import CalcError, calculate
from exchange.clearing import Clearing
from exchange.commands import (
    AdjustIsolatedMargin,
    Deposit,
    PlaceOrder,
    SetAutoMarginAddition,
    SetFeeTier,
    SetLeverage,
    SetMarginMode,
    SetMarkPrice,
    SetPositionMode,
    Transfer,
)
from exchange.engine import Engine
from exchange.enums import (
    BalanceReason,
    MarginMode,
    PositionMode,
    PositionSide,
    RejectReason,
    Side,
    WalletKind,
)
from exchange.events import BalanceUpdated, Event, OrderRejected, PositionUpdated
from exchange.instrument import Instrument, btcusdt, ethusdt
from exchange.margin import maintenance_margin
from exchange.venue import ENTRY_NOTIONAL, AutoAddRule, MaintenanceBase
from liquidation.auto_margin import auto_add_amount

# A byte copy of the spec's examples.json (and binance-api.md) in the repository, so that the tests do not depend
# on a directory outside it; test_spec_copies_equal_the_shared_spec checks the copies against the spec beside the
# repository (../shared/spec) where there is one.
SPEC_DIR = Path(__file__).resolve().parent / "data" / "spec"
SHARED_SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "spec"
BTC, ETH = "BTCUSDT", "ETHUSDT"
USDT = "USDT"
BOTH, LONG, SHORT = PositionSide.BOTH, PositionSide.LONG, PositionSide.SHORT


def _load_examples() -> dict[str, dict[str, Any]]:
    path = SPEC_DIR / "examples.json"
    if not path.exists():
        pytest.fail(f"examples.json not found: {path}")
    return {e["id"]: e for e in json.loads(path.read_text())}


@pytest.fixture(scope="module")
def examples() -> dict[str, dict[str, Any]]:
    return _load_examples()


def F(x: Any) -> Fraction:
    """An exact fraction of a JSON number or a decimal string (floats by their shortest decimal form)."""
    if isinstance(x, (Fraction, int, Decimal)):
        return Fraction(x)
    return Fraction(Decimal(repr(x) if isinstance(x, float) else str(x)))


def D(s: str) -> Decimal:
    return Decimal(s)


def within(got: Decimal | Fraction, expected: Any, tol: Any) -> bool:
    return abs(F(got) - F(expected)) <= F(tol)


def lp_ticks(lp: Fraction, tick: str, long: bool) -> int:
    """The exact LP on the tick grid, rounded toward the mark: a long's up, a short's down."""
    x = lp / F(tick)
    return math.ceil(x) if long else math.floor(x)


# ---------------------------------------------------------------------------- engine harness
class Venue:
    """An engine with clearing, and the events it published."""

    def __init__(self, instruments: list[Instrument] | None = None, **clearing: Any) -> None:
        self.clearing = Clearing(**clearing)
        self.engine = Engine(instruments=instruments, clearing=self.clearing)
        self.ins = {m: self.engine.markets[m].instrument for m in self.engine.markets}
        self.events: list[Event] = []

    def do(self, cmd: Any) -> list[Event]:
        out = self.engine.apply(cmd)
        self.events += out
        return out

    def ok(self, cmd: Any) -> list[Event]:
        out = self.do(cmd)
        rejects = [e for e in out if isinstance(e, OrderRejected)]
        assert not rejects, rejects
        return out

    def deposit(self, account: int, usdt: str, wallet: WalletKind = WalletKind.FUTURES) -> None:
        self.ok(Deposit(account=account, asset=USDT, amount=self.ins[BTC].money_atoms(usdt), wallet=wallet))

    def trade(self, symbol: str, buyer: int, seller: int, qty: str, price: str, buyer_side: PositionSide = BOTH,
              seller_side: PositionSide = BOTH) -> list[Event]:
        """The seller rests a limit sell, the buyer crosses it at the same price."""
        ins = self.ins[symbol]
        q, p = ins.qty_lots(qty), ins.price_ticks(price)
        self.ok(PlaceOrder(account=seller, symbol=symbol, side=Side.SELL, qty=q, price=p, position_side=seller_side))
        out = self.ok(PlaceOrder(account=buyer, symbol=symbol, side=Side.BUY, qty=q, price=p, position_side=buyer_side))
        assert sum(1 for e in out if type(e).__name__ == "Trade") >= 1
        return out

    def last_position(self, account: int, symbol: str, side: PositionSide = BOTH) -> PositionUpdated:
        for e in reversed(self.events):
            if isinstance(e, PositionUpdated) and (e.account, e.symbol, e.position_side) == (account, symbol, side):
                return e
        raise AssertionError(f"no PositionUpdated for {account} {symbol} {side}")

    def state(self, account: int, symbol: str, side: PositionSide = BOTH) -> Any:
        return self.clearing.accounts[account].positions[(symbol, side)]


# ---------------------------------------------------------------------------- calculator helpers
def calc_position(out: dict[str, Any], symbol: str, side: str = "long") -> dict[str, Any]:
    (row,) = [p for p in out["positions"] if p["symbol"] == symbol and p["side"] == side]
    return row


def console_script() -> list[str]:
    """The installed `exchange` console script (beside this interpreter, else on PATH)."""
    here = Path(sys.executable).with_name("exchange")
    if here.exists():
        return [str(here)]
    found = shutil.which("exchange")
    assert found, "the `exchange` console script is not installed"
    return [found]


# ============================================================================ the spec's copies and the ETH table
@pytest.mark.parametrize("name", ["examples.json", "binance-api.md"])
def test_spec_copies_equal_the_shared_spec(name: str) -> None:
    shared = SHARED_SPEC_DIR / name
    if not shared.exists():
        pytest.skip(f"no shared spec beside the repository ({shared}): nothing to compare the copy with")
    assert (SPEC_DIR / name).read_bytes() == shared.read_bytes(), f"tests/data/spec/{name} differs from {shared}"


# mechanics.md Part 1, "Brackets and maintenance margin": the default ETHUSDT table (floor–cap USDT, max
# leverage, MMR, cum), written here as the spec gives it.
ETHUSDT_SPEC = [
    (0, 300_000, 150, "0.0040", 0),
    (300_000, 800_000, 100, "0.0050", 300),
    (800_000, 3_000_000, 75, "0.0065", 1_500),
    (3_000_000, 12_000_000, 50, "0.0100", 12_000),
    (12_000_000, 50_000_000, 25, "0.0200", 132_000),
    (50_000_000, 65_000_000, 20, "0.0250", 382_000),
    (65_000_000, 150_000_000, 10, "0.0500", 2_007_000),
    (150_000_000, 320_000_000, 5, "0.1000", 9_507_000),
    (320_000_000, 400_000_000, 4, "0.1250", 17_507_000),
    (400_000_000, 530_000_000, 3, "0.1500", 27_507_000),
    (530_000_000, 800_000_000, 2, "0.2500", 80_507_000),
    (800_000_000, 1_200_000_000, 1, "0.5000", 280_507_000),
]


def test_default_ethusdt_brackets_are_the_spec_table() -> None:
    engine = build_exchange()
    for table in (default_table(ETH), engine.clearing.brackets(ETH)):
        atom = F("0.00000001")  # USDT's money atom (1e-8)
        got = [(F(b.floor) * atom, F(b.cap) * atom, b.max_leverage, Fraction(b.mmr, PPM), F(b.cum) * atom)
               for b in table.brackets]
        assert got == [(F(f), F(c), lev, F(mmr), F(cum)) for f, c, lev, mmr, cum in ETHUSDT_SPEC]
        assert [b.number for b in table.brackets] == list(range(1, 13))
    # the spec's cum column agrees with its own recursion cum_n = floor_n × (MMR_n − MMR_{n−1}) + cum_{n−1}
    cum = F(0)
    for (floor, _, _, mmr, want), prev in zip(ETHUSDT_SPEC[1:], ETHUSDT_SPEC, strict=False):
        cum += F(floor) * (F(mmr) - F(prev[3]))
        assert cum == F(want), floor


# ============================================================================ liq_price_cross
# binance_cross_oneway_btc_official_example / binance_cross_oneway_eth_official_example.
# Source: Binance FAQ "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts" (the
# "From calc example" account), as in freqtrade tests/exchange/test_binance.py::test_liquidation_price_binance.
CROSS_IDS = ["binance_cross_oneway_btc_official_example", "binance_cross_oneway_eth_official_example"]


def exact_cross_lp(inputs: dict[str, Any]) -> Fraction:
    """mechanics.md §3.1, one-way cross, long target:
    LP = (WB − TMM1 + UPNL1 + cum − q·EP) / (q·MMR − q), TMM1/UPNL1 of the other position at its mark."""
    (target,) = [p for p in inputs["positions"] if p["symbol"] == inputs["target"]]
    (other,) = [p for p in inputs["positions"] if p["symbol"] != inputs["target"]]
    tmm = F(other["qty"]) * F(other["mark_price"]) * F(other["mmr"]) - F(other["cum"])
    upnl = F(other["qty"]) * (F(other["mark_price"]) - F(other["entry_price"]))
    q, ep = F(target["qty"]), F(target["entry_price"])
    return (F(inputs["wallet_balance"]) - tmm + upnl + F(target["cum"]) - q * ep) / (q * F(target["mmr"]) - q)


@pytest.mark.parametrize("example_id", CROSS_IDS)
def test_liq_price_cross_calculator(examples: dict[str, Any], example_id: str) -> None:
    ex = examples[example_id]
    inp, tol = ex["inputs"], ex["tolerance"]["abs"]
    doc = {"wallet_balance": inp["wallet_balance"], "positions": [
        {k: p[k] for k in ("symbol", "side", "qty", "entry_price", "mark_price", "mmr", "cum")}
        for p in inp["positions"]
    ]}
    out = calculate(doc)
    row = calc_position(out, inp["target"])
    assert within(D(row["liquidation_price"]), ex["expected"]["liquidation_price"], tol)
    # the hand formula agrees with the published figure too (it is the same account)
    assert within(exact_cross_lp(inp), ex["expected"]["liquidation_price"], tol)
    # TMM1 and UPNL1 quoted by the example are the other position's MM and UPNL at its mark
    other = next(p for p in out["positions"] if p["symbol"] != inp["target"])
    assert within(D(other["maintenance_margin"]), inp["TMM1_other_maint_margin"], "0.000001")
    assert within(D(other["unrealized_pnl"]), inp["UPNL1_other_unrealized_pnl"], "0.000001")


def binance_example_venue(inp: dict[str, Any]) -> Venue:
    """The Binance example account, built by trades. BTCUSDT gets a 0.01 tick so that the example's
    prices (32,481.98 and 31,967.27) are on the grid; fees are 0 so that the wallet is the example's."""
    btc = msgspec.structs.replace(btcusdt(), tick_size="0.01")
    brackets = {p["symbol"]: fixed_table(repr(p["mmr"]), repr(p["cum"])) for p in inp["positions"]}
    v = Venue(instruments=[btc, ethusdt()], brackets=brackets, maker_fee_ppm=0, taker_fee_ppm=0)
    user, street = 1, 2
    wallet = btc.money_atoms(str(Decimal(repr(inp["wallet_balance"]))))
    v.ok(Deposit(account=user, asset=USDT, amount=wallet - 1))
    v.deposit(street, "100000000")
    for p in inp["positions"]:
        assert p["side"] == "long"
        v.trade(p["symbol"], user, street, repr(p["qty"]), repr(p["entry_price"]))
    for p in inp["positions"]:
        v.ok(SetMarkPrice(symbol=p["symbol"], price=v.ins[p["symbol"]].price_ticks(repr(p["mark_price"]))))
    # The engine refreshes cross LPs when the account changes, not on a mark tick: the last atom of the
    # wallet comes in after the marks are set, and with it the LPs at these marks.
    v.ok(Deposit(account=user, asset=USDT, amount=1, wallet=WalletKind.SPOT))
    v.ok(Transfer(account=user, asset=USDT, amount=1, from_wallet=WalletKind.SPOT, to_wallet=WalletKind.FUTURES))
    assert v.clearing.accounts[user].wallet[USDT] == wallet
    return v


@pytest.mark.parametrize("example_id", CROSS_IDS)
def test_liq_price_cross_engine(examples: dict[str, Any], example_id: str) -> None:
    ex = examples[example_id]
    inp, tol = ex["inputs"], ex["tolerance"]["abs"]
    v = binance_example_venue(inp)
    ins = v.ins[inp["target"]]
    ev = v.last_position(1, inp["target"])
    exact = exact_cross_lp(inp)
    assert ev.liquidation_price == lp_ticks(exact, ins.tick_size, long=True)
    assert within(Fraction(ev.liquidation_price) * F(ins.tick_size), ex["expected"]["liquidation_price"], tol)
    assert v.state(1, inp["target"]).liq_ticks == ev.liquidation_price


# ============================================================================ margin_ratio
# binance_cross_margin_ratio_derived: derived from Binance's MM = notional(mark)×MMR − cum (notional-limit
# page) and Margin Ratio = MM / Margin Balance (Binance "Liquidation Protocols" FAQ), same example account.
def test_margin_ratio_calculator(examples: dict[str, Any]) -> None:
    ex = examples["binance_cross_margin_ratio_derived"]
    inp, exp, rel = ex["inputs"], ex["expected"], F(ex["tolerance"]["rel"])
    out = calculate({"wallet_balance": inp["wallet_balance"], "positions": inp["positions"]})
    for field, key in (("maintenance_margin", "maintenance_margin_total"), ("margin_balance", "margin_balance"),
                       ("margin_ratio", "margin_ratio")):
        assert abs(F(D(out[field])) / F(exp[key]) - 1) <= rel, (field, out[field], exp[key])


def test_margin_ratio_engine(examples: dict[str, Any]) -> None:
    ex = examples["binance_cross_margin_ratio_derived"]
    inp, exp, rel = ex["inputs"], ex["expected"], F(ex["tolerance"]["rel"])
    v = binance_example_venue({**inp, "target": "BTCUSDT"})
    acct = v.clearing.accounts[1]
    mm, upnl, _ = v.clearing.cross_totals(acct, USDT)
    atom = F(v.ins[BTC].atom)
    balance = acct.wallet[USDT] + upnl
    assert abs(mm * atom / F(exp["maintenance_margin_total"]) - 1) <= rel
    assert abs(balance * atom / F(exp["margin_balance"]) - 1) <= rel
    assert abs(Fraction(mm, balance) / F(exp["margin_ratio"]) - 1) <= rel


# ============================================================================ maint_margin
# binance_btcusdt_bracket_cum_recursion: freqtrade binance_leverage_tiers.json (freqtrade 2026.9) and the
# recursion cum_n = floor_n × (MMR_n − MMR_{n−1}) + cum_{n−1} (Binance COIN-M liquidation FAQ).
def test_bracket_cum_recursion_tables(examples: dict[str, Any]) -> None:
    ex = examples["binance_btcusdt_bracket_cum_recursion"]
    rows = ex["inputs"]["brackets_floor_cap_mmr_maxlev"]
    atom = Decimal("0.00000001")
    expected = [F(c) for c in ex["expected"]["cum_per_bracket"]]
    tiers = [(str(f), str(c), lev, repr(m)) for f, c, m, lev in rows]
    for table in (BracketTable.from_tiers(tiers, atom), default_table(BTC)):
        assert [b.number for b in table.brackets] == list(range(1, 13))
        assert [F(b.cum) * F(atom) for b in table.brackets] == expected
        assert [b.max_leverage for b in table.brackets] == [r[3] for r in rows]
        assert [Fraction(b.mmr, PPM) for b in table.brackets] == [F(r[2]) for r in rows]


def test_bracket_cum_recursion_calculator(examples: dict[str, Any]) -> None:
    """Each bracket's cum as the calculator reports it for a position at that bracket's floor notional."""
    ex = examples["binance_btcusdt_bracket_cum_recursion"]
    rows = ex["inputs"]["brackets_floor_cap_mmr_maxlev"]
    for (floor, _cap, mmr, _lev), cum in zip(rows, ex["expected"]["cum_per_bracket"], strict=True):
        notional = Decimal(floor) or Decimal(1000)  # the floor is inclusive; bracket 1 from any notional
        qty = notional / 80000  # exact for every floor of the table (3.75, 10, 37.5, …)
        out = calculate({"wallet_balance": "1", "positions": [
            {"symbol": BTC, "side": "long", "qty": str(qty), "entry_price": "80000"}]})
        row = out["positions"][0]
        assert F(D(row["cum"])) == F(cum), (floor, row["cum"])
        assert F(D(row["mmr"])) == F(mmr)


# binance_btcusdt_maint_margin_tier4: notional 5,000,000 → bracket 4, MMR 1%, cum 12,000, max 50x,
# MM = 5,000,000 × 1% − 12,000 = 38,000.
def test_maint_margin_tier4_calculator_and_table(examples: dict[str, Any]) -> None:
    ex = examples["binance_btcusdt_maint_margin_tier4"]
    exp, tol = ex["expected"], ex["tolerance"]["abs"]
    table = default_table(BTC)
    notional = int(Decimal(repr(ex["inputs"]["notional"])) / Decimal("0.00000001"))
    b = table.for_notional(notional)
    assert (b.number, Fraction(b.mmr, PPM), b.max_leverage) == (exp["bracket"], F(exp["mmr"]), exp["max_leverage"])
    assert within(Fraction(b.cum, 10**8), exp["cum"], tol)
    assert within(Fraction(bracket_mm(notional, b), 10**8), exp["maintenance_margin"], tol)
    # 62.5 BTC × 80,000 = 5,000,000
    out = calculate({"wallet_balance": "1000000", "positions": [
        {"symbol": BTC, "side": "long", "qty": "62.5", "entry_price": "80000"}]})
    row = out["positions"][0]
    assert within(D(row["maintenance_margin"]), exp["maintenance_margin"], tol)
    assert within(D(row["mmr"]), exp["mmr"], tol)
    assert within(D(row["cum"]), exp["cum"], tol)


def test_maint_margin_tier4_engine(examples: dict[str, Any]) -> None:
    ex = examples["binance_btcusdt_maint_margin_tier4"]
    exp, tol = ex["expected"], ex["tolerance"]["abs"]
    v = Venue()
    v.deposit(1, "400000")
    v.deposit(2, "400000")
    v.trade(BTC, 1, 2, "62.5", "80000")
    v.ok(SetMarkPrice(symbol=BTC, price=v.ins[BTC].price_ticks("80000")))
    _, mm, _ = v.clearing.position_figures(v.state(1, BTC))
    assert within(Fraction(mm, 10**8), exp["maintenance_margin"], tol)
    # max leverage 50 of bracket 4: 51x caps the position at bracket 3's 3,000,000 → refused; 50x is allowed
    out = v.do(SetLeverage(account=1, symbol=BTC, leverage=exp["max_leverage"] + 1))
    assert [e.reason for e in out if isinstance(e, OrderRejected)] == [RejectReason.LEVERAGE_TOO_HIGH_FOR_POSITION]
    v.ok(SetLeverage(account=1, symbol=BTC, leverage=exp["max_leverage"]))


# ============================================================================ bankruptcy_price
# bankruptcy_simple_10x_long: thecryptoassociate.com, "a $10,000 long at 10x has bankruptcy price $9,000";
# BP_long = EP − margin/qty = 10,000 − 1,000/1 = 9,000.
def test_bankruptcy_simple_calculator(examples: dict[str, Any]) -> None:
    ex = examples["bankruptcy_simple_10x_long"]
    inp = ex["inputs"]
    out = calculate({"positions": [{"symbol": BTC, "side": inp["side"], "qty": "1", "entry_price": inp["entry_price"],
                                    "margin_mode": "isolated", "leverage": inp["leverage"]}]})
    assert within(D(out["positions"][0]["bankruptcy_price"]), ex["expected"]["bankruptcy_price"],
                  ex["tolerance"]["abs"])


def test_bankruptcy_simple_engine(examples: dict[str, Any]) -> None:
    ex = examples["bankruptcy_simple_10x_long"]
    inp = ex["inputs"]
    v = Venue()
    v.deposit(1, "2000")
    v.deposit(2, "2000")
    v.ok(SetMarginMode(account=1, symbol=BTC, margin_mode=MarginMode.ISOLATED))
    v.ok(SetLeverage(account=1, symbol=BTC, leverage=inp["leverage"]))
    v.trade(BTC, 1, 2, "1", repr(inp["entry_price"]))
    ev = v.last_position(1, BTC)
    assert ev.isolated_margin == v.ins[BTC].money_atoms("1000")  # 10,000 / 10, the fee is paid from the wallet
    # exact: 9,000 is on the grid, so rounding changes nothing
    assert within(Fraction(ev.bankruptcy_price) * F("0.1"), ex["expected"]["bankruptcy_price"], ex["tolerance"]["abs"])


# ============================================================================ liq_price_isolated (seed a)
# seed_a_btc80000_10x_margin_plus_{0,500,1000}: derived (seed numbers), mechanics.md §8(a).
# q = 0.125, EP = 80,000, PM = 1,000 (+500, +1,000).
#  entry-notional profile, MMR 0.5%: LP = EP − (PM − q·EP·MMR)/q = 80,000 − (PM − 50)/0.125
#     = 72,400 / 68,400 / 64,400 (exact).
#  binance profile (MM at the LP notional): LP = (q·EP − PM − cum)/(q·(1 − MMR))
#     MMR 0.4% (BTCUSDT bracket 1): 9,000/0.1245 = 72,289.16; 8,500/0.1245 = 68,273.09; 8,000/0.1245 = 64,257.03
#     MMR 0.5%:                     9,000/0.124375 = 72,361.81; 68,341.71; 64,321.61
SEED_IDS = ["seed_a_btc80000_10x_margin_plus_0", "seed_a_btc80000_10x_margin_plus_500",
            "seed_a_btc80000_10x_margin_plus_1000"]
# mechanics.md §8(a) and the seed examples' notes (2 decimals, so ±0.01)
BINANCE_SEED = {"0.004": ["72289.16", "68273.09", "64257.03"], "0.005": ["72361.81", "68341.71", "64321.61"]}


def exact_isolated_lp(q: Fraction, ep: Fraction, margin: Fraction, mmr: Fraction, cum: Fraction, long: bool,
                      entry_base: bool) -> Fraction:
    side = 1 if long else -1
    if entry_base:  # MM = q·EP·MMR − cum, a constant: margin balance q·side·(LP − EP) + PM = MM
        return ep - side * (margin - (q * ep * mmr - cum)) / q
    # MM = q·LP·MMR − cum: PM + side·q·(LP − EP) = q·LP·MMR − cum
    return (margin + cum - side * q * ep) / (q * mmr - side * q)


def seed_doc(profile: str, mmr: str | None, adds: int) -> dict[str, Any]:
    pos: dict[str, Any] = {"symbol": BTC, "side": "long", "qty": "0.125", "entry_price": "80000",
                           "margin_mode": "isolated", "isolated_margin": "1000"}
    if mmr is not None:
        pos |= {"mmr": mmr, "cum": "0"}
    return {"profile": profile, "positions": [pos],
            "what_if": [{"add_margin": {"symbol": BTC, "side": "long", "amount": "500"}}] * adds}


def test_seed_entry_notional_calculator(examples: dict[str, Any]) -> None:
    out = calculate(seed_doc("entry-notional", "0.005", 2))
    reports = [out, *out["what_if"]]
    for example_id, report in zip(SEED_IDS, reports, strict=True):
        ex = examples[example_id]
        inp = ex["inputs"]
        assert inp["mm_base"] == "entry_notional"
        row = report["positions"][0]
        assert within(D(row["isolated_margin"]), F(inp["initial_margin"]) + F(inp["added_margin"]), 0)
        assert within(D(row["liquidation_price"]), ex["expected"]["liquidation_price"], ex["tolerance"]["abs"])
        exact = exact_isolated_lp(F(inp["qty"]), F(inp["entry_price"]), F(inp["initial_margin"]) +
                                  F(inp["added_margin"]), F(inp["mmr"]), Fraction(0), True, True)
        assert exact == F(ex["expected"]["liquidation_price"])


@pytest.mark.parametrize("mmr", ["0.004", "0.005"])
def test_seed_binance_profile_calculator(mmr: str) -> None:
    # 0.4% is BTCUSDT's default bracket 1 (no mmr given); 0.5% a fixed bracket
    out = calculate(seed_doc("binance", None if mmr == "0.004" else mmr, 2))
    for expected, report in zip(BINANCE_SEED[mmr], [out, *out["what_if"]], strict=True):
        assert within(D(report["positions"][0]["liquidation_price"]), expected, "0.01")


def seed_engine(profile_name: str, table: BracketTable | None) -> tuple[Venue, list[PositionUpdated]]:
    kw: dict[str, Any] = {"profile": ENTRY_NOTIONAL} if profile_name == "entry-notional" else {}
    if table is not None:
        kw["brackets"] = {BTC: table}
    v = Venue(**kw)
    v.deposit(1, "3000")
    v.deposit(2, "3000")
    v.ok(SetMarginMode(account=1, symbol=BTC, margin_mode=MarginMode.ISOLATED))
    v.ok(SetLeverage(account=1, symbol=BTC, leverage=10))
    v.trade(BTC, 1, 2, "0.125", "80000")
    seen = [v.last_position(1, BTC)]
    for _ in range(2):
        v.ok(AdjustIsolatedMargin(account=1, symbol=BTC, amount=v.ins[BTC].money_atoms("500")))
        seen.append(v.last_position(1, BTC))
    return v, seen


def test_seed_entry_notional_engine(examples: dict[str, Any]) -> None:
    _, seen = seed_engine("entry-notional", fixed_table("0.005", "0"))
    for example_id, ev in zip(SEED_IDS, seen, strict=True):
        ex = examples[example_id]
        inp = ex["inputs"]
        margin = F(inp["initial_margin"]) + F(inp["added_margin"])
        assert ev.isolated_margin == margin * 10**8
        exact = exact_isolated_lp(F(inp["qty"]), F(inp["entry_price"]), margin, F(inp["mmr"]), Fraction(0), True,
                                  True)
        assert ev.liquidation_price == lp_ticks(exact, "0.1", long=True)
        assert within(Fraction(ev.liquidation_price, 10), ex["expected"]["liquidation_price"], ex["tolerance"]["abs"])


@pytest.mark.parametrize("mmr", ["0.004", "0.005"])
def test_seed_binance_profile_engine(mmr: str) -> None:
    _, seen = seed_engine("binance", None if mmr == "0.004" else fixed_table(mmr, "0"))
    for i, (expected, ev) in enumerate(zip(BINANCE_SEED[mmr], seen, strict=True)):
        exact = exact_isolated_lp(Fraction(1, 8), Fraction(80000), Fraction(1000 + 500 * i), F(mmr), Fraction(0),
                                  True, False)
        assert ev.liquidation_price == lp_ticks(exact, "0.1", long=True)
        assert within(exact, expected, "0.01")
        assert within(Fraction(ev.liquidation_price, 10), expected, "0.1")  # one tick of rounding toward the mark


# ============================================================================ auto_add_margin
# mexc_auto_margin_addition_example_seed_b: MEXC "Auto Margin Addition Function" (support article 360052856411).
# 5,000 contracts × 0.0001 BTC = 0.5 BTC at 18,000 (notional 9,000), MMR 0.4%, 50 USDT available.
# add = min(EP × qty × MMR, available): first min(9,000 × 0.004, 50) = 36, then min(36, 50 − 36) = 14.
# Only the add amounts are hard checks (the source's LPs are inconsistent, mechanics.md §8(b)).
def test_auto_add_amounts_formula(examples: dict[str, Any]) -> None:
    ex = examples["mexc_auto_margin_addition_example_seed_b"]
    inp, exp = ex["inputs"], ex["expected"]
    ins = btcusdt()
    qty = ins.qty_lots(str(Decimal(inp["contracts"]) * Decimal(repr(inp["contract_size_btc"]))))
    ep = ins.price_ticks(repr(inp["entry_price"]))
    k = ins.atoms_per_tick_lot
    cost = qty * ep * k
    table = default_table(BTC)  # 9,000 USDT is in bracket 1: MMR 0.4%, as the example says
    assert Fraction(table.for_notional(cost).mmr, PPM) == F(inp["mmr"])
    available = ins.money_atoms(repr(inp["available_margin"]))
    adds = []
    for _ in range(2):
        rule = maintenance_margin(qty, cost, ep, k, table, MaintenanceBase.ENTRY_NOTIONAL)
        add = min(rule, available)
        available -= add
        adds.append(add)
    assert adds == [ins.money_atoms(repr(exp["add_amount_first"])), ins.money_atoms(repr(exp["add_amount_second"]))]
    # the liquidator's own function for the amount agrees (default rule ENTRY_MM, the MEXC one)
    pos = Position(1, BTC, BOTH, SymbolSettings(10, MarginMode.ISOLATED))
    pos.qty, pos.cost = qty, cost
    available = ins.money_atoms(repr(inp["available_margin"]))
    first = auto_add_amount(AutoAddRule.ENTRY_MM, pos, table, ep, k, available)
    second = auto_add_amount(AutoAddRule.ENTRY_MM, pos, table, ep, k, available - first)
    assert [first, second] == adds


def test_auto_add_engine(examples: dict[str, Any]) -> None:
    """The full exchange (build_exchange: engine + risk monitor + liquidator) adds 36, then 14, on mark triggers.

    (Written against the plain Engine this was to be an xfail: auto margin addition arrived with the risk
    monitor, commit b36221f, and is wired by exchange.assembly.build_exchange.)
    """
    ex = examples["mexc_auto_margin_addition_example_seed_b"]
    exp = ex["expected"]
    engine = build_exchange()
    ins = engine.markets[BTC].instrument
    events: list[Event] = []

    def ok(cmd: Any) -> list[Event]:
        out = engine.apply(cmd)
        assert not [e for e in out if isinstance(e, OrderRejected)], out
        events.extend(out)
        return out

    ok(Deposit(account=1, asset=USDT, amount=ins.money_atoms("950")))  # 900 of initial margin at 10x, 50 left
    ok(Deposit(account=2, asset=USDT, amount=ins.money_atoms("5000")))
    ok(SetFeeTier(account=1, maker_fee_ppm=0, taker_fee_ppm=0))
    ok(SetMarginMode(account=1, symbol=BTC, margin_mode=MarginMode.ISOLATED))
    ok(SetLeverage(account=1, symbol=BTC, leverage=10))
    ok(PlaceOrder(account=2, symbol=BTC, side=Side.SELL, qty=ins.qty_lots("0.5"), price=ins.price_ticks("18000")))
    ok(PlaceOrder(account=1, symbol=BTC, side=Side.BUY, qty=ins.qty_lots("0.5"), price=ins.price_ticks("18000")))
    ok(SetAutoMarginAddition(account=1, symbol=BTC, enabled=True))
    pos = engine.clearing.accounts[1].positions[(BTC, BOTH)]
    assert pos.isolated_margin == ins.money_atoms("900")
    adds = []
    for _ in range(2):
        # the mark one tick below the current LP: margin ratio ≥ 100%, the trigger
        out = ok(SetMarkPrice(symbol=BTC, price=pos.liq_ticks - 1))
        adds += [-e.delta for e in out if isinstance(e, BalanceUpdated) and e.reason is BalanceReason.AUTO_MARGIN_ADD]
    assert adds == [ins.money_atoms(repr(exp["add_amount_first"])), ins.money_atoms(repr(exp["add_amount_second"]))]
    assert pos.qty == ins.qty_lots("0.5") and pos.isolated_margin == ins.money_atoms("950")
    assert engine.clearing.accounts[1].wallet[USDT] == 0


# ============================================================================ exchange calc, the console script
def test_console_script_seed_entry_notional(examples: dict[str, Any]) -> None:
    doc = seed_doc("entry-notional", "0.005", 2)
    run = subprocess.run([*console_script(), "calc"], input=json.dumps(doc), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    for example_id, report in zip(SEED_IDS, [out, *out["what_if"]], strict=True):
        ex = examples[example_id]
        assert within(D(report["positions"][0]["liquidation_price"]), ex["expected"]["liquidation_price"],
                      ex["tolerance"]["abs"])


def test_console_script_human_form() -> None:
    # the seed (a) position in the binance profile: 72,289.16 now, 68,273.09 after +500 (mechanics.md §8(a))
    run = subprocess.run([*console_script(), "calc", "--entry", "80000", "--side", "long", "--leverage", "10",
                          "--margin", "1000", "--add-margin", "500"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "72289.16" in run.stdout and "68273.09" in run.stdout


@pytest.mark.parametrize(("doc", "field"), [
    ({"positions": [{"symbol": BTC, "side": "long", "qty": "-0.125", "entry_price": "80000",
                     "margin_mode": "isolated", "isolated_margin": "1000"}]}, "positions[0].qty"),
    ({"positions": [{"symbol": BTC, "side": "long", "qty": "0.125", "entry_price": "80000"}]}, "wallet_balance"),
    ({"wallet_balance": "1", "positions": [{"symbol": "DOGEUSDT", "side": "long", "qty": "1",
                                            "entry_price": "1"}]}, "positions[0].mmr"),
    ({"wallet_balance": "1", "positions": [{"symbol": BTC, "side": "up", "qty": "1", "entry_price": "1"}]},
     "positions[0].side"),
])
def test_console_script_bad_input(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(CalcError, match=field.replace("[", r"\[").replace("]", r"\]")):
        calculate(doc)
    run = subprocess.run([*console_script(), "calc"], input=json.dumps(doc), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert field in run.stderr
    assert run.stdout == ""


# ============================================================================ hand-worked: hedge mode
# One account in hedge mode, fees 0, wallet 10,000 USDT, BTCUSDT bracket 1 (MMR 0.4%, cum 0):
#   LONG 0.5 @ 80,000 (cost 40,000), SHORT 0.2 @ 82,000 (cost 16,400).
# Cross: both legs share one LP (mechanics.md §3.1, [BIN-PROT]):
#   LP = (WB + cumL + cumS − qL·EPL + qS·EPS) / (qL·MMR + qS·MMR − qL + qS)
#      = (10,000 − 40,000 + 16,400) / (0.002 + 0.0008 − 0.5 + 0.2) = −13,600 / −0.2972 = 45,760.4307…
#   net long, so rounded up to the tick: 45,760.5 for both legs.
#   BP (MMR = cum = 0): −13,600 / −0.3 = 45,333.33… → 45,333.4.
# Isolated at 10x: each leg alone. LONG: margin 4,000: (40,000 − 4,000)/(0.5 × 0.996) = 72,289.1566… → 72,289.2;
#   SHORT: margin 1,640: (1,640 + 16,400)/(0.2 × 1.004) = 89,840.6374… → rounded down 89,840.6.
HEDGE_CROSS_LP = Fraction(13600) / Fraction("0.2972")
HEDGE_ISO_LONG = Fraction(36000) / Fraction("0.498")
HEDGE_ISO_SHORT = Fraction(18040) / Fraction("0.2008")


def hedge_venue(isolated: bool) -> Venue:
    v = Venue(maker_fee_ppm=0, taker_fee_ppm=0)
    for a in (1, 2, 3):
        v.deposit(a, "10000")
    v.ok(SetPositionMode(account=1, position_mode=PositionMode.HEDGE))
    if isolated:
        v.ok(SetMarginMode(account=1, symbol=BTC, margin_mode=MarginMode.ISOLATED))
        v.ok(SetLeverage(account=1, symbol=BTC, leverage=10))
    v.trade(BTC, 1, 2, "0.5", "80000", buyer_side=LONG)
    v.trade(BTC, 3, 1, "0.2", "82000", seller_side=SHORT)
    return v


def test_hedge_cross_legs_share_one_lp_engine() -> None:
    v = hedge_venue(isolated=False)
    long_ev, short_ev = v.last_position(1, BTC, LONG), v.last_position(1, BTC, SHORT)
    assert (long_ev.qty, short_ev.qty) == (500, -200)
    assert long_ev.liquidation_price == short_ev.liquidation_price == lp_ticks(HEDGE_CROSS_LP, "0.1", long=True)
    assert long_ev.liquidation_price == 457605
    assert long_ev.bankruptcy_price == short_ev.bankruptcy_price == math.ceil(Fraction(13600) / Fraction("0.3") * 10)


def test_hedge_isolated_legs_have_their_own_lp_engine() -> None:
    v = hedge_venue(isolated=True)
    long_ev, short_ev = v.last_position(1, BTC, LONG), v.last_position(1, BTC, SHORT)
    assert long_ev.isolated_margin == 4000 * 10**8 and short_ev.isolated_margin == 1640 * 10**8
    assert long_ev.liquidation_price == lp_ticks(HEDGE_ISO_LONG, "0.1", long=True) == 722892
    assert short_ev.liquidation_price == lp_ticks(HEDGE_ISO_SHORT, "0.1", long=False) == 898406
    # bankruptcy: EP ∓ margin/q: 80,000 − 4,000/0.5 = 72,000; 82,000 + 1,640/0.2 = 90,200
    assert (long_ev.bankruptcy_price, short_ev.bankruptcy_price) == (720000, 902000)


def test_hedge_calculator() -> None:
    legs = [{"symbol": BTC, "side": "long", "qty": "0.5", "entry_price": "80000"},
            {"symbol": BTC, "side": "short", "qty": "0.2", "entry_price": "82000"}]
    out = calculate({"position_mode": "hedge", "wallet_balance": "10000", "positions": legs})
    for side in ("long", "short"):
        assert abs(F(D(calc_position(out, BTC, side)["liquidation_price"])) - HEDGE_CROSS_LP) < Fraction(1, 10**6)
    iso = [legs[0] | {"margin_mode": "isolated", "isolated_margin": "4000"},
           legs[1] | {"margin_mode": "isolated", "isolated_margin": "1640"}]
    out = calculate({"position_mode": "hedge", "positions": iso})
    assert abs(F(D(calc_position(out, BTC, "long")["liquidation_price"])) - HEDGE_ISO_LONG) < Fraction(1, 10**6)
    assert abs(F(D(calc_position(out, BTC, "short")["liquidation_price"])) - HEDGE_ISO_SHORT) < Fraction(1, 10**6)


# ============================================================================ hand-worked: bracket change at the LP
# Long 4 BTC @ 80,000 = 320,000 notional: bracket 2 at entry (300k–800k, MMR 0.5%, cum 300). Isolated 10x: PM 32,000.
#   with bracket 2: LP = (320,000 − 32,000 − 300)/(4 × 0.995) = 287,700/3.98 = 72,286.43; notional there 289,145.7:
#   bracket 1, inconsistent. With bracket 1: LP = (320,000 − 32,000)/(4 × 0.996) = 288,000/3.984 = 72,289.1566…,
#   notional 289,156.6: bracket 1, consistent → 72,289.1566… → 72,289.2 (the wrong one would round to 72,286.5).
# Short 3.6 BTC @ 80,000 = 288,000: bracket 1 at entry. Isolated 10x: PM 28,800.
#   with bracket 1: LP = (28,800 + 288,000)/(3.6 × 1.004) = 316,800/3.6144 = 87,649.43; notional 315,537.9: bracket 2.
#   with bracket 2: LP = (28,800 + 300 + 288,000)/(3.6 × 1.005) = 317,100/3.618 = 87,645.108…, notional 315,522.4:
#   bracket 2, consistent → rounded down 87,645.1 (the wrong one: 87,649.4).
BRACKET_CASES = [
    ("long", "4", "32000", Fraction(288000) / Fraction("3.984"), 722892, "0.005"),
    ("short", "3.6", "28800", Fraction(317100) / Fraction("3.618"), 876451, "0.004"),
]


@pytest.mark.parametrize(("side", "qty", "margin", "exact", "ticks", "entry_mmr"), BRACKET_CASES)
def test_bracket_change_at_lp_engine(side: str, qty: str, margin: str, exact: Fraction, ticks: int,
                                     entry_mmr: str) -> None:
    v = Venue()
    v.deposit(1, "50000")
    v.deposit(2, "50000")
    v.ok(SetMarginMode(account=1, symbol=BTC, margin_mode=MarginMode.ISOLATED))
    v.ok(SetLeverage(account=1, symbol=BTC, leverage=10))
    if side == "long":
        v.trade(BTC, 1, 2, qty, "80000")
    else:
        v.trade(BTC, 2, 1, qty, "80000")
    v.ok(SetMarkPrice(symbol=BTC, price=800000))
    ev = v.last_position(1, BTC)
    assert ev.isolated_margin == v.ins[BTC].money_atoms(margin)
    table = default_table(BTC)
    assert Fraction(table.for_notional(abs(ev.cost)).mmr, PPM) == F(entry_mmr)  # the bracket at entry
    assert ev.liquidation_price == lp_ticks(exact, "0.1", long=side == "long") == ticks


@pytest.mark.parametrize(("side", "qty", "margin", "exact", "ticks", "entry_mmr"), BRACKET_CASES)
def test_bracket_change_at_lp_calculator(side: str, qty: str, margin: str, exact: Fraction, ticks: int,
                                         entry_mmr: str) -> None:
    out = calculate({"positions": [{"symbol": BTC, "side": side, "qty": qty, "entry_price": "80000",
                                    "margin_mode": "isolated", "isolated_margin": margin}]})
    row = out["positions"][0]
    assert F(D(row["mmr"])) == F(entry_mmr)  # the bracket reported is the one at the mark (= entry here)
    assert abs(F(D(row["liquidation_price"])) - exact) < Fraction(1, 10**6)
    assert lp_ticks(F(D(row["liquidation_price"])), "0.1", side == "long") == ticks
