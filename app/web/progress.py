"""Processing progress of a case's uploads, for the progress bar (case page and review page)."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from app.cases.models import UploadStatus
from app.cases.service import get_case, list_uploads
from app.config import Settings
from app.processing.runtime import live_workers


def progress(db: Session, case_id: int, settings: Settings) -> dict:
    """Cells done of total over the uploads still running, with an ETA from their rate so far;
    `no_worker`: cells are waiting and no worker has shown it is alive (app.processing.runtime);
    `signed`: the uploads can no longer be withdrawn."""
    uploads = list_uploads(db, case_id)
    active = [u for u in uploads if u.status != UploadStatus.DONE and u.withdrawn_at is None]
    done, total = sum(u.cells_done for u in active), sum(u.cells_total for u in active)
    eta = None
    if active and done:
        elapsed = (datetime.now(UTC) - min(u.created_at for u in active)).total_seconds()
        eta = round(elapsed / done * (total - done))
    return {"case_id": case_id, "uploads": uploads, "running": bool(active), "done": done, "total": total,
            "eta": eta, "no_worker": bool(active) and not live_workers(settings),
            "signed": get_case(db, case_id).signed_at is not None}
