"""Mark price: median(Price1, Price2, last) (mechanics.md Part 1 "Mark price", §1.2)."""

from fractions import Fraction

import pytest

from exchange.funding import RATE_DEN, rate_units
from exchange.instrument import btcusdt
from exchange.mark_price import MarkPriceModel, median3, price1

H8 = 8 * 3_600_000


def test_examples_json_binance_mark_price_median_derived() -> None:
    # examples.json id "binance_mark_price_median_derived"; source: derived from Binance FAQ 360033525071 /
    # COIN-M mark price page https://binance.com/ko/support/faq/fff6ec1b3f5845d19f1fb924644a0877
    # inputs: index 50000.0, last funding rate 0.0001, 14400 s to the next funding of a 28800 s interval,
    # MA(basis) 3.0, last price 50010.0 → price1 50002.5, price2 50003.0, mark 50003.0
    ins = btcusdt()  # tick 0.10
    index = ins.price_ticks("50000.0")  # 500000
    model = MarkPriceModel(funding_interval_ms=28_800_000)
    # a basis of 3.0 (30 ticks) in every sample of the window: bid 50002.9, ask 50003.1 → mid 50003.0
    for s in range(1, 31):
        model.sample_basis(s * 1000, index, ins.price_ticks("50002.9"), ins.price_ticks("50003.1"))
    now = 30_000
    c = model.components(now, index, ins.price_ticks("50010.0"), rate_units("0.0001"), now + 14_400_000)
    assert c.price1 == ins.price_ticks("50002.5")  # 500000 × (1 + 0.0001 × 14400/28800) = 500025 ticks
    assert c.price2 == ins.price_ticks("50003.0")  # 500000 + 30
    assert c.mark_ticks == ins.price_ticks("50003.0")
    assert ins.price_str(c.mark_ticks) == "50003.00"


def test_price1_exact() -> None:
    # 1000 × (1 + 0.0003 × 2h / 8h) = 1000 × 1.000075 = 1000.075 ticks, exact
    assert price1(1000, rate_units("0.0003"), 2 * 3_600_000, H8) == Fraction(1000075, 1000)
    # negative rate, full interval to go: 1000 × (1 − 0.01) = 990
    assert price1(1000, rate_units("-0.01"), H8, H8) == 990


def test_basis_window_30s() -> None:
    # one sample a second at ts = 1 s … 60 s, index 10000; basis 0 for ts ≤ 30 s (bid 9999, ask 10001),
    # basis +10 ticks for ts > 30 s (bid 10009, ask 10011)
    model = MarkPriceModel()
    index = 10_000
    for s in range(1, 61):
        if s <= 30:
            model.sample_basis(s * 1000, index, 9_999, 10_001)
        else:
            model.sample_basis(s * 1000, index, 10_009, 10_011)
    # at 60 s the window (30 s, 60 s] holds the samples 31 … 60: all +10 → MA 10
    assert model.basis_average(60_000) == 10
    assert model.price2(60_000, index) == 10_010
    # 30 samples exactly: the sample at 30 s is out of (30 s, 60 s], the one at 31 s in
    assert len([s for s in model.samples if 30_000 < s.ts <= 60_000]) == 30


def test_basis_window_sliding_average() -> None:
    # samples 1 … 45 s as above (0 up to 30 s, +10 after): at 45 s the window (15 s, 45 s]
    # = 15 samples of 0 and 15 of 10 → (15×0 + 15×10) / 30 = 5
    model = MarkPriceModel()
    for s in range(1, 46):
        bid, ask = (9_999, 10_001) if s <= 30 else (10_009, 10_011)
        model.sample_basis(s * 1000, 10_000, bid, ask)
    assert model.basis_average(45_000) == 5
    assert len(model.samples) == 30  # older samples were dropped


def test_configurable_window() -> None:
    # 60 s window: at 60 s all 60 samples count: (30×0 + 30×10) / 60 = 5
    model = MarkPriceModel(basis_window_ms=60_000)
    for s in range(1, 61):
        bid, ask = (9_999, 10_001) if s <= 30 else (10_009, 10_011)
        model.sample_basis(s * 1000, 10_000, bid, ask)
    assert model.basis_average(60_000) == 5


def test_half_tick_mid_is_exact() -> None:
    # bid 100, ask 101 → mid 100.5; index 100 → basis 0.5; with bid 100 ask 102 → basis 1; MA = 0.75
    model = MarkPriceModel()
    model.sample_basis(1000, 100, 100, 101)
    model.sample_basis(2000, 100, 100, 102)
    assert model.basis_average(2000) == Fraction(3, 4)


def test_missing_mid_samples_are_left_out() -> None:
    # samples: basis 4 (bid 1003, ask 1005), then two with an empty ask side, then basis 2 → MA (4 + 2) / 2 = 3
    model = MarkPriceModel()
    model.sample_basis(1000, 1000, 1003, 1005)
    model.sample_basis(2000, 1000, 1003, None)
    model.sample_basis(3000, 1000, None, None)
    model.sample_basis(4000, 1000, 1001, 1003)
    assert model.basis_average(4000) == 3


def test_no_mid_in_window_price2_is_index() -> None:
    model = MarkPriceModel()
    model.sample_basis(1000, 1000, None, 1010)
    assert model.basis_average(1000) is None
    assert model.price2(1000, 1000) == 1000
    # an old mid outside the window does not count: sample at 1 s, asked at 40 s
    model2 = MarkPriceModel()
    model2.sample_basis(1000, 1000, 1010, 1012)
    assert model2.basis_average(40_000) is None


def test_median_rule_takes_the_middle() -> None:
    # "If Price 1 < Price 2 < Contract Price, then take Price 2."
    assert median3(Fraction(1), Fraction(2), Fraction(3)) == 2
    assert median3(Fraction(3), Fraction(1), Fraction(2)) == 2
    # the last price as the middle one: Price1 1000 (rate 0), Price2 1020 (basis 20), last 1010 → 1010
    model = MarkPriceModel()
    model.sample_basis(1000, 1000, 1019, 1021)
    assert model.mark_at(1000, 1000, 1010, 0, H8) == 1010
    # Price1 as the middle one: rate 0.03 with the full interval to go → Price1 = 1030; Price2 1020, last 1100
    assert model.mark_at(1000, 1000, 1100, rate_units("0.03"), 1000 + H8) == 1030


def test_missing_last_price_uses_price2() -> None:
    # no trade yet (None, or 0 as Market.last_price holds): median(Price1, Price2, Price2) = Price2 = 1020
    model = MarkPriceModel()
    model.sample_basis(1000, 1000, 1019, 1021)
    assert model.mark_at(1000, 1000, None, rate_units("0.0001"), H8) == 1020
    assert model.mark_at(1000, 1000, 0, rate_units("0.0001"), H8) == 1020


def test_mark_rounds_half_even_to_ticks() -> None:
    # basis samples 1 and 0 → MA 0.5 → Price2 = 1000.5; Price1 = 1000 (rate 0); last 1001 → median 1000.5 → 1000
    model = MarkPriceModel()
    model.sample_basis(1000, 1000, 1000, 1002)  # mid 1001, basis 1
    model.sample_basis(2000, 1000, 999, 1001)  # mid 1000, basis 0
    c = model.components(2000, 1000, 1001, 0, H8)
    assert c.exact == Fraction(2001, 2)
    assert c.mark_ticks == 1000
    # index 1001, same basis → Price2 = 1001.5, Price1 = 1001, last 1002 → 1001.5 → 1002
    model = MarkPriceModel()
    model.sample_basis(1000, 1001, 1001, 1003)
    model.sample_basis(2000, 1001, 1000, 1002)
    assert model.mark_at(2000, 1001, 1002, 0, H8) == 1002


def test_rate_units_over_rate_den() -> None:
    assert rate_units("0.0001") * 10_000 == RATE_DEN


def test_samples_must_be_in_time_order() -> None:
    model = MarkPriceModel()
    model.sample_basis(2000, 1000, 999, 1001)
    with pytest.raises(ValueError):
        model.sample_basis(1000, 1000, 999, 1001)
    # the same ts again replaces the sample
    model.sample_basis(2000, 1000, 1003, 1005)
    assert model.basis_average(2000) == 4
