"""Interval and index arithmetic against values worked by hand (no database)."""
from __future__ import annotations

import pytest

from app.differential.indices import INDICES, blast_level, compute, interval, percents, summary_indices, index_value
from app.taxonomy.defaults import DEFAULT_CATEGORIES, Category, validate


def test_exact_interval_closed_forms():
    # k = 0: the upper bound solves (1 - p)^n = 0.025, so p = 1 - 0.025^(1/n)
    lo, hi = interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100), abs=1e-9)  # 0.036217...
    assert hi == pytest.approx(0.036217, abs=1e-6)
    # k = n: the lower bound solves p^n = 0.025
    lo, hi = interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 50), abs=1e-9)  # 0.928898...
    # n = 1, k = 1: [0.025, 1]
    assert interval(1, 1) == pytest.approx((0.025, 1.0))
    assert interval(0, 0) is None


def test_exact_interval_against_ruemke_table():
    # Rümke (1979) for 5 % of 200 cells: 2.4-9.0 %; for 50 % of 100: 39.8-60.2 %
    lo, hi = interval(10, 200)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (2.4, 9.0)
    lo, hi = interval(50, 100)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (39.8, 60.2)


def test_percents_leave_out_unidentified_and_not_counted():
    counts = {"UNK": 7, "BLA": 3, "NGS": 12, "EBO": 5, "NIF": 9, "PLT": 4, "ART": 2}
    p = percents(counts, DEFAULT_CATEGORIES)
    assert set(p) == {c.code for c in DEFAULT_CATEGORIES if c.counted}
    assert p["BLA"]["percent"] == pytest.approx(100 * 3 / 20)  # 3 of BLA+NGS+EBO = 20
    assert p["PLM"]["percent"] == 0.0 and p["PLM"]["ci_low"] == 0.0
    assert p["PLM"]["ci_high"] == pytest.approx(100 * (1 - 0.025 ** (1 / 20)))


def test_indices_by_hand():
    # myeloid = BLA 6 + PMO 4 + MYB 10 + MMZ 8 + NGB 12 + NGS 30 + EOS 5 + BAS 1 = 76; MON 4 (not myeloid)
    counts = {"BLA": 6, "PMO": 4, "MYB": 10, "MMZ": 8, "NGB": 12, "NGS": 30, "EOS": 5, "BAS": 1, "MON": 4,
              "LYT": 10, "PLM": 2, "EBO": 38, "NIF": 5, "UNK": 1}
    ix = {i["code"]: i for i in compute(counts, DEFAULT_CATEGORIES)}
    n = 76 + 4 + 10 + 2 + 38  # 130 counted
    assert ix["me_ratio"]["value"] == pytest.approx(76 / 38) == pytest.approx(2.0)
    assert (ix["me_ratio"]["numerator"], ix["me_ratio"]["denominator"]) == (76, 38)
    assert ix["blast_percent"]["value"] == pytest.approx(100 * 6 / n)
    assert ix["myeloid_percent"]["value"] == pytest.approx(100 * 76 / n)
    assert ix["erythroid_percent"]["value"] == pytest.approx(100 * 38 / n)
    assert ix["lymphocyte_percent"]["value"] == pytest.approx(100 * 10 / n)
    assert ix["plasma_cell_percent"]["value"] == pytest.approx(100 * 2 / n)
    # the ratio's interval: the exact interval of p = M / (M + E) = 76/114, mapped by p / (1 - p)
    lo, hi = interval(76, 114)
    assert ix["me_ratio"]["ci_low"] == pytest.approx(lo / (1 - lo))
    assert ix["me_ratio"]["ci_high"] == pytest.approx(hi / (1 - hi))
    assert "BLA+PMO+MYB+MMZ+NGB+NGS+EOS+BAS" in ix["me_ratio"]["definition"]
    assert "MON" not in ix["me_ratio"]["definition"] and "(EBO)" in ix["me_ratio"]["definition"]
    flat = summary_indices(counts, DEFAULT_CATEGORIES)
    assert (flat["counted_total"], flat["unidentified"], flat["target_reached"]) == (130, 1, None)


def test_undefined_ratio_and_blast_marks():
    ix = {i["code"]: i for i in compute({"NGS": 5}, DEFAULT_CATEGORIES)}
    assert ix["me_ratio"]["value"] is None and ix["me_ratio"]["ci_high"] is None  # no erythroid cells
    assert [blast_level(v) for v in (None, 4.99, 5.0, 19.9, 20.0)] == [None, 0, 1, 1, 2]
    assert summary_indices({"NGS": 300}, DEFAULT_CATEGORIES)["target_reached"] == 300


def test_validation_names_each_problem():
    cats = list(DEFAULT_CATEGORIES) + [Category("UNK", "x", "q", True, ""), Category("bad", "", "B", True, "x")]
    errors = " | ".join(validate(cats))
    assert "UNK is reserved" in errors and "code 'bad'" in errors and "key 'B'" in errors
    assert "lineage 'x'" in errors and "name must be" in errors
    assert validate(list(DEFAULT_CATEGORIES)) == []


def test_exact_interval_is_scipys_clopper_pearson():
    from scipy.stats import binomtest

    for n in (1, 2, 7, 100, 200, 500, 1000, 5000):
        for k in sorted({0, 1, 2, n // 20, n // 5, n // 2, n - 1, n} & set(range(n + 1))):
            ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
            assert interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9), (k, n)


@pytest.mark.parametrize("counts", [{"BLA": 3, "NGS": 9, "EBO": 4, "UNK": 2, "NIF": 5}, {"EBO": 4}, {"NIF": 3}, {}])
def test_an_index_alone_is_the_value_of_the_full_computation(counts):
    """`index_value` (the model-agreement report's blast percent, no interval) is `compute`'s value."""
    assert {ix.code: index_value(ix, counts, DEFAULT_CATEGORIES) for ix in INDICES} == {
        ix["code"]: ix["value"] for ix in compute(counts, DEFAULT_CATEGORIES)}
