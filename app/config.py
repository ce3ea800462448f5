"""One Settings object: environment variables (and `.env`) with working laptop defaults.

Production changes only the environment: DATABASE_URL (PostgreSQL), BROKER_URL (Redis),
MARROW_DEVICE=cuda, MARROW_BATCH_SIZE, MARROW_STORAGE_DIR (storage every machine sees).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # Upload limits (see README, "Uploads").
    max_request_mb: int = 1024
    max_file_mb: int = 32
    max_files: int = 20_000  # image files per request, zip members included

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        """Sessions signed with a key everyone can read are forgeable: refuse it outside development."""
        if self.environment != "development" and self.secret_key == DEFAULT_SECRET:
            raise ValueError(f"MARROW_ENV={self.environment} needs its own MARROW_SECRET_KEY (the default "
                             f"development key would let anyone forge a login); set e.g. "
                             f"MARROW_SECRET_KEY=$(openssl rand -hex 32)")
        return self

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
    """The process-wide settings (read once)."""
    return Settings()
