"""The loop thread's doorbell: an eventfd on Linux, call_soon_threadsafe elsewhere."""

from __future__ import annotations

import asyncio
import gc
import os
import sys

import pytest

from aiobridge import AioThread, BridgeClosedError

linux_only = pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux-only")


def _eventfds() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[eventfd]"
        except OSError:  # the descriptor listing the directory itself is gone
            pass
    return count


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@linux_only
def test_a_running_bridge_is_woken_through_one_eventfd() -> None:
    gc.collect()  # an earlier test's stopped doorbell is closed now, not during the count
    before = _eventfds()
    with AioThread(name="rung") as bridge:
        assert _eventfds() == before + 1
        assert [bridge.run(asyncio.sleep(0, result=i)) for i in range(100)] == list(range(100))


@linux_only
def test_stopped_bridges_leave_no_descriptor_behind() -> None:
    with AioThread(name="warm-up") as bridge:  # lazy imports and the like, once
        bridge.run(asyncio.sleep(0))
    del bridge
    gc.collect()
    before = _descriptors()
    for index in range(20):
        with AioThread(name=f"short-lived-{index}") as bridge:
            bridge.run(asyncio.sleep(0))
        del bridge
    gc.collect()
    assert _descriptors() == before


def test_a_stopped_bridge_refuses_a_late_call() -> None:
    bridge = AioThread(name="stopped").start()
    bridge.stop()
    coro = asyncio.sleep(0)
    with pytest.raises(BridgeClosedError):
        bridge.run(coro)


class _NoReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch descriptors, as a proactor loop cannot."""

    def add_reader(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


@pytest.mark.skipif(sys.platform == "win32", reason="a selector loop of its own")
def test_a_loop_without_add_reader_is_woken_with_call_soon_threadsafe() -> None:
    gc.collect()  # no earlier test's stopped doorbell closed during the count
    before = _eventfds() if hasattr(os, "eventfd") else 0
    with AioThread(name="no-readers", loop_factory=_NoReaders) as bridge:
        if hasattr(os, "eventfd"):
            assert _eventfds() == before  # the one made for it was closed again
        assert [bridge.run(asyncio.sleep(0, result=i)) for i in range(100)] == list(range(100))


def test_a_callback_never_overtakes_a_call_handed_off_before_it() -> None:
    """``submit`` then ``call_soon`` (or a cancel) from one thread: the loop takes
    in the call first, as it did when both went through ``call_soon_threadsafe``."""
    seen: list[tuple[int, int]] = []

    with AioThread(name="ordered") as bridge:
        base = bridge.stats().submitted
        for index in range(200):
            future = bridge.submit(asyncio.sleep(0))
            bridge.call_soon(lambda i=index: seen.append((i, bridge.stats().submitted)))
            future.result(10)
        bridge.run(asyncio.sleep(0))  # the last callback has run
    # The callback after the i-th submit sees it accepted (and maybe later ones).
    overtaken = [(index, count) for index, count in seen if count < base + index + 1]
    assert len(seen) == 200 and not overtaken, overtaken
