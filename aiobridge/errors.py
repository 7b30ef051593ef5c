"""The errors aiobridge raises.

Every error the library defines derives from :class:`BridgeError`, and each one
also derives from the built-in exception a caller would naturally catch::

    Exception
     └── BridgeError
          ├── BridgeClosedError    (also RuntimeError)  the bridge is stopping or stopped
          ├── BridgeDeadlockError  (also RuntimeError)  a blocking call from a loop thread
          └── BridgeTimeoutError   (also TimeoutError)  a call outlived its timeout

A cancelled call raises :class:`concurrent.futures.CancelledError`, and any
exception raised by the coroutine itself reaches the caller unchanged.
"""

from __future__ import annotations

__all__ = ("BridgeClosedError", "BridgeDeadlockError", "BridgeError", "BridgeTimeoutError")


class BridgeError(Exception):
    """Base class of every error raised by aiobridge itself."""


class BridgeClosedError(BridgeError, RuntimeError):
    """Work was handed to a bridge that is stopping or already stopped.

    A bridge refuses new work as soon as ``stop()`` begins. Create a new
    :class:`~aiobridge.AioThread` (or use :func:`aiobridge.default_bridge`) if the
    process needs a loop again.
    """


class BridgeDeadlockError(BridgeError, RuntimeError):
    """A blocking call was made from a thread that must never block.

    Raised when ``run()``, ``gather()``, ``iterate()`` and the other blocking
    methods are called from the bridge's own loop thread (it would wait for
    itself forever) or from a thread that is running another event loop (it
    would freeze that loop). Inside a coroutine, ``await`` the awaitable instead.
    """


class BridgeTimeoutError(BridgeError, TimeoutError):
    """A call did not finish within its timeout; its task on the loop was cancelled.

    Also a built-in :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """
