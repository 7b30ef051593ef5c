"""Pytest plugin: real Redis and upstream servers on 127.0.0.1 for the suite.

Enabled with ``pytest_plugins = ["tests.servers"]`` in ``tests/conftest.py``.

Fixtures:

- ``redis_server`` (session): a :class:`~demo_flask.services.RedisServer` on a
  free port, started for the session. Never the developer's Redis: ``REDIS_URL``
  is cleared for the session (tests/isolation.py); only a URL in
  ``AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED``, whose name says the suite flushes
  that database, is used instead (an :class:`~demo_flask.services.ExternalRedis`).
  Tests that kill or restart Redis must start their own ``RedisServer``
  instead of touching this shared one.
- ``redis_url`` (session): its URL.
- ``upstream`` (session): the demo's dog service
  (:class:`~demo_flask.services.UpstreamServer`), with the dog names seeded
  into ``redis_url``.
- ``clean_redis`` (function): empties the Redis database, re-seeds the dog
  names and returns ``redis_url``.
- ``redis_sync`` (function): a ``redis.Redis`` client on ``redis_url``,
  closed after the test.

Every server is stopped at teardown, even when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from demo_flask.services import ExternalRedis, RedisServer, UpstreamServer
from demo_flask.upstream import seed_redis
from tests.isolation import wipeable_redis_url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | ExternalRedis]:
    """A Redis for the whole session: started here, or the one the developer let us wipe."""
    url = wipeable_redis_url()
    with ExternalRedis(url) if url else RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | ExternalRedis) -> str:
    """URL of the session's Redis."""
    return redis_server.url


@pytest.fixture(scope="session")
def upstream(redis_url: str) -> Iterator[UpstreamServer]:
    """The dog service on a free port, names seeded into the session's Redis."""
    with UpstreamServer(seed_redis=redis_url) as server:
        yield server


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    """Flush the session's Redis database and seed the dog names again."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    seed_redis(redis_url)
    return redis_url


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client on the session's Redis, closed after the test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()
