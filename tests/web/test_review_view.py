"""The review screen's view model: blast thresholds, target progress, relabel items."""
from __future__ import annotations

import pytest

from app.ml.card import CLASSES
from app.taxonomy.defaults import DEFAULT_CATEGORIES
from app.web.review import panel, parse_items


def _case(counts: dict[str, int]) -> dict:
    from app.cases.service import differential
    from app.differential.indices import percents

    full = {c.code: counts.get(c.code, 0) for c in DEFAULT_CATEGORIES}
    return {"id": 1, "status": "ready", "counts": full, "differential": differential(percents(full, DEFAULT_CATEGORIES))}


@pytest.mark.parametrize("blasts, level", [(4, 0), (5, 1), (19, 1), (20, 2), (60, 2)])
def test_blast_level_against_5_and_20_percent(blasts, level):
    p = panel(_case({"BLA": blasts, "LYT": 100 - blasts, "NIF": 30}), DEFAULT_CATEGORIES, 200)
    assert p["blast"] == blasts and p["blast_level"] == level  # NIF is not in the denominator
    assert p["counted"] == 100 and p["progress"] == 50.0
    assert [m["at"] for m in p["marks"]] == [5, 20] and p["blast_width"] <= 100.0


def test_target_progress_is_capped():
    assert panel(_case({"NGS": 600}), DEFAULT_CATEGORIES, 500)["progress"] == 100.0


def test_parse_items():
    codes = {c.code for c in CLASSES}
    assert parse_items("3:1:BLA,4:2:NIF", codes) == [(3, 1, "BLA"), (4, 2, "NIF")]
    for bad in ("", "3:1:XYZ", "3:BLA", "a:1:BLA"):
        with pytest.raises(ValueError):
            parse_items(bad, codes)
