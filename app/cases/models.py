"""Cases and the uploads that fill them."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class CaseStatus(enum.StrEnum):
    """A case's status, derived from its cells and sign-off (not stored); the case list's filter order."""

    PROCESSING = "processing"
    READY = "ready"
    SIGNED = "signed"
    EMPTY = "empty"


class UploadStatus(enum.StrEnum):
    """Where an upload's new cells are in processing (stored as its value)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    accession: Mapped[str] = mapped_column(String(120), index=True)
    specimen: Mapped[str] = mapped_column(String(120), default="bone marrow")
    note: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The signer's comment for the report (interpretation, advice); cleared when the case is reopened
    # (the reopening's audit entry keeps it).
    sign_comment: Mapped[str | None] = mapped_column(Text)
    # The lab's category list when the case was created (app.taxonomy); never changed after.
    categories: Mapped[list | None] = mapped_column(JSON)
    # The model the case's cells are (re-)classified with, by folder name; None = the configured one.
    model_name: Mapped[str | None] = mapped_column(String(120))


class Upload(Base):
    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.QUEUED)  # an UploadStatus
    cells_total: Mapped[int] = mapped_column(Integer, default=0)  # new cells this upload created
    cells_done: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)  # files, duplicates included
    rejected: Mapped[list] = mapped_column(JSON, default=list)  # [{"file", "reason"}]
    # Withdrawn: its cells were taken out of the case (the wrong patient's images, say).
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    withdrawn_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    withdraw_reason: Mapped[str | None] = mapped_column(Text)
