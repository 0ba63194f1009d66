"""Logging, configured once: JSON lines with the request id on every line (SDK lines included)."""

from __future__ import annotations

import logging
import logging.config
import os
import threading
import traceback
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

from modelhub.serving import request_id_var

from ..model.llm import SECRET_VARIABLES as LLM_SECRET_VARIABLES

__all__ = ["RedactSecretsFilter", "RequestIdFilter", "configure_logging", "logging_config"]

SECRET_VARIABLES = (*LLM_SECRET_VARIABLES, "PHARMACY_API_TOKEN")
REDACTED = "[REDACTED]"
_RECORD_ATTRS = frozenset((*RESERVED_ATTRS, "message", "asctime", "request_id", "color_message"))

logger = logging.getLogger(__name__)


class RequestIdFilter(logging.Filter):
    """Puts the current request id (from the SDK's contextvar) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class RedactSecretsFilter(logging.Filter):
    """Replaces the values of the secret variables (the LLM API keys, the bearer token) in
    every field of every record (message, traceback, stack and ``extra`` fields, whatever
    logged it: an SDK error can echo request details, and the executor puts raw error text in
    ``extra["error"]``).

    It also formats the message once, here: a malformed call (``log("%s %s", one)``) becomes a
    line that says so instead of an exception raised into the code that logged it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets = [
            value for name in SECRET_VARIABLES if len(value := os.environ.get(name, "")) >= 4
        ]

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {self._redact_value(k): self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._redact_value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)  # what the JSON formatter would write for it
        return self._redact(text) if any(s in text for s in self.secrets) else value

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict) and not record.args:  # a structured message
            record.msg = self._redact_value(record.msg) if self.secrets else record.msg
            return True
        try:
            message = record.getMessage()
        except Exception as exc:  # noqa: BLE001 - any formatting error of someone else's call
            message = (
                f"{record.msg!s} (malformed log call, {type(exc).__name__}: {exc}; "
                f"arguments {record.args!r})"
            )
        record.msg, record.args = message, None
        if not self.secrets:
            return True
        record.msg = self._redact(message)
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text, record.exc_info = self._redact(text), None
        elif record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRS:
                setattr(record, key, self._redact_value(value))
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure the process's logging; warnings and uncaught thread errors become log lines
    too, so that everything the process writes has the same format."""
    logging.config.dictConfig(logging_config(level, fmt))
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "unknown"
    logger.error(
        "thread %s raised %s",
        name,
        args.exc_type.__name__,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        extra={"event": "thread_error"},
    )


def logging_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """The dictConfig for the server and for gunicorn's master (same format everywhere)."""
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(process)d",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn adds a copy of some messages with terminal colour codes: not for JSON.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "redact_secrets": {"()": RedactSecretsFilter},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_id", "redact_secrets"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own access log duplicates ours; its error log is kept. The worker
            # applies these again after uvicorn's worker class has replaced them.
            "uvicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": "NOTSET"},
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
            "google_genai": {"level": "WARNING"},
            # MLflow gives its logger a plain-text handler when imported: ours replaces it
            # (the app imports mlflow before configuring logging).
            "mlflow": {"handlers": [], "propagate": True, "level": "WARNING"},
        },
    }
