"""docker-compose.yml, Dockerfile and .dockerignore, checked without Docker (none runs here).

The compose file must run the same commands with the same environment variables as the
integration test that starts the stack for real (test_production_stack.py), and every
variable it sets must be one the app's Settings reads.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from support.deployment import HEALTH_PATH, STACK_ENV_VARS, WEB_COMMAND, WORKER_COMMAND, WORKER_HEALTHCHECK

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"web", "worker", "redis", "postgres"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


# What an operator's .env gives docker compose (see the comment atop docker-compose.yml).
DOTENV = {"POSTGRES_PASSWORD": "pw-from-dotenv", "MARROW_SECRET_KEY": "secret-from-dotenv"}
_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        have = env.get(name)
        if op in (":-", "-"):
            return have if have not in (None, "") or (op == "-" and have is not None) else arg
        if op in (":?", "?") and not have:
            raise KeyError(f"{name}: {arg}")
        return have or ""
    return _VAR.sub(sub, value)


def env_of(service: dict, dotenv: dict[str, str] = DOTENV) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v), dotenv) for k, v in env.items()}


def named_mounts(service: dict) -> dict[str, str]:
    """container path -> named volume, for the short `volume:/path` form."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if not source.startswith((".", "/", "~")):
            out[target] = source
    return out


def test_services_and_commands(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    web, worker = services["web"]["command"], services["worker"]["command"]
    assert web[:len(WEB_COMMAND)] == WEB_COMMAND
    opts = dict(zip(web[len(WEB_COMMAND)::2], web[len(WEB_COMMAND) + 1::2]))
    assert opts == {"--host": "0.0.0.0", "--port": "8000"}, web
    assert any(str(p).endswith(":8000") for p in services["web"]["ports"])
    assert worker == WORKER_COMMAND
    assert services["web"]["image"] == services["worker"]["image"], "web and worker share one image"
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == "15"
    assert services["redis"]["image"].split(":")[0] == "redis"


def test_environment_matches_the_integration_test(compose):
    services = compose["services"]
    web, worker = env_of(services["web"]), env_of(services["worker"])
    for name, env in (("web", web), ("worker", worker)):
        missing = set(STACK_ENV_VARS) - env.keys()
        assert not missing, f"{name} lacks {missing}"
        db = urlsplit(env["DATABASE_URL"])
        assert db.scheme == "postgresql+psycopg" and db.hostname == "postgres" and db.port == 5432, db
        broker = urlsplit(env["BROKER_URL"])
        assert broker.scheme == "redis" and broker.hostname == "redis", broker
        assert env["MARROW_ENV"] == "production"
    for key in STACK_ENV_VARS:
        assert web[key] == worker[key], f"web and worker disagree on {key}"
    assert worker["MARROW_DEVICE"] == "cuda"
    postgres_env = env_of(services["postgres"])
    db = urlsplit(web["DATABASE_URL"])
    assert (db.username, db.path.lstrip("/")) == (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_DB"])
    # No default secrets in production: without them in .env, compose refuses to start.
    for var in DOTENV:
        with pytest.raises(KeyError, match=var):
            env_of(services["web"], {k: v for k, v in DOTENV.items() if k != var})
    assert db.password == DOTENV["POSTGRES_PASSWORD"] == postgres_env["POSTGRES_PASSWORD"]
    # The shipped model, where the Dockerfile puts the checkout (/app).
    assert web["MARROW_MODEL_DIR"] == "/app/models/rexnet150-marrow13"


def test_every_variable_is_read_by_the_app(compose):
    """A misspelt or unknown variable would be silently ignored, and production would run on
    the laptop defaults (SQLite, development mode)."""
    from app.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    known = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            known |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            known.add(alias.upper())
        else:
            known.add((prefix + (field.alias or name)).upper())
    for service in ("web", "worker"):
        unknown = sorted(k for k in env_of(compose["services"][service]) if k.upper() not in known)
        assert not unknown, (f"{service} sets {unknown}, which app.config.Settings does not read "
                             f"(it reads: {', '.join(sorted(known))})")


def test_volumes(compose):
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    data_dir = env_of(services["web"])["MARROW_DATA_DIR"]
    web_mounts, worker_mounts = named_mounts(services["web"]), named_mounts(services["worker"])
    assert data_dir in web_mounts and data_dir in worker_mounts, "MARROW_DATA_DIR must be a volume in both"
    assert web_mounts[data_dir] == worker_mounts[data_dir], "web and worker must share the image volume"
    pg_mounts = named_mounts(services["postgres"])
    assert "/var/lib/postgresql/data" in pg_mounts, "the database needs a named volume"
    assert pg_mounts["/var/lib/postgresql/data"] != web_mounts[data_dir]
    used = {v for s in services.values() for v in named_mounts(s).values()}
    assert used <= declared, f"undeclared volumes: {used - declared}"


def test_gpu_and_healthchecks(compose):
    services = compose["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert "deploy" not in services["web"], "only the worker needs the GPU"
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    web_check = " ".join(services["web"]["healthcheck"]["test"])
    assert f"127.0.0.1:8000{HEALTH_PATH}" in web_check
    assert services["worker"]["healthcheck"]["test"] == ["CMD", *WORKER_HEALTHCHECK]
    for name in ("web", "worker"):
        deps = services[name]["depends_on"]
        for dep in ("postgres", "redis"):
            assert deps[dep]["condition"] == "service_healthy", f"{name} must wait for a healthy {dep}"


def test_dockerfile_and_dockerignore():
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#") and not line.startswith((" ", "\t"))]
    froms = [rest for word, *rest in instructions if word == "FROM"]
    assert froms and froms[0][0].startswith("python:3.11-slim"), froms
    assert re.search(r"pip install (--no-deps )?-e \.", text), "the image installs the package (editable, /app)"
    assert re.search(r"COPY [^\n]*constraints\.txt", text) and "pip install -c constraints.txt -e ." in text, \
        "the image's dependencies at the versions the suite passed with"
    users = [rest[0] for word, *rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "run as a non-root user"
    assert any(word == "EXPOSE" and rest[0].strip() == "8000" for word, *rest in instructions)
    assert re.search(r"apt-get install [^\n]*postgresql-client", text), "pg_dump for `marrow backup` on PostgreSQL"
    assert re.search(r"apt-get install [^\n]*fonts-wqy-microhei", text), "the PDF report's CJK font"
    assert re.search(r"apt-get install [^\n]*fonts-noto-core", text), "the PDF report's Indic, Thai, ... fonts"
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "var"} <= ignored
    needed = {"app", "worker", "migrations", "templates", "static", "models", "alembic.ini", "pyproject.toml",
              "constraints.txt"}
    assert not (needed & ignored), f".dockerignore leaves out {needed & ignored}"
    healthcheck = WORKER_HEALTHCHECK[-1]
    assert (ROOT / healthcheck).is_file()
    assert healthcheck.split("/")[0] not in ignored or f"!{healthcheck}" in ignored, f"the image lacks {healthcheck}"
