"""stop() cancels every task left on the loop, not only its own calls, as asyncio.run does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import pytest

from aiobridge import AioThread

from .helpers import run_python, without_slow_callback_reports


def test_stop_cancels_tasks_it_did_not_create_and_lets_them_clean_up() -> None:
    log: list[str] = []
    keep: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def held() -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.sleep(0)  # cleanup that needs the loop
            log.append("context exited")

    async def background() -> None:
        async with held():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                log.append("cancelled")
                raise

    async def start() -> None:
        keep.add(asyncio.create_task(background()))
        await asyncio.sleep(0)  # let it enter its context

    bridge = AioThread(name="stop-all-tasks").start()
    bridge.run(start())
    bridge.stop(timeout=0.1)
    assert log == ["cancelled", "context exited"]
    assert all(task.cancelled() for task in keep)


def test_a_task_that_swallows_cancellation_cannot_hang_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed: list[int] = []
    keep: set[asyncio.Task[None]] = set()
    gave_up = threading.Event()

    async def stubborn() -> None:
        try:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    swallowed.append(1)
        finally:
            gave_up.set()

    async def start() -> None:
        keep.add(asyncio.create_task(stubborn()))
        await asyncio.sleep(0)

    bridge = AioThread(name="stop-stubborn").start()
    bridge.run(start())
    with caplog.at_level(logging.WARNING, logger="aiobridge"):
        bridge.stop(timeout=0.1)
    thread = bridge.thread
    assert thread is not None and not thread.is_alive()
    assert len(swallowed) >= 2, "the task should have been cancelled again"
    assert any("ignored cancellation" in r.getMessage() for r in caplog.records)
    # The abandoned task stays pending on the closed loop; close its coroutine here.
    (task,) = keep
    assert not task.done()
    task.get_coro().close()
    assert gave_up.is_set()
    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        keep.clear()  # "Task was destroyed but it is pending!": it was abandoned


FLASK_BACKGROUND = """
import asyncio
from flask import Flask
from aiobridge.flask import AioBridge, shutdown

app = Flask(__name__)
AioBridge(app)
tasks = set()

@app.get("/")
async def index():
    async def background():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("cancelled", flush=True)
            raise
    tasks.add(asyncio.create_task(background()))
    await asyncio.sleep(0)
    return "started"

assert app.test_client().get("/").text == "started"
{stop}
"""

CORE_BACKGROUND = """
import asyncio
from aiobridge import AioThread

tasks = set()

async def start():
    async def background():
        try:
            await asyncio.sleep(3600)
        finally:
            print("cancelled", flush=True)
    tasks.add(asyncio.create_task(background()))
    await asyncio.sleep(0)

bridge = AioThread(debug=True).start()
bridge.run(start())
{stop}
"""


@pytest.mark.parametrize(
    ("script", "stop"),
    [
        (FLASK_BACKGROUND, "shutdown(app)"),
        (FLASK_BACKGROUND, "pass  # the extension's exit hook"),
        (CORE_BACKGROUND, "bridge.stop(timeout=0.1)"),
        (CORE_BACKGROUND, "pass  # the loop thread's exit hook"),
    ],
    ids=["flask-shutdown", "flask-exit", "stop", "exit"],
)
def test_background_tasks_are_cancelled_cleanly_in_a_fresh_interpreter(
    script: str, stop: str
) -> None:
    result = run_python(script.format(stop=stop), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cancelled"
    assert without_slow_callback_reports(result.stderr) == "", result.stderr
