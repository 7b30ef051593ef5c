"""The core: one loop thread and everything that crosses into it.

Nothing here imports Flask, aiohttp, redis, gevent or greenlet, nor anything
above the core; above it, only :class:`~.portal.Portal` is used. Modules:

- ``portal``: the one object above the core talks to (hand-off rules, checks);
- ``loop_thread``: the lifecycle of the thread and its loop (``state``);
- ``handoff``: the caller side, from any thread (the inbox);
- ``dispatch``: the loop side (accept, launch, execute, cancel);
- ``calls``: a call and its flags, and how its caller is woken;
- ``wakeup``: the doorbell (caller to loop) and the waking selector (loop to caller);
- ``cancellation``: re-delivered, dropped and abandoned cancellations;
- ``shutdown``: drain, cancel, close, settle what is left;
- ``process``: every loop thread of the process, the exit hook, the fork hook;
- ``fork``: what a forked child keeps of its parent's loop;
- ``health``: counters, the lag probe and the stall watchdog;
- ``observers``: the stats snapshot and the observer of events;
- ``server_checks``: hosts a loop thread cannot run in (uWSGI);
- ``adopt``: a loop thread that adopts a server's running loop (``aiobridge.onloop``);
- ``switch``: calls made on that loop's thread from a request greenlet (switched);
- ``options``: checks of a bridge's and a call's options;
- ``awaitables``, ``context``: small helpers of the call path.

A call's hot path reads in four files: ``portal`` → ``handoff`` →
``dispatch`` → ``calls``.
"""
