"""Prometheus metrics of every bridge in the process (extra ``metrics``: prometheus_client).

:func:`install` makes the metrics and an :class:`~aiobridge.monitor.Observer`
for each bridge that starts afterwards (in a gunicorn worker: each worker's
bridge, after the fork). Every series is labelled with the bridge's name; the
outcomes are ``completed``, ``failed``, ``cancelled`` and ``timed_out``:

| name | type | what |
|---|---|---|
| `aiobridge_calls_total` | counter | calls by `outcome` (`completed`, `failed`, ...) |
| `aiobridge_call_duration_seconds` | histogram | time a call ran on the loop |
| `aiobridge_calls_in_flight` | gauge | calls running on the loop now |
| `aiobridge_calls_queued` | gauge | calls waiting for a slot (`max_in_flight`) |
| `aiobridge_loop_lag_seconds` | histogram | how late the loop's probe ran (each sample) |
| `aiobridge_loop_lag_max_seconds` | gauge | the largest lag since the last scrape |
| `aiobridge_slow_callbacks_total` | counter | callbacks that held the loop too long |
| `aiobridge_loop_blocked_total` | counter | views on the loop that held it, by `route` |
| `aiobridge_cancel_ignored_total` | counter | calls that went on after being cancelled |
| `aiobridge_cancel_redelivered_total` | counter | dropped cancellations delivered again |
| `aiobridge_loop_restarts_total` | counter | loops started again in a forked child |
| `aiobridge_queue_items` | gauge | items held in the bridge's janus queues |

Multiprocess mode (gunicorn with several workers): set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory before the server starts, call :func:`mark_process_dead`
from gunicorn's ``child_exit`` hook and serve :func:`generate` (the Flask
extension does with ``AIOBRIDGE_METRICS_ENDPOINT``). Only ``inc``/``dec``/
``set``/``observe`` are used, never callbacks or custom collectors, so the
figures are summed across workers correctly; gauges use prometheus_client's
``live*`` modes, so a dead worker's calls in flight stop counting once it is
marked dead. A scrape cannot reset every worker's lag maximum, so in this
mode each worker reports the largest lag of the last one to two
``lag_window`` seconds.

Example:
    >>> import asyncio
    >>> from prometheus_client import CollectorRegistry
    >>> from aiobridge import AioThread, metrics
    >>> metrics.uninstall()  # start from scratch: one registry at a time
    >>> registry = CollectorRegistry()
    >>> _ = metrics.install(registry)
    >>> with AioThread(name="api") as bridge:
    ...     bridge.run(asyncio.sleep(0))
    >>> registry.get_sample_value(
    ...     "aiobridge_calls_total", {"bridge": "api", "outcome": "completed"})
    1.0
    >>> metrics.uninstall()
"""

from __future__ import annotations

import glob
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import exposition as _exposition
from prometheus_client import multiprocess as _multiprocess

from . import monitor
from ._features import queues as _queues
from .monitor import Observer, Outcome

if TYPE_CHECKING:
    from ._core.portal import Portal

__all__ = (
    "BridgeMetrics",
    "generate",
    "install",
    "installed",
    "mark_process_dead",
    "multiprocess_dir",
    "uninstall",
)

OUTCOMES: tuple[Outcome, ...] = ("completed", "failed", "cancelled", "timed_out")
#: Buckets of the call duration, from 100 µs to 60 s.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets of the loop lag, from 100 µs to 10 s.
LAG_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
               1.0, 2.5, 5.0, 10.0)
#: Default ``lag_window`` (seconds) in multiprocess mode.
DEFAULT_LAG_WINDOW = 30.0

_clock = time.monotonic


def multiprocess_dir() -> str | None:
    """prometheus_client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``), if set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class BridgeMetrics:
    """The metric families, and a factory of per-bridge observers that feed them.

    Args:
        registry: where the metrics are registered (default: prometheus_client's
            global ``REGISTRY``; in multiprocess mode the values go to files
            whatever the registry).
        lag_window: seconds after which the lag maximum rolls over (it then
            covers the last one to two windows); default: 30 s in multiprocess
            mode, where a scrape cannot reset every worker, else none (each
            scrape through :func:`generate` starts a new period).

    Most code calls :func:`install` instead.
    """

    def __init__(
        self, registry: CollectorRegistry | None = REGISTRY, *, lag_window: float | None = None
    ) -> None:
        self.lag_window = _window(lag_window)
        self.registry = registry
        self._observers: weakref.WeakSet[_BridgeObserver] = weakref.WeakSet()
        self._lock = threading.Lock()
        labels = ("bridge",)
        self.calls = Counter("aiobridge_calls", "Calls that ended, by outcome.",
                             ("bridge", "outcome"), registry=registry)
        self.duration = Histogram("aiobridge_call_duration_seconds",
                                  "Time a call ran on the bridge's loop.", labels,
                                  registry=registry, buckets=DURATION_BUCKETS)
        self.in_flight = Gauge("aiobridge_calls_in_flight", "Calls running on the loop now.",
                               labels, registry=registry, multiprocess_mode="livesum")
        self.queued = Gauge("aiobridge_calls_queued",
                            "Calls waiting for a slot (max_in_flight).", labels,
                            registry=registry, multiprocess_mode="livesum")
        self.lag = Histogram("aiobridge_loop_lag_seconds",
                             "How late the loop's periodic probe ran.", labels,
                             registry=registry, buckets=LAG_BUCKETS)
        self.lag_max = Gauge("aiobridge_loop_lag_max_seconds",
                             "Largest loop lag since the last scrape (multiprocess: "
                             "over the last one to two lag windows).", labels,
                             registry=registry, multiprocess_mode="livemax")
        self.slow_callbacks = Counter("aiobridge_slow_callbacks",
                                      "Callbacks that held the loop longer than "
                                      "slow_callback_duration.", labels, registry=registry)
        self.cancel_ignored = Counter("aiobridge_cancel_ignored",
                                      "Calls that went on after aiobridge cancelled them "
                                      "(a library swallowed the cancellation).", labels,
                                      registry=registry)
        self.cancel_redelivered = Counter("aiobridge_cancel_redelivered",
                                          "Cancellations a task dropped that aiobridge "
                                          "delivered again.", labels, registry=registry)
        self.loop_blocked = Counter("aiobridge_loop_blocked",
                                    "Views served on the loop (aiobridge.onloop) that held it "
                                    "longer than slow_callback_duration, by route.",
                                    ("bridge", "route"), registry=registry)
        self.restarts = Counter("aiobridge_loop_restarts",
                                "Loop threads started again in a forked child.", labels,
                                registry=registry)
        self.queue_items = Gauge("aiobridge_queue_items",
                                 "Items held in the bridge's janus queues.", labels,
                                 registry=registry, multiprocess_mode="livesum")

    def observer(self, bridge: Portal) -> Observer:
        """A new observer for ``bridge`` (the factory set with ``set_observer_factory``)."""
        observer = _BridgeObserver(self, bridge)
        with self._lock:
            self._observers.add(observer)
        return observer

    def scraped(self) -> None:
        """Start a new lag-maximum period in this process's bridges (after a scrape)."""
        with self._lock:
            observers = list(self._observers)
        for observer in observers:
            observer.reset_lag_max()


def _window(lag_window: float | None) -> float | None:
    if lag_window is None and multiprocess_dir() is not None:
        return DEFAULT_LAG_WINDOW
    return lag_window


class _BridgeObserver(Observer):
    """Feeds one bridge's events into the metric children labelled with its name."""

    def __init__(self, metrics: BridgeMetrics, bridge: Portal) -> None:
        name = bridge.name
        self._calls = {outcome: metrics.calls.labels(name, outcome) for outcome in OUTCOMES}
        self._duration = metrics.duration.labels(name)
        self._in_flight = metrics.in_flight.labels(name)
        self._queued = metrics.queued.labels(name)
        self._lag = metrics.lag.labels(name)
        self._lag_max = metrics.lag_max.labels(name)
        self._slow = metrics.slow_callbacks.labels(name)
        self._blocked = metrics.loop_blocked
        self._name = name
        self._restarts = metrics.restarts.labels(name)
        self._cancel_ignored = metrics.cancel_ignored.labels(name)
        self._cancel_redelivered = metrics.cancel_redelivered.labels(name)
        self._queue_items = metrics.queue_items.labels(name)
        self._window = metrics.lag_window
        self._bridge = weakref.ref(bridge)
        self._window_started = _clock()
        self._max_now = 0.0
        self._max_before = 0.0
        self._shown_max = -1.0
        self._shown_items = -1

    def loop_started(self, after_fork: bool) -> None:
        # A forked child's copies of the parent's values (single-process mode)
        # describe calls that do not exist here.
        self._in_flight.set(0)
        self._queued.set(0)
        self._queue_items.set(0)
        if after_fork:
            self._restarts.inc()

    def in_flight(self, delta: int) -> None:
        self._in_flight.inc(delta)

    def queued(self, delta: int) -> None:
        self._queued.inc(delta)

    def finished(self, outcome: Outcome, seconds: float | None) -> None:
        self._calls[outcome].inc()
        if seconds is not None:
            self._duration.observe(seconds)

    def slow_callback(self) -> None:
        self._slow.inc()

    def loop_blocked(self, route: str) -> None:
        self._blocked.labels(self._name, route).inc()

    def cancel_ignored(self) -> None:
        self._cancel_ignored.inc()

    def cancel_redelivered(self) -> None:
        self._cancel_redelivered.inc()

    def lag(self, seconds: float) -> None:
        self._lag.observe(seconds)
        if self._window is not None:
            now = _clock()
            if now - self._window_started >= self._window:
                self._window_started = now
                self._max_before, self._max_now = self._max_now, 0.0
        if seconds > self._max_now:
            self._max_now = seconds
        largest = max(self._max_now, self._max_before)
        if largest != self._shown_max:
            self._shown_max = largest
            self._lag_max.set(largest)
        self._sample_queues()

    def reset_lag_max(self) -> None:
        self._max_now = self._max_before = 0.0
        self._window_started = _clock()
        self._shown_max = 0.0
        self._lag_max.set(0.0)

    def _sample_queues(self) -> None:
        bridge = self._bridge()
        tracker = None if bridge is None else _queues.tracker_of(bridge)
        items = 0 if tracker is None else sum(q.sync_q.qsize() for q in list(tracker.queues))
        if items != self._shown_items:
            self._shown_items = items
            self._queue_items.set(items)


_install_lock = threading.Lock()
# A registry refuses a second family of the same name: one BridgeMetrics per registry.
_made: weakref.WeakKeyDictionary[CollectorRegistry, BridgeMetrics] = weakref.WeakKeyDictionary()


def install(
    registry: CollectorRegistry | None = REGISTRY, *, lag_window: float | None = None
) -> BridgeMetrics:
    """Export the metrics of every bridge that starts from now on. Idempotent.

    Call it before the bridges start (at import of the app, or in gunicorn's
    config). A bridge already running is observed after its next start (e.g.
    in a forked child).

    Args:
        registry: see :class:`BridgeMetrics`.
        lag_window: see :class:`BridgeMetrics`.

    Returns:
        The installed :class:`BridgeMetrics` (the same on a second call with the
        same registry).

    Raises:
        RuntimeError: the metrics are already installed with another registry
            (call :func:`uninstall` first).

    Example:
        >>> from aiobridge import metrics
        >>> metrics.install()  # doctest: +SKIP
    """
    with _install_lock:
        current = installed()
        if current is not None and current.registry is not registry:
            raise RuntimeError(
                "aiobridge.metrics is already installed with another registry; "
                "call aiobridge.metrics.uninstall() first"
            )
        if current is None:
            current = None if registry is None else _made.get(registry)
            if current is None:
                current = BridgeMetrics(registry, lag_window=lag_window)
                if registry is not None:
                    _made[registry] = current
            else:
                current.lag_window = _window(lag_window)
        monitor.set_observer_factory(current.observer)
        return current


def installed() -> BridgeMetrics | None:
    """The metrics made by :func:`install`, while they are the bridges' observer factory.

    Read from the observer factory itself (:func:`aiobridge.monitor.observer_factory`),
    so a factory replaced or cleared with ``set_observer_factory`` uninstalls them.
    """
    owner = getattr(monitor.observer_factory(), "__self__", None)
    return owner if isinstance(owner, BridgeMetrics) else None


def uninstall() -> None:
    """Stop observing bridges that start from now on and forget the metrics.

    The metric families stay registered in their registry.

    Example:
        >>> from aiobridge import metrics
        >>> metrics.uninstall()
    """
    with _install_lock:
        monitor.set_observer_factory(None)


def generate(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The Prometheus text exposition, and its content type, for a ``/metrics`` view.

    In multiprocess mode the figures of every worker are collected from
    ``PROMETHEUS_MULTIPROC_DIR`` (and the lag maximum keeps its time windows,
    the same in every worker); otherwise ``registry`` (default: the one given
    to :func:`install`, else the global registry) is exposed and a new
    lag-maximum period starts.

    Example:
        >>> body, content_type = generate()
        >>> content_type.startswith("text/plain")
        True
    """
    path = multiprocess_dir()
    if path is not None:
        target = CollectorRegistry()
        target.register(_WorkersFiles(path))
        return _exposition.generate_latest(target), _exposition.CONTENT_TYPE_LATEST
    current = installed()
    target = registry if registry is not None else _registry_of(current)
    body = _exposition.generate_latest(target)
    if current is not None:
        current.scraped()
    return body, _exposition.CONTENT_TYPE_LATEST


class _WorkersFiles:
    """Every worker's figures from the multiprocess directory, but files not sized yet.

    A worker creates its file and only then gives it its size: a scrape in
    between read an empty file and failed as a whole (every worker's figures
    lost), and a worker killed in between left that empty file, so every later
    scrape failed. A file shorter than its header holds no figure yet: skipped.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Any:
        files = [f for f in glob.glob(os.path.join(self.path, "*.db"))
                 if _size(f) >= _DB_HEADER_BYTES]  # fmt: skip
        return _multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


#: A multiprocess file starts with its used length (4 bytes) and 4 of padding.
_DB_HEADER_BYTES = 8


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # removed meanwhile (mark_process_dead)
        return 0


def _registry_of(metrics: BridgeMetrics | None) -> CollectorRegistry:
    registry = REGISTRY if metrics is None else metrics.registry
    return registry if registry is not None else CollectorRegistry()


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's gauges (multiprocess mode; does nothing otherwise).

    Call it from gunicorn's ``child_exit`` hook; the dead worker's counters and
    histograms keep counting in the totals, as Prometheus expects of counters.

    Example:
        >>> def child_exit(server, worker):
        ...     mark_process_dead(worker.pid)
    """
    path = multiprocess_dir()
    if path is not None:
        _multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
