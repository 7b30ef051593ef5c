"""Shared fixtures: a strict bridge and (through tests.servers) real servers.

The ``bridge`` fixture runs its loop in debug mode and fails the test if the
loop's exception handler was called (an exception nobody retrieved, a callback
that raised): such errors would otherwise only be logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from aiobridge import AioThread

pytest_plugins = ["tests.servers"]


class LoopErrors:
    """Collects what reaches a loop's exception handler."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.contexts.append(context)


@pytest.fixture
def bridge() -> Iterator[AioThread]:
    """A started bridge (debug loop) that fails the test on loop errors."""
    errors = LoopErrors()
    with AioThread(name="test-bridge", debug=True) as bridge:
        bridge.loop.call_soon_threadsafe(bridge.loop.set_exception_handler, errors)
        yield bridge
    assert not errors.contexts, f"the loop's exception handler was called: {errors.contexts}"
