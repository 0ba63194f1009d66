"""The LLM backends' API keys, and removing them from text that leaves the process (log lines,
error messages, trace spans)."""

from __future__ import annotations

import os

__all__ = ["SECRET_VARIABLES", "redact"]

SECRET_VARIABLES = ("GEMINI_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
"""The backends' API keys: never logged (see :func:`redact`)."""


def redact(text: str, secret: str | None = None) -> str:
    """Remove the API keys from a message (SDK errors can echo request details)."""
    secrets = [secret] if secret is not None else [os.environ.get(v) for v in SECRET_VARIABLES]
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "[REDACTED]")
    return text
