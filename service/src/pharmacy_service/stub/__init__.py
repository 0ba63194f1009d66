"""The LLM stub shipped with the service (tests, benchmarks, docker compose): an aiohttp server
that speaks the Gemini, OpenAI and Anthropic wire formats, with latency and fault injection.
``pharmacy-gemini-stub`` (also ``pharmacy-llm-stub``) runs it."""

from .server import FAULT_KINDS, StubConfig, StubServer, StubStats, answer_for, main, run_in_thread

__all__ = [
    "FAULT_KINDS",
    "StubConfig",
    "StubServer",
    "StubStats",
    "answer_for",
    "main",
    "run_in_thread",
]
