"""Fork: a bridge-mode demo app that already served requests keeps working in a child.

``tests/test_fork.py``, ``tests/test_resources.py`` and ``tests/test_clients.py``
fork a bare bridge; gunicorn ``--preload`` with two workers is covered by
``tests/test_demo_e2e.py``. Here the whole app forks after its HTTP and Redis
pools were built and used: the child serves ``/dog`` on a fresh loop thread with
rebuilt pools (new Redis connections, never the parent's sockets), and the
parent keeps serving on its own pools after the child exits.
"""

from __future__ import annotations

import json

import redis

from demo_flask import shutdown
from demo_flask.catalog import BILLING_KEY
from demo_flask.services import UpstreamServer
from tests.demo_apps import DemoAppFactory, demo_app
from tests.helpers import run_in_fork

__all__ = ("demo_app",)  # the fixture

WAIT = 30.0


def _client_ids(client: redis.Redis) -> set[int]:
    return {int(entry["id"]) for entry in client.client_list()}


def test_forked_child_of_a_serving_app_rebuilds_its_pools(
    upstream: UpstreamServer, clean_redis: str, redis_sync: redis.Redis, demo_app: DemoAppFactory
) -> None:
    app = demo_app({"CAAS_MODE": "bridge", "UPSTREAM_URL": upstream.url,
                    "REDIS_URL": clean_redis, "TESTING": True})  # fmt: skip
    client = app.test_client()
    assert client.get("/dog").status_code == 200  # pools built and used
    before_fork = _client_ids(redis_sync)

    def in_child() -> str:
        child = app.test_client()
        dogs = [child.get("/dog").status_code for _ in range(3)]
        stats = child.get("/stats").json or {}
        probe = redis.Redis.from_url(clean_redis)
        try:
            # Connections named by the child's own pool: ask Redis who is connected now.
            now = _client_ids(probe)
        finally:
            probe.close()
        shutdown(app)  # closes the child's pools on the child's loop
        return json.dumps({"dogs": dogs, "billed": stats.get("billing", {}).get("dog_requests"),
                           "new_ids": sorted(now - before_fork)})  # fmt: skip

    result = json.loads(run_in_fork(in_child, timeout=WAIT * 2))
    assert result["dogs"] == [200, 200, 200]
    assert result["billed"] == 4  # one in the parent, three in the child
    # The child opened its own connections (besides its probe): the parent's
    # sockets were not reused.
    assert len(result["new_ids"]) >= 2, result
    # The parent's connections survived the child's shutdown, and it keeps serving.
    assert before_fork <= _client_ids(redis_sync)
    assert client.get("/dog").status_code == 200
    assert int(redis_sync.get(BILLING_KEY) or 0) == 5
