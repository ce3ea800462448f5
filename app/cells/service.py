"""Cells of a case with their latest prediction, relabelling with optimistic locking, files."""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.audit.service import record
from app.cases.models import Case
from app.cells.models import Cell, Prediction
from app.db import utcnow
from app.errors import Conflict, NotFound
from app.users.models import User


def latest_predictions(case_id: int):
    """Subquery: the newest prediction id per cell of a case (a re-run with a newer model wins)."""
    return (select(func.max(Prediction.id).label("id")).join(Cell, Cell.id == Prediction.cell_id)
            .where(Cell.case_id == case_id).group_by(Prediction.cell_id).subquery())


def _as_dict(cell: Cell, pred: Prediction | None) -> dict:
    return {
        "id": cell.id, "filename": cell.filename, "status": cell.status,
        "predicted": pred.predicted if pred else None, "probability": pred.probability if pred else None,
        "top3": pred.top3 if pred else [], "label": cell.label, "label_source": cell.label_source,
        "version": cell.version, "quality_flags": cell.quality_flags or [], "quality": cell.quality,
        "model_version": pred.model_version if pred else None,
    }


def rows(session: Session, case_id: int):
    """(Cell, latest Prediction or None, name of who labelled it or None) per cell, by id."""
    latest = latest_predictions(case_id)
    return session.execute(
        select(Cell, Prediction, User.name).select_from(Cell)
        .outerjoin(Prediction, (Prediction.cell_id == Cell.id) & Prediction.id.in_(select(latest.c.id)))
        .outerjoin(User, User.id == Cell.label_by_id)
        .where(Cell.case_id == case_id).order_by(Cell.id)).all()


def list_cells(session: Session, case_id: int) -> list[dict]:
    return [_as_dict(cell, pred) for cell, pred, _ in rows(session, case_id)]


def get_cell(session: Session, cell_id: int) -> Cell:
    cell = session.get(Cell, cell_id)
    if cell is None:
        raise NotFound(f"no cell {cell_id}")
    return cell


def cell_out(session: Session, cell: Cell) -> dict:
    pred = session.scalar(select(Prediction).where(Prediction.cell_id == cell.id).order_by(Prediction.id.desc()))
    return _as_dict(cell, pred)


def relabel(session: Session, cell_id: int, label: str, user: User, expected_version: int | None) -> Cell:
    """Set the reviewer's label. One conditional UPDATE (version unchanged, case not signed)
    decides between concurrent requests: the loser gets Conflict."""
    cell = get_cell(session, cell_id)
    case = session.get(Case, cell.case_id)
    if case.signed_at is not None:
        raise Conflict(f"case {case.id} is signed and locked")
    seen = cell.version if expected_version is None else expected_version
    if seen != cell.version:
        raise Conflict(f"cell {cell_id} changed since version {seen} (now {cell.version}); reload it")
    previous = cell.label
    done = session.execute(
        update(Cell).where(Cell.id == cell_id, Cell.version == seen,
                           Cell.case_id.in_(select(Case.id).where(Case.signed_at.is_(None))))
        .values(label=label, label_source="reviewer", label_by_id=user.id, label_at=utcnow(),
                version=Cell.version + 1).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        session.rollback()
        raise Conflict(f"cell {cell_id} was changed or its case signed meanwhile; reload it")
    record(session, case_id=cell.case_id, cell_id=cell_id, user_id=user.id, action="label",
           from_value=previous, to_value=label, detail={"version": seen + 1})
    session.commit()
    session.refresh(cell)
    return cell
