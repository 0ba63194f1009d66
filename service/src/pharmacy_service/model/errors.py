"""Errors raised by the pharmacy model. The server maps them to HTTP statuses in one place."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "InvalidInputError",
    "LLMUnavailableError",
    "LimitExceededError",
    "MalformedInputError",
    "ScreeningError",
]


class ScreeningError(Exception):
    """Root of the pharmacy model's errors."""


class InvalidInputError(ScreeningError, ValueError):
    """The input rows are malformed; ``field`` names what is wrong (``rows[2].medications``)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class LimitExceededError(InvalidInputError):
    """The request asks for more than a limit allows (rows, medications per row, interactions
    in the answer); the message names the limit. The server answers 413."""


class MalformedInputError(InvalidInputError):
    """The input is not well-formed text (a lone surrogate: not Unicode at all), whatever the
    route it came by. The server answers 400, as for a body that is not valid JSON."""


class LLMUnavailableError(ScreeningError):
    """The LLM backend failed or timed out and strict mode forbids the template fallback."""

    def __init__(self, message: str, *, kind: Literal["timeout", "upstream"]) -> None:
        super().__init__(message)
        self.kind = kind
