"""SystemExit and KeyboardInterrupt raised in a coroutine never stop the loop (SPEC §3.3).

asyncio re-raises these two out of ``loop.run_forever()`` whenever a task's
step raises them, so a ``sys.exit()`` in any task the loop runs (a child of
``gather``/``first``, an iterator's producer, a task a coroutine created)
used to kill the loop thread: the caller got ``BridgeClosedError`` and every
later call of the process failed. Each path below must deliver the exception
to its caller (or to whoever awaits the task) and leave the loop serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiobridge import AioThread
from tests.helpers import WAIT

KINDS = [SystemExit, KeyboardInterrupt]


def _raise(kind: type[BaseException]) -> BaseException:
    return kind(3) if kind is SystemExit else kind()


async def _fail(kind: type[BaseException]) -> None:
    await asyncio.sleep(0)
    if kind is SystemExit:
        sys.exit(3)
    raise _raise(kind)


async def _value(value: int) -> int:
    await asyncio.sleep(0)
    return value


def _still_serving(bridge: AioThread) -> None:
    assert bridge.running
    assert bridge.run(_value(7), timeout=WAIT) == 7
    assert bridge.gather(_value(1), _value(2), timeout=WAIT) == [1, 2]


@pytest.fixture
def strict_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="aiobridge")
    return caplog


def _no_crash_logged(caplog: pytest.LogCaptureFixture) -> None:
    crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert not crashes, [r.getMessage() for r in crashes]


@pytest.mark.parametrize("kind", KINDS)
def test_run(bridge: AioThread, kind: type[BaseException],
             strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    with pytest.raises(kind):
        bridge.run(_fail(kind), timeout=WAIT)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_exceptions", [False, True])
def test_gather(bridge: AioThread, kind: type[BaseException], return_exceptions: bool,
                strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    if return_exceptions:
        # As with asyncio.gather, the exception is returned in its place.
        first, second = bridge.gather(_value(1), _fail(kind), return_exceptions=True,
                                      timeout=WAIT)  # fmt: skip
        assert first == 1
        assert isinstance(second, kind)
    else:
        with pytest.raises(kind):
            bridge.gather(_value(1), _fail(kind), timeout=WAIT)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
def test_first(bridge: AioThread, kind: type[BaseException],
               strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    with pytest.raises(kind):
        bridge.first(_fail(kind), _fail(kind), timeout=WAIT)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
def test_as_completed(bridge: AioThread, kind: type[BaseException],
                      strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    results = bridge.as_completed([_fail(kind), _value(2)], limit=2, timeout=WAIT)
    with pytest.raises(kind), contextlib.closing(results):
        list(results)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
def test_iterate(bridge: AioThread, kind: type[BaseException],
                 strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    async def items() -> AsyncIterator[int]:
        yield 1
        await _fail(kind)
        yield 2

    with contextlib.closing(bridge.iterate(items(), timeout=WAIT)) as stream:
        assert next(stream) == 1
        with pytest.raises(kind):
            next(stream)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


class _Manager:
    def __init__(self, kind: type[BaseException], where: str) -> None:
        self.kind = kind
        self.where = where

    async def __aenter__(self) -> int:
        if self.where == "enter":
            await _fail(self.kind)
        return 1

    async def __aexit__(self, *exc_info: object) -> None:
        if self.where == "exit":
            await _fail(self.kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["enter", "exit"])
def test_enter(bridge: AioThread, kind: type[BaseException], where: str,
               strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    with pytest.raises(kind), bridge.enter(_Manager(kind, where), timeout=WAIT) as value:
        assert value == 1
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
def test_spawn(bridge: AioThread, kind: type[BaseException],
               strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    future = bridge.spawn(_fail(kind))
    with pytest.raises(kind):
        future.result(WAIT)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["create_task", "ensure_future", "taskgroup"])
def test_task_created_inside_a_coroutine(
    bridge: AioThread, kind: type[BaseException], how: str,
    strict_log: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    async def owner() -> None:
        if how == "taskgroup":
            async with asyncio.TaskGroup() as group:
                group.create_task(_fail(kind))
                group.create_task(asyncio.sleep(WAIT))
            return
        spawn: Callable[[Any], asyncio.Future[Any]] = (
            asyncio.ensure_future if how == "ensure_future" else asyncio.create_task
        )
        await spawn(_fail(kind))

    with pytest.raises(kind):
        bridge.run(owner(), timeout=WAIT)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
def test_task_nobody_awaits_yet(bridge: AioThread, kind: type[BaseException],
                                strict_log: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """A detached task's SystemExit is kept for whoever awaits it later."""

    async def start() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(_fail(kind))

    task = bridge.run(start(), timeout=WAIT)
    _still_serving(bridge)  # the task has run (and raised) by now

    async def collect() -> BaseException | None:
        return task.exception()

    assert isinstance(bridge.run(collect(), timeout=WAIT), kind)
    _still_serving(bridge)
    _no_crash_logged(strict_log)


@pytest.mark.parametrize("kind", KINDS)
def test_callback_raising_does_not_stop_the_loop(
    bridge: AioThread, kind: type[BaseException], strict_log: pytest.LogCaptureFixture
) -> None:
    """A plain callback has no owner: the exception is dropped (logged at debug)."""
    raised = concurrent.futures.Future[None]()

    def callback() -> None:
        raised.set_result(None)
        raise _raise(kind)

    bridge.call_soon(callback)
    raised.result(WAIT)
    _still_serving(bridge)
    _no_crash_logged(strict_log)
