"""The review screen: the gallery by class, one cell's detail, relabelling (one cell or many)."""
from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.cases import service as cases
from app.cells import service as cells
from app.deps import ClassesDep, SessionDep, SettingsDep
from app.errors import Conflict
from app.localtime import lab_time
from app.web.auth import Csrf, PageUser
from app.web.progress import progress
from app.taxonomy.defaults import UNK
from app.taxonomy.service import assignable
from app.web.review import (FILTERS, SORTS, TARGETS, case_categories, gallery, panel, parse_items,
                            target_or_default, tile)
from app.web.templating import render

router = APIRouter(include_in_schema=False)


def _view(sort: str, what: str) -> tuple[str, str]:
    return (sort if sort in SORTS else "confidence"), (what if what in FILTERS else "all")


@router.get("/cases/{case_id}/review")
def review(request: Request, case_id: int, db: SessionDep, _user: PageUser,
           sort: str = "confidence", show: str = "all", target: int = TARGETS[0]) -> Response:
    sort, show = _view(sort, show)
    case = cases.summary(db, case_id)
    categories = case_categories(db, case)  # the case's list, with the keys mapped now
    return render(request, "review.html", case=case, classes=categories, sort=sort, show=show, sorts=SORTS,
                  filters=FILTERS, groups=gallery(cells.rows(db, case_id), categories, sort, show),
                  panel=panel(case, categories, target_or_default(target)),
                  progress=progress(db, case_id, request.app.state.settings))


@router.get("/cases/{case_id}/gallery")
def gallery_fragment(request: Request, case_id: int, db: SessionDep, _user: PageUser,
                     sort: str = "confidence", show: str = "all") -> Response:
    sort, show = _view(sort, show)
    categories = case_categories(db, cases.summary(db, case_id))
    return render(request, "partials/gallery.html", case_id=case_id,
                  groups=gallery(cells.rows(db, case_id), categories, sort, show))


@router.get("/cells/{cell_id}/detail")
def cell_detail(request: Request, cell_id: int, db: SessionDep, _user: PageUser, classes: ClassesDep) -> Response:
    cell = cells.get_cell(db, cell_id)
    row = cells.rows(db, cell.case_id, cell_id)[0]
    return render(request, "partials/cell_detail.html", cell=tile(row), top3=row.top3 or [], quality=row.quality,
                  classes=classes, has_overlay=cell.overlay_path is not None, model_version=row.model_version)


@router.get("/cells/{cell_id}/examples")
def cell_examples(request: Request, cell_id: int, db: SessionDep, _user: PageUser) -> Response:
    """Signed examples (other cases') of the cell's top-3 classes and of its label."""
    cell = cells.get_cell(db, cell_id)
    row = cells.rows(db, cell.case_id, cell_id)[0]
    codes = [t["code"] for t in row.top3 or []]
    if row.label and row.label != UNK and row.label not in codes:
        codes.insert(0, row.label)
    names = {c.code: c.name for c in case_categories(db, cases.summary(db, cell.case_id))}
    cache = request.app.state.examples
    return render(request, "partials/examples.html", cell_id=cell_id,
                  rows=[{"code": code, "name": names.get(code, code),
                         "cells": cache.examples(db, code, exclude_case=cell.case_id)} for code in codes])


def _conflict(db: Session, case_id: int, cell_id: int, zone: ZoneInfo) -> tuple[str, bool]:
    """Who made the change that won, and when (what a second reviewer needs to decide);
    and whether the case is now locked, which ends the batch."""
    case = cases.summary(db, case_id)
    if case["signed_at"] is not None:
        return f"Case signed by {case['signed_by']} at {lab_time(case['signed_at'], zone)} — locked.", True
    row = cells.rows(db, case_id, cell_id)[0]
    at = f" at {lab_time(row.label_at, zone)}" if row.label_at else ""
    who = row.labelled_by or "the model"
    return f"Cell {row.filename} was changed by {who}{at} (now {row.label}); reload to see the latest.", False


@router.post("/cases/{case_id}/relabel", dependencies=[Csrf])
def relabel(request: Request, case_id: int, db: SessionDep, user: PageUser,
            settings: SettingsDep, items: Annotated[str, Form()], target: Annotated[int, Form()] = TARGETS[0],
            ) -> Response:
    """Each cell through the cells service (the PATCH /api/cells/{id} path: optimistic version
    check, audit); answers the message, the changed tiles and the differential (out of band)."""
    categories = case_categories(db, cases.summary(db, case_id))
    try:
        wanted = parse_items(items, assignable(categories))
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"bad relabel request: {exc}") from None
    changed, conflict = [], None
    for cell_id, version, label in wanted:
        if cells.get_cell(db, cell_id).case_id != case_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"cell {cell_id} is not in case {case_id}")
        try:
            cells.relabel(db, cell_id, label, user, version)
            changed.append(cell_id)
        except Conflict:
            conflict, locked = _conflict(db, case_id, cell_id, settings.zone)
            if locked:
                break
    touched = set(changed) | {cell_id for cell_id, _, _ in wanted}
    tiles = [tile(row) for row in cells.rows(db, case_id) if row.id in touched]
    case = cases.summary(db, case_id)
    labels = {label for _, _, label in wanted}
    message = conflict or (f"{len(changed)} cell{'s' * (len(changed) != 1)} → "
                           f"{labels.pop() if len(labels) == 1 else 'their previous classes'}")
    return render(request, "partials/relabel_result.html", status.HTTP_409_CONFLICT if conflict else 200,
                  message=message, error=bool(conflict), tiles=tiles,
                  panel=panel(case, categories, target_or_default(target)))
