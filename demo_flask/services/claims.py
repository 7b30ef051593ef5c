"""Exclusive claims shared by every process on the machine: a lock file each.

Two test suites run side by side (CI runs two Pythons at once) must never pick
the same port or the same network subnet: a check that a port is free, then a
bind a moment later, is a race another process can lose for us. A claim is an
``flock`` on ``<tmp>/aiobridge-claims/<kind>-<index>``: taken without waiting,
held as long as its file descriptor is open (:meth:`Claim.release`, or the
:class:`Claim` is garbage), and released by the kernel when the process ends
however it ends (no stale claims to clean up after a crash).

Example::

    claim = Claim.take("subnet", count=200)
    try:
        octet = 20 + claim.index
    finally:
        claim.release()
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import weakref
from pathlib import Path

__all__ = ("Claim", "ClaimsExhaustedError", "claims_dir")


class ClaimsExhaustedError(RuntimeError):
    """Every index of a kind is claimed by a live process."""


def claims_dir() -> Path:
    """Where the lock files live; shared by every user (sticky, like ``/tmp``)."""
    path = Path(tempfile.gettempdir()) / "aiobridge-claims"
    if not path.is_dir():
        path.mkdir(exist_ok=True)
        try:
            path.chmod(0o1777)
        except PermissionError:  # another user made it first: theirs to set
            pass
    return path


class Claim:
    """One index of a kind, held by this process until :meth:`release`."""

    def __init__(self, kind: str, index: int, fd: int) -> None:
        self.kind = kind
        self.index = index
        # Closing the (last) descriptor drops the flock: on release(), or when
        # the claim is garbage, or when the process ends.
        self._close = weakref.finalize(self, os.close, fd)

    @classmethod
    def take(cls, kind: str, count: int, *, folder: Path | None = None) -> Claim:
        """The first index in ``range(count)`` no live process holds.

        ``folder`` replaces :func:`claims_dir` (tests use their own).

        Raises:
            ClaimsExhaustedError: all ``count`` are held.
        """
        for index in range(count):
            claim = cls.try_take(kind, index, folder=folder)
            if claim is not None:
                return claim
        raise ClaimsExhaustedError(f"all {count} claims of {kind!r} are held")

    @classmethod
    def try_take(cls, kind: str, index: int, *, folder: Path | None = None) -> Claim | None:
        """Index ``index`` of ``kind`` if no live process holds it, else None."""
        path = (folder or claims_dir()) / f"{kind}-{index}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:  # made by another user, unreadable: not ours to take
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(kind, index, fd)

    @property
    def held(self) -> bool:
        return self._close.alive

    def release(self) -> None:
        """Give the index back. Idempotent."""
        self._close()

    def __repr__(self) -> str:
        return f"Claim({self.kind!r}, {self.index}, held={self.held})"
