"""Queue every cell of an open case for classification by another model. Reviewers' labels
are kept (the worker replaces only labels the model set); the request and every model label
it changes are audited."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditAction
from app.audit.service import record
from app.cases.models import Case, Upload, UploadStatus
from app.cases.service import ensure_open, lock_case
from app.cells.models import Cell, CellStatus
from app.config import Settings
from app.errors import Conflict
from app.queue import enqueue_until_queued
from app.rerun.models_dir import available, model_path
from app.users.models import User


def rerun(session: Session, settings: Settings, case: Case, user: User, name: str) -> dict:
    chosen = model_path(settings, name)  # 422 for a name not in the models folder
    models = {m["name"]: m for m in available(settings)}
    lock_case(session, case)
    ensure_open(case)
    pending = session.scalar(select(func.count()).where(Cell.case_id == case.id, Cell.status == CellStatus.PENDING))
    if pending:
        raise Conflict(f"case {case.id} is still processing {pending} cells; re-run it when they are done")
    configured = Path(settings.model_dir).resolve() == chosen.resolve()
    before = case.model_name or next((m["name"] for m in models.values() if m["configured"]), None)
    case.model_name = None if configured else name
    cells = session.execute(select(Cell.upload_id, Cell.id).where(Cell.case_id == case.id).order_by(Cell.id)).all()
    session.execute(update(Cell).where(Cell.case_id == case.id).values(status=CellStatus.PENDING, error=None))
    by_upload: dict[int, list[int]] = {}
    for upload_id, cell_id in cells:
        by_upload.setdefault(upload_id, []).append(cell_id)
    for upload_id in by_upload:
        session.execute(update(Upload).where(Upload.id == upload_id).values(status=UploadStatus.PROCESSING, cells_done=0))
    record(session, case_id=case.id, user_id=user.id, action=AuditAction.RERUN, from_value=before, to_value=name,
           detail={"model_version": models[name]["version"], "cells": len(cells)})
    session.commit()
    for upload_id, ids in by_upload.items():  # a broker that refuses them now is tried again
        enqueue_until_queued(settings, upload_id, ids)
    return {"case_id": case.id, "model": name, "model_version": models[name]["version"], "cells_queued": len(cells)}
