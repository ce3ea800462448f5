"""The lab's current category list, one row per category in display order."""
from __future__ import annotations

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class LabCategory(Base):
    __tablename__ = "lab_categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(8), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(1), unique=True)
    counted: Mapped[bool] = mapped_column(Boolean)
    lineage: Mapped[str] = mapped_column(String(16), default="")
