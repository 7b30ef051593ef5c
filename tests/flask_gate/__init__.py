"""Flask's own test suite as aiobridge's gate (issue 23).

``python -m tests.flask_gate`` downloads the sdist of the installed Flask
release from PyPI (it ships Flask's ``tests/``), unpacks it into a temporary
directory and runs those tests with :mod:`tests.flask_gate.plugin`, which
installs :class:`aiobridge.flask.AioBridge` on every app they create and
checks that the extension, not Flask's default, ran their async code. Then it
runs Flask's ``tests/test_async.py`` again with the extension bypassed and
requires the plugin to catch it. See ``docs/testing.md``.
"""
