"""Healthcheck for `marrow worker` (docker-compose.yml runs it in the worker container).

Exits 0 when a Celery worker on this host answers a ping through the broker (BROKER_URL), 1
otherwise. Imports only the settings and the Celery config, not torch, so it stays cheap.
"""
from __future__ import annotations

import socket
import sys

from app.config import get_settings
from app.queue import make_celery


def main(timeout: float = 5.0) -> int:
    host = socket.gethostname()
    replies = make_celery(get_settings().broker).control.ping(timeout=timeout)
    mine = sorted(name for reply in replies for name in reply if name.endswith("@" + host))
    print(f"workers on {host}: {', '.join(mine) or 'none answered'}")
    return 0 if mine else 1


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))
