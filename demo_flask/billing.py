"""Look a dog's name up and bill the request: both or neither, in one round trip.

The lookup (``HGET``) and the count (``INCR``) run as one Lua script, which
Redis executes atomically: the count commits only if the lookup succeeded, and
nothing else runs in between. ``MULTI``/``EXEC`` would not do: a command that
fails inside a transaction does not stop the ones after it. So a request is
billed exactly when its lookup succeeded; the only way a client can be billed
without a reply is a reply lost after Redis committed.

Example::

    name, billed = parse(client.eval(SCRIPT, *script_args("rex.jpg")))
"""

from __future__ import annotations

from typing import Any

from .catalog import BILLING_KEY, DOG_NAMES_KEY

__all__ = ("REPLICA_WAIT_MS", "SCRIPT", "parse", "script_args")

#: How long a bill on a Sentinel master waits for a replica's acknowledgement
#: (``WAIT``) before its request is answered 503: see ``aio_calls.bill``.
REPLICA_WAIT_MS = 1000

#: KEYS[1] the names hash, KEYS[2] the billing counter, ARGV[1] the file name.
#: An error in HGET (say, WRONGTYPE) aborts the script before INCR runs.
SCRIPT = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
local billed = redis.call('INCR', KEYS[2])
return {name, billed}
"""


def script_args(filename: str) -> tuple[int, str, str, str]:
    """``numkeys, keys..., args...`` for ``EVAL SCRIPT`` on one picture."""
    return 2, DOG_NAMES_KEY, BILLING_KEY, filename


def parse(reply: Any) -> tuple[str | None, int]:
    """``(name or None, billing count)`` from the script's reply."""
    name, billed = reply
    if isinstance(name, bytes):
        name = name.decode()
    return name or None, int(billed)
