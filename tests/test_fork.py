"""Fork safety (SPEC §3.3): a forked child restarts its loop and never hangs."""

from __future__ import annotations

import asyncio
import os

import pytest

import aiobridge
from aiobridge import AioThread, BridgeDeadlockError

from .helpers import wait_child

# Forking a process that runs threads is what gunicorn --preload does; Python 3.12+
# warns about it, and that warning is exactly the situation under test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


async def pid_and_value(value: int) -> tuple[int, int]:
    await asyncio.sleep(0)
    return os.getpid(), value


def _child(body: object) -> None:
    """Run ``body()`` in the child; exit 0 only if it returns True."""
    code = 1
    try:
        code = 0 if body() is True else 2  # type: ignore[operator]
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def test_forked_child_starts_a_fresh_loop(bridge: AioThread) -> None:
    parent_thread = bridge.thread
    assert bridge.run(pid_and_value(1)) == (os.getpid(), 1)

    def in_child() -> bool:
        assert not bridge.running  # the parent's loop thread does not exist here
        pid, value = bridge.run(pid_and_value(2), timeout=10)
        assert bridge.thread is not parent_thread
        bridge.stop()
        return pid == os.getpid() and value == 2

    pid = os.fork()
    if pid == 0:
        _child(in_child)
    assert wait_child(pid) == 0
    assert bridge.run(pid_and_value(3)) == (os.getpid(), 3)  # the parent is untouched


def test_fork_from_the_loop_thread_is_not_mistaken_for_a_deadlock(bridge: AioThread) -> None:
    """The child's only thread may carry the parent's loop-thread ident: pid decides."""

    async def fork_here() -> int:
        pid = os.fork()
        if pid == 0:
            _child(lambda: bridge.run(pid_and_value(5), timeout=10)[1] == 5)
        return pid

    pid = bridge.run(fork_here())
    assert wait_child(pid) == 0
    with pytest.raises(BridgeDeadlockError):
        bridge.run(_nested_run(bridge))


async def _nested_run(bridge: AioThread) -> None:
    bridge.run(asyncio.sleep(0))


@pytest.mark.usefixtures("default_bridge_stopped")
def test_default_bridge_in_forked_child() -> None:
    parent = aiobridge.default_bridge()
    assert aiobridge.run(pid_and_value(1))[0] == os.getpid()

    def in_child() -> bool:
        child_pid, _ = aiobridge.run(pid_and_value(2), timeout=10)
        return child_pid == os.getpid() and aiobridge.default_bridge() is parent

    pid = os.fork()
    if pid == 0:
        _child(in_child)
    assert wait_child(pid) == 0


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_child_uses_the_bridge(bridge: AioThread, method: str) -> None:
    import multiprocessing

    bridge.run(pid_and_value(0))
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        results = pool.map_async(_square_on_bridge, range(6)).get(timeout=30)
    assert results == [i * i for i in range(6)]


def _square_on_bridge(x: int) -> int:
    async def square() -> int:
        await asyncio.sleep(0)
        return x * x

    return aiobridge.run(square(), timeout=10)
