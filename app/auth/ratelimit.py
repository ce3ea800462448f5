"""The login rate limit: a moving window per client address and user name.

Counts are kept where every web process sees them: in the broker's Redis when the broker is
Redis (production, several web processes), in this process's memory otherwise (a laptop runs
one web process). A Redis that cannot be reached lets the attempt through (logged): the
password check still runs, and a lab is not locked out by an outage.
"""
from __future__ import annotations

import logging

from limits import parse
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)
# Per client IP and user name: guessing one account's password stays slow, and one
# technologist's typos never lock out the rest of the lab behind the same NAT.
LOGIN_LIMIT = parse("10/minute")
NAMESPACE = "marrow-login"
REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")


def storage_for(broker_url: str) -> Storage:
    """The `limits` storage for a broker URL: Redis for a Redis broker, else process memory."""
    if broker_url.startswith(REDIS_SCHEMES):
        return storage_from_string(broker_url, key_prefix=NAMESPACE)
    return MemoryStorage()


class LoginLimiter:
    def __init__(self, storage: Storage | None = None) -> None:
        self.storage = storage or MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self.storage)

    @classmethod
    def for_broker(cls, broker_url: str) -> LoginLimiter:
        return cls(storage_for(broker_url))

    def hit(self, client: str, name: str) -> bool:
        """Count one attempt; False when the window is full."""
        try:
            return self._limiter.hit(LOGIN_LIMIT, client, name.strip().lower())
        except ConfigurationError:
            raise
        except Exception:  # noqa: BLE001 - the storage's connection errors differ by backend
            log.warning("login rate limit storage unavailable; attempt not counted", exc_info=True)
            return True
