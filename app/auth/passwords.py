"""Password hashing and checking (Argon2), in constant time whether or not the account exists."""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
_hasher = PasswordHasher()
# Verified against when there is no usable account, so that a login for an unknown or disabled
# name costs the same Argon2 work as a wrong password for a real one (no timing oracle; as
# fastapi/full-stack-fastapi-template's crud.authenticate does).
DUMMY_HASH = _hasher.hash("no such account: a dummy password to verify against")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"password must be at least {MIN_LENGTH} characters")


def verify(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing hash (no account) is checked against
    DUMMY_HASH and fails, after the same work."""
    try:
        return _hasher.verify(password_hash or DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
