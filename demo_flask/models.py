"""Plain results shared by every mode, and their HTTP shapes.

Each mode computes the same :class:`DogResult`, :class:`DelayResult` and
stream of :class:`TrackEvent` values; the views turn them into identical
responses whichever mode produced them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = (
    "TERMINAL_STATUSES",
    "DelayResult",
    "DogResult",
    "Settings",
    "TrackEvent",
    "decode_position",
)

#: A published position with one of these statuses ends the order's stream.
TERMINAL_STATUSES = frozenset({"delivered", "cancelled"})


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
