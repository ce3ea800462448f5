"""Errors the services raise; app.main turns them into HTTP answers with a clear message."""
from __future__ import annotations


class DomainError(Exception):
    status_code = 400


class Forbidden(DomainError):
    """The user may not do this (reopening a case someone else signed, as a reviewer)."""

    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """A signed case, a stale version, a sign-off while cells are still processing."""

    status_code = 409


class InvalidValue(DomainError):
    """A value the database cannot store (a NUL character in a text on PostgreSQL, say)."""

    status_code = 422


class Unavailable(DomainError):
    """The database cannot be reached (stopped, restarting): the same request works once it is back."""

    status_code = 503


class StorageFailed(DomainError):
    """The server could not write to its image storage (disk full, storage unmounted or read-only):
    the upload is refused whole, so nothing is half-saved, and says so instead of a bare 500."""

    status_code = 507
