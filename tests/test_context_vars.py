"""Context variables: a blocking call hands its changes back, as ``await`` does; tasks do not."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from aiobridge import AioThread

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
user: contextvars.ContextVar[str] = contextvars.ContextVar("user")


async def tag(value: str) -> str:
    await asyncio.sleep(0)
    request_id.set(value)
    return value


def test_run_makes_context_changes_visible_to_the_caller(bridge: AioThread) -> None:
    def in_fresh_context() -> None:
        assert request_id.get() is None
        assert bridge.run(tag("abc123")) == "abc123"
        assert request_id.get() == "abc123"  # as after 'await tag(...)'

    contextvars.Context().run(in_fresh_context)
    assert request_id.get() is None  # only the caller's context changed


def test_changes_are_kept_when_the_call_raises(bridge: AioThread) -> None:
    async def set_then_fail() -> None:
        user.set("alice")
        raise LookupError("no such order")

    def in_fresh_context() -> None:
        with pytest.raises(LookupError):
            bridge.run(set_then_fail())
        assert user.get() == "alice"

    contextvars.Context().run(in_fresh_context)


def test_a_value_set_and_reset_inside_leaves_the_caller_alone(bridge: AioThread) -> None:
    async def set_and_reset() -> None:
        token = request_id.set("temporary")
        await asyncio.sleep(0)
        request_id.reset(token)

    def in_fresh_context() -> None:
        request_id.set("outer")
        bridge.run(set_and_reset())
        assert request_id.get() == "outer"

    contextvars.Context().run(in_fresh_context)


def test_submit_and_spawn_behave_like_tasks_and_copy_nothing_back(bridge: AioThread) -> None:
    def in_fresh_context() -> None:
        assert bridge.submit(tag("submitted")).result(10) == "submitted"
        assert bridge.spawn(tag("spawned")).result(10) == "spawned"
        assert request_id.get() is None

    contextvars.Context().run(in_fresh_context)
