"""With a Redis broker the login limit is counted in that Redis: two web processes share it."""
from __future__ import annotations

import redis
from limits.storage import RedisStorage

from app.auth.ratelimit import LOGIN_LIMIT, LoginLimiter
from app.config import Settings


def test_two_web_processes_share_one_count_in_the_brokers_redis(redis_url, tmp_path):
    redis.Redis.from_url(redis_url).flushdb()
    first, second = LoginLimiter.for_broker(redis_url), LoginLimiter.for_broker(redis_url)
    assert isinstance(first.storage, RedisStorage)
    half = LOGIN_LIMIT.amount // 2
    assert all(first.hit("10.0.0.1", "rita") for _ in range(half))
    assert all(second.hit("10.0.0.1", "rita") for _ in range(LOGIN_LIMIT.amount - half))
    assert not first.hit("10.0.0.1", "rita") and not second.hit("10.0.0.1", "rita")
    assert second.hit("10.0.0.2", "rita")  # another client is counted apart


def test_the_app_takes_its_limiter_storage_from_the_broker_url(redis_url, tmp_path, random_checkpoint):
    from app.main import create_app

    app = create_app(Settings(_env_file=None, data_dir=tmp_path, model_dir=random_checkpoint, broker_url=redis_url))
    assert isinstance(app.state.login_limiter.storage, RedisStorage)
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, model_dir=random_checkpoint))
    assert not isinstance(app.state.login_limiter.storage, RedisStorage)
