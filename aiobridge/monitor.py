"""Watching a bridge: the :class:`BridgeStats` snapshot and the :class:`Observer` of its events.

``AioThread.stats()`` returns a :class:`BridgeStats`. To feed another system
(StatsD, logs) as events happen, subclass :class:`Observer` and register a
factory with :func:`set_observer_factory`; :mod:`aiobridge.metrics` is such an
observer for Prometheus. The factory is called once for every loop thread that
starts from then on, with an object describing the bridge (its ``name``).

Example:
    >>> from aiobridge.monitor import Observer, set_observer_factory
    >>> class Printer(Observer):
    ...     def finished(self, outcome, seconds):
    ...         print(outcome)
    >>> set_observer_factory(lambda bridge: Printer())  # doctest: +SKIP
"""

from ._core.observers import BridgeStats as BridgeStats
from ._core.observers import Observer as Observer
from ._core.observers import ObserverFactory as ObserverFactory
from ._core.observers import Outcome as Outcome
from ._core.observers import observer_factory as observer_factory
from ._core.observers import set_observer_factory as set_observer_factory

__all__ = (
    "BridgeStats",
    "Observer",
    "ObserverFactory",
    "Outcome",
    "observer_factory",
    "set_observer_factory",
)
