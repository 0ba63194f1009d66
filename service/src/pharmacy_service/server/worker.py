"""The gunicorn worker: uvicorn's worker with this server's logging, HTTP limits and recycling.

``worker_class = "pharmacy_service.server.worker.PharmacyWorker"`` (in
:mod:`pharmacy_service.server.gunicorn_conf`). What it changes in ``uvicorn_worker.UvicornWorker``:

- logging: uvicorn's worker points ``uvicorn.error`` and ``uvicorn.access`` at gunicorn's
  handlers when it is created, which under ``preload_app`` is after the app configured
  logging; it is configured again here, so that uvicorn's lines are JSON and redacted too;
- HTTP limits: gunicorn's ``limit_request_*`` settings apply to gunicorn's own parsers only;
  here the request line, the header count, each header's size and the whole head are limited
  in uvicorn's httptools protocol (414 or 431, then the connection closes);
- recycling (``max_requests``): uvicorn would close its connections at once, racing the
  clients that send on them; the worker instead signals itself SIGTERM, which drains
  (:mod:`pharmacy_service.server.lifecycle`).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools

# gunicorn and uvicorn-worker ship no type information.
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from .logs import configure_logging
from .settings import ServerSettings, Settings

__all__ = ["HeadLimits", "LimitedHttpToolsProtocol", "PharmacyWorker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadLimits:
    """Limits on a request's head, in bytes (line, field, head) and fields; 0: no limit."""

    line: int
    fields: int
    field_size: int
    head: int


class _Refused(Exception):
    def __init__(self, status: int, phrase: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.phrase, self.code, self.message = status, phrase, code, message


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on the request head. httptools buffers a
    header until it is complete, so the bytes of a head still incomplete are bounded too."""

    limits: ClassVar[HeadLimits] = HeadLimits(8190, 100, 8190, 65_536)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._messages = 0  # requests begun on this connection
        self._head_bytes = 0  # bytes received while the current head is incomplete
        self._field_count = 0
        self._parsed_head = 0  # bytes of the header fields parsed so far
        self._refused = False

    @classmethod
    def with_limits(cls, limits: HeadLimits) -> type[LimitedHttpToolsProtocol]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but a limit raised in a parser callback is answered with its own status
        # (httptools wraps it in HttpParserCallbackError, which uvicorn answers 400).
        if self._refused:
            return
        self._unset_keepalive_if_required()
        within = (self._messages, self._in_head)
        try:
            self.parser.feed_data(data)
            # Count only data that fell entirely inside one head still incomplete (httptools
            # holds it): bodies and the heads the parser completed are measured exactly.
            if self._in_head and within == (self._messages, True):
                self._head_bytes += len(data)
                self._check(self._head_bytes, self.limits.head, "head")
        except _Refused as refused:
            self._refuse(refused)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__)
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages += 1
        self._in_head, self._head_bytes, self._field_count, self._parsed_head = True, 0, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if self.limits.line and len(self.url) > self.limits.line:
            raise _Refused(
                414,
                "URI Too Long",
                "REQUEST_LINE_TOO_LONG",
                f"The request line is longer than {self.limits.line} bytes.",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_count += 1
        if self.limits.fields and self._field_count > self.limits.fields:
            raise _Refused(
                431,
                "Request Header Fields Too Large",
                "HEADERS_TOO_LARGE",
                f"The request has more than {self.limits.fields} header fields.",
            )
        field = len(name) + len(value) + 4  # "name: value\r\n"
        self._check(field - 2, self.limits.field_size, "field")
        self._parsed_head += field
        self._check(self._parsed_head + len(self.url), self.limits.head, "head")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def _check(self, size: int, limit: int, what: str) -> None:
        if limit and size > limit:
            message = (
                f"A request header field is longer than {limit} bytes."
                if what == "field"
                else f"The request's headers are larger than {limit} bytes."
            )
            raise _Refused(431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE", message)

    def _refuse(self, refused: _Refused) -> None:
        from . import metrics

        self._refused = True
        metrics.REFUSED.labels(refused.code.lower()).inc()
        logger.warning(
            "request_refused: %s",
            refused.message,
            extra={"event": "request_refused", "status": refused.status},
        )
        body = json.dumps({"error_code": refused.code, "message": refused.message}).encode()
        head = [f"HTTP/1.1 {refused.status} {refused.phrase}\r\n".encode("ascii")]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class _RecyclingServer(Server):
    """uvicorn's server, but at ``recycle_after`` requests it drains like a SIGTERM instead of
    closing its connections at once (uvicorn's own ``limit_max_requests``)."""

    def __init__(self, *args: Any, recycle_after: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recycle_after = recycle_after
        self.recycling = False

    async def on_tick(self, counter: int) -> bool:
        if not self.recycling and self.server_state.total_requests >= self.recycle_after:
            self.recycling = True
            logger.info(
                "recycling: %d requests served, draining before exit",
                self.server_state.total_requests,
                extra={"event": "recycling"},
            )
            signal.raise_signal(signal.SIGTERM)  # the app's drain handler takes it from here
        return await super().on_tick(counter)


class PharmacyWorker(UvicornWorker):  # type: ignore[misc]
    """See the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        server = ServerSettings()
        super().__init__(*args, **kwargs)
        limits = HeadLimits(
            line=self.cfg.limit_request_line,
            fields=self.cfg.limit_request_fields,
            field_size=self.cfg.limit_request_field_size,
            head=server.limit_request_head,
        )
        self.config.http = LimitedHttpToolsProtocol.with_limits(limits)
        self.config.limit_max_requests = None  # recycling is _RecyclingServer's
        settings = Settings()
        configure_logging(settings.log_level, settings.log_format)

    async def _serve(self) -> None:  # uvicorn_worker's, with the recycling server
        self.config.app = self.wsgi
        server = _RecyclingServer(config=self.config, recycle_after=self.max_requests)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
