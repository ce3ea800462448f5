"""A bad setting stops every `marrow` command at start naming the variable a lab set, its value
(never for a URL or a key, which may hold a password) and what it must be."""
from __future__ import annotations

import os
import subprocess

import pytest

from app.cli import marrow_command
from app.config import get_settings


@pytest.fixture
def fresh_settings(monkeypatch, tmp_path):
    for name in [k for k in os.environ if k.startswith("MARROW_") or k in ("DATABASE_URL", "BROKER_URL")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env here
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.parametrize("name, value, message", [
    ("MARROW_BATCH_SIZE", "0", "MARROW_BATCH_SIZE='0': Input should be greater than or equal to 1"),
    ("MARROW_MAX_FILES", "0", "MARROW_MAX_FILES='0': Input should be greater than or equal to 1"),
    ("MARROW_BACKEND", "tensorrt", "MARROW_BACKEND='tensorrt': Input should be 'auto', 'onnx', "),
    ("MARROW_DEVICE", "gpu", "MARROW_DEVICE='gpu': Input should be 'cpu' or 'cuda'"),
    ("MARROW_ENV", "staging", "MARROW_ENV='staging': Input should be 'development' or 'production'"),
    ("MARROW_ENV", "production", "MARROW_ENV=production needs its own MARROW_SECRET_KEY"),
    ("DATABASE_URL", "postgresql://marrow:s3cret@db:port/marrow", "DATABASE_URL: not a database URL"),
    ("MARROW_SIGN_ROLES", "pathologist,chief", "MARROW_SIGN_ROLES='pathologist,chief': give one or more of admin, "
                                               "pathologist, reviewer, separated by commas"),
    ("MARROW_TIMEZONE", "Europe/Berln", "MARROW_TIMEZONE='Europe/Berln': not a time zone; give an IANA name"),
])
def test_a_bad_setting_names_the_variable(fresh_settings, name, value, message):
    fresh_settings.setenv(name, value)
    with pytest.raises(ValueError) as refused:
        get_settings()
    assert str(refused.value).startswith(f"invalid setting: {message}")
    assert "s3cret" not in str(refused.value) and "errors.pydantic.dev" not in str(refused.value)


def test_marrow_refuses_it_at_start_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARROW_")}
    env.update(MARROW_DATA_DIR=str(tmp_path), MARROW_BATCH_SIZE="-3")
    r = subprocess.run(marrow_command("worker"), env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (2, "marrow worker: error: invalid setting: MARROW_BATCH_SIZE='-3': "
                                           "Input should be greater than or equal to 1\n")
    assert not (tmp_path / "marrow.sqlite").exists()
