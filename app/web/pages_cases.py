"""The case list, a case's page (details, upload, progress, differential, history, sign-off, reopening)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from app.audit.models import AuditAction
from app.audit.service import history
from app.cases import service as cases
from app.cases.models import CaseStatus
from app.cases.schemas import COMMENT_MAX, CaseCreate, CaseEdit, CaseSign, Reason
from app.cases.upload_form import receive_request
from app.cases.uploads import withdraw_upload
from app.config import Settings
from app.db import MAX_ID
from app.deps import ClassesDep, SessionDep, SettingsDep, StorageDep
from app.errors import Conflict, Forbidden
from app.ml.card import CellClass
from app.rerun.models_dir import UnknownModel, available
from app.rerun.service import rerun as rerun_case
from app.web.auth import Csrf, PageUser
from app.web.progress import progress
from app.web.review import TARGETS, case_categories, panel, target_or_default
from app.web.templating import render

router = APIRouter(include_in_schema=False)
STATUSES = tuple(CaseStatus)
REASON = TypeAdapter(Reason)  # the API's rule for a reopening's or a withdrawal's reason


PAGE_CASES = 50  # rows a case list shows at a time, newest first; "Show older cases" adds more


def _case_rows(db: Session, classes: tuple[CellClass, ...], q: str, state: str, before: int | None = None) -> dict:
    """One page of the case list: years of cases are filtered and counted by the database."""
    status = state if state in STATUSES else None
    ids = cases.find(db, q, status, before, PAGE_CASES + 1)
    return {"cases": cases.summaries(db, ids[:PAGE_CASES]) if ids else [],
            "older": ids[PAGE_CASES - 1] if len(ids) > PAGE_CASES else None,
            "matching": cases.count(db, q, status) if before is None else None,
            "q": q, "state": state, "classes": classes}


@router.get("/cases")
def case_list(request: Request, db: SessionDep, _user: PageUser, classes: ClassesDep,
              q: str = "", state: str = "") -> Response:
    return render(request, "cases.html", statuses=STATUSES, **_case_rows(db, classes, q, state))


@router.get("/cases/rows")
def case_rows(request: Request, db: SessionDep, _user: PageUser, classes: ClassesDep,
              q: str = "", state: str = "", before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> Response:
    """The rows for a search (with the count of matches), or the next older page (`before`)."""
    return render(request, "partials/case_rows.html", **_case_rows(db, classes, q, state, before))


@router.post("/cases", dependencies=[Csrf])
def create_case(db: SessionDep, user: PageUser,
                accession: Annotated[str, Form(min_length=1, max_length=120)],
                specimen: Annotated[str, Form(max_length=120)] = "bone marrow",
                note: Annotated[str, Form(max_length=10_000)] = "") -> Response:
    try:
        body = CaseCreate(accession=accession.strip(), specimen=specimen.strip() or "bone marrow", note=note)
    except ValidationError as exc:  # the API's rules; the form's fields cannot break them but a script can
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "; ".join(
            f"{e['loc'][0]} {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
    case = cases.create_case(db, user, body.accession, body.specimen, body.note)
    return RedirectResponse(f"/cases/{case.id}", status.HTTP_303_SEE_OTHER)


@router.get("/cases/{case_id}")
def case_page(request: Request, case_id: int, db: SessionDep, _user: PageUser) -> Response:
    return _case_page(request, db, case_id)


def _reopened(db: Session, case: dict) -> dict | None:
    """The reopening an unsigned case is waiting to be signed again for (its head says so)."""
    if case["signed_at"] is not None:
        return None
    reopenings = history(db, case["id"], AuditAction.REOPEN)
    return reopenings[-1] if reopenings else None


def _models(settings: Settings, case: dict) -> dict:
    """The model the case's cells were classified with, and the others it can be re-run with."""
    models, name = available(settings), case["model_name"]
    current = next((m for m in models if (m["name"] == name if name else m["configured"])), None)
    return {"model": current, "rerun_models": [m for m in models if m is not current]}


def _case_page(request: Request, db: Session, case_id: int, status_code: int = 200,
               error: str | None = None) -> Response:
    case = cases.summary(db, case_id)
    settings = request.app.state.settings
    return render(request, "case.html", status_code, case=case, panel=panel(case, case_categories(db, case), TARGETS[0]),
                  progress=progress(db, case_id, settings), events=history(db, case_id),
                  error=error, reopened=_reopened(db, case), **_models(settings, case))


@router.get("/cases/{case_id}/head")
def case_head(request: Request, case_id: int, db: SessionDep, _user: PageUser) -> Response:
    case = cases.summary(db, case_id)
    return render(request, "partials/case_head.html", case=case, reopened=_reopened(db, case),
                  **_models(request.app.state.settings, case))


@router.get("/cases/{case_id}/progress")
def case_progress(request: Request, case_id: int, db: SessionDep, _user: PageUser) -> Response:
    """Polled every second while cells are processed; the last answer stops the polling and
    tells the page (HX-Trigger) to refresh what depends on the results."""
    cases.get_case(db, case_id)
    state = progress(db, case_id, request.app.state.settings)
    headers = None if state["running"] else {"HX-Trigger": "processing-done"}
    return render(request, "partials/upload_progress.html", headers=headers, progress=state)


@router.get("/cases/{case_id}/uploads")
def uploads(request: Request, case_id: int, db: SessionDep, _user: PageUser) -> Response:
    cases.get_case(db, case_id)
    return render(request, "partials/uploads.html", progress=progress(db, case_id, request.app.state.settings))


@router.post("/cases/{case_id}/uploads", dependencies=[Csrf])
async def upload(request: Request, case_id: int, db: SessionDep, user: PageUser, settings: SettingsDep,
                 storage: StorageDep) -> Response:
    """The JSON API's upload (same limits, checks and queueing), answered as a fragment."""
    case = cases.get_case(db, case_id)
    cases.ensure_open(case)
    result = await receive_request(request, db, storage, settings, case, user)
    return render(request, "partials/upload_result.html", headers={"HX-Trigger": "uploaded"},
                  result=result.report(), progress=progress(db, case_id, request.app.state.settings))


@router.post("/cases/{case_id}/uploads/{upload_id}/withdraw", dependencies=[Csrf])
def withdraw(request: Request, case_id: int, upload_id: int, db: SessionDep, user: PageUser,
             reason: Annotated[str, Form()] = "") -> Response:
    upload = cases.get_upload(db, upload_id)
    if upload.case_id != case_id:
        return _case_page(request, db, case_id, status.HTTP_404_NOT_FOUND,
                          error=f"upload {upload_id} is not one of this case's")
    return _with_reason(request, db, case_id, reason, "the upload is withdrawn",
                        lambda why: withdraw_upload(db, upload, user, why))


@router.get("/cases/{case_id}/differential")
def differential(request: Request, case_id: int, db: SessionDep, _user: PageUser,
                 target: int = TARGETS[0]) -> Response:
    case = cases.summary(db, case_id)
    return render(request, "partials/differential.html",
                  panel=panel(case, case_categories(db, case), target_or_default(target)))


@router.get("/cases/{case_id}/history")
def case_history(request: Request, case_id: int, db: SessionDep, _user: PageUser) -> Response:
    cases.get_case(db, case_id)
    return render(request, "partials/history.html", events=history(db, case_id))


@router.post("/cases/{case_id}/sign", dependencies=[Csrf])
def sign(request: Request, case_id: int, db: SessionDep, user: PageUser,
         settings: SettingsDep, comment: Annotated[str, Form()] = "") -> Response:
    try:
        body = CaseSign(comment=comment)  # the API's rule
    except ValidationError:
        return _case_page(request, db, case_id, status.HTTP_422_UNPROCESSABLE_CONTENT,
                          error=f"the comment may have at most {COMMENT_MAX:,} characters; the case is not signed")
    try:
        cases.sign(db, cases.get_case(db, case_id), user, settings.signers, body.comment)
    except (Conflict, Forbidden) as exc:
        return _case_page(request, db, case_id, exc.status_code, error=str(exc))
    return RedirectResponse(f"/cases/{case_id}", status.HTTP_303_SEE_OTHER)


@router.post("/cases/{case_id}/rerun", dependencies=[Csrf])
def rerun(request: Request, case_id: int, db: SessionDep, user: PageUser,
          settings: SettingsDep, model: Annotated[str, Form()] = "") -> Response:
    """The API's re-run with another model; a refusal (signed, still processing, unknown model)
    is shown on the case page, success goes back to it and its progress."""
    try:
        rerun_case(db, settings, cases.get_case(db, case_id), user, model)
    except (Conflict, UnknownModel) as exc:
        return _case_page(request, db, case_id, exc.status_code, error=str(exc))
    return RedirectResponse(f"/cases/{case_id}", status.HTTP_303_SEE_OTHER)


@router.post("/cases/{case_id}/edit", dependencies=[Csrf])
def edit(request: Request, case_id: int, db: SessionDep, user: PageUser,
         accession: Annotated[str, Form()] = "", specimen: Annotated[str, Form()] = "",
         note: Annotated[str, Form()] = "") -> Response:
    try:
        body = CaseEdit(accession=accession, specimen=specimen, note=note)  # the API's rules
    except ValidationError:
        return _case_page(request, db, case_id, status.HTTP_422_UNPROCESSABLE_CONTENT,
                          error="the accession and the specimen need 1 to 120 characters, the note at most 10,000")
    try:
        cases.edit_case(db, cases.get_case(db, case_id), user, body.model_dump())
    except Conflict as exc:
        return _case_page(request, db, case_id, exc.status_code, error=str(exc))
    return RedirectResponse(f"/cases/{case_id}", status.HTTP_303_SEE_OTHER)


@router.post("/cases/{case_id}/reopen", dependencies=[Csrf])
def reopen(request: Request, case_id: int, db: SessionDep, user: PageUser,
           reason: Annotated[str, Form()] = "") -> Response:
    return _with_reason(request, db, case_id, reason, "the case is reopened",
                        lambda why: cases.reopen(db, cases.get_case(db, case_id), user, why))


def _with_reason(request: Request, db: Session, case_id: int, reason: str, what: str,
                 act: Callable[[str], object]) -> Response:
    """A case-page form that needs a reason (reopening, withdrawing an upload): the API's rule for
    it, then the action; a refusal is shown on the case page, success goes back to it."""
    try:
        why = REASON.validate_python(reason)
    except ValidationError:
        return _case_page(request, db, case_id, status.HTTP_422_UNPROCESSABLE_CONTENT,
                          error=f"say why {what}, in 3 to 500 characters")
    try:
        act(why)
    except (Conflict, Forbidden) as exc:
        return _case_page(request, db, case_id, exc.status_code, error=str(exc))
    return RedirectResponse(f"/cases/{case_id}", status.HTTP_303_SEE_OTHER)
