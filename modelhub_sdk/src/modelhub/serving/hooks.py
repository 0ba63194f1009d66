"""Metrics hooks: the executor reports what it does here; it imports no metrics library.

Subclass :class:`ExecutorHooks` and override what you need (the service wires these to
Prometheus). Hooks run on the calling thread or on the loop thread: keep them fast and
thread-safe. An exception raised by a hook is logged and otherwise ignored.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["CallOutcome", "ExecutorHooks"]

#: ``ok``: returned a value; ``error``: raised (any exception but a timeout);
#: ``timeout``: the deadline passed.
CallOutcome = Literal["ok", "error", "timeout"]


class ExecutorHooks:
    """No-op base class; every method is optional to override."""

    def on_call(self, mode: str, outcome: CallOutcome, duration: float) -> None:
        """A call finished (all attempts included); ``duration`` in seconds."""

    def on_retry(self, mode: str, reason: str) -> None:
        """An attempt failed with a loop-lifecycle error (``reason``) and will be retried."""

    def on_recovered(self, mode: str) -> None:
        """A call succeeded after at least one retry."""

    def on_failure(self, mode: str, reason: str) -> None:
        """A call failed after retries, or with a loop-lifecycle error on its last attempt."""

    def on_timeout(self, mode: str) -> None:
        """A call's deadline passed and its task was cancelled."""

    def on_loop_lag(self, seconds: float) -> None:
        """The shared loop ran a timer ``seconds`` late (measured periodically)."""
