"""The demo on three hosts (network namespaces) behind HAProxy, one Sentinel Redis (issue 22).

Needs root (namespaces) and HAProxy (``.ci/run`` installs it); skipped, saying
which is missing, otherwise. Every namespace and link is removed at the end,
checked by :func:`demo_flask.scaleout.netns.leftovers`.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from demo_flask.scaleout.balancer import haproxy_config
from demo_flask.scaleout.hosts import Deployment, hosts_drill
from demo_flask.scaleout.load import Load
from demo_flask.scaleout.netns import Network, available, leftovers

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.skipif(shutil.which("haproxy") is None,
                       reason="haproxy is not installed (apt-get install haproxy)"),
]


@pytest.fixture(autouse=True)
def no_namespace_left() -> object:
    before = leftovers()
    yield
    assert leftovers() == before, "a test left network namespaces or links behind"


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
    assert set(result.by_kind) <= {"200", "502", "503"}
