"""How the model does in this lab: its first pass against the labels pathologists signed.

Every signed case is a labelled sample of the lab's own cells, scanner and stain. Over the
cases signed in a period, each cell's model call (its latest prediction's class, or UNK when
the product would not name it) is compared with the label the case was signed with:

- agreement: of the cells the model named, the share signed with that class;
- per category: PPV (of the cells the model called X, the share signed as X) and sensitivity
  (of the cells signed as X, the share the model had called X; cells it sent to UNK are misses);
- the UNK share, and what reviewers made of those cells;
- per case, the blast percent of the model's count alone against the signed one, and the cases
  where the two fall on different sides of the 5 % or 20 % mark;
- the same by month, to see a drift (a new scanner, stain batch or model version).

Intervals are the exact binomial ones the differential uses. Withdrawn and unreadable cells
(no prediction) are left out; unreadable ones are counted.
"""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.cells.models import IN_CASE, Cell, CellStatus, Prediction
from app.cells.service import latest_predictions
from app.errors import DomainError
from app.differential.indices import BLAST_MARKS, BLAST_PERCENT, blast_level, index_value
from app.ml.intervals import interval
from app.taxonomy.defaults import UNK, Category
from app.taxonomy.service import lab_categories, of_case


EDGE = (date.min + timedelta(days=1), date.max - timedelta(days=1))


class InvalidPeriod(DomainError):
    status_code = 422


@dataclass(frozen=True)
class Period:
    """Cases signed from `since` through `until` (dates in the lab's time zone; None: open)."""

    since: date | None = None
    until: date | None = None
    model: str | None = None  # only cells whose latest prediction is this model version

    def __post_init__(self) -> None:
        if self.since and self.until and self.until < self.since:
            raise InvalidPeriod(f"until ({self.until}) is before since ({self.since})")

    def bounds(self, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
        """[start, end) as aware datetimes; None where open (a day at the calendar's ends, whose
        midnight in the lab's zone has no UTC time, is open too)."""
        start = datetime.combine(self.since, time(), tz) if self.since and self.since > EDGE[0] else None
        end = datetime.combine(self.until + timedelta(days=1), time(), tz) \
            if self.until and self.until < EDGE[1] else None
        return start, end


def _share(k: int, n: int) -> dict:
    ci = interval(k, n)
    return {"value": round(k / n, 4) if n else None,
            "ci_low": round(ci[0], 4) if ci else None, "ci_high": round(ci[1], 4) if ci else None}


def signed_in(period: Period, tz: ZoneInfo) -> Select:
    """The ids of the cases signed in the period, as a subquery (years of cases are never a
    parameter list)."""
    start, end = period.bounds(tz)
    query = select(Case.id).where(Case.signed_at.is_not(None))
    if start:
        query = query.where(Case.signed_at >= start)
    if end:
        query = query.where(Case.signed_at < end)
    return query


def signed_cases(session: Session, ids: Select) -> dict[int, Row]:
    """id -> (id, accession, signed_at, categories) of each case `ids` selects."""
    query = select(Case.id, Case.accession, Case.signed_at, Case.categories).where(Case.id.in_(ids))
    return {row.id: row for row in session.execute(query)}


def _tallies(session: Session, ids: Select, model: str | None) -> list:
    """(case_id, model call, signed label, model version, cells), grouped by the database."""
    latest = latest_predictions(ids)
    named = Prediction.unidentified.is_(None)
    query = (select(Cell.case_id, Prediction.predicted, named.label("named"), Cell.label,
                    Prediction.model_version, func.count().label("cells"))
             .select_from(Cell).join(latest, latest.c.cell_id == Cell.id)
             .join(Prediction, Prediction.id == latest.c.id)
             .where(Cell.case_id.in_(ids), IN_CASE, Cell.status == CellStatus.DONE)
             .group_by(Cell.case_id, Prediction.predicted, named, Cell.label, Prediction.model_version))
    if model:
        query = query.where(Prediction.model_version == model)
    return session.execute(query).all()


def _unreadable(session: Session, ids: Select) -> int:
    return session.scalar(select(func.count()).select_from(Cell).where(
        Cell.case_id.in_(ids), IN_CASE, Cell.status == CellStatus.FAILED)) or 0


def _categories(confusion: Counter, lab: tuple[Category, ...]) -> list[dict]:
    """Per code, in the lab's order then any other code seen: PPV and sensitivity."""
    called, signed, confirmed = Counter(), Counter(), Counter()
    for (call, final), n in confusion.items():
        called[call] += n
        signed[final] += n
        if call == final:
            confirmed[call] += n
    names = {c.code: c.name for c in lab}
    seen = set(called) | set(signed)
    codes = [c.code for c in lab if c.code in seen] + sorted(seen - set(names) - {UNK})
    return [{"code": code, "name": names.get(code, code), "model_called": called[code],
             "confirmed": confirmed[code], "signed_as": signed[code],
             "ppv": _share(confirmed[code], called[code]), "sensitivity": _share(confirmed[code], signed[code])}
            for code in codes]


def _summary(confusion: Counter) -> dict:
    cells = sum(confusion.values())
    unidentified = sum(n for (call, _), n in confusion.items() if call == UNK)
    named = cells - unidentified
    agreed = sum(n for (call, final), n in confusion.items() if call == final and call != UNK)
    return {"cells": cells, "named": named, "agreed": agreed, "agreement": _share(agreed, named),
            "unidentified": unidentified, "unidentified_share": _share(unidentified, cells)}


def model_agreement(session: Session, period: Period, tz: ZoneInfo) -> dict:
    """The report described in the module docstring, as the API answers it."""
    ids = signed_in(period, tz)
    cases = signed_cases(session, ids)
    month = {cid: (c.signed_at if c.signed_at.tzinfo else c.signed_at.replace(tzinfo=UTC)).astimezone(tz)
             .strftime("%Y-%m") for cid, c in cases.items()}
    confusion: Counter = Counter()
    by_case: dict[int, tuple[Counter, Counter]] = defaultdict(lambda: (Counter(), Counter()))
    by_month: dict[str, Counter] = defaultdict(Counter)
    versions: Counter = Counter()
    for row in _tallies(session, ids, period.model) if cases else []:
        call, final = (row.predicted if row.named else UNK), (row.label or UNK)
        confusion[call, final] += row.cells
        by_month[month[row.case_id]][call, final] += row.cells
        model_counts, signed_counts = by_case[row.case_id]
        model_counts[call] += row.cells
        signed_counts[final] += row.cells
        versions[row.model_version] += row.cells

    crossed, differences = [], []
    for case_id, (model_counts, signed_counts) in sorted(by_case.items()):
        categories = of_case(cases[case_id].categories)
        model_blasts = index_value(BLAST_PERCENT, model_counts, categories)
        signed_blasts = index_value(BLAST_PERCENT, signed_counts, categories)
        if model_blasts is None or signed_blasts is None:
            continue
        differences.append(abs(model_blasts - signed_blasts))
        if blast_level(model_blasts) != blast_level(signed_blasts):
            crossed.append({"case_id": case_id, "accession": cases[case_id].accession,
                            "model_blast_percent": round(model_blasts, 2),
                            "signed_blast_percent": round(signed_blasts, 2)})
    months_cases = Counter(month[cid] for cid in by_case)
    return {
        "since": period.since.isoformat() if period.since else None,
        "until": period.until.isoformat() if period.until else None,
        "time_zone": str(tz), "model": period.model,
        "signed_cases": len(by_case), "unreadable": _unreadable(session, ids),
        **_summary(confusion),
        "model_versions": dict(versions.most_common()),
        "categories": _categories(confusion, lab_categories(session)),
        "unidentified_signed_as": dict(Counter({final: n for (call, final), n in confusion.items()
                                                if call == UNK}).most_common()),
        "confusion": [{"model": call, "signed": final, "cells": n}
                      for (call, final), n in sorted(confusion.items())],
        "blast_percent_difference": {
            "median_points": round(statistics.median(differences), 2) if differences else None,
            "max_points": round(max(differences), 2) if differences else None,
            "marks": list(BLAST_MARKS), "cases_across_a_mark": crossed},
        "by_month": [{"month": m, "signed_cases": months_cases[m], **_summary(c)}
                     for m, c in sorted(by_month.items())],
    }
