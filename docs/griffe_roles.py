"""Griffe extension: show the docstrings' Sphinx roles as code in the API reference.

The docstrings name objects the Sphinx way (``:func:`agents.updates.softmax```,
``:class:`~nlhf_envs.game.PreferenceGame```); Markdown would print the role as text. This rewrites
each role to inline code (the ``~`` form shows the last component, as Sphinx does).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|ref):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(Extension):
    """Rewrite Sphinx roles in every docstring to inline code."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        """Rewrite the roles of ``obj``'s docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
