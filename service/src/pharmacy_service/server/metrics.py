"""Prometheus metrics. Under gunicorn they use multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``
is set by the gunicorn config before this module is imported, and /metrics aggregates workers.

Each worker writes its own files in that directory. When a worker exits (recycled, killed),
gunicorn's master folds its counters and histograms into one archive file per kind
(``counter_archive.db``...) and deletes its files, so that the directory stays bounded however
many workers come and go while no counter ever goes back; its live gauges are dropped. Folding
and reading take a lock on the directory, so that a scrape never sees a worker's counts twice
or not at all.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from modelhub.serving import ExecutorHooks

from ..model.llm import LLMObserver

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ExecutorMetrics",
    "LLMMetrics",
    "render",
    "reset_directory",
    "retire_process",
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
REFUSED = Counter(
    "pharmacy_http_requests_refused_total",
    "Requests refused before the app saw them: a request line or headers over the limits.",
    ["reason"],
)
CLIENT_DISCONNECTS = Counter(
    "pharmacy_http_client_disconnects_total",
    "Requests whose client closed the connection before its body arrived (status 499 in "
    "pharmacy_http_requests_total, not a server error).",
    ["route"],
)
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
    """The exposition text: every worker's values under gunicorn (the live workers' files and
    the archive of the dead ones'), this process's otherwise. It reads files: call it off the
    event loop."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
        with _directory_lock(Path(directory), exclusive=False):
            return generate_latest(registry)
    return generate_latest(REGISTRY)


ARCHIVED_KINDS = ("counter", "histogram", "summary")
"""Metric kinds whose values only add up, so a dead process's files fold into an archive."""


def retire_process(directory: Path, pid: int) -> None:
    """Fold a dead process's counters, histograms and summaries into the archive files and
    delete its files; drop its gauges (``mark_process_dead`` for the live ones)."""
    with _directory_lock(directory, exclusive=True):
        for kind in ARCHIVED_KINDS:
            dead = directory / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            archive = MmapedDict(str(directory / f"{kind}_archive.db"))  # type: ignore[no-untyped-call]
            try:
                for key, value, _, _ in MmapedDict.read_all_values_from_file(str(dead)):  # type: ignore[no-untyped-call]
                    archived, _ = archive.read_value(key)  # type: ignore[no-untyped-call]
                    archive.write_value(key, archived + value, 0.0)  # type: ignore[no-untyped-call]
            finally:
                archive.close()  # type: ignore[no-untyped-call]
            dead.unlink()
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        for gauge in directory.glob(f"gauge_*_{pid}.db"):  # other gauge modes: a dead value
            gauge.unlink()


def reset_directory(directory: Path) -> None:
    """Empty the metrics directory (at the server's start: old files would add stale values)."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()


@contextmanager
def _directory_lock(directory: Path, *, exclusive: bool) -> Iterator[None]:
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
