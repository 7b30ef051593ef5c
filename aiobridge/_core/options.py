"""Checks of the options a bridge and its calls take (timeouts, debug mode)."""

from __future__ import annotations

import math
import os
import sys

from .awaitables import describe

__all__ = ("check_timeout", "interpreter_debug_mode")


def interpreter_debug_mode() -> bool:
    """Whether ``asyncio.run`` would turn debug mode on: ``-X dev`` or ``PYTHONASYNCIODEBUG``."""
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


def check_timeout(timeout: float | None, what: str) -> float | None:
    """Validate a timeout in seconds; infinity means none.

    Raises:
        TypeError: not a number.
        ValueError: negative or NaN.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, got {describe(timeout)}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be >= 0 seconds or None, got {timeout!r}")
    if math.isinf(timeout):
        return None
    return float(timeout)
