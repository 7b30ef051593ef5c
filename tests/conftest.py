"""Shared fixtures: a strict bridge and (through tests.servers) real servers.

The ``bridge`` fixture runs its loop in debug mode under
``aiobridge.pytest_plugin.bridge_guard``: the test fails if the loop's exception
handler was called (an exception nobody retrieved, a callback that raised), a
task was left pending, or a "never awaited"/"unclosed" warning appeared.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiobridge import AioThread
from aiobridge.pytest_plugin import bridge_guard

pytest_plugins = ["tests.servers"]


@pytest.fixture
def bridge() -> Iterator[AioThread]:
    """A started bridge (debug loop) under the pytest plugin's guard.

    The test fails if its loop's exception handler was called, a task was left
    pending, or a coroutine was never awaited or a resource never closed.
    """
    with bridge_guard(AioThread(name="test-bridge", debug=True)) as bridge:
        yield bridge
