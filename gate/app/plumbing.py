"""Flask, with the per-request plumbing whose answer never changes done once.

Flask asks of every hook it calls (each before- and after-request function,
each template context processor, the view itself) whether it is an
``async def``, on every call: about twenty questions a page, always with the
same answers. :class:`Site` asks once per function.

Every page also carries the same security and cache headers. Added through
``response.headers`` they are validated one by one, and copied (and
validated again) when the answer leaves; an :class:`Answer` can instead be
handed them as one ready tuple, appended as it leaves, after everything else
the request set.
"""

from __future__ import annotations

from flask import Flask, Response
from flask.templating import _default_template_ctx_processor


class Answer(Response):
    """A response that can carry fixed headers added as it leaves (see :meth:`leave_with`)."""

    #: (lowercased name, name, value) of each header to add as the answer leaves, unless it has one by then.
    leaving: tuple = ()

    def leave_with(self, headers: tuple) -> None:
        """Add ``headers`` (built by :func:`leaving_headers`) as the answer leaves, each one it lacks by then."""
        self.leaving = headers

    def get_wsgi_response(self, environ):
        """Werkzeug's WSGI answer, plus the leaving headers that nothing set meanwhile (the session's Vary, say)."""
        app_iter, status, headers = super().get_wsgi_response(environ)
        if self.leaving:
            present = {name.lower() for name, _ in headers}
            headers.extend((name, value) for lower, name, value in self.leaving if lower not in present)
        return app_iter, status, headers


def leaving_headers(pairs) -> tuple:
    """``(name, value)`` pairs as :meth:`Answer.leave_with` takes them, each value checked once, here."""
    for name, value in pairs:
        if "\n" in value or "\r" in value:
            raise ValueError(f"header {name} has a newline in its value")
    return tuple((name.lower(), name, value) for name, value in pairs)


#: Functions whose answer :class:`Site` keeps: the site's hooks and views are far fewer. A function made
#: afresh for each request (``after_this_request``) would otherwise be kept for ever.
KEEP_SYNCED = 1024


class Site(Flask):
    """The site's Flask: answers are :class:`Answer`, and each hook is checked for ``async def`` once."""

    response_class = Answer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict = {}

    def ensure_sync(self, func):
        """Flask's ``ensure_sync``, its answer kept per function (a hook does not turn async)."""
        try:
            return self._sync[func]
        except KeyError:
            synced = super().ensure_sync(func)
            if len(self._sync) < KEEP_SYNCED:
                self._sync[func] = synced
            return synced
        except TypeError:  # an unhashable callable: asked every time, as Flask does
            return super().ensure_sync(func)


def drop_repeated_context_processors(app: Flask) -> None:
    """Run Flask's default context processor once a render, not again for the blueprint.

    Each blueprint starts with its own copy of it, so a page of a blueprint put
    ``g`` and ``request`` into the context twice.
    """
    for name, funcs in app.template_context_processors.items():
        if name is not None and _default_template_ctx_processor in funcs:
            funcs.remove(_default_template_ctx_processor)
