"""aiobridge.exit: stop the bridges on a signal, then carry on as the process did before."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from aiobridge import AioThread
from aiobridge.exit import stop_on_signals
from tests.helpers import run_python

SIG = signal.SIGUSR1


@pytest.fixture
def restore_handler() -> Iterator[None]:
    before = signal.getsignal(SIG)
    yield
    signal.signal(SIG, before)


def test_stop_all_stops_every_running_bridge() -> None:
    # In a fresh interpreter: here it would stop the bridges of other tests too.
    proc = run_python(
        """
        import asyncio, aiobridge
        from aiobridge import AioThread
        from aiobridge.exit import stop_all
        first, second, idle = AioThread(name="a").start(), AioThread(name="b").start(), AioThread()
        aiobridge.run(asyncio.sleep(0))
        assert stop_all(timeout=2.0) == 3
        assert not (first.running or second.running or idle.running)
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_previous_python_handler_runs_after_the_stop(restore_handler: None) -> None:
    order: list[str] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        order.append("previous")

    signal.signal(SIG, previous)
    bridge = AioThread(name="signalled").start()

    def stop() -> None:
        bridge.stop()
        order.append("stopped")

    stop_on_signals(SIG, stop=stop)
    signal.raise_signal(SIG)
    assert order == ["stopped", "previous"]
    assert not bridge.running


def test_an_ignored_signal_stays_ignored(restore_handler: None) -> None:
    signal.signal(SIG, signal.SIG_IGN)
    stopped: list[bool] = []
    stop_on_signals(SIG, stop=lambda: stopped.append(True))
    signal.raise_signal(SIG)  # would kill the process if the default action came back
    assert stopped == [True]


def test_only_the_main_thread_installs_handlers() -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            stop_on_signals(SIG)
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and "main thread" in str(errors[0])
