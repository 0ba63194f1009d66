"""Recognise event-loop lifecycle errors, the only errors the executor retries."""

from __future__ import annotations

__all__ = ["is_loop_error", "loop_error_reason"]

# (reason code, message fragment). The reason code is a stable label for logs and metrics.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("loop_closed", "event loop is closed"),
    ("another_loop_running", "cannot run the event loop while another loop is running"),
    ("loop_already_running", "this event loop is already running"),
    ("different_loop", "attached to a different loop"),
    ("different_loop", "bound to a different event loop"),
    ("different_loop", "attached to a different event loop"),
    # aiohttp's timer on a loop the session does not belong to (google-genai 1.x on aiohttp)
    ("timer_outside_task", "timeout context manager should be used inside a task"),
    # run_in_executor on a loop whose default executor was shut down (asyncio.run's exit)
    ("executor_shut_down", "executor shutdown has been called"),
)

# Libraries sometimes wrap the RuntimeError (``raise ClientError(...) from exc``);
# follow explicit causes this deep, no further.
_MAX_CAUSE_DEPTH = 5


def loop_error_reason(exc: BaseException) -> str | None:
    """Return the reason code if ``exc`` (or an exception it was raised from) is a loop-lifecycle
    ``RuntimeError``, else ``None``."""
    current: BaseException | None = exc
    for _ in range(_MAX_CAUSE_DEPTH):
        if current is None:
            return None
        if isinstance(current, RuntimeError):
            message = str(current).lower()
            for reason, fragment in _PATTERNS:
                if fragment in message:
                    return reason
        current = current.__cause__
    return None


def is_loop_error(exc: BaseException) -> bool:
    """True if ``exc`` is an event-loop lifecycle error worth retrying on a fresh attempt."""
    return loop_error_reason(exc) is not None
