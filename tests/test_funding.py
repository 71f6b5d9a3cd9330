"""Funding: impact prices, premium index, rate, schedule and payments (mechanics.md Part 1 "Funding", §1.3).

Rates are integers over RATE_DEN = 10^12 (0.01% = 100_000_000); the cases are worked by hand in the comments.
"""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.funding import (
    BASE_INTERVAL_MS,
    DEFAULT_FUNDING_PARAMS,
    HOUR_MS,
    RATE_DEN,
    FundingParams,
    FundingRateModel,
    FundingSchedule,
    PremiumAverage,
    funding_payments,
    funding_rate,
    impact_margin_notional,
    impact_price,
    premium_index,
    rate_str,
    rate_units,
)
from exchange.instrument import btcusdt

_BINANCE_FUND = (
    "derived from Binance FAQ 'Introduction to Binance Futures Funding Rates' "
    "https://www.binance.com/en/support/faq/introduction-to-binance-futures-funding-rates-360033525031"
)


# examples.json kind "funding_rate", all four with interest_rate 0.0001, clamp 0.0005, interval_hours 8;
# source of each: _BINANCE_FUND above. F = P̄ + clamp(I − P̄, −0.05%, +0.05%).
@pytest.mark.parametrize(("example_id", "avg_premium", "expected"), [
    # P̄ 0.0003: I − P̄ = −0.0002, within the clamp → F = 0.0003 − 0.0002 = 0.0001
    ("binance_funding_rate_clamp_P0.0003", "0.0003", "0.0001"),
    # P̄ 0.001: I − P̄ = −0.0009 → clamped to −0.0005 → F = 0.001 − 0.0005 = 0.0005
    ("binance_funding_rate_clamp_P0.001", "0.001", "0.0005"),
    # P̄ −0.0005: I − P̄ = 0.0006 → clamped to 0.0005 → F = −0.0005 + 0.0005 = 0
    ("binance_funding_rate_clamp_P-0.0005", "-0.0005", "0"),
    # P̄ 0.00005: I − P̄ = 0.00005, within → F = I = 0.0001
    ("binance_funding_rate_clamp_P5e-05", "0.00005", "0.0001"),
])
def test_examples_json_funding_rate_clamp(example_id: str, avg_premium: str, expected: str) -> None:
    params = FundingParams(interest=rate_units("0.0001"), premium_clamp=rate_units("0.0005"))
    assert funding_rate(rate_units(avg_premium), params, 8 * HOUR_MS) == rate_units(expected), example_id


def test_n_hour_interval_divides_by_8_over_n() -> None:
    # F8 = 0.0001 (P̄ 0.0003 as above); 4 h: F = 0.0001 / (8/4) = 0.00005; 1 h: 0.0001 / 8 = 0.0000125
    p = rate_units("0.0003")
    assert funding_rate(p, interval_ms=4 * HOUR_MS) == rate_units("0.00005")
    assert funding_rate(p, interval_ms=1 * HOUR_MS) == rate_units("0.0000125")
    # the clamped case halves too: P̄ 0.001 → F8 0.0005 → F4 0.00025
    assert funding_rate(rate_units("0.001"), interval_ms=4 * HOUR_MS) == rate_units("0.00025")


def test_cap_and_floor() -> None:
    # P̄ 0.02: F8 = 0.02 − 0.0005 = 0.0195 → capped at the default 0.75%
    assert funding_rate(rate_units("0.02")) == rate_units("0.0075")
    assert funding_rate(rate_units("-0.02")) == rate_units("-0.0075")
    # a symbol with a 3% cap (Binance's OGNUSDT announcement): 0.0195 passes
    assert funding_rate(rate_units("0.02"), FundingParams(cap=rate_units("0.03"))) == rate_units("0.0195")
    # asymmetric floor
    params = FundingParams(cap=rate_units("0.01"), floor=rate_units("-0.002"))
    assert funding_rate(rate_units("-0.02"), params) == rate_units("-0.002")
    with pytest.raises(ValueError):
        FundingParams(cap=rate_units("0.000000001"))  # not on the 1e-8 grid


def test_zero_interest_rate() -> None:
    # BNBUSDT-style I = 0: P̄ 0.0003 → I − P̄ = −0.0003 within the clamp → F = 0
    assert funding_rate(rate_units("0.0003"), FundingParams(interest=0)) == 0
    # P̄ 0.0008 → clamp(−0.0008) = −0.0005 → F = 0.0003
    assert funding_rate(rate_units("0.0008"), FundingParams(interest=0)) == rate_units("0.0003")


def test_hyperliquid_worked_example_with_its_cap() -> None:
    # mechanics.md §1.3 variants (Hyperliquid): impact bid 10,100, oracle 10,000 → P = 1%, clamp −0.05%, F = 0.95%
    p = premium_index(10_100, None, 10_000)
    assert p == rate_units("0.01")
    assert funding_rate(p, FundingParams(cap=rate_units("0.04"))) == rate_units("0.0095")


def test_rate_rounds_half_even_to_8_decimals() -> None:
    # P̄ 0.000600005: I − P̄ = −0.000500005 → −0.0005 → F = 0.000100005 → 8 dp, a tie → even: 0.00010000
    assert funding_rate(rate_units("0.000600005")) == rate_units("0.0001")
    # P̄ 0.000600015 → F = 0.000100015 → tie → even: 0.00010002
    assert funding_rate(rate_units("0.000600015")) == rate_units("0.00010002")
    # P̄ = 1/3 × 10^-3 (exact fraction): F = P̄ − 0.0005? no: I − P̄ = −0.000233.. within → F = I
    assert funding_rate(Fraction(RATE_DEN, 3000)) == rate_units("0.0001")
    # P̄ = 0.002/3 = 0.000666…: F = 0.000166666… → 0.00016667
    assert funding_rate(Fraction(2 * RATE_DEN, 3000)) == rate_units("0.00016667")
    assert rate_str(rate_units("0.00016667")) == "0.00016667"


def test_impact_margin_notional() -> None:
    # mechanics.md §1.3: BNBUSDT at 20x, IMR 5% → IMN = 200 / 0.05 = 4,000 USDT
    ins = btcusdt()
    assert impact_margin_notional(20, ins.money_atoms("200")) == ins.money_atoms("4000")
    # BTCUSDT at 150x (IMR 0.6667%) → 30,000 USDT
    assert impact_margin_notional(150, ins.money_atoms("200")) == ins.money_atoms("30000")


def test_impact_price_walks_the_depth() -> None:
    # k = 1 atom per tick·lot; asks 10 lots at 100, 10 at 101; notional 1500 atoms:
    # level 1 gives 1000 atoms for 10 lots, level 2 the remaining 500 atoms = 500/101 lots
    # average = 1500 / (10 + 500/101) = 1500 × 101 / 1510 = 15150 / 151 ≈ 100.33 ticks
    assert impact_price([(100, 10), (101, 10)], 1500, 1) == Fraction(15150, 151)
    # within the first level: the level's price
    assert impact_price([(100, 10), (101, 10)], 700, 1) == 100
    # too thin: None, or with allow_partial the average of the whole depth: 2010 / 20 = 100.5
    assert impact_price([(100, 10), (101, 10)], 5000, 1) is None
    assert impact_price([(100, 10), (101, 10)], 5000, 1, allow_partial=True) == Fraction(201, 2)
    assert impact_price([], 5000, 1, allow_partial=True) is None


def test_impact_price_on_btcusdt_units() -> None:
    # BTCUSDT: k = 0.1 USDT × 0.001 BTC = 0.0001 USDT = 10^4 atoms; IMN 30,000 USDT
    # bids: 0.3 BTC at 50000.0 (15,000 USDT), 1 BTC at 49990.0: 15,000 USDT more at 49990 → 0.30006 BTC
    # average = 30000 / (0.3 + 15000/49990) = 49994.9995 … exactly 30000 / (0.3 + 0.300060012) ticks × 10
    ins = btcusdt()
    bids = [(ins.price_ticks("50000.0"), ins.qty_lots("0.3")), (ins.price_ticks("49990.0"), ins.qty_lots("1"))]
    got = impact_price(bids, ins.money_atoms("30000"), ins.atoms_per_tick_lot)
    expected_usdt = Fraction(30000) / (Fraction(3, 10) + Fraction(15000) / 49990)
    assert got == expected_usdt * 10  # ticks of 0.1


def test_premium_index() -> None:
    # impact bid 1010, impact ask 1012, index 1000: [max(0, 10) − max(0, −12)] / 1000 = 1%
    assert premium_index(1010, 1012, 1000) == rate_units("0.01")
    # impact ask below the index: [0 − (1000 − 990)] / 1000 = −1%
    assert premium_index(980, 990, 1000) == rate_units("-0.01")
    # index inside the impact spread: 0
    assert premium_index(999, 1001, 1000) == 0
    # a missing side counts 0; rounding to 1e-12 half-even: 1/3000 → 333333333.33 → 333333333
    assert premium_index(Fraction(3001, 3), None, 1000) == 333_333_333


def test_premium_average_is_linearly_weighted() -> None:
    # P = 10, 20, 60: Σ k·P_k / Σ k = (1×10 + 2×20 + 3×60) / (1 + 2 + 3) = 230 / 6 = 115/3
    avg = PremiumAverage()
    for p in (10, 20, 60):
        avg.add(p)
    assert avg.average() == Fraction(115, 3)
    avg.reset()
    assert avg.average() == 0


def test_funding_rate_model_samples_and_settles() -> None:
    # k = 1, IMN 1000 atoms, index 1000
    # sample 1: bids [(1010, 1)] fill 1000 atoms at 1010, asks [(1012, 5)] at 1012 → P1 = 1% = 10^10
    # sample 2: no bids, asks [(990, 5)] → impact ask 990 → P2 = −1%
    # P̄ = (1×10^10 − 2×10^10) / 3 = −0.00333…; I − P̄ = 0.003433… → +0.0005 → F = −0.00283333… → −0.00283333
    model = FundingRateModel(FundingSchedule(), 1000, 1)
    assert model.sample(1000, [(1010, 1)], [(1012, 5)]) == rate_units("0.01")
    assert model.sample(1000, [], [(990, 5)]) == rate_units("-0.01")
    assert model.predicted_rate() == rate_units("-0.00283333")
    assert model.settle() == rate_units("-0.00283333")
    assert model.last_rate == rate_units("-0.00283333")
    # a new interval with no sample: P̄ = 0 → F = I
    assert model.predicted_rate() == DEFAULT_FUNDING_PARAMS.interest


def test_four_hour_model_halves() -> None:
    model = FundingRateModel(FundingSchedule.every_hours(4), 1000, 1)
    model.sample(1000, [(1000, 5)], [(1001, 5)])  # P = 0 → F8 = I = 0.0001 → F4 = 0.00005
    assert model.settle() == rate_units("0.00005")


# ------------------------------------------------------------------ schedule
JAN1_2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in ms (19723 days × 86,400,000)


def test_binance_funding_times_utc() -> None:
    s = FundingSchedule()
    assert s.is_funding_time(JAN1_2024)
    assert s.is_funding_time(JAN1_2024 + 8 * HOUR_MS)  # 08:00
    assert s.is_funding_time(JAN1_2024 + 16 * HOUR_MS)  # 16:00
    assert not s.is_funding_time(JAN1_2024 + 4 * HOUR_MS)
    # at 00:00 exactly the next one is 08:00 (Binance nextFundingTime); 07:59:59.999 → 08:00
    assert s.next_funding_time(JAN1_2024) == JAN1_2024 + 8 * HOUR_MS
    assert s.next_funding_time(JAN1_2024 + 8 * HOUR_MS - 1) == JAN1_2024 + 8 * HOUR_MS
    assert s.time_to_next(JAN1_2024 + 6 * HOUR_MS) == 2 * HOUR_MS
    assert s.last_funding_time(JAN1_2024 + 6 * HOUR_MS) == JAN1_2024


def test_four_hour_schedule() -> None:
    s = FundingSchedule.every_hours(4)
    assert s.interval_ms == 4 * HOUR_MS
    assert s.due(JAN1_2024, JAN1_2024 + 12 * HOUR_MS) == [JAN1_2024 + h * HOUR_MS for h in (4, 8, 12)]


def test_due_settles_each_funding_time_once() -> None:
    s = FundingSchedule()
    t = JAN1_2024
    assert s.due(t - 1, t) == [t]
    assert s.due(t, t + 1) == []
    assert s.due(t, t) == []
    assert s.due(t - 1, t + 16 * HOUR_MS) == [t, t + 8 * HOUR_MS, t + 16 * HOUR_MS]


def test_premium_sample_times() -> None:
    # 5,760 samples per 8 h, in (T − 8h, T]: the sample at T closes the interval
    s = FundingSchedule()
    t = JAN1_2024
    times = s.sample_times(t - BASE_INTERVAL_MS, t)
    assert len(times) == 5_760
    assert times[0] == t - BASE_INTERVAL_MS + 5_000 and times[-1] == t


def test_only_positions_open_at_the_settlement_time_pay() -> None:
    # The intended integration: a clock advance settles every T in (prev, now] on the positions as they stand.
    # Account 1 is long 2 lots against account 2 until T − 1 ms; account 3 goes long 1 lot against
    # account 4 at T (after the clock reached T). Only 3 and 4 pay/receive, and only at T + 8 h.
    s = FundingSchedule()
    t = JAN1_2024
    positions: dict[int, int] = {}
    paid: dict[int, list[tuple[int, int]]] = {}

    def advance(prev: int, now: int) -> None:
        for ft in s.due(prev, now):
            accounts = sorted(a for a, q in positions.items() if q)
            settlement = funding_payments([positions[a] for a in accounts], 1000, rate_units("0.001"), 1)
            for a, pay in zip(accounts, settlement.payments, strict=True):
                paid.setdefault(a, []).append((ft, pay))

    clock = t - HOUR_MS
    positions.update({1: 2, 2: -2})
    advance(clock, t - 1)
    clock = t - 1
    positions.update({1: 0, 2: 0})  # closed at T − 1 ms
    advance(clock, t)
    clock = t
    positions.update({3: 1, 4: -1})  # opened at T
    advance(clock, t + 8 * HOUR_MS)
    # 1 lot × 1000 ticks × 1 atom × 0.001 = 1 atom
    assert paid == {3: [(t + 8 * HOUR_MS, -1)], 4: [(t + 8 * HOUR_MS, 1)]}


# ------------------------------------------------------------------ payments
def test_payments_hand_worked() -> None:
    # BTCUSDT: k = 10^4 atoms per tick·lot; mark 50000.1 = 500001 ticks; F = 0.00012345 (positive: longs pay)
    # long 3 lots: 3 × 500001 × 10^4 = 15,000,030,000 atoms (150.0003 USDT) × 0.00012345
    #   = 1,851,753.7035 atoms → pays 1,851,754 (rounded up)
    # short 1 lot: 617,251.2345 → receives 617,251; short 2 lots: 1,234,502.469 → receives 1,234,502
    # received 1,851,753; remainder 1,851,754 − 1,851,753 = 1 atom → fee income
    ins = btcusdt()
    r = funding_payments([3, -1, -2], ins.price_ticks("50000.1"), rate_units("0.00012345"), ins.atoms_per_tick_lot)
    assert r.payments == [-1_851_754, 617_251, 1_234_502]
    assert r.remainder == 1
    assert sum(r.payments) + r.remainder == 0


def test_negative_rate_shorts_pay() -> None:
    # F = −0.001, k = 1, mark 1001: long 3 → +3.003 → receives 3; short −3 → −3.003 → pays 4; remainder 1
    r = funding_payments([3, -3], 1001, rate_units("-0.001"), 1)
    assert r.payments == [3, -4]
    assert r.remainder == 1


def test_zero_rate_and_flat_positions() -> None:
    assert funding_payments([5, -5], 1000, 0, 1) == ([0, 0], 0)
    assert funding_payments([], 1000, rate_units("0.001"), 1) == ([], 0)


def test_positions_must_net_to_zero() -> None:
    with pytest.raises(ValueError):
        funding_payments([3, -2], 1000, rate_units("0.0001"), 1)


@settings(max_examples=300, deadline=None)
@given(
    qtys=st.lists(st.integers(-10**7, 10**7), min_size=1, max_size=20),
    mark=st.integers(1, 10**9),
    rate=st.integers(-10**11, 10**11),
    k=st.sampled_from([1, 10, 10**4, 10**6]),
)
def test_payments_balance_to_the_atom(qtys: list[int], mark: int, rate: int, k: int) -> None:
    positions = [*qtys, -sum(qtys)]  # net to zero
    r = funding_payments(positions, mark, rate, k)
    assert sum(r.payments) + r.remainder == 0
    assert r.remainder >= 0
    assert r.remainder < len(positions)  # less than one atom lost per position
    for q, pay in zip(positions, r.payments, strict=True):
        exact = Fraction(-q * mark * k * rate, RATE_DEN)  # the wallet change if atoms were divisible
        if exact < 0:
            assert -pay >= -exact  # a payer pays at least the exact amount
        else:
            assert pay <= exact  # a receiver gets at most the exact amount
        assert exact - 1 < pay <= exact  # and by less than one atom
