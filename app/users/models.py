"""Users, their API tokens (only hashes are stored) and the accounts' history."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow

# Reviewers classify and sign; pathologists too, and MARROW_SIGN_ROLES can leave signing to
# them; administrators also manage accounts and categories.
ROLES = ("admin", "pathologist", "reviewer")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="tokens")


class FirstRun(Base):
    """The one row saying the first-run setup is done. Its fixed primary key makes two setups
    submitted at the same instant collide in the database, so exactly one administrator is
    created; a check of "no users yet" alone would let both through."""

    __tablename__ = "first_run"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AccountAction(enum.StrEnum):
    """What an account event records (stored as its value, at most 16 characters)."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"  # a wrong password, a disabled account or a name nobody has
    CREATE = "create"  # detail: the role (and first_run for the first administrator)
    DISABLE = "disable"
    ENABLE = "enable"
    PASSWORD_SET = "password_set"  # by an administrator or the command line
    PASSWORD_CHANGE = "password_change"  # by the user, with the current password
    TOKEN_ISSUE = "token_issue"
    TOKEN_REVOKE = "token_revoke"  # detail: how many


class AccountEvent(Base):
    """Who did what to which account, from where: append-only, like the case audit log (the
    migration adds triggers refusing UPDATE and DELETE)."""

    __tablename__ = "account_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    action: Mapped[str] = mapped_column(String(16))  # an AccountAction
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)  # None: a name nobody has
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: the command line, or nobody
    client: Mapped[str | None] = mapped_column(String(64))  # the request's address; None: the command line
    detail: Mapped[dict | None] = mapped_column(JSON)
