"""User accounts: creation, the first-run administrator, enabling and disabling, passwords,
login checks.

Passwords are hashed by app.auth.passwords (Argon2); API tokens live in app.auth.tokens. Every
change, login and failed login is written to the accounts' history (app.users.history) in the
same transaction: `by` is who acted (None: the command line), `client` the request's address.
Errors are domain errors (app.errors): the API and the pages turn them into HTTP answers in one
place each (app.main, app.web.install).
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import passwords
from app.errors import DomainError, NotFound
from app.users import history
from app.users.models import ROLES, AccountAction, FirstRun, User


class SetupDone(Exception):
    """The first administrator exists already."""


class InvalidUser(DomainError, ValueError):
    """A name, role or password the service refuses (the message says which and why)."""

    status_code = 422


class WrongPassword(DomainError):
    """The current password given to change it is not the account's."""

    status_code = 403


class UserNotFound(NotFound):
    def __init__(self, name: str):
        super().__init__(f"no user named {name!r}")
        self.name = name


def _check_strength(password: str) -> None:
    try:
        passwords.check_strength(password)
    except ValueError as exc:
        raise InvalidUser(str(exc)) from None


def _password_hash(password: str) -> str:
    """The stored hash of an acceptable password."""
    _check_strength(password)
    return passwords.hash_password(password)


def _new_user(session: Session, name: str, role: str, password: str) -> User:
    """A validated, not yet committed account."""
    if role not in ROLES:
        raise InvalidUser(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 80:
        raise InvalidUser("user name must be 1 to 80 characters")
    _check_strength(password)
    if get_by_name(session, name) is not None:
        raise InvalidUser(f"user {name!r} already exists")
    user = User(name=name, role=role, password_hash=passwords.hash_password(password), active=True)
    session.add(user)
    return user


def create_user(session: Session, name: str, role: str, password: str, *, by: User | None = None,
                client: str | None = None) -> User:
    user = _new_user(session, name, role, password)
    session.flush()
    history.record(session, AccountAction.CREATE, user, by=by, client=client, detail={"role": role})
    session.commit()
    return user


def create_first_admin(session: Session, name: str, password: str, *, client: str | None = None) -> User:
    """The first-run administrator, at most once: the `FirstRun` row commits with it, and a
    second setup racing this one fails on that row's key (or on the same name)."""
    if has_users(session):
        raise SetupDone
    try:
        user = _new_user(session, name, "admin", password)
    except InvalidUser:
        if has_users(session):  # the same name, from a setup that committed meanwhile
            raise SetupDone from None
        raise
    try:
        session.flush()
        session.add(FirstRun(id=1, admin_id=user.id))
        history.record(session, AccountAction.CREATE, user, by=user, client=client,
                       detail={"role": "admin", "first_run": True})
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
        raise UserNotFound(name)
    return user


def verify_password(user: User, password: str) -> bool:
    """The password is the user's and the account is active (the hash is checked either way)."""
    return passwords.verify(user.password_hash, password) and user.active


def authenticate(session: Session, name: str, password: str, *, client: str | None = None) -> User | None:
    """The active user with this name and password, or None; either is recorded. An unknown
    name or a disabled account costs the same Argon2 verification and the same history write
    as a wrong password (no timing oracle). A name nobody has is not kept: it may be a password
    typed into the wrong field."""
    user = get_by_name(session, name)
    if user is None:
        passwords.verify(None, password)
        ok = False
    else:
        ok = verify_password(user, password)
    history.record(session, AccountAction.LOGIN if ok else AccountAction.LOGIN_FAILED, user,
                   by=user if ok else None, client=client)
    session.commit()
    return user if ok else None


def set_active(session: Session, name: str, active: bool, *, by: User | None = None,
               client: str | None = None) -> User:
    user = require(session, name)
    user.active = active
    history.record(session, AccountAction.ENABLE if active else AccountAction.DISABLE, user, by=by, client=client)
    session.commit()
    return user


def set_password(session: Session, name: str, password: str, *, by: User | None = None,
                 client: str | None = None) -> User:
    """An administrator's reset (a forgotten or shared password). The account's browser sessions
    end at their next request (app.auth.sessions); its API tokens stay valid."""
    user = require(session, name)
    user.password_hash = _password_hash(password)
    history.record(session, AccountAction.PASSWORD_SET, user, by=by, client=client)
    session.commit()
    return user


def change_password(session: Session, user: User, current: str, new: str, *, client: str | None = None) -> None:
    """The user's own change: only with the current password, and to a different one."""
    if not passwords.verify(user.password_hash, current):
        raise WrongPassword("the current password is wrong")
    if passwords.verify(user.password_hash, new):
        raise InvalidUser("the new password is the current one; choose another")
    user.password_hash = _password_hash(new)
    history.record(session, AccountAction.PASSWORD_CHANGE, user, by=user, client=client)
    session.commit()
