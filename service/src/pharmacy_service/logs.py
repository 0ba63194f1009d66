"""Logging, configured once: JSON lines with the request id on every line (SDK lines included)."""

from __future__ import annotations

import logging
import logging.config
import os
import traceback
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

from modelhub.serving import request_id_var

__all__ = ["RedactSecretsFilter", "RequestIdFilter", "configure_logging", "logging_config"]

SECRET_VARIABLES = ("GEMINI_API_KEY", "PHARMACY_API_TOKEN")


class RequestIdFilter(logging.Filter):
    """Puts the current request id (from the SDK's contextvar) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class RedactSecretsFilter(logging.Filter):
    """Replaces the values of the secret variables (the Gemini API key, the bearer token) in
    every record, its message and its traceback, whatever logged it (an SDK error can echo
    request details)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = [
            value for name in SECRET_VARIABLES if len(value := os.environ.get(name, "")) >= 4
        ]

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text, record.exc_info = self._redact(text), None
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    logging.config.dictConfig(logging_config(level, fmt))


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
            # uvicorn's own access log duplicates ours; its error log is kept.
            "uvicorn.access": {"level": "WARNING"},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
            "google_genai": {"level": "WARNING"},
            "mlflow": {"level": "WARNING"},
        },
    }
