"""Append to and read the audit log: every upload, label change, sign-off and reopening."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.users.models import User


def record(session: Session, *, case_id: int, user_id: int | None, action: str, cell_id: int | None = None,
           from_value: str | None = None, to_value: str | None = None, detail: dict | None = None) -> None:
    """Add an event to the caller's transaction (it commits with the change it describes)."""
    session.add(AuditEvent(case_id=case_id, cell_id=cell_id, user_id=user_id, action=action,
                           from_value=from_value, to_value=to_value, detail=detail))


def history(session: Session, case_id: int, action: str | None = None) -> list[dict]:
    """The case's events, oldest first; only those of `action` when given."""
    query = (select(AuditEvent, User.name).outerjoin(User, User.id == AuditEvent.user_id)
             .where(AuditEvent.case_id == case_id).order_by(AuditEvent.id))
    if action is not None:
        query = query.where(AuditEvent.action == action)
    rows = session.execute(query).all()
    return [{"id": e.id, "at": e.at, "user": name, "action": e.action, "cell_id": e.cell_id,
             "from": e.from_value, "to": e.to_value, "detail": e.detail} for e, name in rows]
