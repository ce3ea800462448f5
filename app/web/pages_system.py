"""The administrators' System page: is everything there that cells need to be classified?
Workers (alive, backend, the CPU units it was chosen by, load-time check), the cells waiting
for them, the image storage's room, the model, the database's schema, the fonts the PDF report
draws other scripts with, and whether the Python packages are the versions MarrowDiff was
tested with."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import make_url

from app import package_versions
from app.cells.service import waiting
from app.db import schema_revision
from app.deps import SessionDep, SettingsDep, StorageDep
from app.ml.card import card_in
from app.processing.runtime import ALIVE_S, read_reports
from app.reports import fonts
from app.storage import Storage
from app.web.auth import AdminUser
from app.web.templating import render

router = APIRouter(include_in_schema=False)


def _storage(storage: Storage) -> dict:
    unwritable = storage.writable()  # as /api/ready asks (it creates the folder on a new install)
    try:
        usage = shutil.disk_usage(storage.root)
    except OSError as exc:
        return {"root": str(storage.root), "error": unwritable or exc.strerror or str(exc)}
    return {"root": str(storage.root), "free_gb": usage.free / 1e9, "total_gb": usage.total / 1e9,
            "unwritable": unwritable}


def _packages() -> dict:
    path = package_versions.CONSTRAINTS
    try:
        return {"constraints": path, "differ": package_versions.differences(path)}
    except OSError as exc:
        return {"constraints": path, "error": exc.strerror or str(exc)}


@router.get("/admin/system")
def system_page(request: Request, db: SessionDep, _admin: AdminUser, settings: SettingsDep,
                storage: StorageDep) -> Response:
    url = make_url(settings.db_url)
    workers = [{**w, "seen": datetime.fromtimestamp(w["seen_at"], UTC)} for w in read_reports(settings)]
    return render(request, "admin_system.html", workers=workers, alive_s=int(ALIVE_S), queue=waiting(db),
                  storage=_storage(storage), card=card_in(settings.model_dir),
                  model_dir=settings.model_dir, backend=settings.backend,
                  fonts={"cjk": fonts.cjk_file(), "noto": fonts.noto_fonts(), "noto_dir": fonts.NOTO_DIR},
                  packages=_packages(),
                  database={"kind": url.get_backend_name(), "where": url.database if url.get_backend_name() == "sqlite"
                            else f"{url.host}:{url.port or 5432}/{url.database}", "revision": schema_revision(db)})
