"""The pytest plugin (aiobridge.pytest_plugin), run the way a user's suite runs it.

Each case writes a small test module and runs pytest on it (pytester): in a
subprocess where warnings, garbage or imports of the inner run could leak into
this one, in process (faster) for the others.
The inner runs use Python's default warning filters, as a user's suite would,
unless a case says otherwise.
"""

from __future__ import annotations

import pytest

# An installed aiobridge registers the plugin through its pytest11 entry point;
# a checkout on PYTHONPATH may not be installed, so register it if missing.
CONFTEST = """
import aiobridge.pytest_plugin

def pytest_configure(config):
    if not config.pluginmanager.has_plugin("aiobridge"):
        config.pluginmanager.register(aiobridge.pytest_plugin, "aiobridge")
"""


def run_inner(
    pytester: pytest.Pytester, source: str, *args: str, subprocess: bool = True
) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=source)
    if subprocess:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def test_a_clean_test_passes(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio

        async def double(n):
            await asyncio.sleep(0)
            return 2 * n

        def test_calls(aiobridge_bridge):
            assert aiobridge_bridge.run(double(2)) == 4
            assert aiobridge_bridge.submit(double(3)).result(10) == 6
            assert aiobridge_bridge.spawn(double(4)).result(10) == 8
            assert aiobridge_bridge.gather(double(1), double(2)) == [2, 4]
        """,
        subprocess=False,
    )
    result.assert_outcomes(passed=1)


def test_a_leaked_task_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio

        async def forever():
            await asyncio.Event().wait()

        def test_leaks(aiobridge_bridge):
            aiobridge_bridge.spawn(forever())
        """,
        subprocess=False,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*tasks still pending on the bridge's loop*",
            "*task 'Task-*': forever() at *test_inner.py:* -> Event.wait() at *locks.py:*",
        ]
    )


def test_a_coroutine_never_awaited_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        async def forgotten():
            pass

        async def careless():
            forgotten()  # the await is missing

        def test_forgets(aiobridge_bridge):
            aiobridge_bridge.run(careless())
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeWarning: coroutine*forgotten*was never awaited*"])


def test_never_awaited_is_reported_under_an_error_filter_too(pytester: pytest.Pytester) -> None:
    # With -W error the warning would be raised inside __del__ on the loop
    # thread, where nobody sees it; the guard still reports it.
    result = run_inner(
        pytester,
        """
        async def forgotten():
            pass

        async def careless():
            forgotten()

        def test_forgets(aiobridge_bridge):
            aiobridge_bridge.run(careless())
        """,
        "-W",
        "error",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*coroutine*forgotten*was never awaited*"])


def test_an_unclosed_client_session_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import aiohttp

        async def open_session():
            return aiohttp.ClientSession()

        def test_drops_session(aiobridge_bridge):
            session = aiobridge_bridge.run(open_session())
            del session  # never closed
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*Unclosed client session*"])


def test_a_call_of_the_loop_exception_handler_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import threading

        def test_callback_raises(aiobridge_bridge):
            ran = threading.Event()

            def broken():
                ran.set()
                raise ValueError("broken callback")

            aiobridge_bridge.call_soon(broken)
            assert ran.wait(30)
        """,
        subprocess=False,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*the loop's exception handler was called*", "*ValueError('broken callback')*"]
    )


def test_the_bridge_options_can_be_overridden(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import pytest

        @pytest.fixture
        def aiobridge_bridge_options():
            return {"name": "custom-loop", "max_in_flight": 2}

        def test_named(aiobridge_bridge):
            assert aiobridge_bridge.thread.name == "custom-loop"
        """,
        subprocess=False,
    )
    result.assert_outcomes(passed=1)


def test_the_flask_app_runs_async_views_on_the_test_bridge(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import threading

        def test_view(aiobridge_flask_app, aiobridge_bridge):
            @aiobridge_flask_app.get("/where")
            async def where():
                await asyncio.sleep(0)
                return {"thread": threading.current_thread().name}

            response = aiobridge_flask_app.test_client().get("/where")
            assert response.json == {"thread": aiobridge_bridge.thread.name}
        """,
        subprocess=False,
    )
    result.assert_outcomes(passed=1)


def test_the_plugin_does_not_import_flask_unless_asked(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import sys

        def test_no_flask(aiobridge_bridge):
            assert "flask" not in sys.modules
        """,
    )
    result.assert_outcomes(passed=1)
