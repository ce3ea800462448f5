"""API tokens: random, shown once, stored only as a sha256 hash."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.users import history
from app.users.models import AccountAction, ApiToken, User

TOKEN_PREFIX = "md_"


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash suffices (unlike passwords).
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User, *, by: User | None = None, client: str | None = None) -> str:
    """A new API token; only its hash is kept, so this is the one time it is seen."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=token_hash(token)))
    history.record(session, AccountAction.TOKEN_ISSUE, user, by=by, client=client)
    session.commit()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """The active user a token belongs to, or None (unknown token or disabled user)."""
    user = session.scalar(select(User).join(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    return user if user is not None and user.active else None


def revoke_tokens(session: Session, user: User, *, by: User | None = None, client: str | None = None) -> int:
    """Remove every token of the user (a leaked one cannot be told apart: only hashes are kept);
    returns how many there were."""
    removed = session.execute(delete(ApiToken).where(ApiToken.user_id == user.id)).rowcount
    history.record(session, AccountAction.TOKEN_REVOKE, user, by=by, client=client, detail={"tokens": removed})
    session.commit()
    return removed
