from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from app.cases import service
from app.cases.models import CaseStatus, Upload
from app.cases.schemas import (CaseCreate, CaseEdit, CaseOut, CaseReopen, CaseSign, UploadOut, UploadStatus,
                               UploadWithdraw)
from app.cases.upload_form import receive_request
from app.cases.uploads import withdraw_upload
from app.db import MAX_ID
from app.deps import CurrentUser, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/api", tags=["cases"])

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "cell images and/or .zip files of them"}}}}}}}


@router.post("/cases", status_code=status.HTTP_201_CREATED, response_model=CaseOut)
def create_case(body: CaseCreate, session: SessionDep, user: CurrentUser) -> dict:
    case = service.create_case(session, user, body.accession, body.specimen, body.note)
    return service.summary(session, case.id)


@router.get("/cases", response_model=list[CaseOut])
def list_cases(session: SessionDep, _user: CurrentUser,
               q: Annotated[str, Query(max_length=120, description="part of the accession, any case")] = "",
               state: Annotated[CaseStatus | None, Query(alias="status")] = None,
               before: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                                   description="only cases older than this id (the next page)")] = None,
               limit: Annotated[int | None, Query(ge=1, le=1000, description="at most this many; default all")] = None,
               ) -> list[dict]:
    """Cases, newest first: all of them, or those matching, a page at a time."""
    if not (q or state or before is not None or limit is not None):
        return service.summaries(session)
    ids = service.find(session, q, state, before, limit)
    return service.summaries(session, ids) if ids else []


@router.get("/cases/{case_id}", response_model=CaseOut)
def get_case(case_id: int, session: SessionDep, _user: CurrentUser) -> dict:
    return service.summary(session, case_id)


@router.patch("/cases/{case_id}", response_model=CaseOut)
def edit_case(case_id: int, body: CaseEdit, session: SessionDep, user: CurrentUser) -> dict:
    """Correct the accession, specimen or note (only the fields given); audited field by field.
    409 once the case is signed (reopen it first)."""
    service.edit_case(session, service.get_case(session, case_id), user, body.model_dump(exclude_none=True))
    return service.summary(session, case_id)


@router.post("/cases/{case_id}/uploads", status_code=status.HTTP_202_ACCEPTED, response_model=UploadOut,
             openapi_extra=UPLOAD_BODY)
async def upload(case_id: int, request: Request, session: SessionDep, user: CurrentUser,
                 settings: SettingsDep, storage: StorageDep) -> dict:
    """Images and/or .zip files in the repeatable field `files`. Answers at once: accepted files
    (a duplicate of an image the case has is the same cell) and rejected ones with a reason."""
    case = service.get_case(session, case_id)
    service.ensure_open(case)
    result = await receive_request(request, session, storage, settings, case, user)
    return result.report()


@router.get("/uploads/{upload_id}", response_model=UploadStatus)
def get_upload(upload_id: int, session: SessionDep, _user: CurrentUser) -> Upload:
    """An upload's status and progress (cells done of the new cells it created)."""
    return service.get_upload(session, upload_id)


@router.post("/uploads/{upload_id}/withdraw", response_model=UploadStatus)
def withdraw(upload_id: int, body: UploadWithdraw, session: SessionDep, user: CurrentUser) -> Upload:
    """Take the cells this upload added out of its case (the wrong patient's images, say), with
    a reason, before sign-off (409 once signed, or when already withdrawn). They are kept but in
    no count, cell list or report; uploading one of the images again brings its cell back."""
    upload = service.get_upload(session, upload_id)
    withdraw_upload(session, upload, user, body.reason)
    return upload


@router.post("/cases/{case_id}/sign", response_model=CaseOut)
def sign(case_id: int, session: SessionDep, user: CurrentUser, settings: SettingsDep,
         body: CaseSign | None = None) -> dict:
    """Sign the case off, optionally with a comment for the report (`{"comment": "..."}`, up to
    4,000 characters; the body may be left out); it is locked from then on (relabels answer 409).
    403 for a role that MARROW_SIGN_ROLES leaves out."""
    service.sign(session, service.get_case(session, case_id), user, settings.signers, body and body.comment)
    return service.summary(session, case_id)


@router.post("/cases/{case_id}/reopen", response_model=CaseOut)
def reopen(case_id: int, body: CaseReopen, session: SessionDep, user: CurrentUser) -> dict:
    """Unlock a signed case for a correction, with a reason: only its signer or an administrator
    (403 otherwise; 409 when it is not signed). Sign it again afterwards; its PDF and FHIR
    report then say they amend the earlier sign-off."""
    service.reopen(session, service.get_case(session, case_id), user, body.reason)
    return service.summary(session, case_id)
