"""Griffe extension for the API reference: Sphinx roles in docstrings as code.

aiobridge's docstrings are Google style but name other objects with Sphinx
roles (``:class:`AioThread```, ``:meth:`stop```) and end the line before a
literal block with ``::``, which Markdown would show literally. This rewrites
each role to a code span and ``::`` to ``:`` before mkdocstrings renders the
docstring; the source files are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):`~?([^`]+)`")
_LITERAL_INTRO = re.compile(r"(?<=\S)::$", re.M)


class RstRoles(griffe.Extension):
    """Replace ``:role:`target``` with ``target`` and a closing ``::`` with ``:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _ROLE.sub(r"``\1``", obj.docstring.value)
            obj.docstring.value = _LITERAL_INTRO.sub(":", value)
