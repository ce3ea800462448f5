"""Cells (one stored image each), their predictions and their current label."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class CellStatus(enum.StrEnum):
    """Where a cell is in processing (stored as its value)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class LabelSource(enum.StrEnum):
    """Who set a cell's current label (stored as its value)."""

    MODEL = "model"
    REVIEWER = "reviewer"


class Cell(Base):
    __tablename__ = "cells"
    # The same image uploaded twice to a case is one cell.
    __table_args__ = (UniqueConstraint("case_id", "sha256", name="uq_cells_case_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # Paths relative to the storage dir, derived from the hash; never from a file name.
    image_path: Mapped[str] = mapped_column(String(255))
    thumbnail_path: Mapped[str | None] = mapped_column(String(255))
    overlay_path: Mapped[str | None] = mapped_column(String(255))  # drawn on first request
    # what the overlay is drawn from: {"map": Grad-CAM levels 0-255 at the network's resolution,
    # "box": [x, y, side] of the image it covers} (app.cells.overlays); None before 0004
    gradcam: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=CellStatus.PENDING)  # a CellStatus
    error: Mapped[str | None] = mapped_column(String(255))
    quality: Mapped[dict | None] = mapped_column(JSON)
    quality_flags: Mapped[list] = mapped_column(JSON, default=list)
    label: Mapped[str | None] = mapped_column(String(16))
    label_source: Mapped[str | None] = mapped_column(String(16))  # a LabelSource
    label_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    label_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=0)  # bumped by every label change
    # Withdrawn with the upload that added it: kept (and still processed), in no count, list or report.
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


# The cells a case counts and lists: all but those withdrawn with their upload (one rule for
# the counts, the statuses, the sign-off check, the lists and relabelling).
IN_CASE = Cell.withdrawn.is_(False)


class Prediction(Base):
    __tablename__ = "predictions"
    # One prediction per cell and model version: a task that runs twice adds nothing.
    __table_args__ = (UniqueConstraint("cell_id", "model_version", name="uq_predictions_cell_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(80))
    predicted: Mapped[str] = mapped_column(String(16))
    probability: Mapped[float] = mapped_column(Float)
    probs: Mapped[dict] = mapped_column(JSON)  # {code: p} over all classes of the model
    top3: Mapped[list] = mapped_column(JSON)  # [{"code", "name", "p"}]
    # Why the product would not name the cell (label UNK), e.g. "low confidence"; None when named.
    unidentified: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
