"""An upload: many image files and/or .zip files in one request -> stored images and cell rows.

Every file is decoded here, so the answer names each unusable file and its reason; a bad
file never stops the rest. Zips are read in memory member by member with size caps (never
extracted to disk, so member paths like ../x mean nothing); a zip inside a zip is refused.
"""
from __future__ import annotations

import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath
from typing import BinaryIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditAction
from app.audit.service import record
from app.cases.models import Case, Upload, UploadStatus
from app.cases.service import ensure_open, get_case, lock_case
from app.cells.models import IN_CASE, Cell, CellStatus
from app.config import MiB, Settings
from app.db import utcnow
from app.errors import Conflict, StorageFailed
from app.ml.decode import decode_bytes
from app.queue import enqueue_until_queued
from app.storage import Storage, sha256
from app.users.models import User

MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
               "BMP": "image/bmp", "TIFF": "image/tiff", "WEBP": "image/webp"}
ZIP_MAGIC = b"PK\x03\x04"
CHECK_THREADS = 4
CHECK_CHUNK = 32
CHECK_CHUNK_BYTES = 64 * MiB  # file bytes held at once: a zip of 30 MiB members must not take 1 GiB


@dataclass
class UploadResult:
    upload: Upload
    accepted: list[dict] = field(default_factory=list)  # {"file", "cell_id", "duplicate"}
    rejected: list[dict] = field(default_factory=list)  # {"file", "reason"}
    new_cell_ids: list[int] = field(default_factory=list)

    def report(self) -> dict:
        """What the uploader is answered (app.cases.schemas.UploadOut)."""
        return {"upload_id": self.upload.id, "accepted": self.accepted, "rejected": self.rejected}


def clean_name(name: str) -> str:
    """A display name: NFC, no control or format characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return (name or "unnamed")[-255:]


class _Budget:
    """Caps per request: file count and total decompressed bytes (a zip bomb stops here)."""

    def __init__(self, settings: Settings):
        self.files_left = settings.max_files
        self.bytes_left = settings.max_request_mb * MiB
        self.max_file = settings.max_file_mb * MiB

    def take(self) -> str | None:
        if self.files_left <= 0:
            return "too many files in one upload"
        self.files_left -= 1
        return None


def _read_capped(fh: BinaryIO, limit: int) -> bytes | None:
    data = fh.read(limit + 1)
    return None if len(data) > limit else data


def _members(name: str, fh: BinaryIO, budget: _Budget) -> Iterator[tuple[str, bytes | None, str | None]]:
    try:
        zf = zipfile.ZipFile(fh)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        yield name, None, "not a valid zip file"
        return
    with zf:
        for info in infos:
            if info.is_dir() or PurePosixPath(info.filename).name.startswith("."):
                continue  # folders and hidden files (__MACOSX/._x) are not cells
            member = clean_name(f"{name}/{info.filename}")
            if reason := budget.take():
                yield member, None, reason
                continue
            if info.filename.lower().endswith(".zip"):
                yield member, None, "nested archive (zip inside a zip)"
                continue
            limit = min(budget.max_file, budget.bytes_left)
            if info.file_size > limit:
                yield member, None, f"too large (over {budget.max_file // MiB} MiB or the upload limit)"
                continue
            try:
                with zf.open(info) as src:
                    data = _read_capped(src, limit)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
                yield member, None, f"unreadable zip member ({type(exc).__name__})"
                continue
            if data is None:
                yield member, None, "too large (decompresses past its declared size or the limit)"
                continue
            budget.bytes_left -= len(data)
            if data.startswith(ZIP_MAGIC):
                yield member, None, "nested archive (zip inside a zip)"
                continue
            yield member, data, None


def iter_files(parts: list[tuple[str, BinaryIO]], settings: Settings) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(display name, bytes or None, reason or None) for every image file, zips opened."""
    budget = _Budget(settings)
    for raw_name, fh in parts:
        name = clean_name(PurePosixPath(raw_name.replace("\\", "/")).name)
        head = fh.read(4)
        fh.seek(0)
        if head == ZIP_MAGIC or name.lower().endswith(".zip"):
            yield from _members(name, fh, budget)
            continue
        if reason := budget.take():
            yield name, None, reason
            continue
        data = _read_capped(fh, min(budget.max_file, budget.bytes_left))
        if data is None:
            yield name, None, f"too large (over {budget.max_file // MiB} MiB or the upload limit)"
            continue
        budget.bytes_left -= len(data)
        yield name, data, None


@dataclass
class Checked:
    """One file after the request's check: stored and its image facts, or why it is refused."""

    name: str
    reason: str | None
    digest: str = ""
    format: str = ""
    width: int = 0
    height: int = 0


def _check(storage: Storage, item: tuple[str, bytes | None, str | None]) -> Checked:
    """Decode and hash one file and store it if it is an image (content-addressed: a duplicate
    rewrites nothing). Storing here, in the check's thread, keeps file creation, which waits on
    the disk rather than the GIL, off the request's own thread."""
    name, data, reason = item
    if reason:
        return Checked(name, reason)
    decoded = decode_bytes(data, reduced=True)
    if decoded.error:
        return Checked(name, decoded.error)
    digest = sha256(data)
    try:
        storage.put(storage.image_key(digest), data)
    except OSError as exc:
        raise StorageFailed(f"the server could not store {name}: {exc.strerror or exc}. Nothing from this upload "
                            f"was saved; ask your administrator to check the image storage, then upload again") from exc
    return Checked(name, None, digest, decoded.format, decoded.width, decoded.height)


def _chunks(files: Iterator[tuple[str, bytes | None, str | None]]) -> Iterator[list]:
    """Up to CHECK_CHUNK files, and no more once CHECK_CHUNK_BYTES of their bytes are read."""
    chunk, size = [], 0
    for item in files:
        chunk.append(item)
        size += len(item[1] or b"")
        if len(chunk) >= CHECK_CHUNK or size >= CHECK_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def checked_files(parts: list[tuple[str, BinaryIO]], storage: Storage, settings: Settings) -> Iterator[Checked]:
    """Every file decoded, hashed and stored, in order. Decoding and storing dominate an upload
    and release the GIL, so they run in threads, a bounded chunk of files at a time (bounded memory)."""
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        for chunk in _chunks(iter_files(parts, settings)):
            yield from pool.map(partial(_check, storage), chunk)


def ingest(session: Session, storage: Storage, settings: Settings, case: Case, user_id: int,
           parts: list[tuple[str, BinaryIO]]) -> UploadResult:
    """Check, store and record every file; the caller enqueues `new_cell_ids` after this commits."""
    # One upload at a time per case: two at once would both insert an image they share, and the
    # second would fail at commit. Locked, the case is checked again: it may have been signed
    # since the request began.
    lock_case(session, case)
    ensure_open(case)
    upload = Upload(case_id=case.id, created_by_id=user_id, rejected=[])
    session.add(upload)
    session.flush()
    result = UploadResult(upload)
    ids = dict(session.execute(select(Cell.sha256, Cell.id).where(Cell.case_id == case.id)).all())
    withdrawn = dict(session.execute(select(Cell.sha256, Cell.id).where(Cell.case_id == case.id, Cell.withdrawn)).all())
    restored: set[str] = set()  # withdrawn cells sent again: back in the case, with this upload
    accepted: list[tuple[str, str, bool]] = []  # (file, sha256, duplicate)
    new_cells: dict[str, Cell] = {}
    for f in checked_files(parts, storage, settings):
        if f.reason:
            result.rejected.append({"file": f.name, "reason": f.reason})
            continue
        if f.digest in withdrawn and f.digest not in restored:
            restored.add(f.digest)
            accepted.append((f.name, f.digest, False))
            continue
        duplicate = f.digest in ids or f.digest in new_cells
        accepted.append((f.name, f.digest, duplicate))
        if duplicate:
            continue
        new_cells[f.digest] = Cell(case_id=case.id, upload_id=upload.id, sha256=f.digest, filename=f.name,
                                   media_type=MEDIA_TYPES[f.format], width=f.width, height=f.height,
                                   image_path=storage.image_key(f.digest), quality_flags=[])
    session.add_all(new_cells.values())
    if restored:  # processed again with this upload: its progress counts them
        session.execute(update(Cell).where(Cell.id.in_([withdrawn[d] for d in restored]))
                        .values(withdrawn=False, upload_id=upload.id, status=CellStatus.PENDING))
    session.flush()
    ids.update({digest: cell.id for digest, cell in new_cells.items()})
    result.accepted = [{"file": name, "cell_id": ids[digest], "duplicate": dup} for name, digest, dup in accepted]
    result.new_cell_ids = [cell.id for cell in new_cells.values()] + sorted(withdrawn[d] for d in restored)
    upload.accepted = len(result.accepted)
    upload.rejected = result.rejected
    upload.cells_total = len(result.new_cell_ids)
    upload.status = UploadStatus.QUEUED if result.new_cell_ids else UploadStatus.DONE
    record(session, case_id=case.id, user_id=user_id, action=AuditAction.UPLOAD,
           to_value=f"{len(result.accepted)} accepted, {len(result.rejected)} rejected",
           detail={"upload_id": upload.id, "new_cells": len(result.new_cell_ids), "restored": len(restored)})
    session.commit()
    return result


def withdraw_upload(session: Session, upload: Upload, user: User, reason: str) -> int:
    """Take the cells an upload added out of its case (the wrong patient's images, say), before
    sign-off; returns how many. They stay stored and are still processed, but are in no count,
    list or report; the audit log keeps who, why and how many. Sending one of the images again
    brings its cell back (the same image in a case is one cell)."""
    case = get_case(session, upload.case_id)
    lock_case(session, case)  # after an upload into this case commits; before a sign-off
    ensure_open(case)
    session.refresh(upload)
    if upload.withdrawn_at is not None:
        raise Conflict(f"upload {upload.id} is already withdrawn")
    n = session.execute(update(Cell).where(Cell.upload_id == upload.id, IN_CASE)
                        .values(withdrawn=True)).rowcount
    upload.withdrawn_at, upload.withdrawn_by_id, upload.withdraw_reason = utcnow(), user.id, reason
    record(session, case_id=case.id, user_id=user.id, action=AuditAction.WITHDRAW, from_value=f"upload {upload.id}",
           to_value=f"{n} cells withdrawn", detail={"upload_id": upload.id, "cells": n, "reason": reason})
    session.commit()
    return n


def receive_upload(session: Session, storage: Storage, settings: Settings, case: Case, user: User,
                   parts: list[tuple[str, BinaryIO]]) -> UploadResult:
    """An upload from the API or the case page: ingest every file, then queue the new cells."""
    result = ingest(session, storage, settings, case, user.id, parts)
    if result.new_cell_ids:  # the cells are saved: a broker that refuses them now is tried again
        enqueue_until_queued(settings, result.upload.id, result.new_cell_ids)
    return result
