"""The public surface: __all__ lists every public name, the core imports alone."""

from __future__ import annotations

import inspect
import types

import aiobridge

from .helpers import run_python


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name, value in vars(aiobridge).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    missing = public - set(aiobridge.__all__)
    assert not missing, f"missing from __all__: {missing}"
    for name in aiobridge.__all__:
        assert hasattr(aiobridge, name), f"__all__ names {name!r}, which does not exist"


def test_spec_names_exist() -> None:
    for name in ("AioThread", "BridgeError", "BridgeClosedError", "BridgeDeadlockError",
                 "default_bridge", "run"):
        assert name in aiobridge.__all__
    methods = ("start", "stop", "run", "submit", "call_soon", "spawn", "wrap", "gather",
               "as_completed", "first", "stats", "__enter__", "__exit__")
    for method in methods:
        member = getattr(aiobridge.AioThread, method)
        assert callable(member)
        assert inspect.getdoc(member) or method.startswith("__"), f"{method} has no docstring"
    for prop in ("loop", "thread", "running"):
        assert isinstance(getattr(aiobridge.AioThread, prop), property)


def test_error_hierarchy() -> None:
    assert issubclass(aiobridge.BridgeClosedError, aiobridge.BridgeError)
    assert issubclass(aiobridge.BridgeDeadlockError, aiobridge.BridgeError)
    assert issubclass(aiobridge.BridgeDeadlockError, RuntimeError)
    assert issubclass(aiobridge.BridgeTimeoutError, TimeoutError)
    assert issubclass(aiobridge.BridgeTimeoutError, aiobridge.BridgeError)


def test_core_imports_without_optional_dependencies() -> None:
    result = run_python(
        """
        import sys
        for name in ("flask", "aiohttp", "redis", "uvloop", "werkzeug", "prometheus_client"):
            sys.modules[name] = None  # any import of them now fails
        import asyncio, aiobridge
        assert aiobridge.run(asyncio.sleep(0, result=1)) == 1
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
