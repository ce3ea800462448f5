"""The signed cells of a period as a folder-per-class dataset (DEST/<CODE>/<image>), the layout
`marrow evaluate` and `marrow train` read: how a lab measures the model on its own scanner and
stain, and the cells it would fine-tune on.

A cell's class is the label its case was signed with. Only signed cases (a reviewer's and a
signer's word) and only cells in them (not withdrawn, processed) are exported. By default only
the classes a MarrowDiff model can learn are written (the 13-class taxonomy's codes); the lab's
other categories (PLM, ART, OTH, its own) are counted as skipped, or written too with
`all_categories`. Files are named by their content's hash, never by the uploaded name (which may
hold patient data), and copied once: exporting again into DEST adds only new cells.
`manifest.csv` lists this export's cells with the model's call, its version and the case id.
"""
from __future__ import annotations

import csv
import mimetypes
import shutil
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agreement.service import Period, signed_cases, signed_in
from app.cells.models import IN_CASE, Cell, CellStatus, Prediction
from app.cells.service import latest_predictions
from app.ml.card import MARROW_CLASSES
from app.storage import Storage
from app.taxonomy.defaults import UNK

LEARNABLE = frozenset(c.code for c in MARROW_CLASSES)
MANIFEST = "manifest.csv"


def _suffix(media_type: str) -> str:
    return {"image/jpeg": ".jpg", "image/tiff": ".tif"}.get(media_type) or mimetypes.guess_extension(media_type) or ""


def export_cells(session: Session, storage: Storage, dest: Path, period: Period, tz: ZoneInfo,
                 all_categories: bool = False) -> dict:
    """Write the dataset; returns what was written and skipped, per class."""
    ids = signed_in(period, tz)
    cases = signed_cases(session, ids)
    latest = latest_predictions(ids)
    query = (select(Cell.case_id, Cell.sha256, Cell.media_type, Cell.image_path, Cell.label, Prediction.predicted,
                    Prediction.unidentified, Prediction.model_version)
             .select_from(Cell).outerjoin(latest, latest.c.cell_id == Cell.id)
             .outerjoin(Prediction, Prediction.id == latest.c.id)
             .where(Cell.case_id.in_(ids), IN_CASE, Cell.status == CellStatus.DONE).order_by(Cell.id))
    if period.model:
        query = query.where(Prediction.model_version == period.model)
    rows = session.execute(query).all() if cases else []

    dest.mkdir(parents=True, exist_ok=True)
    written, present, skipped, manifest = Counter(), Counter(), Counter(), []
    for row in rows:
        label = row.label or UNK
        if label == UNK or not (all_categories or label in LEARNABLE):
            skipped[label] += 1
            continue
        target = dest / label / f"{row.sha256}{_suffix(row.media_type)}"
        if target.exists():
            present[label] += 1
        else:
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(storage.path(row.image_path), target)
            written[label] += 1
        model_call = "" if row.predicted is None else (UNK if row.unidentified else row.predicted)
        manifest.append([f"{label}/{target.name}", label, model_call, row.model_version or "", row.case_id,
                         cases[row.case_id].signed_at.isoformat()])
    with open(dest / MANIFEST, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["file", "class_code", "model_class", "model_version", "case_id", "signed_at"])
        writer.writerows(manifest)
    return {"dest": str(dest), "signed_cases": len({r.case_id for r in rows}), "cells": len(manifest),
            "written": dict(sorted(written.items())), "already_there": dict(sorted(present.items())),
            "skipped": dict(sorted(skipped.items())), "manifest": str(dest / MANIFEST)}
