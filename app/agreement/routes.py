from __future__ import annotations

from fastapi import APIRouter

from app.agreement.schemas import Model, Since, Until
from app.agreement.service import Period, model_agreement
from app.deps import CurrentUser, SessionDep, SettingsDep

router = APIRouter(prefix="/api", tags=["agreement"])


@router.get("/model-agreement")
def agreement(session: SessionDep, _user: CurrentUser, settings: SettingsDep,
              since: Since = None, until: Until = None, model: Model = None) -> dict:
    """The model's first pass against the signed labels of the cases signed in the period:
    agreement, PPV and sensitivity per category, UNK share, blast percent model vs signed,
    by month (app/agreement/service.py says how each is defined)."""
    return model_agreement(session, Period(since, until, model), settings.zone)
