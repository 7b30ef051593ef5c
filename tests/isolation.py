"""Pytest plugin: the suite runs apart from the developer's shell and keeps process globals.

Loaded by the root ``conftest.py`` (``pytest_plugins``), so it holds for the
tests, the docs examples and the docstrings alike.

**The environment.** Variables that change how aiobridge, the demo, Flask or
the servers behave (:data:`SCRUBBED_NAMES`, and every name starting with one
of :data:`SCRUBBED_PREFIXES`: ``AIOBRIDGE_*``, ``CAAS_*``, ``FLASK_*``) are
removed from ``os.environ`` when pytest configures itself, before any fixture
starts a server, and put back when it ends. Child processes the tests start
inherit the cleaned environment; a test that means a variable sets it (with
``monkeypatch.setenv`` or in the child's ``env``). So ``REDIS_URL`` in the shell
never points the suite at the developer's Redis, and ``PROMETHEUS_MULTIPROC_DIR``
never switches the metrics tests to multiprocess mode.

The one way to give the suite a Redis of your own is
:data:`WIPEABLE_REDIS_ENV` (``AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED``): the
suite flushes that database. :func:`wipeable_redis_url` returns it (read before
the scrub), else None: the suite starts its own ``redis-server``.

**Process globals.** Around every test, :func:`_process_globals_unchanged`
compares what the test could leave behind in this process: the environment,
aiobridge's observer factory (``aiobridge.metrics.install`` sets it) and
``aiobridge.run``'s default bridge; after every module, the aiobridge loop
threads still running (a module-scoped fixture may share a bridge between its
module's tests).
A test that changes one and does not restore it fails at teardown, naming the
change, and the global is put back so that the next test starts clean; the fix
belongs in the test (a fixture that restores it). A docs page is checked as a
whole (its examples build on each other): see the root ``conftest.py``.

**SIGTERM** (``kill``, ``timeout``, a CI runner cancelling the job) ends the
session as Ctrl-C does, with every fixture's teardown: the servers the suite
started run in sessions of their own, which a signal to pytest does not reach,
and were left running when SIGTERM killed pytest outright. A process forked
from the session gets the default action back.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pytest

import aiobridge.bridge
from aiobridge import AioThread, monitor
from aiobridge._core import process
from aiobridge._core.state import State

#: Variables removed for the test session (besides the prefixes below).
SCRUBBED_NAMES = frozenset({
    "REDIS_URL",  # the demo's and the docs' Redis
    "UPSTREAM_URL",  # the demo's dog service
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus_client's multiprocess mode
    "PYTHONASYNCIODEBUG",  # asyncio debug mode, read by AIOBRIDGE_DEBUG=None
    "GUNICORN_CMD_ARGS",  # extra gunicorn options
    "WEB_CONCURRENCY",  # gunicorn's worker count
})
#: Prefixes of variables removed for the test session.
SCRUBBED_PREFIXES = ("AIOBRIDGE_", "CAAS_", "FLASK_")
#: A Redis URL the suite may flush; without it the suite starts its own Redis.
WIPEABLE_REDIS_ENV = "AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED"

_SAVED = pytest.StashKey[dict[str, str]]()
_SIGTERM_BEFORE = pytest.StashKey[Any]()
_wipeable_redis_url: str | None = None


def scrubbed(name: str) -> bool:
    """Whether the session removes the variable ``name``."""
    return name in SCRUBBED_NAMES or name.startswith(SCRUBBED_PREFIXES)


def wipeable_redis_url() -> str | None:
    """``AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED`` as it was when the session began."""
    return _wipeable_redis_url


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}: the session stops, fixtures torn down")


def _default_action_in_child() -> None:
    if signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a fork's only thread is its main one


os.register_at_fork(after_in_child=_default_action_in_child)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    global _wipeable_redis_url
    if threading.current_thread() is threading.main_thread():
        config.stash[_SIGTERM_BEFORE] = signal.signal(signal.SIGTERM, _interrupt)
    saved = {name: value for name, value in os.environ.items() if scrubbed(name)}
    config.stash[_SAVED] = saved
    for name in saved:
        del os.environ[name]
    if config.pluginmanager.get_plugin("pytester") is not None and _wipeable_redis_url:
        return  # a pytester run inside the session keeps the outer session's choice
    _wipeable_redis_url = saved.get(WIPEABLE_REDIS_ENV) or None


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    os.environ.update(config.stash.get(_SAVED, {}))
    if _SIGTERM_BEFORE in config.stash:
        signal.signal(signal.SIGTERM, config.stash[_SIGTERM_BEFORE])


def pytest_report_header(config: pytest.Config) -> str:
    saved = sorted(config.stash.get(_SAVED, {}))
    redis = "yours (AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED)" if _wipeable_redis_url else "its own"
    cleared = ", ".join(saved) if saved else "none set"
    return f"aiobridge suite: environment cleared of {cleared}; Redis: {redis}"


def running_loop_threads() -> dict[int, str]:
    """The aiobridge loop threads running in this process: id to name."""
    pid = os.getpid()
    return {
        id(loop_thread): loop_thread.name for loop_thread in list(process._ALL)
        if loop_thread.pid == pid and loop_thread.state is State.RUNNING
    }


def _stop_loop_threads(ids: set[int]) -> None:
    for loop_thread in list(process._ALL):
        if id(loop_thread) in ids:
            loop_thread.stop(5.0)


def _default_bridge() -> AioThread | None:
    default = aiobridge.bridge._default
    return default if default is not None and default.running else None


@dataclass(frozen=True)
class Globals:
    """What a test (or a docs page) may leave behind in this process."""

    environ: dict[str, str]
    observer_factory: Any
    default_bridge: AioThread | None  # aiobridge.run()'s, while running

    @classmethod
    def now(cls) -> Globals:
        environ = dict(os.environ)
        environ.pop("PYTEST_CURRENT_TEST", None)  # pytest's own, set per test phase
        return cls(environ, monitor.observer_factory(), _default_bridge())

    def changes_since(self, before: Globals) -> list[str]:
        """Each difference from ``before``, in words; put ``before``'s values back."""
        found = []
        if self.environ != before.environ:
            added = sorted(self.environ.keys() - before.environ.keys())
            removed = sorted(before.environ.keys() - self.environ.keys())
            changed = sorted(name for name in self.environ.keys() & before.environ.keys()
                             if self.environ[name] != before.environ[name])
            found.append(f"os.environ: added {added}, removed {removed}, changed {changed}")
            for name in added:
                del os.environ[name]
            os.environ.update(before.environ)
        if self.observer_factory is not before.observer_factory:
            found.append(f"aiobridge's observer factory is {self.observer_factory!r}, was "
                         f"{before.observer_factory!r} (metrics.install/set_observer_factory "
                         "not undone)")
            monitor.set_observer_factory(before.observer_factory)
        if self.default_bridge is not None and self.default_bridge is not before.default_bridge:
            found.append("aiobridge's default bridge (aiobridge.run, default_bridge()) left "
                         "running")
            self.default_bridge.stop(5.0)
        return found


def _is_docs_example(item: pytest.Item) -> bool:
    return type(item).__module__.startswith("sybil")


@pytest.fixture(autouse=True)
def _process_globals_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a process global changed (and put it back)."""
    if _is_docs_example(request.node):
        yield  # checked per page, by the page's setup and teardown
        return
    before = Globals.now()
    yield
    changes = Globals.now().changes_since(before)
    if changes:
        pytest.fail("the test left process globals changed:\n  " + "\n  ".join(changes),
                    pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def _module_leaves_nothing_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a module that leaves a process global changed, or a loop thread it started.

    What its module-scoped fixtures changed (the per-test check runs inside them).
    Loop threads are checked per module, not per test: a module-scoped fixture
    may share one bridge (or an app owning one) between its module's tests.
    """
    before = Globals.now()
    threads_before = running_loop_threads()
    yield
    changes = Globals.now().changes_since(before)
    left = {key: name for key, name in running_loop_threads().items()
            if key not in threads_before}
    if left:
        _stop_loop_threads(set(left))
        changes.append(f"aiobridge loop threads left running: {sorted(left.values())}")
    if changes:
        pytest.fail(f"{request.node.nodeid} left process globals changed after its last "
                    "test:\n  " + "\n  ".join(changes), pytrace=False)
