"""Serving a WSGI app on the ASGI server's loop (``aiobridge.onloop``): the private parts.

- ``greenlets``: one greenlet per request, the driver that awaits for it, and
  the switcher the core consults for calls made on the loop's own thread;
- ``wsgi``: PEP 3333 over ASGI inside a request greenlet (environ, body, response).

Only this package and :mod:`aiobridge.onloop` import greenlet.
"""
