"""The features of :class:`aiobridge.AioThread` built on the portal.

Each module is the implementation of a group of ``AioThread`` methods and
takes a :class:`~aiobridge._core.portal.Portal`, never an ``AioThread``:

- ``combinators``: ``gather``, ``first``, ``as_completed``;
- ``streams``: ``iterate`` (async iterables consumed from a thread, with backpressure);
- ``contexts``: ``enter`` (async context managers used in a ``with`` block);
- ``queues``: ``queue`` (janus queues bound to the bridge's loop);
- ``resources``: ``resource`` (loop-bound objects built once, closed at stop).
"""
