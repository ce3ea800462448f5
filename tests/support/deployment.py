"""What the production stack runs: the commands, environment and health checks that
tests/integration/test_production_stack.py starts and docker-compose.yml must agree with."""
from __future__ import annotations

# The production stack: what test_production_stack.py runs and docker-compose.yml must run too.
WEB_COMMAND = ["marrow", "web"]
WORKER_COMMAND = ["marrow", "worker"]
STACK_ENV_VARS = ("DATABASE_URL", "BROKER_URL", "MARROW_DATA_DIR", "MARROW_MODEL_DIR", "MARROW_ENV")
HEALTH_PATH = "/api/health"  # answered without a token: the compose healthcheck polls it
WORKER_HEALTHCHECK = ["python", "scripts/worker_healthcheck.py"]  # the worker's compose healthcheck

