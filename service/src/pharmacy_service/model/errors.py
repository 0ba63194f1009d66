"""Errors raised by the pharmacy model. The server maps them to HTTP statuses in one place."""

from __future__ import annotations

from typing import Literal

__all__ = ["InvalidInputError", "LLMUnavailableError", "ScreeningError"]


class ScreeningError(Exception):
    """Root of the pharmacy model's errors."""


class InvalidInputError(ScreeningError, ValueError):
    """The input rows are malformed; ``field`` names what is wrong (``rows[2].medications``)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class LLMUnavailableError(ScreeningError):
    """The LLM backend failed or timed out and strict mode forbids the template fallback."""

    def __init__(self, message: str, *, kind: Literal["timeout", "upstream"]) -> None:
        super().__init__(message)
        self.kind = kind
