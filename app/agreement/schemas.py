"""The query of `/api/model-agreement` and its CSV (`app.exports.routes`)."""
from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Query

Since = Annotated[date | None, Query(description="first day of sign-off (YYYY-MM-DD, in the lab's time zone)")]
Until = Annotated[date | None, Query(description="last day of sign-off, included")]
Model = Annotated[str | None, Query(max_length=80, description="only cells last classified by this model version")]
