"""Typed FastAPI dependencies shared by every router: settings, database session, current user.

`current_user` accepts a bearer token, else the review pages' session cookie (app.web.session),
so the pages can fetch images and CSVs from the same routes.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.config import Settings
from app.ml.card import CellClass
from app.storage import Storage
from app.users.models import User
from app.users.service import user_for_token
from app.web.session import browser_user

_bearer = HTTPBearer(auto_error=False, description="`marrow token NAME` prints one")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_classes(request: Request) -> tuple[CellClass, ...]:
    return request.app.state.classes


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
ClassesDep = Annotated[tuple[CellClass, ...], Depends(get_classes)]


def current_user(request: Request, session: SessionDep,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> User:
    if credentials is not None and credentials.scheme.lower() == "bearer":
        user = user_for_token(session, credentials.credentials)
        if user is not None:
            return user
    elif (user := browser_user(request, session)) is not None:
        return user
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API token is required",
                        headers={"WWW-Authenticate": "Bearer"})


CurrentUser = Annotated[User, Depends(current_user)]
