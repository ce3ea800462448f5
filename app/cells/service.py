"""Cells of a case with their latest prediction, relabelling with optimistic locking, files."""
from __future__ import annotations

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditAction
from app.audit.service import record
from app.cases.models import Case, Upload
from app.cells.models import IN_CASE, Cell, CellStatus, LabelSource, Prediction
from app.db import get_or_not_found, utcnow
from app.errors import Conflict
from app.users.models import User


def latest_predictions(cases: int | Select):
    """Subquery: the newest prediction id per cell of a case, or of the cases a query selects
    (their ids): a re-run with a newer model wins."""
    of = Cell.case_id == cases if isinstance(cases, int) else Cell.case_id.in_(cases)
    return (select(Prediction.cell_id, func.max(Prediction.id).label("id"))
            .join(Cell, Cell.id == Prediction.cell_id).where(of).group_by(Prediction.cell_id).subquery())


COLUMNS = (Cell.id, Cell.filename, Cell.status, Cell.label, Cell.label_source, Cell.version,
           Cell.quality_flags, Cell.quality, Cell.label_at, Prediction.predicted, Prediction.probability,
           Prediction.top3, Prediction.model_version, Prediction.unidentified, User.name.label("labelled_by"))


def rows(session: Session, case_id: int, cell_id: int | None = None):
    """One row of COLUMNS per cell (latest prediction, who labelled it), by id; a case's cells
    without the withdrawn ones, or the one asked for. Plain columns, not ORM objects: the
    500-cell list is read on every review page load."""
    latest = latest_predictions(case_id)
    query = (select(*COLUMNS).select_from(Cell)
             .outerjoin(latest, latest.c.cell_id == Cell.id).outerjoin(Prediction, Prediction.id == latest.c.id)
             .outerjoin(User, User.id == Cell.label_by_id).where(Cell.case_id == case_id).order_by(Cell.id))
    query = query.where(Cell.id == cell_id) if cell_id is not None else query.where(IN_CASE)
    return session.execute(query).all()


def view(row) -> dict:
    """One cell (a row of `rows`) as the API answers it and the review page shows it. The API's
    schema (app.cells.schemas.CellOut) leaves out what only the page reads: who labelled the
    cell and when, and whether a reviewer changed it."""
    return {
        "id": row.id, "filename": row.filename, "status": row.status, "predicted": row.predicted,
        "probability": row.probability, "top3": row.top3 or [], "label": row.label,
        "label_source": row.label_source, "version": row.version, "quality_flags": row.quality_flags or [],
        "quality": row.quality, "model_version": row.model_version, "unidentified": row.unidentified,
        "labelled_by": row.labelled_by, "label_at": row.label_at,
        "changed": row.label_source == LabelSource.REVIEWER,
    }


def list_cells(session: Session, case_id: int) -> list[dict]:
    return [view(row) for row in rows(session, case_id)]


def get_cell(session: Session, cell_id: int) -> Cell:
    return get_or_not_found(session, Cell, cell_id, "cell")


def cell_out(session: Session, cell: Cell) -> dict:
    return view(rows(session, cell.case_id, cell.id)[0])


def relabel(session: Session, cell_id: int, label: str, user: User, expected_version: int | None) -> Cell:
    """Set the reviewer's label. One conditional UPDATE (version unchanged, case not signed)
    decides between concurrent requests: the loser gets Conflict."""
    cell = get_cell(session, cell_id)
    # A shared lock on the case row (PostgreSQL): relabels go side by side, but a sign-off
    # waits for them to commit, and they for it, so no label change is audited after the
    # signature. On SQLite the conditional UPDATE below runs under the database write lock.
    case = session.scalars(select(Case).where(Case.id == cell.case_id).with_for_update(read=True)
                           .execution_options(populate_existing=True)).one()
    if case.signed_at is not None:
        raise Conflict(f"case {case.id} is signed and locked")
    if cell.withdrawn:
        raise Conflict(f"cell {cell_id} was withdrawn from case {case.id} with its upload")
    seen = cell.version if expected_version is None else expected_version
    if seen != cell.version:
        raise Conflict(f"cell {cell_id} changed since version {seen} (now {cell.version}); reload it")
    previous = cell.label
    done = session.execute(
        update(Cell).where(Cell.id == cell_id, Cell.version == seen, IN_CASE,
                           Cell.case_id.in_(select(Case.id).where(Case.signed_at.is_(None))))
        .values(label=label, label_source=LabelSource.REVIEWER, label_by_id=user.id, label_at=utcnow(),
                version=Cell.version + 1).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        session.rollback()
        raise Conflict(f"cell {cell_id} was changed or its case signed meanwhile; reload it")
    record(session, case_id=cell.case_id, cell_id=cell_id, user_id=user.id, action=AuditAction.LABEL,
           from_value=previous, to_value=label, detail={"version": seen + 1})
    session.commit()
    session.refresh(cell)
    return cell


def waiting(session: Session) -> dict:
    """The cells waiting for a worker: how many, in how many uploads, since when (the oldest
    such upload's time)."""
    cells, uploads = session.execute(select(func.count(), func.count(func.distinct(Cell.upload_id)))
                                     .where(Cell.status == CellStatus.PENDING)).one()
    oldest = session.scalar(select(func.min(Upload.created_at)).where(
        Upload.id.in_(select(Cell.upload_id).where(Cell.status == CellStatus.PENDING)))) if cells else None
    return {"cells": cells, "uploads": uploads, "since": oldest}
