"""Context variables the SDK reads; the serving layer sets them per request."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["request_id_var"]

#: The current request's id. Set it in the server (middleware); the executor copies the
#: caller's context into every coroutine it runs and puts the id on its retry log lines.
request_id_var: ContextVar[str | None] = ContextVar("modelhub_request_id", default=None)
