"""The page of how the model does in this lab: its first pass against the signed labels."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.agreement.service import InvalidPeriod, Period, model_agreement
from app.deps import SessionDep, SettingsDep
from app.taxonomy.defaults import UNK
from app.web.auth import PageUser
from app.web.templating import render

router = APIRouter(include_in_schema=False)
DEFAULT_DAYS = 90  # the period the page opens with, ending today


def _day(text: str, name: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        raise InvalidPeriod(f"{name} {text!r} is not a date (YYYY-MM-DD)") from None


def _matrix(report: dict) -> dict:
    """The confusion as a table: the model's calls (UNK first) down, the signed labels across."""
    order = [UNK] + [c["code"] for c in report["categories"]]
    cells = {(c["model"], c["signed"]): c["cells"] for c in report["confusion"]}
    return {"rows": [code for code in order if any(m == code for m, _ in cells)],
            "columns": [code for code in order if any(s == code for _, s in cells)], "cells": cells}


@router.get("/model-agreement")
def agreement_page(request: Request, db: SessionDep, _user: PageUser, settings: SettingsDep,
                   since: str | None = None, until: str = "", model: str = "") -> Response:
    today = datetime.now(settings.zone).date()
    since = (today - timedelta(days=DEFAULT_DAYS)).isoformat() if since is None else since
    form = {"since": since, "until": until, "model": model[:80]}
    try:
        period = Period(_day(since, "since"), _day(until, "until"), model[:80] or None)
    except InvalidPeriod as exc:
        return render(request, "agreement.html", status_code=422, form=form, error=str(exc), report=None)
    report = model_agreement(db, period, settings.zone)
    return render(request, "agreement.html", form=form, report=report, matrix=_matrix(report), error=None)
