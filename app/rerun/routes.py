"""GET /api/models, POST /api/cases/{id}/rerun."""
from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from app.cases.service import get_case
from app.deps import CurrentUser, SessionDep, SettingsDep
from app.rerun.models_dir import available
from app.rerun.service import rerun as rerun_case

router = APIRouter(prefix="/api", tags=["models"])


class ModelOut(BaseModel):
    name: str  # the folder name: what POST /api/cases/{id}/rerun takes
    version: str
    classes: list[str]
    configured: bool  # the model new uploads are classified with


class RerunIn(BaseModel):
    model: str = Field(description="a model name from GET /api/models")


class RerunOut(BaseModel):
    case_id: int
    model: str
    model_version: str
    cells_queued: int


@router.get("/models", response_model=list[ModelOut])
def list_models(settings: SettingsDep, _user: CurrentUser) -> list[dict]:
    """The models a case can be re-run with (checkpoint folders beside the configured one)."""
    return available(settings)


@router.post("/cases/{case_id}/rerun", status_code=status.HTTP_202_ACCEPTED, response_model=RerunOut)
def rerun(case_id: int, body: RerunIn, session: SessionDep, user: CurrentUser, settings: SettingsDep) -> dict:
    """Classify every cell of the case again with another model, before sign-off: new
    predictions, the model's labels replaced, reviewers' labels kept; audited. 409 when the
    case is signed or still processing; 422 for a model not in GET /api/models."""
    return rerun_case(session, settings, get_case(session, case_id), user, body.model)
