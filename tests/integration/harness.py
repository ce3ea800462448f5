"""Helpers for the integration tests: free ports, bounded waits, process-group teardown."""
from __future__ import annotations

from app.localstack import (  # noqa: F401 - re-exported: the tests import them from here
    NOT_READY,
    START_TIMEOUT_S,
    free_port,
    log_tail,
    stop_process_group,
    wait_for,
)

# The production stack: what test_production_stack.py runs and docker-compose.yml must run too.
WEB_COMMAND = ["marrow", "web"]
WORKER_COMMAND = ["marrow", "worker"]
STACK_ENV_VARS = ("DATABASE_URL", "BROKER_URL", "MARROW_DATA_DIR", "MARROW_MODEL_DIR", "MARROW_ENV")
HEALTH_PATH = "/api/health"  # answered without a token: the compose healthcheck polls it
WORKER_HEALTHCHECK = ["python", "scripts/worker_healthcheck.py"]  # the worker's compose healthcheck

