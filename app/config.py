"""One Settings object: environment variables (and `.env`) with working laptop defaults.

Production changes only the environment: DATABASE_URL (PostgreSQL), BROKER_URL (Redis),
MARROW_DEVICE=cuda, MARROW_BATCH_SIZE, MARROW_STORAGE_DIR (storage every machine sees).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.localtime import time_zone

DEFAULT_SECRET = "dev-insecure-change-me"
MiB = 1024 * 1024
# The shipped default model (= app.ml.card.SHIPPED_MODEL, which the ML side and the `marrow`
# commands use; spelled out here so this core module does not reach into app/ml; a test keeps
# the two equal).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "rexnet150-marrow13"
# MARROW_BACKEND's values: "auto" and app.ml.backends.BACKENDS, spelled out for the same reason
# (a test keeps them equal); `marrow` offers the same list.
BackendName = Literal["auto", "onnx", "openvino-fp32", "openvino-bf16", "openvino-int8", "torch"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)
# The account roles (= app.users.models.ROLES, spelled out for the same reason; a test keeps them equal).
ROLE_NAMES = ("admin", "pathologist", "reviewer")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARROW_", env_file=".env", extra="ignore",
                                      protected_namespaces=(), populate_by_name=True)

    # MARROW_ENV is what docker-compose.yml and the docs set; MARROW_ENVIRONMENT is accepted too.
    environment: Literal["development", "production"] = Field(
        "development", validation_alias=AliasChoices("MARROW_ENV", "MARROW_ENVIRONMENT"))
    secret_key: str = DEFAULT_SECRET
    data_dir: Path = Path("var")
    # Not MARROW_-prefixed: the names every PostgreSQL/Redis deployment already uses.
    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL", "MARROW_DATABASE_URL"))
    broker_url: str | None = Field(None, validation_alias=AliasChoices("BROKER_URL", "MARROW_BROKER_URL"))
    storage_dir: Path | None = None  # images, thumbnails, overlays; default <data_dir>/storage

    model_dir: Path = DEFAULT_MODEL_DIR
    model_cache_dir: Path | None = None  # the exported graph of the weights; default <data_dir>/model-cache
    device: Literal["cpu", "cuda"] = "cpu"
    # MARROW_BACKEND: "auto" picks the fastest the CPU supports and verifies it at load (falls
    # back to onnx, fp32); a name forces that backend (see app.ml.backends).
    backend: BackendName = "auto"
    # Cells per forward pass; unset: the measured default for the device, app.ml.pipeline's
    # DEFAULT_BATCH_SIZE (cpu 4, cuda 8; see docs/bench-ml.md), applied by the worker.
    batch_size: int | None = Field(None, ge=1)
    task_cells: int = Field(128, ge=1)  # cells per queued task: the unit a dead worker redoes
    repair: bool = True  # unsharp masking of blurry cells before classification
    # MARROW_TIMEZONE: how pages and the PDF write times (IANA name); stored times stay UTC.
    timezone: str = "UTC"
    # A browser session left idle this long is logged out (shared lab workstations); 0: only the
    # 12-hour limit of every session.
    session_idle_minutes: int = Field(30, ge=0)
    # MARROW_SIGN_ROLES: the roles whose accounts may sign a case off (comma-separated); a lab
    # where technologists classify and pathologists sign sets `pathologist,admin`.
    sign_roles: str = ",".join(ROLE_NAMES)

    # Upload limits (see README, "Uploads").
    max_request_mb: int = Field(1024, ge=1)
    max_file_mb: int = Field(32, ge=1)
    max_files: int = Field(20_000, ge=1)  # image files per request, zip members included

    @field_validator("sign_roles")
    @classmethod
    def _roles(cls, value: str) -> str:
        roles = [r.strip() for r in value.split(",") if r.strip()]
        if not roles or set(roles) - set(ROLE_NAMES):
            raise ValueError(f"give one or more of {', '.join(ROLE_NAMES)}, separated by commas")
        return ",".join(roles)

    @field_validator("timezone")
    @classmethod
    def _a_time_zone(cls, name: str) -> str:
        time_zone(name)
        return name

    @field_validator("database_url")
    @classmethod
    def _a_database_url(cls, url: str | None) -> str | None:
        """Refused at start, not at the first query with a traceback."""
        if url is not None:
            try:
                make_url(url)
            except (ArgumentError, ValueError):  # no scheme; a port that is not a number
                raise ValueError("not a database URL (e.g. postgresql+psycopg://user:password@host/marrow)") from None
        return url

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        """Sessions signed with a key everyone can read are forgeable: refuse it outside development."""
        if self.environment != "development" and self.secret_key == DEFAULT_SECRET:
            raise ValueError(f"MARROW_ENV={self.environment} needs its own MARROW_SECRET_KEY (the default "
                             f"development key would let anyone forge a login); set e.g. "
                             f"MARROW_SECRET_KEY=$(openssl rand -hex 32)")
        return self

    @property
    def signers(self) -> frozenset[str]:
        return frozenset(self.sign_roles.split(","))

    @property
    def zone(self) -> ZoneInfo:
        return time_zone(self.timezone)

    @property
    def storage_path(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'marrow.sqlite').resolve()}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @property
    def model_cache(self) -> Path:
        return self.model_cache_dir or self.data_dir / "model-cache"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once). A bad value is refused naming the variable a lab
    set (`MARROW_BATCH_SIZE='0': ...`), not pydantic's field name and a link."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ValueError("invalid setting: " + "; ".join(_setting_error(e) for e in exc.errors())) from exc


def _setting_error(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    loc = error.get("loc") or ()
    if not loc:  # a check across settings (the secret key): its message names the variables
        return message
    field = Settings.model_fields.get(str(loc[0]))
    name = f"MARROW_{str(loc[0]).upper()}" if field is not None and field.validation_alias is None else str(loc[0])
    if "URL" in name or "SECRET" in name:  # may hold a password: never printed
        return f"{name}: {message}"
    return f"{name}={error.get('input')!r}: {message}"
