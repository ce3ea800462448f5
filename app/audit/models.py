"""The append-only audit log (the migration adds triggers refusing UPDATE and DELETE)."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class AuditAction(enum.StrEnum):
    """What an audit event records (stored as its value, at most 16 characters)."""

    UPLOAD = "upload"  # files received into a case
    LABEL = "label"  # a reviewer's label change
    MODEL_LABEL = "model_label"  # the model's label replaced by a newer prediction's
    EDIT = "edit"  # a case's accession, specimen or note changed (detail: the field, its old and new value)
    SIGN = "sign"  # the case signed off
    REOPEN = "reopen"  # a signed case unlocked for a correction (detail: the reason, the sign-off undone)
    RERUN = "rerun"  # the case re-run with another model
    WITHDRAW = "withdraw"  # an upload's cells taken out of the case (detail: the upload, how many, the reason)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    cell_id: Mapped[int | None] = mapped_column(ForeignKey("cells.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(16))  # an AuditAction
    from_value: Mapped[str | None] = mapped_column(String(255))
    to_value: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict | None] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
