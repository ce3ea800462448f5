"""The login tells nobody which accounts exist, and its rate limit holds across web processes."""
from __future__ import annotations

import statistics
import time

import pytest
from limits.storage import MemoryStorage

from app.auth.ratelimit import LOGIN_LIMIT, LoginLimiter
from app.users.service import set_active

from .conftest import csrf_of

TRIES = 15


class _NoLimit:
    def hit(self, client: str, name: str) -> bool:
        return True


def _median_login_s(client, csrf: str, name: str, times: list[float]) -> None:
    t = time.perf_counter()
    r = client.post("/login", data={"name": name, "password": "not the password", "csrf_token": csrf},
                    follow_redirects=False)
    times.append(time.perf_counter() - t)
    assert r.status_code == 401, r.text


@pytest.mark.lab_argon2
def test_unknown_name_takes_as_long_as_a_wrong_password(client, sessions, token):
    """Median of 15 interleaved tries each: a name that does not exist vs rita (exists) with a
    wrong password vs a disabled account; within 25 % of each other (all run Argon2 once)."""
    with sessions() as s:
        from app.users.service import create_user

        create_user(s, "dora", "reviewer", "a long password")
        set_active(s, "dora", False)
    client.app.state.login_limiter = _NoLimit()  # 45 attempts: measure the check, not the limit
    csrf = csrf_of(client)
    unknown: list[float] = []
    wrong: list[float] = []
    disabled: list[float] = []
    _median_login_s(client, csrf, "warm-up", [])
    for i in range(TRIES):
        _median_login_s(client, csrf, f"nobody-{i}", unknown)
        _median_login_s(client, csrf, "rita", wrong)
        _median_login_s(client, csrf, "dora", disabled)
    m_unknown, m_wrong, m_disabled = (statistics.median(t) for t in (unknown, wrong, disabled))
    print(f"median login: unknown name {1000 * m_unknown:.1f} ms, wrong password {1000 * m_wrong:.1f} ms, "
          f"disabled account {1000 * m_disabled:.1f} ms ({TRIES} tries each, interleaved)")
    assert abs(m_unknown - m_wrong) / m_wrong < 0.25
    assert abs(m_disabled - m_wrong) / m_wrong < 0.25


def test_laptop_limiter_counts_in_memory():
    limiter = LoginLimiter.for_broker("sqla+sqlite:///var/broker.sqlite")
    assert isinstance(limiter.storage, MemoryStorage)
    assert all(limiter.hit("10.0.0.1", "Rita") for _ in range(LOGIN_LIMIT.amount))
    assert not limiter.hit("10.0.0.1", "rita ")  # the same name, however typed
    assert limiter.hit("10.0.0.2", "rita") and limiter.hit("10.0.0.1", "sam")
