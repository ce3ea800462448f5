"""The accounts' history: logins, failed logins, accounts created, disabled, enabled, passwords
and API tokens, with who did it and from which address. Events join the caller's transaction,
so each commits with the change it describes; each is also one log line."""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from app.users.models import AccountAction, AccountEvent, User

log = logging.getLogger(__name__)
COMMAND_LINE = "command line"
WHAT = {AccountAction.LOGIN: "logged in", AccountAction.LOGIN_FAILED: "failed login",
        AccountAction.CREATE: "account created", AccountAction.DISABLE: "account disabled",
        AccountAction.ENABLE: "account enabled", AccountAction.PASSWORD_SET: "password set",
        AccountAction.PASSWORD_CHANGE: "password changed by its user",
        AccountAction.TOKEN_ISSUE: "API token issued", AccountAction.TOKEN_REVOKE: "API tokens revoked"}


def _what(action: str, detail: dict) -> str:
    """The event in words, as the Users page lists it."""
    extra = ", ".join(f"{k.replace('_', ' ')} {v}" if not isinstance(v, bool) else k.replace("_", " ")
                      for k, v in detail.items())
    return WHAT.get(action, action) + (f" ({extra})" if extra else "")


def record(session: Session, action: str, user: User | None, *, by: User | None = None,
           client: str | None = None, detail: dict | None = None) -> None:
    """`user`: the account concerned (None for a name nobody has); `by`: who acted (None: the
    command line, or an anonymous login); `client`: the request's address (None: the command line)."""
    session.add(AccountEvent(action=action, user_id=user.id if user else None, actor_id=by.id if by else None,
                             client=client[:64] if client else None, detail=detail))
    log.info("account %s: %s by %s from %s", action, user.name if user else "(no such account)",
             by.name if by else "-", client or COMMAND_LINE)


def recent(session: Session, limit: int = 50, of: User | None = None) -> list[dict]:
    """The newest events first; `of`: only those concerning this account."""
    actor = aliased(User)
    query = (select(AccountEvent, User.name, actor.name).outerjoin(User, User.id == AccountEvent.user_id)
             .outerjoin(actor, actor.id == AccountEvent.actor_id).order_by(AccountEvent.id.desc()).limit(limit))
    rows = session.execute(query if of is None else query.where(AccountEvent.user_id == of.id)).all()
    return [{"at": e.at, "action": e.action, "what": _what(e.action, e.detail or {}), "user": name, "by": by,
             "client": e.client or COMMAND_LINE} for e, name, by in rows]
