"""What the executor tells the outside: one log line per event, with a stable event name first
and the same fields on the record (for grep and for JSON formatters), and the metrics hooks."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from ._loop_errors import is_loop_error, loop_error_reason
from ._work import Work
from .config import ExecutorConfig
from .context import request_id_var
from .errors import ExecutorTimeoutError
from .hooks import CallOutcome, ExecutorHooks

__all__ = ["Reporter"]

logger = logging.getLogger("modelhub.serving")


class Reporter:
    """Logs and hooks for one executor. A hook that raises is logged and otherwise ignored."""

    def __init__(self, config: ExecutorConfig, hooks: ExecutorHooks) -> None:
        self.hooks = hooks
        self.mode = config.mode
        self._lag_warning = config.lag_warning
        self._warned_sites: set[tuple[str, int]] = set()

    def observed(self, work: Work[Any]) -> _Observation:
        """Wrap a call's attempts: ``with reporter.observed(work): return <attempts>``."""
        return _Observation(self, work)

    def retry(self, work: Work[Any], exc: BaseException | None) -> None:
        reason = self._log(logging.WARNING, "async_retry", work, exc)
        self.emit(self.hooks.on_retry, self.mode, reason or "unknown")

    def abandoned(self, work: Work[Any]) -> None:
        self._log(logging.WARNING, "async_abandoned", work)

    def failure(self, work: Work[Any], exc: BaseException) -> None:
        """One ERROR when retries did not save the call, or a loop error ended its last attempt.
        Other exceptions belong to the caller and are not logged here."""
        if work.attempts <= 1 and not is_loop_error(exc):
            return
        reason = self._log(logging.ERROR, "async_failed", work, exc, traceback=True)
        self.emit(self.hooks.on_failure, self.mode, reason or "other")

    def recovery(self, work: Work[Any]) -> None:
        self._log(logging.INFO, "async_recovered", work)
        self.emit(self.hooks.on_recovered, self.mode)

    def lag(self, seconds: float) -> None:
        self.emit(self.hooks.on_loop_lag, seconds)
        if seconds >= self._lag_warning:
            logger.warning(
                "loop_lag: the shared event loop ran %.3f s late; a coroutine is blocking it",
                seconds,
                extra={"event": "loop_lag", "lag_seconds": round(seconds, 6), "mode": self.mode},
            )

    def blocked_caller(self) -> None:
        """A sync call from a thread running another loop: one WARNING per call site."""
        site = _call_site()
        if site in self._warned_sites:
            return
        self._warned_sites.add(site)
        logger.warning(
            "async_caller_loop_blocked: run_async() called from a thread running an event loop "
            "at %s:%d; the call works but blocks that loop until it returns; "
            "use `await executor.arun(...)` in async code",
            site[0],
            site[1],
            extra={
                "event": "async_caller_loop_blocked",
                "call_site": f"{site[0]}:{site[1]}",
                "mode": self.mode,
                "request_id": request_id_var.get(),
            },
        )

    @staticmethod
    def emit(hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            logger.exception("executor hook %s failed", getattr(hook, "__qualname__", hook))

    def _log(
        self,
        level: int,
        event: str,
        work: Work[Any],
        exc: BaseException | None = None,
        *,
        traceback: bool = False,
    ) -> str | None:
        """Returns the loop-error reason code of ``exc``, if any."""
        request_id = request_id_var.get()
        error = f"{type(exc).__name__}: {exc}" if exc is not None else None
        reason = loop_error_reason(exc) if exc is not None else None
        logger.log(
            level,
            "%s function=%s attempt=%d max_attempts=%d mode=%s request_id=%s error=%s",
            event,
            work.name,
            work.attempts,
            work.max_attempts,
            self.mode,
            request_id,
            error,
            exc_info=exc if traceback else None,
            extra={
                "event": event,
                "function": work.name,
                "attempt": work.attempts,
                "max_attempts": work.max_attempts,
                "error": error,
                "reason": reason,
                "mode": self.mode,
                "request_id": request_id,
            },
        )
        return reason


class _Observation:
    """Times one call and reports how it ended: hooks, and the failure or recovery log line."""

    __slots__ = ("_reporter", "_started", "_work")

    def __init__(self, reporter: Reporter, work: Work[Any]) -> None:
        self._reporter, self._work = reporter, work
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.monotonic()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        reporter, work = self._reporter, self._work
        outcome: CallOutcome = "ok"
        if isinstance(exc, ExecutorTimeoutError):
            outcome = "timeout"
            reporter.emit(reporter.hooks.on_timeout, reporter.mode)
        elif exc is not None:
            outcome = "error"
            reporter.failure(work, exc)
        duration = time.monotonic() - self._started
        reporter.emit(reporter.hooks.on_call, reporter.mode, outcome, duration)
        if exc is None and work.attempts > 1:
            reporter.recovery(work)


def _call_site() -> tuple[str, int]:
    """The first frame outside this package: the code that called run()/run_async()."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "modelhub.serving"
    ):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno
