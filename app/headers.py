"""Security headers on every response, pages, API and files alike.

The pages carry sign-off and relabel buttons: no other site may frame them (clickjacking) or
receive a form of theirs; a stored cell image is never sniffed as anything but its type; and a
URL with an accession in its query does not leave the site in a Referer. Scripts and styles
are not restricted here (htmx evaluates its `hx-on` attributes)."""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"content-security-policy": b"frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'",
    b"referrer-policy": b"same-origin",
}


class SecurityHeaders:
    """Pure ASGI (no per-request task or body buffering, unlike BaseHTTPMiddleware): it adds
    the headers a response does not set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                       *((k, v) for k, v in HEADERS.items() if k not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
