from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class AuditEntry(BaseModel):
    id: int
    at: datetime
    user: str | None  # None: the system (no person)
    action: str  # an AuditAction value: upload | label | model_label | sign | rerun
    cell_id: int | None
    from_: str | None = Field(alias="from")
    to: str | None
    detail: dict | None

    model_config = {"populate_by_name": True}
