"""Flask, with the per-request plumbing whose answer never changes done once.

Flask asks of every hook it calls (each before- and after-request function,
each template context processor, the view itself) whether it is an
``async def``, on every call: about twenty questions a page, always with the
same answers. :class:`Site` asks once per function.
"""

from __future__ import annotations

from flask import Flask
from flask.templating import _default_template_ctx_processor


class Site(Flask):
    """The site's Flask: each hook is checked for ``async def`` once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict = {}

    def ensure_sync(self, func):
        """Flask's ``ensure_sync``, its answer kept per function (a hook does not turn async)."""
        try:
            return self._sync[func]
        except KeyError:
            synced = self._sync[func] = super().ensure_sync(func)
            return synced
        except TypeError:  # an unhashable callable: asked every time, as Flask does
            return super().ensure_sync(func)


def drop_repeated_context_processors(app: Flask) -> None:
    """Run Flask's default context processor once a render, not again for the blueprint.

    Each blueprint starts with its own copy of it, so a page of a blueprint put
    ``g``, ``request`` and ``session`` into the context twice.
    """
    for name, funcs in app.template_context_processors.items():
        if name is not None and _default_template_ctx_processor in funcs:
            funcs.remove(_default_template_ctx_processor)
