from __future__ import annotations

from fastapi import APIRouter

from app.audit import service
from app.audit.schemas import AuditEntry
from app.cases.service import get_case
from app.deps import CurrentUser, SessionDep

router = APIRouter(prefix="/api", tags=["audit"])


@router.get("/cases/{case_id}/audit", response_model=list[AuditEntry], response_model_by_alias=True)
def case_audit(case_id: int, session: SessionDep, _user: CurrentUser) -> list[dict]:
    """The case's history: uploads, label changes (from, to) and sign-off, oldest first."""
    get_case(session, case_id)
    return service.history(session, case_id)
