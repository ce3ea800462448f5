"""An upload request: its multipart form read and its files received, one place for the API's
upload route and the case page's upload form (the same limits, checks and queueing)."""
from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import BinaryIO

from fastapi import HTTPException, Request, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.cases.models import Case
from app.cases.uploads import UploadResult, receive_upload
from app.config import MiB, Settings
from app.errors import StorageFailed
from app.storage import Storage
from app.users.models import User


@asynccontextmanager
async def upload_parts(request: Request, settings: Settings) -> AsyncIterator[list[tuple[str, BinaryIO]]]:
    """(file name, open file) of each `files` part, open until the block ends. The size is
    refused from Content-Length before the body is read."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "a numeric Content-Length is required")
    if int(length) > settings.max_request_mb * MiB:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"upload over {settings.max_request_mb} MiB; split it into several requests")
    async with AsyncExitStack() as stack:
        try:  # parts over 1 MiB are spooled to the temporary folder as they arrive
            form = await stack.enter_async_context(request.form(max_files=settings.max_files, max_fields=100))
        except OSError as exc:
            raise StorageFailed(f"the server could not receive this upload: its temporary folder "
                                f"{tempfile.gettempdir()} cannot take it ({exc.strerror or exc}). Nothing from this "
                                f"upload was saved; ask your administrator to free space there (or point TMPDIR "
                                f"elsewhere), then upload again") from exc
        parts = [(f.filename or "unnamed", f.file) for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not parts:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "no files in the field `files`")
        yield parts


async def receive_request(request: Request, session: Session, storage: Storage, settings: Settings, case: Case,
                          user: User) -> UploadResult:
    """Every file of the request's form through app.cases.uploads.receive_upload (in a thread:
    decoding and storing block)."""
    async with upload_parts(request, settings) as parts:
        return await run_in_threadpool(receive_upload, session, storage, settings, case, user, parts)
