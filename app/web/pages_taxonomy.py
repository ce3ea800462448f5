"""The administrators' page for the lab's category list (codes, names, keys, counted, lineage)."""
from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import RedirectResponse, Response

from app.deps import ClassesDep, SessionDep
from app.taxonomy import service
from app.taxonomy.defaults import LINEAGES, RESERVED_KEYS, Category
from app.web.auth import AdminUser, Csrf
from app.web.templating import render

router = APIRouter(include_in_schema=False)
BLANK_ROWS = 2  # empty rows at the end of the form, to add categories


def _page(request: Request, rows: list[dict], status_code: int = 200, error: str | None = None) -> Response:
    rows = rows + [{"code": "", "name": "", "key": "", "counted": True, "lineage": "", "predicted_by_model": False}
                   for _ in range(BLANK_ROWS)]
    return render(request, "admin_categories.html", status_code, rows=rows, lineages=LINEAGES,
                  reserved=sorted(RESERVED_KEYS), error=error)


@router.get("/admin/categories")
def categories_page(request: Request, db: SessionDep, _admin: AdminUser, classes: ClassesDep) -> Response:
    return _page(request, service.listing(service.lab_categories(db), classes))


@router.post("/admin/categories", dependencies=[Csrf])
async def save_categories(request: Request, db: SessionDep, _admin: AdminUser, classes: ClassesDep) -> Response:
    """Rows come as parallel fields (code, name, key, counted, lineage); a row with no code is
    dropped (how a category is removed). Invalid: the page again, with every problem named."""
    form = await request.form()
    fields = {f: form.getlist(f) for f in ("code", "name", "key", "counted", "lineage")}
    categories = [Category(code.strip().upper(), name.strip(), key.strip().lower(), counted == "yes", lineage)
                  for code, name, key, counted, lineage in zip(*fields.values()) if code.strip()]
    try:
        service.replace(db, categories)
    except service.InvalidCategories as exc:
        rows = [{**c.as_dict(), "predicted_by_model": False} for c in categories]
        return _page(request, rows, status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    return RedirectResponse("/admin/categories?saved=1", status.HTTP_303_SEE_OTHER)
