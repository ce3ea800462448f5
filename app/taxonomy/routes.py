"""GET/PUT /api/taxonomy: the lab's category list (administrators edit it)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from app.deps import ClassesDep, CurrentUser, SessionDep
from app.taxonomy import service
from app.taxonomy.defaults import Category
from app.taxonomy.schemas import CategoryIn, CategoryOut

router = APIRouter(prefix="/api", tags=["taxonomy"])


@router.get("/taxonomy", response_model=list[CategoryOut])
def get_taxonomy(session: SessionDep, _user: CurrentUser, classes: ClassesDep) -> list[dict]:
    """The lab's current categories in display order. New cases are counted with this list;
    each case keeps the list it was created with (see `GET /api/cases/{id}`)."""
    return service.listing(service.lab_categories(session), classes)


@router.put("/taxonomy", response_model=list[CategoryOut])
def put_taxonomy(body: list[CategoryIn], session: SessionDep, user: CurrentUser, classes: ClassesDep) -> list[dict]:
    """Replace the whole list (administrators). 422 names every invalid row (unique codes and
    keys, reserved keys, lineages); existing cases are not changed."""
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrators only")
    new = [Category(c.code.strip().upper(), c.name, c.key.strip().lower(), c.counted, c.lineage) for c in body]
    return service.listing(service.replace(session, new), classes)
