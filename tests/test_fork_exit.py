"""A forked child's exit never touches its parent's loop (SPEC §3.3, issue 11 point 2).

The parent warms an ``http_session`` resource against a real aiohttp server
and forks; the child exits without touching the bridge. Its interpreter used
to finalise the inherited session: "Unclosed client session" in the child,
and its transport unregistered from the epoll instance parent and child
share, so the parent's next call hung until its timeout.
"""

from __future__ import annotations

import json

import pytest

from demo_flask.services import UpstreamServer
from tests.helpers import run_python

SCRIPT = """
import asyncio, json, os, sys, time, warnings
from aiobridge import AioThread
from aiobridge.clients import http_session

url, how, child_err = sys.argv[1:4]
bridge = AioThread(name="parent", slow_callback_duration=10).start()  # no load noise
http = bridge.resource(http_session())

async def status():
    session = await http.get()
    async with session.get(url + "/health") as response:
        return response.status

assert bridge.run(status(), timeout=10) == 200
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: under test
    pid = os.fork()
if pid == 0:
    err = os.open(child_err, os.O_WRONLY | os.O_TRUNC)
    os.dup2(err, 2)
    os.close(err)
    if how == "sys.exit":
        sys.exit(0)
    if how == "exception":
        raise LookupError("the child fails")
    if how == "used":
        assert bridge.run(status(), timeout=10) == 200  # its own loop and session
    # "end" and "used": the child runs off the end of the program.
else:
    deadline = time.monotonic() + 30
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    start = time.monotonic()
    after = bridge.run(status(), timeout=5)
    print(json.dumps({"child": os.waitstatus_to_exitcode(done[1]), "after": after,
                      "seconds": time.monotonic() - start}))
"""

EXPECTED_EXIT = {"sys.exit": 0, "end": 0, "used": 0, "exception": 1}


@pytest.mark.parametrize("how", ["sys.exit", "end", "exception", "used"])
def test_child_exit_leaves_the_parents_pools_alone(
    upstream: UpstreamServer, how: str, tmp_path: object
) -> None:
    child_err = tmp_path / "child.err"  # type: ignore[operator]
    child_err.write_text("")
    proc = run_python(SCRIPT, args=[upstream.url, how, str(child_err)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the parent closed its own session cleanly at exit
    result = json.loads(proc.stdout)
    assert result["child"] == EXPECTED_EXIT[how]
    assert result["after"] == 200  # the parent's pool still works (it used to time out)
    err = child_err.read_text()
    if how == "exception":
        assert err.rstrip().endswith("LookupError: the child fails"), err
        err = err[: err.index("Traceback")]
    assert err == ""  # no "Unclosed client session", no ResourceWarning, nothing


APP_HELD = """
import asyncio, json, os, sys, time, warnings
import aiohttp
from aiobridge import AioThread

url = sys.argv[1]
bridge = AioThread(name="parent", slow_callback_duration=10).start()


async def make():
    return aiohttp.ClientSession()


session = bridge.run(make())  # held by the app itself, not by a bridge resource


async def status():
    async with session.get(url + "/health") as response:
        return response.status


assert bridge.run(status(), timeout=10) == 200
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    pid = os.fork()
if pid == 0:
    os.close(2)  # the child's complaints about the session it drops are not under test
    del session  # finalised in the child: its connector closes the inherited transports
    os._exit(0)
deadline = time.monotonic() + 30
while not os.waitpid(pid, os.WNOHANG)[0]:
    assert time.monotonic() < deadline, "the child did not exit"
    time.sleep(0.01)
after = bridge.run(status(), timeout=5)


async def close():
    await session.close()


bridge.run(close(), timeout=5)
bridge.stop()
print(json.dumps({"after": after}))
"""


def test_child_dropping_an_app_held_session_leaves_the_parent_alone(
    upstream: UpstreamServer,
) -> None:
    """Objects the app holds outside ``bridge.resource()`` are finalised in the child.

    Their transports then close, but the inherited loop no longer reaches the
    epoll instance it shares with the parent: the parent's keep-alive
    connection still works.
    """
    proc = run_python(APP_HELD, args=[upstream.url], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout) == {"after": 200}
