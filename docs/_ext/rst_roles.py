"""Griffe extension for the API reference: Sphinx roles in docstrings as code.

aiobridge's docstrings are Google style but name other objects with Sphinx
roles (``:class:`AioThread```, ``:meth:`stop```), which Markdown would show
literally. This rewrites each role to a code span before mkdocstrings renders
the docstring; the source files are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):`~?([^`]+)`")


class RstRoles(griffe.Extension):
    """Replace ``:role:`target``` with ``target`` in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"``\1``", obj.docstring.value)
