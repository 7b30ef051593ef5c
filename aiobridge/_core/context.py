"""Context variables set by a bridged call, carried back to its caller as ``await`` would.

A coroutine awaited directly runs in its caller's context: what it sets with
``ContextVar.set()`` is visible to the caller afterwards. A bridged call runs
in a copy of the caller's context on the loop thread (asyncio tasks always
run in a context of their own), so the blocking calls (``AioThread.run``, the
Flask extension's views and hooks) copy the changes back when they return.
Task-like calls (``submit``, ``spawn``, ``iterate``) do not, as with
``asyncio.create_task``.
"""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = ("copy_back",)

_copy_context = contextvars.copy_context
_MISSING = object()


def copy_back(changed: contextvars.Context) -> list[contextvars.Token[Any]]:
    """Set in the current context every variable whose value differs in ``changed``.

    ``changed`` started as a copy of the current context, so a variable can only
    have been added or set there, never removed. Cheap when nothing changed:
    both contexts then share one immutable mapping, compared by identity.

    Returns:
        The tokens of the variables set here, in order; resetting them in
        reverse order undoes the copy.
    """
    current = _copy_context()
    if changed == current:
        return []
    return [
        var.set(value)
        for var, value in changed.items()
        if current.get(var, _MISSING) is not value
    ]
