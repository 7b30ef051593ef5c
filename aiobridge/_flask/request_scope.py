"""Per-request state of the Flask extension: one deadline, and context changes to undo.

A :class:`RequestScope` lives in the request's WSGI environ (or, for async code run
in an app context without a request, in a weak map keyed by the app context
object). Never in ``g``: an app may replace ``g``'s class
(``app_ctx_globals_class``) with one that has no ``get``, or
store what it likes there. It gives every bridged call of
the request the time left until the request's deadline (``AIOBRIDGE_TIMEOUT``
from the moment the request started), copies the context variables each call
sets back into the request thread, as ``await`` would, and undoes them when
the request (or app context) is torn down, so nothing leaks into the next
request served by the same thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from flask import Flask, Response, has_app_context, has_request_context, request
from flask.ctx import AppContext
from flask.globals import app_ctx
from flask.signals import request_finished, request_started

from .._core.awaitables import close_awaitables
from .._core.context import copy_back
from ..errors import BridgeTimeoutError

__all__ = ("RequestScope", "current_scope", "install")

T = TypeVar("T")
P = ParamSpec("P")

_ENVIRON_KEY = "aiobridge.scope"
#: Set by ``aiobridge.onloop`` in the environ of a request served on the server's loop.
ON_LOOP_KEY = "aiobridge.on_loop"
#: The request's route, for the watchdog and the metrics of ``aiobridge.onloop``.
ROUTE_KEY = "aiobridge.route"
# Scopes of app contexts without a request; an entry goes with its context.
_APP_SCOPES: weakref.WeakKeyDictionary[AppContext, RequestScope] = weakref.WeakKeyDictionary()
_copy_context = contextvars.copy_context


class RequestScope:
    """The bridged calls of one request (or app context).

    Args:
        budget: ``AIOBRIDGE_TIMEOUT`` when the request started (None: no deadline).
    """

    __slots__ = ("budget", "closed", "deadline", "finished", "isolated", "tokens")

    def __init__(self, budget: float | None, isolated: bool = False) -> None:
        self.budget = budget
        #: The request runs in a context of its own (a request greenlet on the server's
        #: loop, ``aiobridge.onloop``): calls write into it directly, nothing to undo.
        self.isolated = isolated
        self.deadline = None if budget is None else time.monotonic() + budget
        self.finished = False  # the response is made: teardown code is not bound by it
        self.closed = False
        self.tokens: list[contextvars.Token[Any]] = []

    def time_left(self, awaitable: Awaitable[Any], per_call: float | None) -> float | None:
        """Seconds the next call may take; raise at once if the deadline has passed."""
        if self.deadline is None or self.finished:
            return per_call
        left = self.deadline - time.monotonic()
        if left <= 0:
            close_awaitables((awaitable,))
            raise BridgeTimeoutError(
                f"the request used up its AIOBRIDGE_TIMEOUT of {self.budget} s before this "
                "async call could start"
            )
        return left

    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args)`` (a blocking bridged call); keep the context changes it made."""
        if self.isolated:
            return fn(*args, **kwargs)
        scratch = _copy_context()
        try:
            return scratch.run(fn, *args, **kwargs)
        finally:
            if not self.closed:  # after the undo, changes are dropped
                self.tokens.extend(copy_back(scratch))

    def undo(self) -> None:
        """Reset, newest first, every context variable the calls set."""
        self.closed = True
        tokens = self.tokens
        while tokens:
            token = tokens.pop()
            # A token from another context (code that copied the request's) cannot be reset.
            with contextlib.suppress(ValueError, RuntimeError):
                token.var.reset(token)


def current_scope() -> RequestScope | None:
    """The scope of the current request, else of the current app context, else None."""
    if has_request_context():
        environ = request.environ
        scope: RequestScope | None = environ.get(_ENVIRON_KEY)
        if scope is None:  # e.g. app.test_request_context(): no request_started signal
            scope = environ[_ENVIRON_KEY] = RequestScope(None)
        return scope
    if has_app_context():
        context: AppContext = app_ctx._get_current_object()  # type: ignore[attr-defined]
        scope = _APP_SCOPES.get(context)
        if scope is None:
            scope = _APP_SCOPES[context] = RequestScope(None)
        return scope
    return None


def install(app: Flask) -> None:
    """Start a scope with each request of ``app`` and undo it at teardown."""
    request_started.connect(_request_started, app, weak=False)
    request_finished.connect(_request_finished, app, weak=False)
    app.teardown_request(_undo_request)
    app.teardown_appcontext(_undo_app_context)


def _request_started(app: Flask, **_: Any) -> None:
    budget = app.config.get("AIOBRIDGE_TIMEOUT")
    environ = request.environ
    on_loop = bool(environ.get(ON_LOOP_KEY))
    environ[_ENVIRON_KEY] = RequestScope(None if budget is None else float(budget), on_loop)
    if on_loop:  # what the watchdog names if this request blocks the loop
        rule = request.url_rule
        environ[ROUTE_KEY] = rule.rule if rule is not None else "<no route>"


def _request_finished(app: Flask, response: Response, **_: Any) -> None:
    scope = request.environ.get(_ENVIRON_KEY)
    if scope is not None:
        scope.finished = True


def _undo_request(error: BaseException | None) -> None:
    scope = request.environ.get(_ENVIRON_KEY)
    if scope is not None:
        scope.undo()


def _undo_app_context(error: BaseException | None) -> None:
    # Flask calls this while the context being popped is still the current one.
    scope = _APP_SCOPES.pop(app_ctx._get_current_object(), None)  # type: ignore[attr-defined]
    if scope is not None:
        scope.undo()
