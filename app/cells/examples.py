"""Signed examples: cells of a category from the lab's signed cases, shown beside a cell under
review so that a reviewer compares it with what this lab's signers called that category (on
its own scanner and stain), as analysers' reference-cell libraries do.

The newest signed cells of the category, none of the case under review; cells the model named
the same are preferred (both the model and a signer called them so: typical examples). A scan
for a rare category can read far back, so the web keeps each category's list for a minute.
"""
from __future__ import annotations

import time
from threading import Lock

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.cells.models import IN_CASE, Cell, CellStatus, LabelSource

SHOWN = 5  # examples per category
POOL = 4 * SHOWN  # read per category, so that leaving out the case under review still leaves enough
TTL_S = 60.0


def newest_signed(session: Session, code: str, limit: int = POOL) -> list[tuple[int, int]]:
    """(cell id, case id) of the newest signed cells labelled `code`: those whose model label
    the signer kept first, then those a reviewer set."""
    base = (select(Cell.id, Cell.case_id).join(Case, Case.id == Cell.case_id)
            .where(Case.signed_at.is_not(None), Cell.label == code, IN_CASE, Cell.status == CellStatus.DONE,
                   Cell.thumbnail_path.is_not(None)).order_by(Cell.id.desc()).limit(limit))
    kept = session.execute(base.where(Cell.label_source == LabelSource.MODEL)).all()
    if len(kept) >= limit:
        return [tuple(r) for r in kept]
    set_by_reviewer = session.execute(base.where(Cell.label_source != LabelSource.MODEL)
                                      .limit(limit - len(kept))).all()
    return [tuple(r) for r in (*kept, *set_by_reviewer)]


class ExampleCache:
    """Each category's newest signed cells, read at most once a minute per process."""

    def __init__(self, ttl_s: float = TTL_S):
        self.ttl_s = ttl_s
        self._lists: dict[str, tuple[float, list[tuple[int, int]]]] = {}
        self._lock = Lock()

    def examples(self, session: Session, code: str, exclude_case: int, shown: int = SHOWN) -> list[int]:
        now = time.monotonic()
        with self._lock:
            cached = self._lists.get(code)
        if cached is None or now - cached[0] > self.ttl_s:
            cached = (now, newest_signed(session, code))
            with self._lock:
                self._lists[code] = cached
        return [cell_id for cell_id, case_id in cached[1] if case_id != exclude_case][:shown]
