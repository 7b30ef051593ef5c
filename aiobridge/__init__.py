"""aiobridge: one long-lived asyncio loop per process, for synchronous code.

Example:
    >>> import asyncio
    >>> from aiobridge import AioThread
    >>> with AioThread() as bridge:
    ...     bridge.run(asyncio.sleep(0, result=42))
    42
"""

from ._features.resources import Resource as Resource
from .bridge import AioThread as AioThread
from .bridge import default_bridge as default_bridge
from .bridge import run as run
from .errors import BridgeClosedError as BridgeClosedError
from .errors import BridgeDeadlockError as BridgeDeadlockError
from .errors import BridgeError as BridgeError
from .errors import BridgeTimeoutError as BridgeTimeoutError
from .monitor import BridgeStats as BridgeStats

__all__ = (
    "AioThread",
    "BridgeClosedError",
    "BridgeDeadlockError",
    "BridgeError",
    "BridgeStats",
    "BridgeTimeoutError",
    "Resource",
    "__version__",
    "default_bridge",
    "run",
)

__version__ = "0.1.0"
