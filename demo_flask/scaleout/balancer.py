"""HAProxy in front of the demo's hosts, health-checking ``GET /health``.

:func:`haproxy_config` is the configuration the tests run and
``docs/deployment.md`` shows: round robin over the hosts, a health check of
``/health`` (which calls no dependency) every ``inter`` seconds, a host out
after ``fall`` failed checks and back after ``rise``; a request whose
connection to a host failed (nothing was sent) goes to another host, and
nothing else is retried (``/dog`` bills: a retried request could bill twice).
Each answer says which host served it (``X-Served-By``).

:class:`HAProxy` runs it in the foreground on 127.0.0.1, with an admin socket
read by :meth:`HAProxy.states`.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

from ..services import HOST
from ..services.process import ChildService, answers_health

__all__ = ("HAProxy", "haproxy_config")


def haproxy_config(servers: dict[str, str], *, port: int, admin_socket: str,
                   inter: float = 0.5, fall: int = 2, rise: int = 2) -> str:  # fmt: skip
    """HAProxy's configuration: ``servers`` maps a host's name to its ``address:port``."""
    ms = int(inter * 1000)
    lines = [
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        "    maxconn 2000",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 45s           # > AIOBRIDGE_TIMEOUT (40 s): the app answers first",
        "    option http-server-close     # one request per connection to a host",
        "    retries 2",
        "    option redispatch 1          # a retried connection goes to another host",
        "    retry-on conn-failure        # only when nothing was sent: /dog is never sent twice",
        "frontend caas",
        f"    bind {HOST}:{port}",
        "    default_backend hosts",
        "backend hosts",
        "    balance roundrobin",
        "    option httpchk GET /health",
        "    http-check expect status 200",
        "    http-response set-header X-Served-By %s",
        f"    default-server inter {ms}ms fastinter {ms}ms downinter {ms}ms"
        f" fall {fall} rise {rise}",
        *(f"    server {name} {address} check" for name, address in servers.items()),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


class HAProxy(ChildService):
    """``haproxy -db -f <config>`` on 127.0.0.1:``port``; ready once a host is up."""

    name = "haproxy"

    def __init__(self, servers: dict[str, str], *, inter: float = 0.5, fall: int = 2,
                 rise: int = 2, port: int | None = None) -> None:  # fmt: skip
        super().__init__(port=port, startup_timeout=20.0)
        self.executable = shutil.which("haproxy") or "haproxy"
        self.dir = Path(tempfile.mkdtemp(prefix="caas-haproxy-"))
        self.admin = str(self.dir / "admin.sock")
        self.inter, self.fall = inter, fall
        self.config = haproxy_config(servers, port=self.port, admin_socket=self.admin,
                                     inter=inter, fall=fall, rise=rise)  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        path = self.dir / "haproxy.cfg"
        path.write_text(self.config)
        return [self.executable, "-db", "-f", str(path)]

    def _ready(self) -> bool:
        return answers_health(self.url, timeout=1.0)

    def states(self) -> dict[str, str]:
        """Each host's state as HAProxy sees it (``UP``, ``DOWN``, ``UP 1/2``...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2.0)
            sock.connect(self.admin)
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = [line.split(",") for line in data.decode().splitlines() if line and line[0] != "#"]
        return {r[1]: r[17] for r in rows if r[0] == "hosts" and r[1] != "BACKEND"}

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
