"""One cell of the SDK-compatibility matrix; runs in the SDK's venv and prints one JSON object.

    python bench/sdk_compat_driver.py CLIENT BASE_URL MODE [--sequential 30] [--threads 10]
        [--calls 5] [--timeout 2]

CLIENT is ``openai``, ``anthropic``, ``genai`` (each through its official SDK), ``aiohttp``
(a plain ``aiohttp.ClientSession``), ``httpx`` (a plain ``httpx.AsyncClient``) or ``pipeline``
(the pharmacy pipeline with its gemini backend). Whatever the client, there is ONE of it per
process, built at module level or on first use and never rebuilt (the production shape), and
every call goes through ``AsyncExecutor`` in MODE (``isolated`` or ``shared``): first
``--sequential`` calls from one thread, then ``--threads`` threads x ``--calls`` calls started
together. Needs ``modelhub`` (and for ``pipeline`` ``pharmacy_service``) on ``PYTHONPATH``.

Reported: calls that succeeded (and, for the pipeline, LLM notes vs template fallbacks), every
failed attempt by kind (a loop error, raised as is or wrapped by the SDK, or another error),
the executor's retries, recoveries, failures and timeouts (its hooks) and the errors that
reached the caller.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from modelhub.serving import AsyncExecutor, ExecutorConfig, ExecutorHooks, is_loop_error

CLIENTS = ("openai", "anthropic", "genai", "aiohttp", "httpx", "pipeline")
DISTRIBUTIONS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "genai": "google-genai",
    "pipeline": "google-genai",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
}
PROMPT = "Summarise: warfarin with ibuprofen raises the bleeding risk."
_LOOP_MESSAGES = (
    ("event loop is closed", "Event loop is closed"),
    ("bound to a different event loop", "bound to a different event loop"),
    ("attached to a different", "attached to a different loop"),
    ("another loop is running", "another loop is running"),
    ("already running", "loop already running"),
    # Loop-lifecycle errors too (aiohttp's timer, the loop's default thread pool used after
    # asyncio.run shut it down), but not among the messages the executor retries.
    ("should be used inside a task", "Timeout context manager should be used inside a task"),
    ("executor shutdown has been called", "Executor shutdown has been called"),
)
_VARIABLE = re.compile(r"0x[0-9a-f]+|Task-\d+")


def _loop_message(exc: BaseException) -> str | None:
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        for fragment, label in _LOOP_MESSAGES:
            if fragment in text:
                return label
    return None


def error_kind(exc: BaseException) -> str:
    """The loop error in ``exc`` or in what it was raised from (``__cause__``, then
    ``__context__``), as ``Event loop is closed`` or, wrapped by the SDK,
    ``APIConnectionError <- Event loop is closed``; `` (not retried)`` when the executor does
    not recognise it. Otherwise ``other: Type <- RootCause: message``."""
    if isinstance(exc, TimeoutError):  # the executor's deadline or the SDK's own timeout
        return "other: timeout (the call hung until its deadline)"
    for link in ("__cause__", "__context__"):
        current: BaseException | None = exc
        seen: set[int] = set()
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            label = _loop_message(current)
            if label:
                wrapped = "" if current is exc else f"{type(exc).__name__} <- "
                return wrapped + label + ("" if is_loop_error(exc) else " (not retried)")
            current = getattr(current, link)
    root, seen = exc, {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        root = nxt
        seen.add(id(root))
    wrapped = "" if root is exc else f" <- {type(root).__name__}"
    message = _VARIABLE.sub("…", str(root))[:70]
    return f"other: {type(exc).__name__}{wrapped}: {message}"


class LogEvents(logging.Handler):
    """The executor's (and the pipeline's) log events by name: ``async_retry``..."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:  # Handler.handle() holds self.lock
        event = getattr(record, "event", None)
        if event:
            self.counts[str(event)] += 1


class Counts(ExecutorHooks):
    """The executor's hooks, counted by ``(hook, reason)`` (they run on several threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()

    def _add(self, hook: str, reason: str = "") -> None:
        with self.lock:
            self.counts[hook, reason] += 1

    def on_retry(self, mode: str, reason: str) -> None:
        self._add("retry", reason)

    def on_recovered(self, mode: str) -> None:
        self._add("recovered")

    def on_failure(self, mode: str, reason: str) -> None:
        self._add("failure", reason)

    def on_timeout(self, mode: str) -> None:
        self._add("timeout")

    def by_reason(self, hook: str) -> dict[str, int]:
        return {reason: n for (name, reason), n in self.counts.items() if name == hook}

    def total(self, hook: str) -> int:
        return sum(self.by_reason(hook).values())


def build_call(client: str, base_url: str, timeout: float) -> Callable[[], Awaitable[str]]:
    """One module-level client of the kind, and the coroutine function of one call with it."""
    if client == "openai":
        from openai import AsyncOpenAI

        oai = AsyncOpenAI(api_key="k", base_url=f"{base_url}/v1", timeout=timeout, max_retries=0)

        async def openai_call() -> str:
            response = await oai.chat.completions.create(
                model="gpt-4.1-mini",
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=100,
            )
            return str(response.choices[0].message.content)

        return openai_call
    if client == "anthropic":
        from anthropic import AsyncAnthropic

        ant = AsyncAnthropic(api_key="k", base_url=base_url, timeout=timeout, max_retries=0)

        async def anthropic_call() -> str:
            response = await ant.messages.create(
                model="claude-haiku-4-5",
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=100,
            )
            return "".join(getattr(block, "text", "") for block in response.content)

        return anthropic_call
    if client == "genai":
        from google import genai
        from google.genai import types

        gem = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base_url))
        config = types.GenerateContentConfig(
            http_options=types.HttpOptions(
                timeout=int(timeout * 1000), retry_options=types.HttpRetryOptions(attempts=1)
            )
        )

        async def genai_call() -> str:
            response = await gem.aio.models.generate_content(
                model="gemini-2.5-flash", contents=PROMPT, config=config
            )
            return str(response.text)

        return genai_call
    if client == "aiohttp":
        import aiohttp

        url = f"{base_url}/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
        sessions: list[aiohttp.ClientSession] = []  # created on first use, then kept

        async def aiohttp_call() -> str:
            if not sessions:
                sessions.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(timeout)))
            async with sessions[0].post(url, json=body) as response:
                response.raise_for_status()
                return str((await response.json())["choices"][0]["message"]["content"])

        return aiohttp_call
    if client == "httpx":
        import httpx

        url = f"{base_url}/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
        hx = httpx.AsyncClient(timeout=timeout)

        async def httpx_call() -> str:
            response = await hx.post(url, json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])

        return httpx_call
    if client == "pipeline":
        from pharmacy_service.clinical import KnowledgeBase
        from pharmacy_service.model import Pipeline, parse_rows
        from pharmacy_service.model.llm import GeminiBackend, GeminiSettings

        settings = GeminiSettings(api_key=None, base_url=base_url, timeout=timeout)
        pipeline = Pipeline(KnowledgeBase.load(), GeminiBackend(settings))
        rows = parse_rows([{"patient_id": "c1", "medications": ["Coumadin", "Advil"]}])

        async def pipeline_call() -> str:
            (row,) = await pipeline.run(rows)
            return str(row["note_source"])  # "llm", or "fallback" when the LLM call failed

        return pipeline_call
    raise SystemExit(f"unknown client {client!r}: use one of {', '.join(CLIENTS)}")


def run_cell(args: argparse.Namespace) -> dict[str, Any]:
    sdk_call = build_call(args.client, args.base_url, args.timeout)
    lock = threading.Lock()
    attempt_errors: Counter[str] = Counter()
    caller_errors: Counter[str] = Counter()
    outcomes: dict[str, Counter[str]] = {"sequential": Counter(), "concurrent": Counter()}

    async def attempt() -> str:
        try:
            text = await sdk_call()
        except Exception as exc:
            with lock:
                attempt_errors[error_kind(exc)] += 1
            raise
        if not text:
            raise ValueError("empty answer")
        return text

    hooks, events = Counts(), LogEvents()
    for name in ("modelhub.serving", "pharmacy_service"):  # counted, kept off stderr
        logging.getLogger(name).addHandler(events)
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).propagate = False
    config = ExecutorConfig(mode=args.mode, max_attempts=args.attempts)
    started = time.monotonic()
    with AsyncExecutor(config, hooks=hooks) as executor:

        def call(phase: str) -> None:
            try:
                text = executor.run(attempt, timeout=args.timeout * 3)  # 3 attempts
                outcome = "fallback" if text == "fallback" else "ok"
            except Exception as exc:  # noqa: BLE001 - counted
                outcome = "failed"
                with lock:
                    caller_errors[error_kind(exc)] += 1
            with lock:
                outcomes[phase][outcome] += 1

        for _ in range(args.sequential):
            call("sequential")
        barrier = threading.Barrier(args.threads)

        def worker() -> None:
            barrier.wait(60)
            for _ in range(args.calls):
                call("concurrent")

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    return {
        "client": args.client,
        "version": installed(DISTRIBUTIONS[args.client]),
        "transport": transport(args.client),
        "deps": {name: installed(name) for name in ("httpx", "httpcore", "aiohttp", "anyio")},
        "mode": args.mode,
        "attempts": args.attempts,
        "calls": args.sequential + args.threads * args.calls,
        "sequential": dict(outcomes["sequential"]),
        "concurrent": dict(outcomes["concurrent"]),
        "attempt_errors": dict(attempt_errors),
        "retries": hooks.by_reason("retry"),
        "recovered": hooks.total("recovered"),
        "failed_after_retries": hooks.by_reason("failure"),
        "timeouts": hooks.total("timeout"),
        "log_events": dict(events.counts),
        "caller_errors": dict(caller_errors),
        "seconds": round(time.monotonic() - started, 2),
    }


def installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def transport(client: str) -> str:
    """The HTTP library the client uses here (google-genai picks aiohttp when installed)."""
    if client in ("aiohttp", "httpx"):
        return client
    if client in ("genai", "pipeline"):
        try:
            from google.genai import _api_client

            return "aiohttp" if getattr(_api_client, "has_aiohttp", False) else "httpx"
        except ImportError:
            return "?"
    return "httpx"  # openai and anthropic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("base_url")
    parser.add_argument("mode", choices=("isolated", "shared"))
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5, help="calls per thread")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per HTTP call")
    parser.add_argument("--attempts", type=int, default=3, help="the executor's max_attempts")
    print(json.dumps(run_cell(parser.parse_args())))


if __name__ == "__main__":
    main()
