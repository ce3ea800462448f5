"""The Jinja2 environment of the pages and one `render` that every page and partial goes through."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.auth.sessions import CSRF_FIELD, CSRF_HEADER, csrf_token
from app.localtime import lab_time

ROOT = Path(__file__).resolve().parents[2]
templates = Jinja2Templates(directory=ROOT / "templates")


@pass_context
def when(context, value: datetime | None) -> str:
    """In the lab's time zone, to the second: labs compare these with instrument and LIS logs."""
    return lab_time(value, context["request"].app.state.settings.zone)


templates.env.filters["when"] = when


def render(request: Request, template: str, /, status_code: int = 200, headers: dict[str, str] | None = None,
           **context: Any) -> HTMLResponse:
    """A page or fragment with what every template may use: the user, the CSRF token, classes."""
    context.update(user=getattr(request.state, "user", None), csrf=csrf_token(request),
                   csrf_field=CSRF_FIELD, csrf_header=CSRF_HEADER)
    # Patient data on shared lab workstations: pages are never stored (images are, privately).
    headers = {"Cache-Control": "no-store", **(headers or {})}
    return templates.TemplateResponse(request, template, context, status_code=status_code, headers=headers)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"
