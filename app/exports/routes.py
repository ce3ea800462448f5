from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.agreement.schemas import Model, Since, Until
from app.agreement.service import Period, model_agreement
from app.cases.service import get_case
from app.deps import CurrentUser, SessionDep, SettingsDep
from app.exports import service

router = APIRouter(prefix="/api", tags=["exports"])
CSV = {200: {"content": {"text/csv": {}}}}


def _attachment(text: str, filename: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/cases.csv", response_class=Response, responses=CSV)
def cases_csv(session: SessionDep, _user: CurrentUser) -> Response:
    """One row per case, one column per class (cells with that current label)."""
    return _attachment(service.cases_csv(session), "cases.csv")


@router.get("/cases/{case_id}/differential.csv", response_class=Response, responses=CSV)
def differential_csv(case_id: int, session: SessionDep, _user: CurrentUser) -> Response:
    return _attachment(service.differential_csv(session, case_id), f"case-{case_id}-differential.csv")


@router.get("/cases/{case_id}/cells.csv", response_class=Response, responses=CSV)
def cells_csv(case_id: int, session: SessionDep, _user: CurrentUser) -> Response:
    get_case(session, case_id)
    return _attachment(service.cells_csv(session, case_id), f"case-{case_id}-cells.csv")


@router.get("/model-agreement.csv", response_class=Response, responses=CSV)
def agreement_csv(session: SessionDep, _user: CurrentUser, settings: SettingsDep,
                  since: Since = None, until: Until = None, model: Model = None) -> Response:
    """`/api/model-agreement` per category: model calls, confirmed, signed, PPV and sensitivity
    with their 95 % intervals."""
    report = model_agreement(session, Period(since, until, model), settings.zone)
    return _attachment(service.agreement_csv(report), "model-agreement.csv")
