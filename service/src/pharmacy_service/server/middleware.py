"""The ASGI middleware around the app: the request id in and out (``X-Request-ID``),
``Connection: close`` while draining, the HTTP metrics, one access log line per request, and,
with tracing on, each prediction's root span and its trace id out (``X-MLflow-Trace-Id``)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from modelhub.serving import request_id_var

from ..model import tracing
from . import metrics

__all__ = ["KNOWN_ROUTES", "RequestContext", "route_label"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KNOWN_ROUTES = frozenset(
    (
        "/invocations",
        "/v1/screen",
        "/health/live",
        "/health/ready",
        "/ping",
        "/health",
        "/version",
        "/metrics",
    )
)
V2_INFER = "/v2/models/{name}/infer"
"""The label of every Open Inference Protocol inference path (any model name or version)."""
V2_OTHER = "/v2"
"""The label of its other paths: health and metadata."""
TRACED_ROUTES = {"/invocations": "invocations", "/v1/screen": "screen", V2_INFER: "infer"}
"""The prediction routes, each request one trace (root span name)."""
QUIET_ROUTES = frozenset(
    ("/metrics", "/health/live", "/health/ready", "/ping", "/health", V2_OTHER)
)
"""Probed and scraped all the time: counted in the metrics, not logged."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_label(path: str) -> str:
    """The metrics label for a path: a known route, the V2 inference route or the rest of V2,
    or "other" (labels stay bounded: model names and versions are not labels)."""
    if path in KNOWN_ROUTES:
        return path
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return V2_INFER
    if path == V2_OTHER or path.startswith(V2_OTHER + "/"):
        return V2_OTHER
    return "other"


class RequestContext:
    """Wraps the FastAPI app (``.app``: its routes and OpenAPI); ``draining`` says when answers
    must close their connections."""

    def __init__(
        self,
        app: Any,
        draining: Callable[[], bool] = lambda: False,
        trace_tags: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.draining = draining
        self.trace_tags = dict(trace_tags or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        path = scope.get("path", "")
        route = route_label(path)
        status = 500
        started = time.perf_counter()
        trace_id: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if trace_id is not None:
                    headers.append((b"x-mlflow-trace-id", trace_id.encode()))
                if self.draining():  # the client should not reuse this connection
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            if route in TRACED_ROUTES and tracing.enabled():
                attributes = {"http.route": route, "http.method": scope.get("method", "")}
                with tracing.request_span(TRACED_ROUTES[route], "CHAIN", attributes) as root:
                    trace_id = tracing.trace_id(root)
                    try:
                        await self.app(scope, receive, send_with_id)
                    finally:
                        if trace_id is not None:
                            self._close_trace(root, request_id, route, status)
            elif route in TRACED_ROUTES:
                with tracing.untraced():
                    await self.app(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            metrics.IN_FLIGHT.dec()
            metrics.REQUESTS.labels(route, scope.get("method", ""), str(status)).inc()
            metrics.LATENCY.labels(route).observe(elapsed)
            if route not in QUIET_ROUTES:
                logger.info(
                    "request %s %s %d %.1fms",
                    scope.get("method"),
                    path,
                    status,
                    elapsed * 1000,
                    extra={
                        "event": "request",
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)

    def _close_trace(self, root: Any, request_id: str, route: str, status: int) -> None:
        """Tag the request's trace: its request id, route, backend and outcome; a server fault
        (5xx) is an ERROR trace."""
        outcome = outcome_of(status)
        root.set_attribute("http.status_code", status)
        tracing.tag_trace(
            request_id, {**self.trace_tags, "pharmacy.route": route, "pharmacy.outcome": outcome}
        )
        if status >= 500:
            tracing.fail(root, f"{status} {outcome}")


def outcome_of(status: int) -> str:
    """A request's outcome by its status: ``ok``, ``unauthorized``, ``client_closed``,
    ``invalid_request`` (other 4xx), ``upstream_error`` (502), ``overloaded`` (503: shed or
    shutting down), ``timeout`` (504), ``error`` (other 5xx)."""
    if status < 400:
        return "ok"
    if status == 401:
        return "unauthorized"
    if status == 499:
        return "client_closed"
    if status < 500:
        return "invalid_request"
    if status == 503:
        return "overloaded"
    if status == 504:
        return "timeout"
    if status == 502:
        return "upstream_error"
    return "error"
