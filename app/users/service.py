"""User accounts, password hashing (argon2) and API tokens (random, stored as sha256)."""
from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.users.models import ROLES, ApiToken, FirstRun, User

_hasher = PasswordHasher()
TOKEN_PREFIX = "md_"


def _token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash suffices (unlike passwords).
    return hashlib.sha256(token.encode()).hexdigest()


class SetupDone(Exception):
    """The first administrator exists already."""


def _new_user(session: Session, name: str, role: str, password: str) -> User:
    """A validated, not yet committed account."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 80:
        raise ValueError("user name must be 1 to 80 characters")
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    if get_by_name(session, name) is not None:
        raise ValueError(f"user {name!r} already exists")
    user = User(name=name, role=role, password_hash=_hasher.hash(password), active=True)
    session.add(user)
    return user


def create_user(session: Session, name: str, role: str, password: str) -> User:
    user = _new_user(session, name, role, password)
    session.commit()
    return user


def create_first_admin(session: Session, name: str, password: str) -> User:
    """The first-run administrator, at most once: the `FirstRun` row commits with it, and a
    second setup racing this one fails on that row's key (or on the same name)."""
    if has_users(session):
        raise SetupDone
    user = _new_user(session, name, "admin", password)
    try:
        session.flush()
        session.add(FirstRun(id=1, admin_id=user.id))
        session.commit()
    except IntegrityError:
        session.rollback()
        raise SetupDone from None
    return user


def list_users(session: Session) -> list[User]:
    """Every account, disabled ones too, by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def has_users(session: Session) -> bool:
    """False until the first administrator is created (the review pages' first-run setup)."""
    return session.scalar(select(User.id).limit(1)) is not None


def get_by_name(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def require(session: Session, name: str) -> User:
    user = get_by_name(session, name)
    if user is None:
        raise ValueError(f"no user named {name!r}")
    return user


def verify_password(user: User, password: str) -> bool:
    """For the login form of the review pages."""
    try:
        return user.active and _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def set_active(session: Session, name: str, active: bool) -> User:
    user = require(session, name)
    user.active = active
    session.commit()
    return user


def issue_token(session: Session, user: User) -> str:
    """A new API token; only its hash is kept, so this is the one time it is seen."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(token)))
    session.commit()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """The active user a token belongs to, or None (unknown token or disabled user)."""
    user = session.scalar(select(User).join(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    return user if user is not None and user.active else None
