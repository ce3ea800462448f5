"""CSV exports: a case's differential, its cells, and all cases (csv module, UTF-8)."""
from __future__ import annotations

import csv
import io
from collections import Counter

from sqlalchemy.orm import Session

from app.cases.service import summaries, summary
from app.cells.models import LabelSource
from app.cells.service import rows
from app.differential.indices import compute, percents
from app.taxonomy.defaults import UNK, UNK_NAME
from app.taxonomy.service import lab_categories, of_case

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe(value) -> str:
    """Text a spreadsheet will not run as a formula (file names come from users)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv(header_lines: list[str], columns: list[str], data: list[list]) -> str:
    """Comment lines, then the table. A line break inside a comment (from an accession or a
    query parameter) would start a data row: each becomes a space."""
    buf = io.StringIO()
    for line in header_lines:
        buf.write("# " + " ".join(line.splitlines()) + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(data)
    return buf.getvalue()


def differential_csv(session: Session, case_id: int) -> str:
    """One row per category of the case's list (UNK first), with the exact binomial 95 %
    interval of each percent, then one row per index (app.differential.indices)."""
    case = summary(session, case_id)
    categories = of_case(case["categories"])
    model_counts = Counter(UNK if row.unidentified else row.predicted
                           for row in rows(session, case_id) if row.predicted)
    shares = percents(case["counts"], categories)
    excluded = ", ".join(f"{c.code} ({c.name})" for c in categories if not c.counted)
    rule = (f"percent = reviewed count / all reviewed cells of counted categories; {UNK} (unidentified) "
            f"and {excluded or 'no category'} listed but left out of the denominator; ci_low/ci_high = "
            f"exact (Clopper-Pearson) binomial 95 % interval, in percent")
    data = [[UNK, UNK_NAME, model_counts.get(UNK, 0), case["counts"].get(UNK, 0), "", "", "", ""]]
    for c in categories:
        share = shares.get(c.code)
        data.append([c.code, c.name, model_counts.get(c.code, 0), case["counts"].get(c.code, 0),
                     _num(share and share["percent"]), _num(share and share["ci_low"]),
                     _num(share and share["ci_high"]), ""])
    for ix in compute(case["counts"], categories):
        percent_kind = ix["kind"] == "percent"
        data.append([ix["code"], ix["definition"], "", "", _num(ix["value"]) if percent_kind else "",
                     _num(ix["ci_low"], 2 if percent_kind else 3), _num(ix["ci_high"], 2 if percent_kind else 3),
                     "" if percent_kind else _num(ix["value"], 3)])
    header = [rule, f"case {case['id']} accession {_safe(case['accession'])} status {case['status']}"]
    return _csv(header, ["class_code", "class_name", "model_count", "reviewed_count", "percent", "ci_low",
                         "ci_high", "ratio"], data)


def _num(value, places: int = 2) -> str:
    return "" if value is None or value is False else f"{value:.{places}f}"


def cells_csv(session: Session, case_id: int) -> str:
    data = [[_safe(row.filename), row.predicted or "",
             f"{row.probability:.4f}" if row.predicted else "", row.label or "",
             row.labelled_by if row.label_source == LabelSource.REVIEWER else (row.label_source or ""),
             row.label_at.isoformat() if row.label_at else ""]
            for row in rows(session, case_id)]
    return _csv([], ["file", "model_class", "probability", "final_class", "changed_by", "when"], data)


def cases_csv(session: Session) -> str:
    """One column per code: UNK, the lab's current list, then codes only older cases' lists have."""
    cases = summaries(session)
    codes = [UNK, *(c.code for c in lab_categories(session))]
    codes += sorted({code for c in cases for code in c["counts"]} - set(codes))
    data = [[c["id"], _safe(c["accession"]), _safe(c["specimen"]), c["status"], c["cells_total"],
             c["signed_by"] or "", c["signed_at"].isoformat() if c["signed_at"] else "",
             *(c["counts"].get(code, 0) for code in codes)]
            for c in cases]
    columns = ["case_id", "accession", "specimen", "status", "cells", "signed_by", "signed_at", *codes]
    return _csv([], columns, data)


def agreement_csv(report: dict) -> str:
    """`/api/model-agreement`'s categories, one row each (PPV and sensitivity as fractions)."""
    def share(s: dict) -> list[str]:
        return [_num(s["value"], 4), _num(s["ci_low"], 4), _num(s["ci_high"], 4)]
    period = f"cases signed {report['since'] or 'from the first'} to {report['until'] or 'today'} ({report['time_zone']})"
    agreement = report["agreement"]["value"]
    header = [period + (f", model {_safe(report['model'])}" if report["model"] else ""),
              f"{report['signed_cases']} cases, {report['cells']} cells; agreement "
              f"{_num(agreement, 4) or 'n/a'} of {report['named']} named; {report['unidentified']} unidentified",
              "ppv = confirmed / model_called; sensitivity = confirmed / signed_as (cells the model sent to UNK "
              "are misses); ci = exact binomial 95 %"]
    data = [[c["code"], _safe(c["name"]), c["model_called"], c["confirmed"], c["signed_as"],
             *share(c["ppv"]), *share(c["sensitivity"])] for c in report["categories"]]
    return _csv(header, ["class_code", "class_name", "model_called", "confirmed", "signed_as", "ppv", "ppv_ci_low",
                         "ppv_ci_high", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high"], data)
