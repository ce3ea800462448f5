"""CSV exports: a case's differential, its cells, and all cases (csv module, UTF-8)."""
from __future__ import annotations

import csv
import io
from collections import Counter

from sqlalchemy.orm import Session

from app.cases.service import differential, summaries, summary
from app.cells.service import rows
from app.ml.card import CellClass

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe(value) -> str:
    """Text a spreadsheet will not run as a formula (file names come from users)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv(header_lines: list[str], columns: list[str], data: list[list]) -> str:
    buf = io.StringIO()
    for line in header_lines:
        buf.write(f"# {line}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(data)
    return buf.getvalue()


def differential_csv(session: Session, classes: tuple[CellClass, ...], case_id: int) -> str:
    case = summary(session, classes, case_id)
    model_counts = Counter(row.predicted for row in rows(session, case_id) if row.predicted)
    percent = differential(case["counts"], classes)
    excluded = ", ".join(f"{c.code} ({c.name})" for c in classes if not c.counted)
    rule = (f"percent = reviewed count / all reviewed cells of counted classes; "
            f"{excluded or 'no class'} listed but left out of the denominator")
    data = [[c.code, c.name, model_counts.get(c.code, 0), case["counts"].get(c.code, 0),
             f"{percent[c.code]:.2f}" if c.counted else ""] for c in classes]
    header = [rule, f"case {case['id']} accession {_safe(case['accession'])} status {case['status']}"]
    return _csv(header, ["class_code", "class_name", "model_count", "reviewed_count", "percent"], data)


def cells_csv(session: Session, case_id: int) -> str:
    data = [[_safe(row.filename), row.predicted or "",
             f"{row.probability:.4f}" if row.predicted else "", row.label or "",
             row.labelled_by if row.label_source == "reviewer" else (row.label_source or ""),
             row.label_at.isoformat() if row.label_at else ""]
            for row in rows(session, case_id)]
    return _csv([], ["file", "model_class", "probability", "final_class", "changed_by", "when"], data)


def cases_csv(session: Session, classes: tuple[CellClass, ...]) -> str:
    data = [[c["id"], _safe(c["accession"]), _safe(c["specimen"]), c["status"], c["cells_total"],
             c["signed_by"] or "", c["signed_at"].isoformat() if c["signed_at"] else "",
             *(c["counts"][k.code] for k in classes)]
            for c in summaries(session, classes)]
    columns = ["case_id", "accession", "specimen", "status", "cells", "signed_by", "signed_at",
               *(k.code for k in classes)]
    return _csv([], columns, data)
