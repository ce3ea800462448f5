"""The signed cells of a period as a folder-per-class dataset (DEST/<CODE>/<image>), the layout
`marrow evaluate` and `marrow train` read: how a lab measures the model on its own scanner and
stain, and the cells it would fine-tune on.

A cell's class is the label its case was signed with. Only signed cases (a reviewer's and a
signer's word) and only cells in them (not withdrawn, processed) are exported. By default only
the classes a MarrowDiff model can learn are written (the 13-class taxonomy's codes); the lab's
other categories (PLM, ART, OTH, its own) are counted as skipped, or written too with
`all_categories`. Files are named by their content's hash, never by the uploaded name (which may
hold patient data), and copied once: exporting again into DEST adds only new cells.
`manifest.csv` lists this export's cells with the model's call, its version and the case id;
a cell whose image is missing from the storage is reported, not exported.
"""
from __future__ import annotations

import csv
import io
import mimetypes
import os
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

    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"cannot create {dest}: {exc.strerror or exc}") from None
    written, present, skipped, missing, manifest = Counter(), Counter(), Counter(), [], []
    for row in rows:
        label = row.label or UNK
        if label == UNK or not (all_categories or label in LEARNABLE):
            skipped[label] += 1
            continue
        target = dest / label / f"{row.sha256}{_suffix(row.media_type)}"
        source = storage.path(row.image_path)
        if target.exists():
            present[label] += 1
        elif not source.is_file():  # lost from the storage (a restore without images, say)
            missing.append(row.sha256)
            continue
        else:
            _write(target, source)
            written[label] += 1
        model_call = "" if row.predicted is None else (UNK if row.unidentified else row.predicted)
        manifest.append([f"{label}/{target.name}", label, model_call, row.model_version or "", row.case_id,
                         cases[row.case_id].signed_at.isoformat()])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "class_code", "model_class", "model_version", "case_id", "signed_at"])
    writer.writerows(manifest)
    _write(dest / MANIFEST, text.getvalue().encode())
    return {"dest": str(dest), "signed_cases": len({r.case_id for r in rows}), "cells": len(manifest),
            "written": dict(sorted(written.items())), "already_there": dict(sorted(present.items())),
            "skipped": dict(sorted(skipped.items())), "missing_from_storage": missing,
            "manifest": str(dest / MANIFEST)}


def _write(target: Path, data: bytes | Path) -> None:
    """A file whole or not at all (bytes, or a copy of a file): a disk that fills up leaves no
    half image that a later export would take for one already there."""
    partial = target.with_name(f".{target.name}.part")
    try:
        target.parent.mkdir(exist_ok=True)
        if isinstance(data, Path):
            shutil.copyfile(data, partial)
        else:
            partial.write_bytes(data)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"cannot write {target}: {exc.strerror or exc}") from None
