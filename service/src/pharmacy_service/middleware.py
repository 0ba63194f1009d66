"""The ASGI middleware around the app: the request id in and out (``X-Request-ID``),
``Connection: close`` while draining, the HTTP metrics, and one access log line per request."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from modelhub.serving import request_id_var

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
QUIET_ROUTES = frozenset(("/metrics", "/health/live", "/health/ready", "/ping", "/health"))
"""Probed and scraped all the time: counted in the metrics, not logged."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_label(path: str) -> str:
    """The metrics label for a path: a known route, or "other" (labels stay bounded)."""
    return path if path in KNOWN_ROUTES else "other"


class RequestContext:
    """Wraps the FastAPI app (``.app``: its routes and OpenAPI); ``draining`` says when answers
    must close their connections."""

    def __init__(self, app: Any, draining: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self.draining = draining

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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if self.draining():  # the client should not reuse this connection
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
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
