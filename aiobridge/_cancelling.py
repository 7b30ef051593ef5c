"""Cancellations that do not arrive: noticed, counted and logged once per place.

A coroutine that aiobridge cancelled (timeout, ``Future.cancel()``, an
interrupted caller, ``stop()``) should end with ``CancelledError``. If it
returns instead, or raises something else, a library on its way caught the
cancellation and went on (``asyncio.wait_for`` on Python 3.11 does so when the
cancellation lands as the awaited operation finishes). The caller still gets
its timeout or cancellation; :class:`DroppedCancellations` counts the call and
logs, once per awaitable's location, where to look.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ("DroppedCancellations", "location")

logger = logging.getLogger("aiobridge")

# Distinct locations logged per bridge; past this, only the counter grows.
_MAX_LOCATIONS = 1000


def location(awaitable: Awaitable[Any]) -> str:
    """Where an awaitable comes from: ``qualname (file:line)`` of its code, or its type."""
    code = getattr(awaitable, "cr_code", None) or getattr(awaitable, "gi_code", None)
    if code is not None:
        return f"{code.co_qualname} ({code.co_filename}:{code.co_firstlineno})"
    kind = type(awaitable)
    return f"{kind.__module__}.{kind.__qualname__}"


class DroppedCancellations:
    """Logs each place that dropped a cancellation once; used on the loop thread only."""

    def __init__(self) -> None:
        self._logged: set[str] = set()

    def ignored(self, awaitable: Awaitable[Any], error: BaseException | None) -> None:
        """``awaitable`` went on after its cancellation: it returned, or raised ``error``."""
        where = location(awaitable)
        if where in self._logged or len(self._logged) >= _MAX_LOCATIONS:
            return
        self._logged.add(where)
        ended = "returned" if error is None else f"raised {type(error).__name__}"
        logger.warning(
            "aiobridge cancelled %s, but it %s instead of ending with CancelledError: "
            "something it awaits dropped the cancellation (its caller still got the "
            "timeout or cancellation; counted in stats().cancel_ignored; logged once "
            "per location)", where, ended, exc_info=error,
        )
