"""The three wire formats the stub speaks, in the shapes the official SDKs send and parse:
Gemini's ``generateContent`` (google-genai), OpenAI's chat completions (openai, and any
OpenAI-compatible client) and Anthropic's messages (anthropic). Errors use each provider's own
error body, so each SDK raises its own exception types."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["ANTHROPIC", "GEMINI", "OPENAI", "NotSupportedError", "WireFormat"]

_STATUS_TEXT = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


class NotSupportedError(Exception):
    """A route this stub knows but a method it does not (404)."""


@dataclass(frozen=True)
class WireFormat:
    """One provider's request and response shapes, as its official SDK sends and parses them."""

    name: str
    parse: Callable[[web.Request, Any], tuple[str, str]]
    """(prompt, model) from a request body."""
    success: Callable[[str, str, str], dict[str, Any]]
    """The answer body for (text, prompt, model)."""
    error: Callable[[int, str], dict[str, Any]]
    """The error body for (status, message), in the shape the SDK turns into its own errors."""
    api_key: Callable[[web.Request], str | None]


def _tokens(text: str) -> int:
    return len(text.split())


def _gemini_parse(request: web.Request, body: Any) -> tuple[str, str]:
    model, _, method = request.match_info["model"].partition(":")
    if method != "generateContent":
        raise NotSupportedError(f"method {method or '(none)'} is not supported by this stub")
    prompt = "\n".join(
        part["text"] for content in body["contents"] for part in content["parts"] if "text" in part
    )
    return prompt, model


def _gemini_success(text: str, prompt: str, model: str) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": _tokens(prompt),
            "candidatesTokenCount": _tokens(text),
            "totalTokenCount": _tokens(prompt) + _tokens(text),
        },
        "modelVersion": model,
        "responseId": hashlib.sha256(prompt.encode()).hexdigest()[:16],
    }


def _gemini_error(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_TEXT.get(status, "INVALID_ARGUMENT"),
        }
    }


def _openai_parse(request: web.Request, body: Any) -> tuple[str, str]:
    prompt = "\n".join(
        m["content"]
        if isinstance(m["content"], str)
        else "".join(p.get("text", "") for p in m["content"])
        for m in body["messages"]
        if m["role"] == "user"
    )
    return prompt, str(body["model"])


def _openai_success(text: str, prompt: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:16],
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": _tokens(prompt),
            "completion_tokens": _tokens(text),
            "total_tokens": _tokens(prompt) + _tokens(text),
        },
    }


_OPENAI_ERROR_TYPE = {429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind = _OPENAI_ERROR_TYPE.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def _anthropic_parse(request: web.Request, body: Any) -> tuple[str, str]:
    parts = []
    for message in body["messages"]:
        content = message["content"]
        if message["role"] == "user":
            parts.append(
                content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
            )
    return "\n".join(parts), str(body["model"])


def _anthropic_success(text: str, prompt: str, model: str) -> dict[str, Any]:
    return {
        "id": "msg_" + hashlib.sha256(prompt.encode()).hexdigest()[:16],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": _tokens(prompt), "output_tokens": _tokens(text)},
    }


_ANTHROPIC_ERROR_TYPE = {429: "rate_limit_error", 500: "api_error", 503: "overloaded_error"}


def _anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_ERROR_TYPE.get(status, "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


GEMINI = WireFormat(
    "gemini",
    _gemini_parse,
    _gemini_success,
    _gemini_error,
    lambda r: r.headers.get("x-goog-api-key") or r.query.get("key"),
)
OPENAI = WireFormat("openai", _openai_parse, _openai_success, _openai_error, _bearer)
ANTHROPIC = WireFormat(
    "anthropic",
    _anthropic_parse,
    _anthropic_success,
    _anthropic_error,
    lambda r: r.headers.get("x-api-key"),
)
