"""What each demo mode needs installed, checked before the launcher starts anything.

:data:`MODE_NEEDS` maps every mode to the modules it imports at run time
beyond :data:`COMMON` (what every mode needs), each with the pip requirement
that provides it; :data:`SERVER_NEEDS` does the same for the servers. Adding a
mode? Add its line here too: ``tests/test_demo_launcher.py`` fails for a mode
without one, and for a requirement the ``demo`` extra of ``setup.cfg`` lacks.

Standard library only: the check runs before anything heavy is imported, so
a missing package is one line naming the command that fixes it, not an
``ImportError`` traceback.

Example::

    needs = missing("flask-async")
    if needs:  # say, asgiref is absent
        raise SystemExit(f"mode flask-async needs {fix_command(needs)}")
"""

from __future__ import annotations

import importlib.util
import shlex
from dataclasses import dataclass

__all__ = ("COMMON", "DEMO_INSTALL", "MODE_NEEDS", "SERVER_NEEDS", "WORKER_CLASS_NEEDS", "Need",
           "fix_command", "missing")  # fmt: skip

#: The command that installs what every mode needs.
DEMO_INSTALL = "pip install -e '.[demo]'"


@dataclass(frozen=True)
class Need:
    """A module imported at run time, and the pip requirement that installs it."""

    module: str
    install: str


#: Every mode imports these (the app, its error handlers, Redis, the upstream service).
COMMON = (
    Need("flask", "flask"),
    Need("redis", "redis"),
    Need("aiohttp", "aiohttp"),
    Need("requests", "requests"),
    Need("janus", "janus"),
)
#: What each mode needs beyond :data:`COMMON`.
MODE_NEEDS: dict[str, tuple[Need, ...]] = {
    "sync": (),
    "gevent": (Need("gevent", "gunicorn[gevent]"), Need("packaging", "gunicorn[gevent]")),
    "embedded": (),
    "embedded-thread": (),
    # Flask runs async views through asgiref, which only its "async" extra installs.
    "flask-async": (Need("asgiref", "flask[async]"),),
    "flask-recipe": (),
    # The bridge mode serves /metrics (AIOBRIDGE_METRICS_ENDPOINT) by default.
    "bridge": (Need("prometheus_client", "prometheus_client"),),
    "quart": (Need("quart", "quart"),),
    # The Flask app on the server's loop: greenlets, and uvicorn's uvloop and C parser.
    "bridge-loop": (Need("prometheus_client", "prometheus_client"), Need("greenlet", "greenlet"),
                    Need("uvloop", "uvloop"), Need("httptools", "httptools")),
}
#: What each server the launcher can start needs.
SERVER_NEEDS: dict[str, tuple[Need, ...]] = {
    "gunicorn": (Need("gunicorn", "gunicorn"),),
    # A Flask mode on uvicorn goes through a2wsgi; Quart needs only uvicorn.
    "uvicorn": (Need("uvicorn", "uvicorn"), Need("a2wsgi", "a2wsgi")),
    "granian": (Need("granian", "granian"),),
}
#: What each gunicorn worker class needs beyond gunicorn.
WORKER_CLASS_NEEDS: dict[str, tuple[Need, ...]] = {
    "gthread": (),
    # gunicorn's gevent worker imports packaging, which only gunicorn[gevent] installs.
    "gevent": (Need("gevent", "gunicorn[gevent]"), Need("packaging", "gunicorn[gevent]")),
    # bridge-loop under gunicorn: uvicorn's workers (uvicorn-worker), and uvicorn itself.
    "uvicorn": (Need("uvicorn_worker", "uvicorn-worker"), Need("uvicorn", "uvicorn")),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a blocked module
        return False


def missing(mode: str, server: str = "gunicorn", worker_class: str = "gthread") -> list[Need]:
    """What ``mode`` on ``server`` needs that is not installed (empty: all is there).

    Raises:
        KeyError: a mode, server or worker class this table does not know.
    """
    worker = WORKER_CLASS_NEEDS[worker_class] if server == "gunicorn" else ()
    needs = (*COMMON, *MODE_NEEDS[mode], *SERVER_NEEDS[server], *worker)
    return [need for need in dict.fromkeys(needs) if not _installed(need.module)]


def fix_command(needs: list[Need]) -> str:
    """The pip command that installs ``needs``."""
    return "pip install " + " ".join(shlex.quote(need.install) for need in dict.fromkeys(needs))
