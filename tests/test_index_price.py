"""Index price: weighted average with the 5% outlier rule (mechanics.md Part 1 "Index price", §1.1).

Prices are ticks; the cases are worked by hand in the comments.
"""

import ast
import importlib
from fractions import Fraction
from pathlib import Path

import pytest

from exchange.index_price import IndexMethod, IndexSource, index_price, index_price_detail, median


def src(venue: str, price: int | None, weight: int = 1) -> IndexSource:
    return IndexSource(venue, weight, price)


def test_no_outlier_is_the_weighted_average() -> None:
    # weights 2, 1, 1: (2×1000 + 1×1010 + 1×990) / 4 = 4000 / 4 = 1000
    assert index_price([src("a", 1000, 2), src("b", 1010), src("c", 990)]) == 1000


def test_one_outlier_gets_weight_zero_and_weights_renormalise() -> None:
    # present 1000, 1010, 990, 1200 → sorted 990, 1000, 1010, 1200; even count: median = (1000 + 1010) / 2 = 1005
    # 5% of 1005 = 50.25; |1200 − 1005| = 195 > 50.25 → d is off; the others are within 15
    # one outlier: weighted average of the rest, weights renormalised: (1000 + 1010 + 990) / 3 = 1000
    sources = [src("a", 1000), src("b", 1010), src("c", 990), src("d", 1200)]
    r = index_price_detail(sources)
    assert r is not None
    assert r.method is IndexMethod.WEIGHTED
    assert r.excluded == ("d",)
    assert r.exact == 1000
    assert r.price_ticks == 1000


def test_one_outlier_with_unequal_weights() -> None:
    # median of 1000, 1004, 1100 = 1004; 5% = 50.2; |1100 − 1004| = 96 → off
    # rest: (3×1000 + 1×1004) / (3 + 1) = 4004 / 4 = 1001
    assert index_price([src("a", 1000, 3), src("b", 1004, 1), src("c", 1100, 5)]) == 1001


def test_two_outliers_use_the_median() -> None:
    # present 1000, 1010, 1200, 800, 1005 → sorted 800, 1000, 1005, 1010, 1200; median 1005, 5% = 50.25
    # |1200 − 1005| = 195 and |800 − 1005| = 205: two sources off → the index is the median, 1005
    sources = [src("a", 1000), src("b", 1010), src("c", 1200), src("d", 800), src("e", 1005)]
    r = index_price_detail(sources)
    assert r is not None
    assert r.method is IndexMethod.MEDIAN
    assert set(r.excluded) == {"c", "d"}
    assert r.price_ticks == 1005


def test_two_outliers_even_count_median_is_mean_of_middle_two_rounded_half_even() -> None:
    # present 1000, 1001, 1300, 700 → sorted 700, 1000, 1001, 1300; median (1000 + 1001) / 2 = 1000.5
    # 5% of 1000.5 = 50.025: 1300 and 700 are off → median 1000.5 → half-even → 1000
    r = index_price_detail([src("a", 1000), src("b", 1001), src("c", 1300), src("d", 700)])
    assert r is not None and r.method is IndexMethod.MEDIAN
    assert r.exact == Fraction(2001, 2)
    assert r.price_ticks == 1000
    # with 1001, 1002 in the middle: 1001.5 → 1002 (the even neighbour)
    assert index_price([src("a", 1001), src("b", 1002), src("c", 1300), src("d", 700)]) == 1002


def test_two_sources_far_apart_are_both_off() -> None:
    # median (1000 + 1200) / 2 = 1100, 5% = 55; both are 100 away → two off → median 1100
    assert index_price([src("a", 1000, 9), src("b", 1200, 1)]) == 1100


def test_missing_source_is_dropped_and_weights_renormalised() -> None:
    # a is unreachable; present b 1000 (w 2), c 1030 (w 1); median (1000 + 1030) / 2 = 1015, 5% = 50.75
    # both within → (2×1000 + 1×1030) / (2 + 1) = 3030 / 3 = 1010
    r = index_price_detail([src("a", None, 5), src("b", 1000, 2), src("c", 1030, 1)])
    assert r is not None
    assert r.dropped == ("a",)
    assert r.excluded == ()
    assert r.price_ticks == 1010


def test_missing_sources_do_not_count_in_the_median() -> None:
    # present 1000, 1040, 1200 (two missing): median 1040, 5% = 52 → 1200 off (160), 1000 within (40)
    # one outlier → (1000 + 1040) / 2 = 1020
    sources = [src("a", None), src("b", 1000), src("c", None), src("d", 1040), src("e", 1200)]
    assert index_price(sources) == 1020


def test_all_sources_missing_gives_none() -> None:
    assert index_price([src("a", None), src("b", None)]) is None
    assert index_price([]) is None


def test_exactly_five_percent_is_not_off() -> None:
    # median of 950, 1000, 1050 = 1000; |1050 − 1000| = 50 = 5% exactly, not more → kept
    # (950 + 1000 + 1050) / 3 = 1000
    r = index_price_detail([src("a", 950), src("b", 1000), src("c", 1050)])
    assert r is not None and r.excluded == () and r.method is IndexMethod.WEIGHTED
    # one tick further: |1051 − 1000| = 51 > 50 → off; (950 + 1000) / 2 = 975
    assert index_price([src("a", 950), src("b", 1000), src("c", 1051)]) == 975


def test_weighted_average_rounds_half_even() -> None:
    # (1000 + 1001) / 2 = 1000.5 → 1000; (1001 + 1002) / 2 = 1001.5 → 1002; (1000 + 1000 + 1001) / 3 = 1000.33 → 1000
    assert index_price([src("a", 1000), src("b", 1001)]) == 1000
    assert index_price([src("a", 1001), src("b", 1002)]) == 1002
    assert index_price([src("a", 1000, 2), src("b", 1001)]) == 1000
    # (1000 + 2×1001) / 3 = 1000.67 → 1001
    assert index_price([src("a", 1000), src("b", 1001, 2)]) == 1001


def test_only_zero_weights_left_uses_the_median() -> None:
    # median 1000 and 1002 → 1001; neither off, but their weights are 0 → no weight to average: median 1001
    r = index_price_detail([src("a", 1000, 0), src("b", 1002, 0)])
    assert r is not None and r.method is IndexMethod.MEDIAN and r.price_ticks == 1001


def test_configurable_deviation() -> None:
    # 1% band: median of 1000, 1005, 1020 = 1005; |1020 − 1005| = 15 > 10.05 → off → (1000 + 1005) / 2 = 1002.5 → 1002
    assert index_price([src("a", 1000), src("b", 1005), src("c", 1020)], max_deviation_ppm=10_000) == 1002


def test_median_definition() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == Fraction(5, 2)
    with pytest.raises(ValueError):
        median([])


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        index_price([src("a", 1000, -1)])
    with pytest.raises(ValueError):
        index_price([src("a", 0)])


@pytest.mark.parametrize("module", ["index_price", "price_paths", "mark_price", "funding"])
def test_no_floats_in_market_data_modules(module: str) -> None:
    # the deterministic core keeps exact integers: no float literal, no float() call, no math module
    mod = importlib.import_module(f"exchange.{module}")
    tree = ast.parse(Path(mod.__file__ or "").read_text())
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), ast.dump(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "float"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert "math" not in names
    assert isinstance(index_price([src("a", 1000), src("b", 1001)]), int)
