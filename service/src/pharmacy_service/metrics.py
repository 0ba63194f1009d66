"""Prometheus metrics. Under gunicorn they use multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``
is set by the gunicorn config before this module is imported, and /metrics aggregates workers."""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from modelhub.serving import ExecutorHooks

from .model.llm import LLMObserver

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ExecutorMetrics",
    "LLMMetrics",
    "render",
]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)

REQUESTS = Counter(
    "pharmacy_http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "pharmacy_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "pharmacy_http_requests_in_flight", "Requests being answered.", multiprocess_mode="livesum"
)
QUEUE_DEPTH = Gauge(
    "pharmacy_predict_queue_depth",
    "Predictions admitted and waiting for a predict thread.",
    multiprocess_mode="livesum",
)
SHED = Counter("pharmacy_http_requests_shed_total", "Requests refused with 503 (over capacity).")
DRAINING = Gauge(
    "pharmacy_draining", "1 while the worker drains before exit.", multiprocess_mode="livemax"
)

EXECUTOR_CALLS = Counter(
    "modelhub_executor_calls_total", "AsyncExecutor calls finished.", ["mode", "outcome"]
)
EXECUTOR_RETRIES = Counter(
    "modelhub_executor_retries_total",
    "Attempts retried after an event-loop lifecycle error.",
    ["mode", "reason"],
)
EXECUTOR_RECOVERIES = Counter(
    "modelhub_executor_recoveries_total", "Calls that succeeded after a retry.", ["mode"]
)
EXECUTOR_FAILURES = Counter(
    "modelhub_executor_failures_total",
    "Calls that failed after retries, or with a loop error on their last attempt.",
    ["mode", "reason"],
)
EXECUTOR_TIMEOUTS = Counter(
    "modelhub_executor_timeouts_total", "Calls cancelled at their deadline.", ["mode"]
)
EXECUTOR_DURATION = Histogram(
    "modelhub_executor_call_duration_seconds",
    "AsyncExecutor call time, all attempts included.",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
LOOP_LAG_WINDOW = 30.0
LOOP_LAG = Gauge(
    "modelhub_executor_loop_lag_seconds",
    "The shared event loop's worst lag in the last 30 s (live while blocked, at each scrape).",
    multiprocess_mode="livemax",
)

LLM_CALLS = Counter("pharmacy_llm_calls_total", "LLM calls by outcome.", ["backend", "outcome"])
LLM_DURATION = Histogram(
    "pharmacy_llm_call_duration_seconds", "LLM call time.", ["backend"], buckets=LATENCY_BUCKETS
)
LLM_FALLBACKS = Counter(
    "pharmacy_llm_fallbacks_total",
    "Rows answered with the template note because the LLM failed.",
    ["backend", "reason"],
)


class ExecutorMetrics(ExecutorHooks):
    def __init__(self) -> None:
        self._worst_lag = 0.0
        self._worst_at = 0.0

    def on_call(self, mode: str, outcome: str, duration: float) -> None:
        EXECUTOR_CALLS.labels(mode, outcome).inc()
        EXECUTOR_DURATION.labels(mode).observe(duration)

    def on_retry(self, mode: str, reason: str) -> None:
        EXECUTOR_RETRIES.labels(mode, reason).inc()

    def on_recovered(self, mode: str) -> None:
        EXECUTOR_RECOVERIES.labels(mode).inc()

    def on_failure(self, mode: str, reason: str) -> None:
        EXECUTOR_FAILURES.labels(mode, reason).inc()

    def on_timeout(self, mode: str) -> None:
        EXECUTOR_TIMEOUTS.labels(mode).inc()

    def on_loop_lag(self, seconds: float) -> None:
        """Keeps the worst lag for LOOP_LAG_WINDOW seconds: a loop blocked for a few seconds
        between two scrapes still shows (the loop reports its lag 4 times a second)."""
        now = time.monotonic()
        if seconds >= self._worst_lag or now - self._worst_at > LOOP_LAG_WINDOW:
            self._worst_lag, self._worst_at = seconds, now
        LOOP_LAG.set(self._worst_lag)


class LLMMetrics(LLMObserver):
    def on_llm_call(self, backend: str, outcome: str, duration: float) -> None:
        LLM_CALLS.labels(backend, outcome).inc()
        LLM_DURATION.labels(backend).observe(duration)

    def on_fallback(self, backend: str, reason: str) -> None:
        LLM_FALLBACKS.labels(backend, reason).inc()


def render() -> bytes:
    """The exposition text: every worker's values under gunicorn, this process's otherwise."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
