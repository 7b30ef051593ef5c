"""The demo on three hosts (network namespaces) behind HAProxy, one Sentinel Redis (issue 22).

Needs root (namespaces) and HAProxy (``.ci/run`` installs it); skipped, saying
which is missing, otherwise. Every namespace and link is removed at the end,
checked by :func:`demo_flask.scaleout.netns.orphans` (another suite's live networks aside).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from demo_flask.scaleout.balancer import haproxy_config
from demo_flask.scaleout.hosts import Deployment, hosts_drill
from demo_flask.scaleout.load import Load
from demo_flask.scaleout.netns import PREFIX, Network, available, leftovers, orphans, remove
from tests.helpers import wait_until
from tests.test_demo_launcher import Launched

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.skipif(shutil.which("haproxy") is None,
                       reason="haproxy is not installed (apt-get install haproxy)"),
]


@pytest.fixture(autouse=True)
def no_namespace_left() -> object:
    # Another suite on the machine may run networks of its own meanwhile: only
    # those no live process owns count (see orphans()).
    yield
    assert orphans() == [], "a test left network namespaces or links behind"


def test_haproxy_config_is_valid(tmp_path: object) -> None:
    path = f"{tmp_path}/haproxy.cfg"
    with open(path, "w") as file:
        file.write(haproxy_config({"h1": "10.213.9.11:8000"}, port=8080,
                                  admin_socket=f"{tmp_path}/admin.sock"))  # fmt: skip
    done = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True,
                          timeout=10, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_network_is_removed_even_when_a_step_fails() -> None:
    net = Network(hosts=1)

    def fail_inside() -> None:
        with net:
            assert leftovers(net.tag)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert leftovers(net.tag) == []


@pytest.mark.slow
def test_one_host_serves_through_haproxy() -> None:
    with Deployment(hosts=1, workers=1, threads=4) as deployment:
        assert deployment.balancer is not None
        with Load("127.0.0.1", deployment.balancer.port, "/dog?latency=0", threads=2,
                  max_requests=20, max_seconds=30) as load:  # fmt: skip
            load.wait_for(lambda a: len(a) >= 20, "20 answers", 30)
        assert {a.status for a in load.answers} == {200}
        assert {a.server for a in load.answers} == {deployment.network.hosts[0].name}
        assert deployment.billed() == 20


@pytest.mark.slow
def test_hosts_crash_and_stop_under_load() -> None:
    result = hosts_drill(3)
    print("\nhosts: " + json.dumps(result.as_json()))
    assert result.problems() == []
    crashed, stopped = result.events
    assert crashed.routed_around_s <= (result.fall + 2) * result.check_interval_s
    assert stopped.in_flight > 0 and stopped.in_flight_ok == stopped.in_flight
    assert set(result.by_kind) <= {"200", "502", "503", "cut"}


@contextlib.contextmanager
def _cluster_demo(*args: str) -> Iterator[tuple[Launched, str]]:
    """``python -m demo_flask --cluster --hosts 2 ARGS``, ready; its balancer's URL.

    Stopped with Ctrl-C when the test is done (bounded; killed after), and its
    network removed should a failed run leave it behind.
    """
    launched = Launched.start("--cluster", "--hosts", "2", *args)
    try:
        wait_until(lambda: "Ctrl-C stops everything" in launched.stdout_text()
                   or launched.proc.poll() is not None,
                   lambda: f"the cluster demo did not start:\n{launched.stderr_text()}",
                   120)  # fmt: skip
        balancer = re.search(r"balancer\s+(http://127\.0\.0\.1:\d+)/", launched.stdout_text())
        assert balancer, launched.stdout_text() + launched.stderr_text()
        yield launched, balancer.group(1)
    finally:
        if launched.proc.poll() is None:
            launched.proc.send_signal(signal.SIGINT)
            launched.wait()  # bounded: kills everything and fails past its deadline
        tag = re.search(rf"\(({PREFIX}\d+)h1\)", launched.stdout_text())
        if tag is not None and launched.proc.returncode != 0:
            remove(tag.group(1)[len(PREFIX):])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


@pytest.mark.slow
def test_the_cluster_demo_serves_through_the_balancer_and_stops_cleanly() -> None:
    with _cluster_demo() as (launched, balancer):
        assert [_status(f"{balancer}/dog?latency=0") for _ in range(10)] == [200] * 10
        launched.observe()
        launched.proc.send_signal(signal.SIGINT)
        assert launched.wait() == 0, launched.stderr_text()[-3000:]
        launched.assert_clean()


@pytest.mark.slow
def test_the_cluster_demos_chaos_rounds_run_and_it_stops_cleanly() -> None:
    # --chaos 1: a round kills the Redis master, the next a host's gunicorn, the
    # third brings both back (and kills the master again). A request meanwhile
    # may meet a host HAProxy has not yet marked down (502) or a master being
    # replaced (503): the drills measure those; here every request is answered.
    with _cluster_demo("--chaos", "1") as (launched, balancer):
        statuses = []
        for line in ("; the sentinels chose", "chaos: SIGKILL gunicorn on", "back as a replica"):
            wait_until(lambda line=line: line in launched.stderr_text(),  # type: ignore[misc]
                       lambda line=line: f"no {line!r} in:\n{launched.stderr_text()}",  # type: ignore[misc]
                       90)  # fmt: skip
            statuses.append(_status(f"{balancer}/dog?latency=0"))
        assert set(statuses) <= {200, 502, 503}, statuses
        launched.observe()
        launched.proc.send_signal(signal.SIGINT)
        assert launched.wait() == 0, launched.stderr_text()[-3000:]
        launched.assert_clean()
