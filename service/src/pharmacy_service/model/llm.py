"""LLM backends for the counselling note: ``template`` (offline) and ``gemini`` (google-genai).

The Gemini backend uses one module-level ``genai.Client`` per process, the production shape
that breaks under a fresh event loop per call and works on modelhub's shared loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelhub.serving import is_loop_error

from .notes import SYSTEM_INSTRUCTION

__all__ = [
    "GeminiBackend",
    "GeminiSettings",
    "LLMCallError",
    "LLMObserver",
    "NoteBackend",
    "classify_error",
    "redact",
]

logger = logging.getLogger(__name__)

DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"


class NoteBackend(Protocol):
    name: str

    async def note(self, prompt: str) -> str:
        """The note for ``prompt``; raises on failure."""
        ...


class LLMObserver:
    """Hooks for LLM metrics; the server wires them to Prometheus. No-ops by default."""

    def on_llm_call(self, backend: str, outcome: str, duration: float) -> None:
        """One call finished: ``outcome`` is ``ok`` or an error kind (see classify_error)."""

    def on_fallback(self, backend: str, reason: str) -> None:
        """A row got the template note because the LLM failed (``reason`` is the error kind)."""


class LLMCallError(Exception):
    """The LLM answered, but not usably (empty or ungrounded answer)."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class GeminiSettings:
    api_key: str | None
    base_url: str | None
    model: str = DEFAULT_GEMINI_MODEL
    timeout: float = 10.0
    attempts: int = 1
    """HTTP attempts per note inside the SDK (1: no SDK retry; a failed note falls back to the
    template at once, within the per-call timeout)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GeminiSettings:
        env = os.environ if environ is None else environ
        raw_timeout = env.get("PHARMACY_LLM_TIMEOUT", "").strip()
        try:
            timeout = float(raw_timeout) if raw_timeout else 10.0
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise ValueError(
                f"PHARMACY_LLM_TIMEOUT={raw_timeout!r} is invalid: use a number of seconds above 0."
            )
        raw_attempts = env.get("PHARMACY_LLM_ATTEMPTS", "").strip() or "1"
        if not raw_attempts.isdigit() or int(raw_attempts) < 1:
            raise ValueError(
                f"PHARMACY_LLM_ATTEMPTS={raw_attempts!r} is invalid: use a whole number of at least 1."
            )
        settings = cls(
            attempts=int(raw_attempts),
            api_key=env.get("GEMINI_API_KEY") or None,
            base_url=env.get("GEMINI_BASE_URL") or None,
            model=env.get("GEMINI_MODEL") or DEFAULT_GEMINI_MODEL,
            timeout=timeout,
        )
        if settings.api_key is None and settings.base_url is None:
            raise ValueError(
                "The gemini backend needs GEMINI_API_KEY (the real API) or GEMINI_BASE_URL "
                "(a Gemini-compatible server such as pharmacy-gemini-stub)."
            )
        return settings


_client_lock = threading.Lock()
_client: Any = None
_client_settings: tuple[str | None, str | None] | None = None


def gemini_client(settings: GeminiSettings) -> Any:
    """The process's one ``genai.Client`` (built once: it costs 56-90 ms of CPU)."""
    global _client, _client_settings
    wanted = (settings.api_key, settings.base_url)
    with _client_lock:
        if _client is None or _client_settings != wanted:
            from google import genai
            from google.genai import types

            http_options = (
                types.HttpOptions(base_url=settings.base_url) if settings.base_url else None
            )
            _client = genai.Client(
                # A Gemini-compatible stub needs no key, but the SDK insists on one.
                api_key=settings.api_key or "no-key-needed-for-a-local-stub",
                http_options=http_options,
            )
            _client_settings = wanted
        return _client


async def close_gemini_client() -> None:
    """Close the process's client (its connections belong to the loop this runs on) and
    forget it, so the next use builds a fresh one. Call it on the loop that used the client."""
    global _client, _client_settings
    with _client_lock:
        client, _client, _client_settings = _client, None, None
    if client is not None:
        await client.aio.aclose()
        client.close()


class GeminiBackend:
    name = "gemini"

    def __init__(self, settings: GeminiSettings) -> None:
        self.settings = settings
        # Import the SDK and build the client and the request config now, on the loading
        # thread: doing it inside the first call would block the shared loop for most of a
        # second, and the config is the same for every call.
        from google.genai import types

        gemini_client(settings)
        self._config = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            temperature=0.2,
            max_output_tokens=400,
            http_options=types.HttpOptions(
                timeout=int(settings.timeout * 1000),
                retry_options=types.HttpRetryOptions(attempts=settings.attempts),
            ),
        )

    async def aclose(self) -> None:
        await close_gemini_client()

    async def note(self, prompt: str) -> str:
        client = gemini_client(self.settings)
        async with asyncio.timeout(self.settings.timeout):
            response = await client.aio.models.generate_content(
                model=self.settings.model, contents=prompt, config=self._config
            )
        text = (response.text or "").strip()
        if not text:
            raise LLMCallError("the LLM returned an empty answer", kind="empty")
        return text


def classify_error(exc: BaseException) -> str:
    """A short, stable label for metrics and logs."""
    if isinstance(exc, LLMCallError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return "timeout"
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        if code == 429:
            return "rate_limited"
        if code >= 500:
            return "server_error"
        if code >= 400:
            return "client_error"
    if isinstance(exc, ConnectionError | OSError) or "connect" in type(exc).__name__.lower():
        return "connection"
    if "disconnect" in type(exc).__name__.lower() or "protocol" in type(exc).__name__.lower():
        return "connection"
    return "error"


def redact(text: str, secret: str | None = None) -> str:
    """Remove the API key from a message (SDK errors can echo request details)."""
    secret = secret if secret is not None else os.environ.get("GEMINI_API_KEY")
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[REDACTED]")
    return text


async def observed_call(
    backend: NoteBackend, prompt: str, observer: LLMObserver
) -> tuple[str | None, str | None]:
    """Call the backend; returns ``(note, None)`` or ``(None, error_kind)``.

    Event-loop lifecycle errors are re-raised: they are the executor's to retry.
    """
    started = time.monotonic()
    try:
        text = await backend.note(prompt)
    except Exception as exc:
        if is_loop_error(exc):
            raise
        kind = classify_error(exc)
        observer.on_llm_call(backend.name, kind, time.monotonic() - started)
        logger.warning(
            "llm_call_failed backend=%s kind=%s error=%s",
            backend.name,
            kind,
            redact(f"{type(exc).__name__}: {exc}"),
            extra={"event": "llm_call_failed", "backend": backend.name, "kind": kind},
        )
        return None, kind
    observer.on_llm_call(backend.name, "ok", time.monotonic() - started)
    return text, None
