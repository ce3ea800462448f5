from __future__ import annotations

import io

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, Response

from app.cases.service import get_case
from app.cells import service
from app.cells.schemas import CellOut, Relabel
from app.deps import ClassesDep, CurrentUser, SessionDep, StorageDep
from app.errors import NotFound

router = APIRouter(prefix="/api", tags=["cells"])
SERVED_AS_IS = {"image/jpeg", "image/png"}
CACHE = {"Cache-Control": "private, max-age=86400"}  # paths are content hashes: never stale


@router.get("/cases/{case_id}/cells", response_model=list[CellOut])
def list_cells(case_id: int, session: SessionDep, _user: CurrentUser) -> list[dict]:
    get_case(session, case_id)
    return service.list_cells(session, case_id)


@router.get("/cells/{cell_id}", response_model=CellOut)
def get_cell(cell_id: int, session: SessionDep, _user: CurrentUser) -> dict:
    return service.cell_out(session, service.get_cell(session, cell_id))


@router.patch("/cells/{cell_id}", response_model=CellOut)
def relabel(cell_id: int, body: Relabel, session: SessionDep, user: CurrentUser, classes: ClassesDep) -> dict:
    """Set the reviewer's label; 409 when the case is signed or `version` is stale."""
    codes = [c.code for c in classes]
    if body.label not in codes:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"unknown class {body.label!r}; expected one of {', '.join(codes)}")
    cell = service.relabel(session, cell_id, body.label, user, body.version)
    return service.cell_out(session, cell)


@router.get("/cells/{cell_id}/image", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
def image(cell_id: int, session: SessionDep, storage: StorageDep, _user: CurrentUser) -> Response:
    """The uploaded image; formats browsers may not show (TIFF, BMP ...) are sent as PNG."""
    cell = service.get_cell(session, cell_id)
    if cell.media_type in SERVED_AS_IS:
        return FileResponse(storage.path(cell.image_path), media_type=cell.media_type, headers=CACHE)
    from PIL import Image

    from app.ml.decode import decode_bytes

    buf = io.BytesIO()
    Image.fromarray(decode_bytes(storage.read(cell.image_path)).rgb).save(buf, "PNG")
    return Response(buf.getvalue(), media_type="image/png", headers=CACHE)


def _derived(cell_id: int, session, storage, attr: str, media_type: str, what: str) -> FileResponse:
    key = getattr(service.get_cell(session, cell_id), attr)
    if key is None:
        raise NotFound(f"cell {cell_id} has no {what} yet (still processing or unreadable)")
    return FileResponse(storage.path(key), media_type=media_type, headers=CACHE)


@router.get("/cells/{cell_id}/thumbnail", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(cell_id: int, session: SessionDep, storage: StorageDep, _user: CurrentUser) -> FileResponse:
    return _derived(cell_id, session, storage, "thumbnail_path", "image/jpeg", "thumbnail")


@router.get("/cells/{cell_id}/gradcam", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}})
def gradcam(cell_id: int, session: SessionDep, storage: StorageDep, _user: CurrentUser) -> FileResponse:
    """The Grad-CAM heatmap of the predicted class over the cell (JPEG)."""
    return _derived(cell_id, session, storage, "overlay_path", "image/jpeg", "Grad-CAM overlay")
