from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import BinaryIO

from fastapi import APIRouter, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.cases import service
from app.cases.models import Upload
from app.cases.schemas import CaseCreate, CaseOut, UploadOut, UploadStatus
from app.cases.uploads import receive_upload
from app.config import MiB, Settings
from app.deps import ClassesDep, CurrentUser, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/api", tags=["cases"])

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "cell images and/or .zip files of them"}}}}}}}


@router.post("/cases", status_code=status.HTTP_201_CREATED, response_model=CaseOut)
def create_case(body: CaseCreate, session: SessionDep, user: CurrentUser, classes: ClassesDep) -> dict:
    case = service.create_case(session, user, body.accession, body.specimen, body.note)
    return service.summary(session, classes, case.id)


@router.get("/cases", response_model=list[CaseOut])
def list_cases(session: SessionDep, _user: CurrentUser, classes: ClassesDep) -> list[dict]:
    return service.summaries(session, classes)


@router.get("/cases/{case_id}", response_model=CaseOut)
def get_case(case_id: int, session: SessionDep, _user: CurrentUser, classes: ClassesDep) -> dict:
    return service.summary(session, classes, case_id)


@router.post("/cases/{case_id}/uploads", status_code=status.HTTP_202_ACCEPTED, response_model=UploadOut,
             openapi_extra=UPLOAD_BODY)
async def upload(case_id: int, request: Request, session: SessionDep, user: CurrentUser,
                 settings: SettingsDep, storage: StorageDep) -> dict:
    """Images and/or .zip files in the repeatable field `files`. Answers at once: accepted files
    (a duplicate of an image the case has is the same cell) and rejected ones with a reason."""
    case = service.get_case(session, case_id)
    service.ensure_open(case)
    async with upload_parts(request, settings) as parts:
        result = await run_in_threadpool(receive_upload, session, storage, settings, case, user, parts)
    return result.report()


@asynccontextmanager
async def upload_parts(request: Request, settings: Settings) -> AsyncIterator[list[tuple[str, BinaryIO]]]:
    """(file name, open file) of each `files` part, open until the block ends (also for the
    case page's upload form). The size is refused from Content-Length before the body is read."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "a numeric Content-Length is required")
    if int(length) > settings.max_request_mb * MiB:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"upload over {settings.max_request_mb} MiB; split it into several requests")
    async with request.form(max_files=settings.max_files, max_fields=100) as form:
        parts = [(f.filename or "unnamed", f.file) for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not parts:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "no files in the field `files`")
        yield parts


@router.get("/uploads/{upload_id}", response_model=UploadStatus)
def get_upload(upload_id: int, session: SessionDep, _user: CurrentUser) -> Upload:
    """An upload's status and progress (cells done of the new cells it created)."""
    return service.get_upload(session, upload_id)


@router.post("/cases/{case_id}/sign", response_model=CaseOut)
def sign(case_id: int, session: SessionDep, user: CurrentUser, classes: ClassesDep) -> dict:
    """Sign the case off; it is locked from then on (relabels answer 409)."""
    service.sign(session, service.get_case(session, case_id), user)
    return service.summary(session, classes, case_id)
