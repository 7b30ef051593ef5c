"""Ports and subnets no two processes pick: demo_flask.services.claims and .ports."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from demo_flask.services.claims import Claim, ClaimsExhaustedError
from demo_flask.services.ports import (
    BLOCK,
    CLUSTER_BUS_OFFSET,
    PAIRS_STOP,
    SINGLES_START,
    ephemeral_start,
    free_port,
    free_port_pair,
)
from demo_flask.services.process import env_with_repo

HOLDER = """
import sys
from pathlib import Path
from demo_flask.services.claims import Claim
claim = Claim.take(sys.argv[1], 3, folder=Path(sys.argv[2]))
print(claim.index, flush=True)
sys.stdin.read()  # held until the parent closes our stdin or kills us
"""

PICKER = """
from demo_flask.services.ports import free_port
print(" ".join(str(free_port()) for _ in range(250)), flush=True)
input()
"""


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env_with_repo())  # fmt: skip


def test_a_claim_held_by_another_process_is_skipped_and_freed_when_it_dies(tmp_path: Path) -> None:
    kind = "test"
    holder = _child(HOLDER, kind, str(tmp_path))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "0"
        mine = Claim.take(kind, 3, folder=tmp_path)
        assert mine.index == 1
        holder.kill()  # however it ends, the kernel drops its lock
        holder.wait(10)
        again = Claim.take(kind, 3, folder=tmp_path)
        assert again.index == 0
        again.release()
        mine.release()
        assert not mine.held
        assert Claim.take(kind, 1, folder=tmp_path).index == 0  # released: taken again
    finally:
        holder.kill()
        holder.communicate(timeout=10)


def test_claims_run_out_with_a_clear_error(tmp_path: Path) -> None:
    kind = "test"
    held = [Claim.take(kind, 2, folder=tmp_path) for _ in range(2)]
    with pytest.raises(ClaimsExhaustedError, match="all 2 claims"):
        Claim.take(kind, 2, folder=tmp_path)
    for claim in held:
        claim.release()


def test_two_processes_never_pick_the_same_port() -> None:
    picker = _child(PICKER)
    try:
        assert picker.stdout is not None
        theirs = {int(p) for p in picker.stdout.readline().split()}
        ours = {free_port() for _ in range(250)}
        assert not theirs & ours
    finally:
        picker.kill()
        picker.communicate(timeout=10)


def test_picked_ports_are_below_the_kernels_ephemeral_range() -> None:
    port = free_port()
    assert SINGLES_START <= port < ephemeral_start()
    pair = free_port_pair()
    assert pair < PAIRS_STOP and pair + CLUSTER_BUS_OFFSET < SINGLES_START


def test_a_port_picked_recently_is_not_picked_again_though_unbound() -> None:
    # Ports of our block still bound by servers are skipped, and no port among
    # the last BLOCK picked comes back (a caller may pick several, then bind):
    # another block is claimed instead.
    servers = []
    try:
        for _ in range(30):
            sock = socket.socket()
            servers.append(sock)
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
        picked = [free_port() for _ in range(BLOCK)]
        assert len(set(picked)) == BLOCK
        assert not set(picked) & {s.getsockname()[1] for s in servers}
    finally:
        for sock in servers:
            sock.close()
