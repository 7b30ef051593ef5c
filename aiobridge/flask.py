"""Flask integration: ``async def`` views and handlers on the process's one bridge.

Flask runs each ``async def`` view through ``app.async_to_sync``, whose default
starts a new event loop per call, so loop-bound clients (an
``aiohttp.ClientSession``, a ``redis.asyncio`` pool) cannot be shared between
requests. :class:`AioBridge` replaces that method on the app: every async view,
hook and error handler then runs on one long-lived loop (an
:class:`~aiobridge.AioThread`) with ``request``, ``g``, ``current_app`` and
``session`` usable inside it. No view code changes.

Example::

    from flask import Flask
    from aiobridge.clients import http_session
    from aiobridge.flask import AioBridge

    app = Flask(__name__)
    ext = AioBridge(app)
    http = ext.resource(http_session())

    @app.get("/joke")
    async def joke():
        session = await http.get()
        async with session.get("https://example.invalid/joke") as response:
            return await response.json()

Only this module and :mod:`aiobridge._flask_request` import Flask.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from flask import Flask, Response, current_app, has_app_context, jsonify
from flask.config import Config
from flask.typing import ResponseReturnValue

from ._core import process
from ._flask import request_scope as _flask_request
from ._flask import threaded as _flask_threaded
from ._flask.threaded import threaded
from .bridge import AioThread
from .errors import BridgeClosedError, BridgeTimeoutError

if TYPE_CHECKING:
    from ._features.resources import Resource

__all__ = ("EXTENSION_KEY", "AioBridge", "shutdown", "startup", "threaded")

T = TypeVar("T")

#: Key of the extension object in ``app.extensions``.
EXTENSION_KEY = "aiobridge"

_DEFAULTS: dict[str, Any] = {
    "AIOBRIDGE_TIMEOUT": 30.0,
    "AIOBRIDGE_MAX_IN_FLIGHT": None,
    "AIOBRIDGE_UVLOOP": False,
    "AIOBRIDGE_SLOW_CALLBACK": 0.1,
    "AIOBRIDGE_DEBUG": None,
    "AIOBRIDGE_STOP_TIMEOUT": 5.0,
    "AIOBRIDGE_THREAD_NAME": "aiobridge",
    "AIOBRIDGE_METRICS_ENDPOINT": None,
}


@dataclass(eq=False)
class _AppState:
    """What the extension keeps per app: its bridge, and its config (read when used)."""

    app_name: str
    config: Config
    bridge: AioThread
    owns_bridge: bool

    @property
    def timeout(self) -> float | None:
        """``AIOBRIDGE_TIMEOUT``: seconds per request, or None."""
        timeout = self.config["AIOBRIDGE_TIMEOUT"]
        return None if timeout is None else float(timeout)

    def stop(self, timeout: float | None = None) -> None:
        if self.owns_bridge:
            default = float(self.config["AIOBRIDGE_STOP_TIMEOUT"])
            self.bridge.stop(default if timeout is None else timeout)


# Bridges to stop when the interpreter exits (their loop threads are daemons).
_LIVE_STATES: weakref.WeakSet[_AppState] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    """Each app's bridge stops with its own ``AIOBRIDGE_STOP_TIMEOUT`` (the process's exit hook)."""
    for state in list(_LIVE_STATES):
        state.stop()


def _track_for_exit(state: _AppState) -> None:
    _LIVE_STATES.add(state)
    process.before_exit(_stop_all_at_exit)


def _state_of(app: Flask) -> _AppState | None:
    ext = app.extensions.get(EXTENSION_KEY)
    return ext._states.get(app) if isinstance(ext, AioBridge) else None


def _state(app: Flask | None = None) -> _AppState:
    target = app if app is not None else (
        current_app._get_current_object() if has_app_context() else None  # type: ignore[attr-defined]
    )
    if target is None:
        raise RuntimeError(
            "no Flask app: call this inside an app or request context, or pass app="
        )
    state = _state_of(target)
    if state is None:
        raise RuntimeError(
            f"AioBridge is not initialised on app {target.name!r}; call AioBridge(app) "
            "or ext.init_app(app) first"
        )
    return state


def _bridge_from_config(config: Config) -> AioThread:
    loop_factory = None
    if config["AIOBRIDGE_UVLOOP"]:
        try:
            import uvloop
        except ImportError as exc:
            raise ImportError(
                "AIOBRIDGE_UVLOOP is set but uvloop is not installed: pip install uvloop"
            ) from exc
        loop_factory = uvloop.new_event_loop
    debug = config["AIOBRIDGE_DEBUG"]
    return AioThread(
        name=str(config["AIOBRIDGE_THREAD_NAME"]),
        loop_factory=loop_factory,
        debug=None if debug is None else bool(debug),
        slow_callback_duration=float(config["AIOBRIDGE_SLOW_CALLBACK"]),
        max_in_flight=config["AIOBRIDGE_MAX_IN_FLIGHT"],
    )


def _run(state: _AppState, awaitable: Awaitable[T], timeout: float | None) -> T:
    """Run on the app's bridge; a call cancelled by a stopping bridge is a closed bridge."""
    try:
        return state.bridge.run(awaitable, timeout=timeout)
    except concurrent.futures.CancelledError as exc:
        if state.bridge.running:
            raise
        raise BridgeClosedError(f"bridge {state.bridge.name!r} stopped during the call") from exc


def _call(state: _AppState, awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """A blocking call of the request: within its deadline, its context changes kept."""
    scope = _flask_request.current_scope()
    if scope is None:
        return _run(state, awaitable, state.timeout if timeout is None else timeout)
    if timeout is None:
        timeout = scope.time_left(awaitable, state.timeout)
    return scope.run(_run, state, awaitable, timeout)


def _stream_body(
    bridge: AioThread, source: AsyncIterable[Any], buffer: int, context: contextvars.Context
) -> Iterator[Any]:
    # The server iterates the body after the view returned; the stream runs in the
    # view's context (its tracing span, its log bindings).
    items = context.run(bridge.iterate, source, buffer=buffer)
    try:
        yield from items
    except (BridgeClosedError, concurrent.futures.CancelledError):
        if bridge.running:
            raise
        # The bridge is stopping (process exit): end the response quietly.
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _make_stream(
    state: _AppState, source: AsyncIterable[Any], buffer: int = 1, **response_kw: Any
) -> Response:
    body = _stream_body(state.bridge, source, buffer, contextvars.copy_context())
    return Response(body, **response_kw)


def _is_async_iterable(value: object) -> bool:
    return hasattr(value, "__aiter__") and not hasattr(value, "__iter__")


def _async_to_sync(
    state: _AppState, func: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Any]:
    """The replacement of ``Flask.async_to_sync``: run ``func`` on the shared loop."""

    @functools.wraps(func)
    def run_on_bridge(*args: Any, **kwargs: Any) -> Any:
        result = _call(state, func(*args, **kwargs))
        if _is_async_iterable(result):
            return _make_stream(state, result)
        return result

    return run_on_bridge


def _check_async_to_sync_is_flasks(app: Flask) -> None:
    """Refuse to replace an ``async_to_sync`` the app's author overrode (Flask's hook)."""
    override = vars(app).get("async_to_sync")
    if override is None and type(app).async_to_sync is not Flask.async_to_sync:
        override = type(app).async_to_sync
    if override is not None:
        where = getattr(override, "__qualname__", repr(override))
        raise RuntimeError(
            f"app {app.name!r} overrides Flask.async_to_sync ({where}), which AioBridge must "
            "replace to run async views on its loop. Remove the override to let AioBridge run "
            "them, or keep it with AioBridge(app, async_views=False): async views then run "
            "your way, and ext.run(), ext.stream() and resources still use the bridge"
        )


def _add_metrics_endpoint(app: Flask, path: str) -> None:
    from . import metrics  # the "metrics" extra: imported only when asked for

    if metrics.installed() is None:
        metrics.install()

    def aiobridge_metrics() -> Response:
        body, content_type = metrics.generate()
        return Response(body, content_type=content_type)

    app.add_url_rule(path, "aiobridge_metrics", aiobridge_metrics, methods=["GET"])


def _timeout_response(error: BridgeTimeoutError) -> ResponseReturnValue:
    body = {"error": "the request took too long and was cancelled", "timeout": _state().timeout}
    return jsonify(body), 504


def _closed_response(error: BridgeClosedError) -> ResponseReturnValue:
    body = {"error": "the service is shutting down; retry shortly"}
    return jsonify(body), 503, {"Retry-After": "1", "Connection": "close"}


class AioBridge:
    """Run a Flask app's async code on one long-lived event loop per process.

    ``AioBridge(app)`` or ``AioBridge()`` then ``init_app(app)``, once per app
    (a second ``init_app`` on the same app raises ``RuntimeError``). The
    extension object is ``app.extensions["aiobridge"]``. Several apps may share
    one extension object; each gets its own bridge built from its own config,
    unless a ``bridge`` is passed, which they then share (and whose owner
    stops it).

    Args:
        app: the app to install on now (else call :meth:`init_app`).
        bridge: a bridge to use instead of making one per app; its owner stops it.
        async_views: replace ``app.async_to_sync`` so that async views, hooks
            and handlers run on the bridge (the point of the extension). With
            ``False`` the app keeps its own ``async_to_sync`` (needed when its
            class overrides it); :meth:`run`, :meth:`stream` and resources
            still use the bridge.

    Configuration keys (defaults are set with ``setdefault``; see
    ``docs/flask.md`` for the full table):

    ``AIOBRIDGE_TIMEOUT`` (``30.0``)
        Seconds one request's async code may take in total: its async views,
        hooks and error handlers, and :meth:`run`, share one deadline that
        starts when the request does. ``None`` for no limit. On expiry the
        running task is cancelled and the client gets a 504 with a JSON body.
    ``AIOBRIDGE_MAX_IN_FLIGHT`` (``None``)
        At most this many calls run on the loop at once; the rest wait.
    ``AIOBRIDGE_UVLOOP`` (``False``)
        Run the loop on uvloop.
    ``AIOBRIDGE_SLOW_CALLBACK`` (``0.1``)
        Seconds a callback may hold the loop before it is logged as slow.
    ``AIOBRIDGE_DEBUG`` (``None``)
        asyncio debug mode on the loop; ``None`` follows the interpreter
        (``python -X dev``, ``PYTHONASYNCIODEBUG=1``), as ``asyncio.run`` does.
    ``AIOBRIDGE_STOP_TIMEOUT`` (``5.0``)
        Seconds in-flight work gets to finish at shutdown before it is cancelled.
    ``AIOBRIDGE_THREAD_NAME`` (``"aiobridge"``)
        Name of the loop thread.
    ``AIOBRIDGE_THREADED_VIEWS`` (``()``)
        Endpoints whose sync views run in a thread pool when the app is served
        on the server's loop (:mod:`aiobridge.onloop`), like views marked with
        :func:`threaded`: for blocking views you cannot edit. A list, or a
        comma-separated string.
    ``AIOBRIDGE_METRICS_ENDPOINT`` (``None``)
        A path such as ``"/metrics"`` (or ``True`` for that one) serves the
        Prometheus metrics of :mod:`aiobridge.metrics` (installed then with the
        default registry, unless already installed; needs the ``metrics``
        extra). Off by default.

    Context variables set by async views, hooks and handlers (a request id,
    structlog's ``bind_contextvars``) are seen by the code that runs after
    them in the request, as with sync hooks; they are undone when the request
    ends, so nothing leaks into the next request served by the same thread.

    Lifecycle: nothing starts at ``init_app``; the loop thread starts on the
    first call in the process (in each gunicorn worker, never in the master,
    even with ``--preload``) or explicitly with :func:`startup`. It stops at
    interpreter exit, or earlier with :func:`shutdown` (call it from gunicorn's
    ``worker_exit``). While it stops, calls answer 503 with a JSON body.

    Example:
        >>> app = Flask(__name__)
        >>> ext = AioBridge(app)
        >>> @app.get("/sum")
        ... async def total():
        ...     return {"sum": await add(1, 2)}

    Thread safety:
        Every method may be called from any request thread, concurrently.
    """

    def __init__(
        self,
        app: Flask | None = None,
        bridge: AioThread | None = None,
        *,
        async_views: bool = True,
    ) -> None:
        self._bridge = bridge
        self._async_views = async_views
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install the extension on ``app``.

        Raises:
            RuntimeError: the app already has an AioBridge, or its class
                overrides ``async_to_sync`` (and ``async_views`` is true).
            ImportError: ``AIOBRIDGE_UVLOOP`` is set but uvloop is missing.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"AioBridge is already initialised on app {app.name!r}; call init_app() "
                "once per app"
            )
        if self._async_views:
            _check_async_to_sync_is_flasks(app)
        for key, value in _DEFAULTS.items():
            app.config.setdefault(key, value)
        state = _AppState(
            app_name=app.name,
            config=app.config,
            bridge=self._bridge if self._bridge is not None else _bridge_from_config(app.config),
            owns_bridge=self._bridge is None,
        )
        self._states[app] = state
        app.extensions[EXTENSION_KEY] = self
        if self._async_views:
            app.async_to_sync = functools.partial(_async_to_sync, state)  # type: ignore[method-assign]
        _flask_request.install(app)
        _flask_threaded.install(app)
        app.register_error_handler(BridgeTimeoutError, _timeout_response)
        app.register_error_handler(BridgeClosedError, _closed_response)
        endpoint = app.config["AIOBRIDGE_METRICS_ENDPOINT"]
        if endpoint:
            _add_metrics_endpoint(app, "/metrics" if endpoint is True else str(endpoint))
        _track_for_exit(state)

    def _app(self, app: Flask | None) -> Flask:
        """``app``, else the current app, else the one app this extension serves."""
        if app is not None or has_app_context():
            return app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        apps = list(self._states.keys())
        if len(apps) == 1:
            return apps[0]
        raise RuntimeError(
            f"this AioBridge serves {len(apps)} apps and none is current: pass app=, or "
            "call it inside an app or request context"
        )

    def get_bridge(self, app: Flask | None = None) -> AioThread:
        """The bridge of ``app`` (default: the current app, else the extension's only app)."""
        return _state(self._app(app)).bridge

    @property
    def bridge(self) -> AioThread:
        """The bridge of the current app (else of the extension's only app)."""
        return self.get_bridge()

    def run(self, awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
        """Run ``awaitable`` on the current app's loop from a sync view; return its result.

        Like an async view, it shares the request's deadline, and context
        variables it sets are visible afterwards (until the request ends).

        Args:
            awaitable: a coroutine or other awaitable.
            timeout: seconds (default: what is left of the request's
                ``AIOBRIDGE_TIMEOUT``); on expiry the task is cancelled and
                the request answers 504.

        Example:
            >>> @app.get("/dog")
            ... def dog():
            ...     return ext.run(fetch_dog())
        """
        return _call(_state(), awaitable, timeout)

    @overload
    def resource(
        self,
        factory: Callable[[], Awaitable[T]],
        *,
        close: Callable[[T], Any] | None = None,
        app: Flask | None = None,
    ) -> Resource[T]: ...

    @overload
    def resource(
        self,
        factory: Callable[[], Awaitable[T] | T],
        *,
        close: Callable[[T], Any] | None = None,
        app: Flask | None = None,
    ) -> Resource[T]: ...

    def resource(
        self,
        factory: Callable[[], Any],
        *,
        close: Callable[[Any], Any] | None = None,
        app: Flask | None = None,
    ) -> Resource[Any]:
        """Register a loop-bound shared object (a client session, a pool) for an app.

        It is built on the loop on first use, shared by every request and closed
        when the bridge stops. See :meth:`aiobridge.AioThread.resource`.

        Args:
            factory: builds the object (sync or async), e.g.
                ``aiobridge.clients.http_session()``.
            close: how to close it (default: its ``aclose()``/``close()``).
            app: the app (default: the current app, else the one app this
                extension was initialised with).

        Example:
            >>> from aiobridge.clients import redis_client
            >>> redis = ext.resource(redis_client("redis://127.0.0.1:6379/0"))
            >>> async def count():
            ...     return await (await redis.get()).incr("hits")
        """
        return _state(self._app(app)).bridge.resource(factory, close=close)

    def stream(
        self, source: AsyncIterable[Any], *, buffer: int = 1, **response_kw: Any
    ) -> Response:
        """A streamed response whose body is produced by ``source`` on the loop.

        ``source`` (an async generator of ``str`` or ``bytes``) runs on the
        bridge; the WSGI server sends each item as it comes. When the client
        goes away the server closes the response, which cancels ``source`` on
        the loop, so its ``finally`` blocks release what it holds. An async
        view may also simply return an async generator. ``source`` runs in a
        copy of the view's context, so a tracing span or log bindings of the
        view are seen in every item; the request itself has ended by then:
        read what ``source`` needs from it in the view.

        Args:
            source: the async iterable producing the body.
            buffer: items produced ahead of the client (backpressure).
            **response_kw: passed to :class:`flask.Response` (``mimetype``,
                ``headers``, ``status``).

        Example:
            >>> @app.get("/events")
            ... def events():
            ...     return ext.stream(ticks(), mimetype="text/event-stream")
        """
        return _make_stream(_state(), source, buffer, **response_kw)


def startup(app: Flask) -> None:
    """Start ``app``'s bridge now rather than on first use (e.g. in gunicorn's
    ``post_worker_init``). Does nothing if the app has no AioBridge.

    Example:
        >>> def post_worker_init(worker):
        ...     startup(worker.wsgi)
    """
    state = _state_of(app)
    if state is not None:
        state.bridge.start()


def shutdown(app: Flask, timeout: float | None = None) -> None:
    """Stop ``app``'s bridge gracefully (e.g. in gunicorn's ``worker_exit``).

    In-flight calls get ``timeout`` seconds (default ``AIOBRIDGE_STOP_TIMEOUT``);
    then every task left on the loop is cancelled and given time to clean up,
    resources are closed and the loop thread joined. Idempotent; does nothing
    if the app has no AioBridge or was given a bridge it does not own.

    Example:
        >>> def worker_exit(server, worker):
        ...     shutdown(worker.wsgi)
    """
    state = _state_of(app)
    if state is not None:
        state.stop(timeout)
