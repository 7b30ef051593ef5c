"""The demo's upstream dog service (``python -m demo_flask.upstream``) as a child process."""

from __future__ import annotations

import sys

from .ports import HOST
from .process import ChildService, answers_health, env_with_repo

__all__ = ("UpstreamServer",)


class UpstreamServer(ChildService):
    """The demo's dog service (``python -m demo_flask.upstream``) as a child process.

    Args:
        port: TCP port; a free one when omitted.
        seed_redis: a Redis URL to seed with the dogs' names at start.
        startup_timeout: seconds to wait for ``GET /health`` to answer.

    Example::

        with UpstreamServer() as upstream:
            requests.get(f"{upstream.url}/dog?latency=10")
    """

    name = "upstream"

    def __init__(
        self,
        *,
        port: int | None = None,
        seed_redis: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.seed_redis = seed_redis

    @property
    def url(self) -> str:
        """The base ``http://`` URL of this server (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "demo_flask.upstream", "--port", str(self.port)]
        if self.seed_redis:
            command += ["--seed-redis", self.seed_redis]
        return command

    def _env(self) -> dict[str, str]:
        return env_with_repo()

    def _ready(self) -> bool:
        return answers_health(self.url, timeout=0.5)
