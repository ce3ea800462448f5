from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, Response

from app.cases.service import get_case
from app.cells import service
from app.cells.overlays import overlay_file
from app.cells.schemas import CellOut, Relabel
from app.deps import CurrentUser, SessionDep, StorageDep
from app.errors import NotFound
from app.storage import Storage
from app.taxonomy.service import assignable, of_case

router = APIRouter(prefix="/api", tags=["cells"])
SERVED_AS_IS = {"image/jpeg", "image/png"}
# What a URL serves never changes (the cell's image, and files named by its content hash), so
# browsers keep it a year without asking; a revalidation is answered 304 from the database alone.
CACHE_CONTROL = "private, max-age=31536000, immutable"


@router.get("/cases/{case_id}/cells", response_model=list[CellOut])
def list_cells(case_id: int, session: SessionDep, _user: CurrentUser) -> list[dict]:
    get_case(session, case_id)
    return service.list_cells(session, case_id)


@router.get("/cells/{cell_id}", response_model=CellOut)
def get_cell(cell_id: int, session: SessionDep, _user: CurrentUser) -> dict:
    return service.cell_out(session, service.get_cell(session, cell_id))


@router.patch("/cells/{cell_id}", response_model=CellOut)
def relabel(cell_id: int, body: Relabel, session: SessionDep, user: CurrentUser) -> dict:
    """Set the reviewer's label to a category of the case's list (422 otherwise); 409 when the
    case is signed or `version` is stale."""
    categories = of_case(get_case(session, service.get_cell(session, cell_id).case_id).categories)
    if body.label not in assignable(categories):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"unknown category {body.label!r} for this case; expected one of "
                            f"{', '.join(c.code for c in categories)} (or UNK)")
    cell = service.relabel(session, cell_id, body.label, user, body.version)
    return service.cell_out(session, cell)


@router.get("/cells/{cell_id}/image", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
def image(cell_id: int, request: Request, session: SessionDep, storage: StorageDep,
          _user: CurrentUser) -> Response:
    """The uploaded image; formats browsers may not show (TIFF, BMP ...) are sent as PNG."""
    cell = service.get_cell(session, cell_id)
    as_is = cell.media_type in SERVED_AS_IS
    headers = _cache_headers(cell.sha256 if as_is else f"{cell.sha256}.png")
    if _not_modified(request, headers):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    path = _stored(storage, cell.image_path, f"cell {cell_id}'s image")
    if as_is:
        return FileResponse(path, media_type=cell.media_type, headers=headers)
    from PIL import Image

    from app.ml.decode import decode_bytes

    buf = io.BytesIO()
    Image.fromarray(decode_bytes(path.read_bytes()).rgb).save(buf, "PNG")
    return Response(buf.getvalue(), media_type="image/png", headers=headers)


def _stored(storage: Storage, key: str, what: str) -> Path:
    """The file of a storage key; a 404 naming it when it is gone (a storage restored in part,
    a file removed by hand) instead of a bare 500."""
    path = storage.path(key)
    if not path.is_file():
        raise NotFound(f"{what} is missing from the storage folder ({key})")
    return path


def _cache_headers(tag: str) -> dict[str, str]:
    """ETag from the content hash (not FileResponse's mtime and size, which differ between
    storage copies of the same bytes)."""
    return {"ETag": f'"{tag}"', "Cache-Control": CACHE_CONTROL}


def _not_modified(request: Request, headers: dict[str, str]) -> bool:
    """If-None-Match names this ETag (weak or strong) or is `*`. Checked after authentication."""
    sent = request.headers.get("if-none-match")
    if not sent:
        return False
    tags = {t.strip().removeprefix("W/") for t in sent.split(",")}
    return "*" in tags or headers["ETag"] in tags


def _derived(key: str | None, request: Request, what: str, path: Callable[[], Path]) -> Response:
    """A thumbnail or overlay (JPEG); its storage key is named by content hash."""
    if key is None:
        raise NotFound(f"{what} yet (still processing or unreadable)")
    headers = _cache_headers(PurePosixPath(key).name)
    if _not_modified(request, headers):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return FileResponse(path(), media_type="image/jpeg", headers=headers)


@router.get("/cells/{cell_id}/thumbnail", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(cell_id: int, request: Request, session: SessionDep, storage: StorageDep,
              _user: CurrentUser) -> Response:
    key = service.get_cell(session, cell_id).thumbnail_path
    return _derived(key, request, f"cell {cell_id} has no thumbnail",
                    lambda: _stored(storage, key, f"cell {cell_id}'s thumbnail"))


@router.get("/cells/{cell_id}/gradcam", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}})
def gradcam(cell_id: int, request: Request, session: SessionDep, storage: StorageDep,
            _user: CurrentUser) -> Response:
    """The Grad-CAM heatmap of the predicted class over the cell (JPEG), drawn on first request."""
    cell = service.get_cell(session, cell_id)
    return _derived(cell.overlay_path, request, f"cell {cell_id} has no Grad-CAM overlay",
                    lambda: overlay_file(storage, cell))
