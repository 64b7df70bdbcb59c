"""Flask, with the per-request plumbing whose answer never changes done once.

Flask asks of every hook it calls (each before- and after-request function,
each template context processor, the view itself) whether it is an
``async def``, on every call: about twenty questions a page, always with the
same answers. :class:`Site` asks once per function.

Flask also works out, on every request, which before-, after- and
teardown-request hooks and which template context processors apply to the
request's blueprint, walking its names each time. Hooks cannot be added once the site
has served its first request (Flask refuses), so :class:`Site` works each
blueprint's lists out once, on its first request, and calls them in Flask's order.

Every page also carries the same security and cache headers. Added through
``response.headers`` they are validated one by one, and copied (and
validated again) when the answer leaves; an :class:`Answer` can instead be
handed them as one ready tuple, appended as it leaves, after everything else
the request set.

Flask's ``request``, ``session``, ``g`` and ``current_app`` are proxies. On
Python 3.11 each attribute read through one first fails as an ordinary
attribute (an ``AttributeError`` made and dropped) before the proxy finds
the object: about a microsecond, against a tenth of that for the object
itself. Code that runs on every request takes the object once with
``_get_current_object()`` (Werkzeug's documented way) and reads it from there.
"""

from __future__ import annotations

from itertools import chain

from flask import Flask, Response, has_request_context, request
from flask.globals import request_ctx
from flask.signals import request_tearing_down
from flask.templating import _default_template_ctx_processor

#: ``Vary: Cookie`` as :func:`leaving_headers` keeps it.
_VARY_COOKIE = ("vary", "Vary", "Cookie")


class Answer(Response):
    """A response that can carry fixed headers added as it leaves (see :meth:`leave_with`)."""

    #: (lowercased name, name, value) of each header to add as the answer leaves, unless it has one by then.
    leaving: tuple = ()

    def leave_with(self, headers: tuple) -> None:
        """Add ``headers`` (built by :func:`leaving_headers`) as the answer leaves, each one it lacks by then."""
        self.leaving = headers

    def leaves_varying_by_cookie(self) -> bool:
        """Whether the answer will leave with ``Vary: Cookie`` from its leaving headers (it set no Vary of its own)."""
        # getlist, not ``in``: Werkzeug answers a missing name by making and dropping a BadRequestKeyError
        return _VARY_COOKIE in self.leaving and not self.headers.getlist("Vary")

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


#: Said for a teardown called without the request's error: Flask's own code looks it up (``sys.exc_info``).
_FROM_SYS = object()

#: Functions whose answer :class:`Site` keeps: the site's hooks and views are far fewer. A function made
#: afresh for each request (``after_this_request``) would otherwise be kept for ever.
KEEP_SYNCED = 1024


class Site(Flask):
    """The site's Flask: answers are :class:`Answer`, and each hook is checked for ``async def`` once."""

    response_class = Answer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict = {}
        #: Per blueprint name (None: no blueprint): its before hooks, after hooks and context processors, synced.
        self._hooks: dict = {}

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

    def _hooks_of(self, asked) -> tuple | None:
        """The request's blueprint's (before hooks, after hooks, context processors, teardown hooks), in Flask's order.

        None when a URL value preprocessor applies (gate has none): Flask's own
        code handles that request.
        """
        blueprint = asked.blueprint
        try:
            return self._hooks[blueprint]
        except KeyError:
            pass
        names = asked.blueprints
        before = (None, *reversed(names))
        if any(name in self.url_value_preprocessors for name in before):
            return None
        hooks = (
            tuple(self.ensure_sync(func) for name in before for func in self.before_request_funcs.get(name, ())),
            tuple(self.ensure_sync(func) for name in chain(names, (None,))
                  for func in reversed(self.after_request_funcs.get(name, ()))),
            tuple(self.ensure_sync(func) for name in before for func in self.template_context_processors.get(name, ())),
            tuple(self.ensure_sync(func) for name in chain(names, (None,))
                  for func in reversed(self.teardown_request_funcs.get(name, ()))),
        )
        if self._got_first_request:  # hooks are fixed from now on (Flask refuses new ones)
            self._hooks[blueprint] = hooks
        return hooks

    def preprocess_request(self):
        """Flask's before-request hooks of the app and the request's blueprint, in its order; a hook's answer ends it."""
        hooks = self._hooks_of(request._get_current_object())
        if hooks is None:
            return super().preprocess_request()
        for hook in hooks[0]:
            answer = hook()
            if answer is not None:
                return answer
        return None

    def process_response(self, response):
        """Flask's after-request hooks (this request's own first), then the session is saved, as Flask does."""
        ctx = request_ctx._get_current_object()
        hooks = self._hooks_of(ctx.request)
        if hooks is None:
            return super().process_response(response)
        for func in ctx._after_request_functions:
            response = self.ensure_sync(func)(response)
        for hook in hooks[1]:
            response = hook(response)
        if not self.session_interface.is_null_session(ctx._session):
            self.session_interface.save_session(self, ctx._session, response)
        return response

    def do_teardown_request(self, exc=_FROM_SYS) -> None:
        """Flask's teardown-request hooks (the blueprint's, then the app's), then its ``request_tearing_down`` signal.

        The request context hands over the request's error (None without one);
        called without it, Flask's own code finds it, as Flask does.
        """
        if exc is _FROM_SYS:
            return super().do_teardown_request()
        hooks = self._hooks_of(request_ctx._get_current_object().request)
        if hooks is None:
            return super().do_teardown_request(exc)
        for hook in hooks[3]:
            hook(exc)
        request_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)
        return None

    def update_template_context(self, context: dict) -> None:
        """Flask's: every context processor's values, the values passed to the render taking precedence."""
        hooks = self._hooks_of(request._get_current_object()) if has_request_context() else None
        if hooks is None:
            return super().update_template_context(context)
        passed = context.copy()
        for processor in hooks[2]:
            context.update(processor())
        context.update(passed)


def drop_repeated_context_processors(app: Flask) -> None:
    """Run Flask's default context processor once a render, not again for the blueprint.

    Each blueprint starts with its own copy of it, so a page of a blueprint put
    ``g`` and ``request`` into the context twice.
    """
    for name, funcs in app.template_context_processors.items():
        if name is not None and _default_template_ctx_processor in funcs:
            funcs.remove(_default_template_ctx_processor)
