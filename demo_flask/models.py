"""Plain results shared by every mode, and their HTTP shapes.

Each mode computes the same :class:`DogResult`, :class:`DelayResult` and
stream of :class:`TrackEvent` values; the views turn them into identical
responses whichever mode produced them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = (
    "STOP_POLL",
    "TERMINAL_STATUSES",
    "DelayResult",
    "DogResult",
    "Settings",
    "TrackClock",
    "TrackEvent",
    "decode_position",
)

#: A published position with one of these statuses ends the order's stream.
TERMINAL_STATUSES = frozenset({"delivered", "cancelled"})
#: Longest single wait of a ``/track`` stream: a shutdown is noticed within it.
STOP_POLL = 0.5


@dataclass(frozen=True)
class Settings:
    """What every mode needs from the app's configuration."""

    upstream_url: str
    redis_url: str
    http_timeout: float
    sse_max_seconds: float
    sse_heartbeat: float
    redis_pool: int = 8


@dataclass(frozen=True)
class DogResult:
    """A picture from the upstream, the dog's name and the billing count."""

    image: bytes
    filename: str
    name: str
    billed: int


@dataclass(frozen=True)
class DelayResult:
    """The outcome of ``n`` calls to the upstream's slow endpoint."""

    n: int
    seconds: float
    elapsed: float

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "seconds": self.seconds, "elapsed": round(self.elapsed, 4)}


EventKind = Literal["subscribed", "position", "heartbeat", "end"]


@dataclass(frozen=True)
class TrackEvent:
    """One item of an order's tracking stream."""

    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)

    def to_sse(self) -> str:
        """Render as a server-sent event (heartbeats are SSE comments)."""
        if self.kind == "heartbeat":
            return ": keepalive\n\n"
        prefix = "retry: 3000\n" if self.kind == "subscribed" else ""
        return f"{prefix}event: {self.kind}\ndata: {json.dumps(self.data, sort_keys=True)}\n\n"


def decode_position(payload: str | bytes) -> dict[str, Any] | None:
    """Parse a published position; None for anything that is not a JSON object."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class TrackClock:
    """When a ``/track`` stream ends, sends a heartbeat, and how long it may wait.

    The sync and async streams share this policy and differ only in their I/O:
    ask :meth:`due` for an event owed now, wait at most :meth:`wait` seconds
    for a message, and turn each message into events with :meth:`on_message`.
    An ``end`` event is always the last one.
    """

    def __init__(
        self, order_id: str, *, max_seconds: float, heartbeat: float,
        stopping: Callable[[], bool],
    ) -> None:  # fmt: skip
        self.order_id = order_id
        self.heartbeat = heartbeat
        self.stopping = stopping
        now = time.monotonic()
        self.deadline = now + max_seconds
        self.quiet_since = now

    def _end(self, reason: str) -> TrackEvent:
        return TrackEvent("end", {"order_id": self.order_id, "reason": reason})

    def due(self) -> TrackEvent | None:
        """The end (deadline, shutdown) or heartbeat owed now, if any."""
        now = time.monotonic()
        if now >= self.deadline:
            return self._end("max-duration")
        if self.stopping():
            return self._end("shutdown")
        if now - self.quiet_since >= self.heartbeat:
            self.quiet_since = now
            return TrackEvent("heartbeat")
        return None

    def wait(self) -> float:
        """Seconds to wait for a message: short, so a shutdown or the deadline is noticed."""
        now = time.monotonic()
        next_heartbeat = self.quiet_since + self.heartbeat
        return max(0.0, min(STOP_POLL, self.deadline - now, next_heartbeat - now))

    def on_message(self, payload: str | bytes) -> list[TrackEvent]:
        """The events of one published message (none if it is not a position)."""
        position = decode_position(payload)
        if position is None:
            return []
        self.quiet_since = time.monotonic()
        events = [TrackEvent("position", position)]
        if position.get("status") in TERMINAL_STATUSES:
            events.append(self._end(str(position["status"])))
        return events
