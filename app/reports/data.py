"""Everything a report states about a case, gathered once (the PDF and FHIR builders only lay it out)."""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditAction
from app.audit.service import history
from app.cases.service import summary
from app.cells.models import Cell, CellStatus
from app.cells.service import rows
from app.differential.indices import BLAST_CODE, BLAST_MARKS, TARGETS, compute, percents
from app.localtime import lab_time
from app.taxonomy.defaults import UNK
from app.taxonomy.service import of_case

BLAST_STRIP = 12  # blast images on the PDF


def report_data(session: Session, case_id: int, zone: ZoneInfo) -> dict:
    """`zone`: the lab's, for the times the report writes out (the PDF; FHIR keeps UTC)."""
    case = summary(session, case_id)
    categories = of_case(case["categories"])
    cell_rows = rows(session, case_id)
    shares = percents(case["counts"], categories)
    table = [{"code": c.code, "name": c.name, "counted": c.counted, "count": case["counts"].get(c.code, 0),
              **{k: (shares.get(c.code) or {}).get(k) for k in ("percent", "ci_low", "ci_high")}}
             for c in categories]
    indices = compute(case["counts"], categories)
    n = case["indices"]["counted_total"]
    blast = case["indices"]["blast_percent"]
    quality = Counter(flag for row in cell_rows for flag in (row.quality_flags or []))
    amends = [{"signed_by": e["detail"]["signed_by"], "signed_at": datetime.fromisoformat(e["detail"]["signed_at"]),
               "reopened_by": e["user"], "reopened_at": e["at"], "reason": e["detail"]["reason"]}
              for e in history(session, case_id, AuditAction.REOPEN)]
    flags = []
    if case["signed_at"] is None:
        flags.append("PRELIMINARY: not signed off")
    flags += [f"AMENDS the sign-off by {a['signed_by']} at {lab_time(a['signed_at'], zone, seconds=False)}, "
              f"reopened by {a['reopened_by']} at {lab_time(a['reopened_at'], zone, seconds=False)}: {a['reason']}"
              for a in amends]
    if case["counts"].get(UNK):
        flags.append(f"{case['counts'][UNK]} unidentified cells not classified")
    if n < TARGETS[0]:
        flags.append(f"{n} cells counted, fewer than the {TARGETS[0]}-cell minimum")
    for mark in reversed(BLAST_MARKS):
        if blast is not None and blast >= mark:
            flags.append(f"blasts {blast:.1f} % >= {mark:g} %")
            break
    flags += [f"quality: {flag} in {k} cells" for flag, k in sorted(quality.items())]
    failed = sum(1 for row in cell_rows if row.status == CellStatus.FAILED)
    if failed:
        flags.append(f"{failed} images could not be read (not counted)")
    blast_ids = [row.id for row in cell_rows if row.label == BLAST_CODE and row.status == CellStatus.DONE][:BLAST_STRIP]
    thumbs = dict(session.execute(select(Cell.id, Cell.thumbnail_path).where(Cell.id.in_(blast_ids))).all()) \
        if blast_ids else {}
    return {
        "case": case, "zone": zone, "categories": categories, "table": table, "indices": indices,
        "counted_total": n, "blast_percent": blast, "blast_level": case["indices"]["blast_level"],
        "target_reached": case["indices"]["target_reached"], "targets": TARGETS, "marks": BLAST_MARKS,
        "flags": flags, "amends": amends, "unidentified": case["counts"].get(UNK, 0),
        "model_versions": sorted({row.model_version for row in cell_rows if row.model_version}),
        "blast_images": [thumbs[i] for i in blast_ids if thumbs.get(i)], "blast_total": case["counts"].get(BLAST_CODE, 0),
    }
