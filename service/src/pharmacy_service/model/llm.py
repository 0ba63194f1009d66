"""LLM backends for the counselling note: ``gemini`` (google-genai), ``openai`` (the OpenAI SDK,
any OpenAI-compatible server) and ``anthropic`` (the Anthropic SDK); ``template`` is offline.

Each uses one module-level client per process (per settings, shared by every load of the
model), the production shape that breaks under a fresh event loop per call and works on
modelhub's shared loop: the client is used, and closed, only on the executor's loop, when the
last model using it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import importlib.util
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

from modelhub.serving import is_loop_error

from ..clinical.notes import SYSTEM_INSTRUCTION
from . import tracing
from ._env import env_flag
from .redaction import SECRET_VARIABLES, redact

__all__ = [
    "BACKENDS",
    "SECRET_VARIABLES",
    "AnthropicBackend",
    "AnthropicSettings",
    "GeminiBackend",
    "GeminiSettings",
    "LLMCallError",
    "LLMObserver",
    "LLMSettings",
    "NoteBackend",
    "OpenAIBackend",
    "OpenAISettings",
    "backend_from_env",
    "classify_error",
    "redact",
]

logger = logging.getLogger(__name__)

DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"


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
class LLMSettings:
    """One backend's settings, from ``<PREFIX>_API_KEY``, ``<PREFIX>_BASE_URL``,
    ``<PREFIX>_MODEL`` and the shared ``PHARMACY_LLM_TIMEOUT`` / ``PHARMACY_LLM_ATTEMPTS``."""

    api_key: str | None
    base_url: str | None
    model: str = ""
    """The model name; empty means the backend's default."""
    timeout: float = 10.0
    attempts: int = 1
    """HTTP attempts per note inside the SDK (1: no SDK retry; a failed note falls back to the
    template at once, within the per-call timeout)."""
    max_connections: int = 100
    """Connections the service's own HTTP session may open to the LLM (gemini)."""
    trust_env: bool = False
    """Read proxies and ``.netrc`` from the environment on every call (gemini's session)."""

    PREFIX: ClassVar[str] = ""
    DEFAULT_MODEL: ClassVar[str] = ""
    LOCAL_HINT: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not self.model:
            object.__setattr__(self, "model", self.DEFAULT_MODEL)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
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
        raw_connections = env.get("PHARMACY_LLM_MAX_CONNECTIONS", "").strip() or "100"
        if not raw_connections.isdigit() or int(raw_connections) < 1:
            raise ValueError(
                f"PHARMACY_LLM_MAX_CONNECTIONS={raw_connections!r} is invalid: use a whole number "
                "of at least 1."
            )
        settings = cls(
            attempts=int(raw_attempts),
            max_connections=int(raw_connections),
            trust_env=env_flag(env, "PHARMACY_LLM_TRUST_ENV"),
            api_key=env.get(f"{cls.PREFIX}_API_KEY") or None,
            base_url=env.get(f"{cls.PREFIX}_BASE_URL") or None,
            model=env.get(f"{cls.PREFIX}_MODEL") or cls.DEFAULT_MODEL,
            timeout=timeout,
        )
        if settings.api_key is None and settings.base_url is None:
            raise ValueError(
                f"The {cls.PREFIX.lower()} backend needs {cls.PREFIX}_API_KEY (the real API) or "
                f"{cls.PREFIX}_BASE_URL ({cls.LOCAL_HINT})."
            )
        return settings

    @property
    def key_or_placeholder(self) -> str:
        # A local server needs no key, but the SDKs insist on one.
        return self.api_key or "no-key-needed-for-a-local-server"


class GeminiSettings(LLMSettings):
    PREFIX = "GEMINI"
    DEFAULT_MODEL = DEFAULT_GEMINI_MODEL
    LOCAL_HINT = "a Gemini-compatible server such as pharmacy-gemini-stub"


class OpenAISettings(LLMSettings):
    PREFIX = "OPENAI"
    DEFAULT_MODEL = DEFAULT_OPENAI_MODEL
    LOCAL_HINT = "any OpenAI-compatible server: vLLM, Ollama, llama.cpp, LiteLLM, the stub"


class AnthropicSettings(LLMSettings):
    PREFIX = "ANTHROPIC"
    DEFAULT_MODEL = DEFAULT_ANTHROPIC_MODEL
    LOCAL_HINT = "an Anthropic-compatible server such as the stub"


class _ClientSlot:
    """The process's clients of an SDK, one per settings, built on first use and shared by
    every backend (model load) with those settings: ``spark_udf`` loads the model once per
    task, a server once per worker. A client's async side belongs to the loop that uses it
    (the executor's): :meth:`release` runs there, and closes a client when the last backend
    using it releases it, so that closing one model never closes a client another uses."""

    def __init__(self, build: Callable[[LLMSettings], Any], close: Callable[[Any], Any]) -> None:
        self._build = build
        self._close = close
        self._lock = threading.Lock()
        self._clients: dict[_ClientKey, tuple[Any, weakref.WeakSet[Any]]] = {}

    def get(self, settings: LLMSettings, user: Any) -> Any:
        """The client for ``settings``, ``user`` (a backend) counted among its users."""
        key = _client_key(settings)
        with self._lock:
            entry = self._clients.get(key)
            if entry is None:
                entry = self._clients[key] = (self._build(settings), weakref.WeakSet())
            entry[1].add(user)
            return entry[0]

    async def release(self, settings: LLMSettings, user: Any) -> None:
        """``user`` no longer uses its client: close it if no other backend does."""
        key = _client_key(settings)
        with self._lock:
            entry = self._clients.get(key)
            if entry is None:
                return
            entry[1].discard(user)
            if entry[1]:
                return
            del self._clients[key]
        await self._close(entry[0])


_ClientKey = tuple[str | None, str | None, float, int]


def _client_key(settings: LLMSettings) -> _ClientKey:
    """What an SDK's client is built from (the model name is per call)."""
    return (settings.api_key, settings.base_url, settings.timeout, settings.attempts)


def _build_gemini(settings: LLMSettings, session: Any = None) -> Any:
    """A ``genai.Client`` with the per-call timeout and retries in its own options (a per-call
    ``http_options`` would be merged and deep-copied on every call), and, where given, the
    aiohttp session it must use."""
    from google import genai
    from google.genai import types

    options: dict[str, Any] = {
        "timeout": int(settings.timeout * 1000),
        "retry_options": types.HttpRetryOptions(attempts=settings.attempts),
    }
    if settings.base_url:
        options["base_url"] = settings.base_url
    if session is not None:
        options["aiohttp_client"] = session
    return genai.Client(
        api_key=settings.key_or_placeholder, http_options=types.HttpOptions(**options)
    )


async def _close_gemini(client: Any) -> None:
    await client.aio.aclose()
    client.close()


def gemini_takes_a_session() -> bool:
    """google-genai accepts a caller's aiohttp session (``HttpOptions.aiohttp_client``), and
    aiohttp is installed."""
    from google.genai import types

    return "aiohttp_client" in types.HttpOptions.model_fields and (
        importlib.util.find_spec("aiohttp") is not None
    )


def _stainless_builder(module: str, client_class: str) -> Callable[[LLMSettings], Any]:
    """A builder for the openai and anthropic SDKs' async clients, which take the same
    arguments (both are generated by Stainless)."""

    def build(settings: LLMSettings) -> Any:
        client = getattr(importlib.import_module(module), client_class)
        return client(
            api_key=settings.key_or_placeholder,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=settings.attempts - 1,
        )

    return build


async def _close_async_client(client: Any) -> None:
    await client.close()


_gemini = _ClientSlot(_build_gemini, _close_gemini)
_openai = _ClientSlot(_stainless_builder("openai", "AsyncOpenAI"), _close_async_client)
_anthropic = _ClientSlot(_stainless_builder("anthropic", "AsyncAnthropic"), _close_async_client)


def require_sdk(backend: str, module: str, extra: str) -> None:
    """A clear start-up error when the backend's SDK is not installed."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(
            f"PHARMACY_LLM_BACKEND={backend} needs the {extra} SDK, which is not installed: "
            f"pip install 'pharmacy-service[{extra}]' (the image installs it)."
        )


@dataclass(eq=False)
class _LoopSession:
    """One loop's Gemini client for one set of settings, the task that holds its aiohttp
    session open on that loop, and the backends using it."""

    client: Any
    holder: asyncio.Task[None]
    started: asyncio.Future[None]
    users: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)


class _GeminiSessions:
    """The process's Gemini clients with their own aiohttp session: one per loop and settings,
    shared by every backend (model load) with those settings. MLflow's ``spark_udf`` loads the
    model again for each task in a Python worker that lives across tasks; a client per backend
    would open a session per task, never closed. A session is closed on its loop when the
    last backend using it is closed (:meth:`release`), or when its loop shuts down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[_SettingsKey, asyncio.AbstractEventLoop], _LoopSession] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    async def client(self, backend: GeminiBackend) -> Any:
        """This loop's client for the backend's settings, the backend counted among its users
        (called once per backend and loop: the backend keeps what it gets)."""
        loop = asyncio.get_running_loop()
        key = (backend.settings_key, loop)
        with self._lock:
            held = self._sessions.get(key)
            if held is None:
                # Loops closed without cancelling their tasks: their sessions cannot be closed.
                for closed in [k for k in self._sessions if k[1].is_closed()]:
                    del self._sessions[closed]
                held = self._sessions[key] = self._hold(backend.settings, loop, key)
            held.users.add(backend)
        await held.started  # the holder runs, so its loop's shutdown will close the session
        return held.client

    def _hold(
        self,
        settings: LLMSettings,
        loop: asyncio.AbstractEventLoop,
        key: tuple[_SettingsKey, asyncio.AbstractEventLoop],
    ) -> _LoopSession:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.max_connections, keepalive_timeout=30),
            trust_env=settings.trust_env,
        )
        client = _build_gemini(settings, session)
        started = loop.create_future()
        # In a context of its own: the task lives as long as the loop, not the request.
        holder = loop.create_task(
            self._keep(key, session, client, started),
            name="pharmacy-gemini-session",
            context=contextvars.Context(),
        )
        return _LoopSession(client, holder, started)

    async def _keep(
        self,
        key: tuple[_SettingsKey, asyncio.AbstractEventLoop],
        session: Any,
        client: Any,
        started: asyncio.Future[None],
    ) -> None:
        """Hold a session until its loop shuts down or its last user closes, then close it
        here, on its own loop."""
        try:
            started.set_result(None)
            await key[1].create_future()  # only cancellation ends it
        finally:
            with self._lock:
                if (held := self._sessions.get(key)) is not None and held.client is client:
                    del self._sessions[key]
            await session.close()
            client.close()

    async def release(self, backend: GeminiBackend) -> None:
        """``backend`` no longer uses its sessions: close those it was the last user of (this
        loop's now, the others' on their own loops). A session another backend uses stays open:
        closing one model does not break another in the same process."""
        with self._lock:
            unused = []
            for key, held in list(self._sessions.items()):
                if key[0] != backend.settings_key:
                    continue  # a backend only uses sessions of its own settings
                held.users.discard(backend)
                if not held.users:
                    unused.append((key[1], held))
                    del self._sessions[key]
        here = asyncio.get_running_loop()
        for loop, held in unused:
            if loop is here:
                held.holder.cancel()
                await asyncio.wait({held.holder})
            else:
                with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                    loop.call_soon_threadsafe(held.holder.cancel)


_SettingsKey = tuple[str | None, str | None, float, int, int, bool]


def _settings_key(settings: LLMSettings) -> _SettingsKey:
    """What a Gemini client and its session are built from (the model name is per call)."""
    return (*_client_key(settings), settings.max_connections, settings.trust_env)


_gemini_sessions = _GeminiSessions()


class GeminiBackend:
    """google-genai's ``client.aio.models.generate_content``.

    Where the SDK accepts one (``HttpOptions.aiohttp_client``), the client gets an aiohttp
    session the service configures, created on the loop that uses it: no proxy or ``.netrc``
    lookups from the environment on every call (each is a hop to a thread pool; set
    ``PHARMACY_LLM_TRUST_ENV=true`` to keep them), a bounded connection pool
    (``PHARMACY_LLM_MAX_CONNECTIONS``), keep-alive. The client and session belong to that loop
    (the executor's, in shared mode) and are the process's for these settings: every model
    loaded in the process with the same settings shares them (``spark_udf`` loads the model
    once per task). A call on another loop (isolated mode: each call's own) builds its own,
    which lives as long as that loop runs: a task on the loop holds it and closes it there
    when the loop shuts down (``asyncio.run`` and the executor's loop cancel every task as
    they end) or when the last backend using it is closed (:meth:`aclose`). Older SDKs get the
    process's client for these settings, which manages its own sessions. The backend keeps the
    client it got per loop, so a call does no registry work."""

    name = "gemini"

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.settings_key = _settings_key(settings)
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        require_sdk("gemini", "google.genai", "gemini")
        # Import the SDK (and build the process's client, for SDKs that manage their own
        # session) on the loading thread: doing it inside the first call would block the loop.
        from google.genai import types

        self._own_session = gemini_takes_a_session()
        self._shared: Any = None
        if self._own_session:
            import aiohttp  # noqa: F401 - imported here, not on the loop
        else:
            self._shared = _gemini.get(settings, self)
        self._config = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION, temperature=0.2, max_output_tokens=400
        )

    async def _client(self) -> Any:
        if self._shared is not None:
            return self._shared
        loop = asyncio.get_running_loop()
        client = self._by_loop.get(loop)
        if client is None:
            client = self._by_loop[loop] = await _gemini_sessions.client(self)
        return client

    async def aclose(self) -> None:
        """Stop using the process's sessions: those no other backend uses are closed, this
        loop's now, the others' on their own loops."""
        self._by_loop.clear()
        if self._own_session:
            await _gemini_sessions.release(self)
        else:
            await _gemini.release(self.settings, self)

    async def note(self, prompt: str) -> str:
        client = await self._client()
        async with asyncio.timeout(self.settings.timeout):
            response = await client.aio.models.generate_content(
                model=self.settings.model, contents=prompt, config=self._config
            )
        usage = response.usage_metadata
        if usage is not None:
            tracing.record_usage(
                usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count
            )
        return _non_empty(response.text)


class OpenAIBackend:
    """The official ``openai`` SDK's ``AsyncOpenAI``, chat completions: the OpenAI API or any
    OpenAI-compatible server (vLLM, Ollama, llama.cpp, LiteLLM) through ``OPENAI_BASE_URL``."""

    name = "openai"

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        require_sdk("openai", "openai", "openai")
        # Import and build on the loading thread, not in the first call; kept: no registry
        # work per call.
        self._client = _openai.get(settings, self)

    async def aclose(self) -> None:
        await _openai.release(self.settings, self)

    async def note(self, prompt: str) -> str:
        async with asyncio.timeout(self.settings.timeout):
            response = await self._client.chat.completions.create(
                model=self.settings.model,
                messages=[
                    {"role": "system", "content": SYSTEM_INSTRUCTION},
                    {"role": "user", "content": prompt},
                ],
                temperature=0.2,
                max_tokens=400,
            )
        if response.usage is not None:
            usage = response.usage
            tracing.record_usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
        choices = response.choices or []
        return _non_empty(choices[0].message.content if choices else None)


class AnthropicBackend:
    """The official ``anthropic`` SDK's ``AsyncAnthropic``, the messages API."""

    name = "anthropic"

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        require_sdk("anthropic", "anthropic", "anthropic")
        self._client = _anthropic.get(settings, self)

    async def aclose(self) -> None:
        await _anthropic.release(self.settings, self)

    async def note(self, prompt: str) -> str:
        async with asyncio.timeout(self.settings.timeout):
            response = await self._client.messages.create(
                model=self.settings.model,
                system=SYSTEM_INSTRUCTION,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=400,
            )
        if response.usage is not None:
            tracing.record_usage(response.usage.input_tokens, response.usage.output_tokens)
        return _non_empty(
            "".join(b.text for b in response.content if getattr(b, "type", "") == "text")
        )


def _non_empty(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise LLMCallError("the LLM returned an empty answer", kind="empty")
    return text


BACKENDS: dict[str, tuple[type[LLMSettings], Callable[[Any], NoteBackend]]] = {
    "gemini": (GeminiSettings, GeminiBackend),
    "openai": (OpenAISettings, OpenAIBackend),
    "anthropic": (AnthropicSettings, AnthropicBackend),
}
"""The LLM backends by ``PHARMACY_LLM_BACKEND`` name: their settings and their class."""


def backend_from_env(name: str, environ: Mapping[str, str] | None = None) -> NoteBackend:
    settings_type, backend_type = BACKENDS[name]
    return backend_type(settings_type.from_env(environ))


def classify_error(exc: BaseException) -> str:
    """A short, stable label for metrics and logs."""
    if isinstance(exc, LLMCallError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return "timeout"
    code = status_code(exc)
    if "timeout" in type(exc).__name__.lower():  # openai/anthropic APITimeoutError
        return "timeout"
    if code is not None:
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


def status_code(exc: BaseException) -> int | None:
    """The HTTP status an SDK's error carries, if any."""
    code = getattr(exc, "status_code", None)  # openai, anthropic
    if not isinstance(code, int):
        code = getattr(exc, "code", None)  # google-genai
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def error_class(exc: BaseException) -> str:
    """The error's class, as a log may say it: its text can quote the prompt (patient data)."""
    return type(exc).__qualname__[:100]


def _span_attributes(backend: NoteBackend) -> dict[str, Any]:
    settings = getattr(backend, "settings", None)
    return {
        "mlflow.llm.provider": backend.name,
        "mlflow.llm.model": getattr(settings, "model", None) or "",
        "pharmacy.llm.max_attempts": getattr(settings, "attempts", 1),
        "pharmacy.llm.timeout_s": getattr(settings, "timeout", 0.0),
    }


async def observed_call(
    backend: NoteBackend, prompt: str, observer: LLMObserver
) -> tuple[str | None, str | None]:
    """Call the backend; returns ``(note, None)`` or ``(None, error_kind)``. Traced as one LLM
    span that ends, state ERROR, on a failure or a cancellation.

    Event-loop lifecycle errors are re-raised: they are the executor's to retry.
    """
    attributes = _span_attributes(backend) if tracing.enabled() else None
    with tracing.span(f"{backend.name}.note", "LLM", attributes) as span:
        span.set_inputs({"prompt": prompt})
        started = time.monotonic()
        try:
            text = await backend.note(prompt)
        except Exception as exc:
            if is_loop_error(exc):
                raise
            kind = classify_error(exc)
            span.set_attribute("pharmacy.llm.error_kind", kind)
            span.record_exception(exc)
            observer.on_llm_call(backend.name, kind, time.monotonic() - started)
            # The error's class and status only, never its text: an upstream's error can quote
            # the prompt, which holds the patient's data.
            error_type, code = error_class(exc), status_code(exc)
            logger.warning(
                "llm_call_failed backend=%s kind=%s error=%s status=%s",
                backend.name,
                kind,
                error_type,
                code,
                extra={
                    "event": "llm_call_failed",
                    "backend": backend.name,
                    "kind": kind,
                    "error_type": error_type,
                    "status_code": code,
                },
            )
            return None, kind
        observer.on_llm_call(backend.name, "ok", time.monotonic() - started)
        span.set_outputs({"note": text})
    return text, None
