"""The integration harness itself: the Redis and PostgreSQL it starts are real and reachable."""
from __future__ import annotations

import redis
import sqlalchemy as sa


def test_redis_is_real_and_loopback(redis_url):
    assert redis_url.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.set("marrow-it", "1")
    assert client.get("marrow-it") == b"1"
    config = client.config_get("bind")["bind"]
    assert config.split() == ["127.0.0.1"]
    assert client.config_get("save")["save"] == ""
    assert client.config_get("appendonly")["appendonly"] == "no"


def test_postgres_is_real_and_loopback(postgres_url, fresh_postgres_url):
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        listen = conn.execute(sa.text("SHOW listen_addresses")).scalar_one()
        conn.execute(sa.text("CREATE TABLE t (x int)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert conn.execute(sa.text("SELECT sum(x) FROM t")).scalar_one() == 1
    engine.dispose()
    assert int(version.split(".")[0]) >= 15
    assert listen == "127.0.0.1"
    other = sa.create_engine(fresh_postgres_url)
    with other.connect() as conn:  # a separate, empty database
        assert conn.execute(sa.text("SELECT to_regclass('t')")).scalar_one() is None
    other.dispose()
