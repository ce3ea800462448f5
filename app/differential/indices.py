"""The differential's arithmetic, defined once (README, PDF, CSV and FHIR all read it here).

- percent of a category = its cells / counted cells (cells of categories marked counted;
  UNK and the not-counted categories NIF, PLT, ART are in no denominator);
- 95 % interval of a percent: exact (Clopper-Pearson) binomial interval of k of n, what Rümke's
  table tabulates for differential counts (`app.ml.intervals`);
- an index over lineages: the lineage sums of the case's list (an administrator sets a
  category's lineage), see INDICES.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import isfinite

from app.ml.intervals import interval
from app.taxonomy.defaults import UNK, Category

BLAST_CODE = "BLA"
BLAST_MARKS = (5, 20)  # percent: the marks a blast count is read against (5 % normal limit, 20 % AML)
TARGETS = (200, 300, 500)  # cells: ICSH asks for 300-500; 200 is the common minimum


@dataclass(frozen=True)
class Index:
    code: str
    name: str
    kind: str  # "percent" (numerator of the counted cells) | "ratio" (numerator / denominator)
    numerator: tuple[str, ...]  # lineages, or ("code:BLA",) for one category
    denominator: tuple[str, ...] = ()  # for a ratio: lineages
    unit: str = "%"

    def definition(self, categories: tuple[Category, ...]) -> str:
        num = "+".join(_members(self.numerator, categories)) or "(none)"
        if self.kind == "percent":
            return f"{self.name} = 100 x ({num}) / counted cells"
        den = "+".join(_members(self.denominator, categories)) or "(none)"
        return f"{self.name} = ({num}) / ({den})"


BLAST_PERCENT = Index("blast_percent", "Blast percent", "percent", ("code:" + BLAST_CODE,))
INDICES: tuple[Index, ...] = (
    BLAST_PERCENT,
    # ICSH 2008: the M:E ratio is granulocytes and their precursors (blasts included) to
    # erythroid precursors; monocytes are their own lineage and not in it (README).
    Index("me_ratio", "M:E ratio", "ratio", ("myeloid",), ("erythroid",), unit="{ratio}"),
    Index("myeloid_percent", "Myeloid (granulocytic) series", "percent", ("myeloid",)),
    Index("erythroid_percent", "Erythroid series", "percent", ("erythroid",)),
    Index("lymphocyte_percent", "Lymphocytes", "percent", ("lymphoid",)),
    Index("plasma_cell_percent", "Plasma cells", "percent", ("plasma",)),
)


def _members(parts: tuple[str, ...], categories: tuple[Category, ...]) -> list[str]:
    codes = []
    for part in parts:
        if part.startswith("code:"):
            codes += [c.code for c in categories if c.code == part[5:] and c.counted]
        else:
            codes += [c.code for c in categories if c.lineage == part and c.counted]
    return codes


def counted_total(counts: dict[str, int], categories: tuple[Category, ...]) -> int:
    return sum(counts.get(c.code, 0) for c in categories if c.counted)


def percents(counts: dict[str, int], categories: tuple[Category, ...]) -> dict[str, dict]:
    """Per counted category: {"count", "percent", "ci_low", "ci_high"} (percent units; None
    when nothing is counted yet)."""
    n = counted_total(counts, categories)
    out = {}
    for c in categories:
        if not c.counted:
            continue
        k = counts.get(c.code, 0)
        ci = interval(k, n)
        out[c.code] = {"count": k, "percent": 100.0 * k / n if n else None,
                       "ci_low": 100.0 * ci[0] if ci else None, "ci_high": 100.0 * ci[1] if ci else None}
    return out


def _parts(ix: Index, counts: dict[str, int], categories: tuple[Category, ...], counted: int) -> tuple[int, int]:
    """An index's numerator and denominator (for a percent, the counted cells)."""
    num = sum(counts.get(code, 0) for code in _members(ix.numerator, categories))
    if ix.kind == "percent":
        return num, counted
    return num, sum(counts.get(code, 0) for code in _members(ix.denominator, categories))


def index_value(ix: Index, counts: dict[str, int], categories: tuple[Category, ...]) -> float | None:
    """An index's value without its interval (a percent in percent units; None where undefined)."""
    num, den = _parts(ix, counts, categories, counted_total(counts, categories))
    return None if not den else 100.0 * num / den if ix.kind == "percent" else num / den


def compute(counts: dict[str, int], categories: tuple[Category, ...]) -> list[dict]:
    """Every index: {"code", "name", "kind", "unit", "value", "ci_low", "ci_high", "numerator",
    "denominator", "definition"}. A ratio's interval is the exact interval of p = M/(M+E)
    mapped through p/(1-p) (conditional on M+E); None where it is undefined."""
    n = counted_total(counts, categories)
    out = []
    for ix in INDICES:
        num, den = _parts(ix, counts, categories, n)
        if ix.kind == "percent":
            ci = interval(num, den)
            value = 100.0 * num / den if den else None
            low, high = (100.0 * ci[0], 100.0 * ci[1]) if ci else (None, None)
        else:
            value = num / den if den else None
            ci = interval(num, num + den)
            low, high = (_odds(ci[0]), _odds(ci[1])) if ci else (None, None)
        out.append({"code": ix.code, "name": ix.name, "kind": ix.kind, "unit": ix.unit, "value": value,
                    "ci_low": low, "ci_high": high, "numerator": num, "denominator": den,
                    "definition": ix.definition(categories)})
    return out


def _odds(p: float) -> float | None:
    if p >= 1.0:
        return None  # unbounded above
    r = p / (1.0 - p)
    return r if isfinite(r) else None


def blast_level(blast_percent: float | None) -> int | None:
    """0 below 5 %, 1 from 5 %, 2 from 20 % (None before any cell is counted)."""
    return None if blast_percent is None else sum(blast_percent >= m for m in BLAST_MARKS)


def summary_indices(counts: dict[str, int], categories: tuple[Category, ...]) -> dict:
    """The case API's `indices`: flat values (blast_percent, me_ratio, counted_total, ...)."""
    flat: dict = {ix["code"]: ix["value"] for ix in compute(counts, categories)}
    n = counted_total(counts, categories)
    flat["counted_total"] = n
    flat["unidentified"] = counts.get(UNK, 0)
    flat["blast_level"] = blast_level(flat["blast_percent"])
    flat["target_reached"] = max((t for t in TARGETS if n >= t), default=None)
    return flat
