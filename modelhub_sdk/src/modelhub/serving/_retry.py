"""The retry policy: only loop-lifecycle errors, exponential back-off with jitter, one deadline
across all attempts, and a report before each back-off. tenacity makes every decision."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import tenacity

from ._loop_errors import is_loop_error
from ._work import Work, remaining
from .config import ExecutorConfig

__all__ = ["RetryPolicy"]

T = TypeVar("T")


class RetryPolicy:
    """Runs attempts of a call until one succeeds, the error is not a loop error, the attempts
    run out or the deadline passes; the last failure is re-raised as it was.

    One policy serves every call of an executor: tenacity keeps per-call state in its
    ``RetryCallState`` (and the rest thread-locally), and the policy reads the call's
    :class:`Work` from the state's arguments. Per-call construction would cost more than a call.
    """

    def __init__(
        self,
        config: ExecutorConfig,
        *,
        on_retry: Callable[[Work[Any], BaseException | None], None],
        sleep: Callable[[float], None],
        async_sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        """``on_retry`` is told before each back-off; ``sleep``/``async_sleep`` do the back-off
        (tests inject recorders)."""
        # wait_exponential_jitter's first parameter is `initial` up to tenacity 9.1 and
        # `multiplier` from 9.2 (which warns on `initial`); the same policy from parts that
        # every tenacity in the SDK's range has: min(initial * 2**n + jitter, max).
        max_wait = config.retry_max_wait
        backoff = tenacity.wait_exponential(
            multiplier=config.retry_initial_wait, max=max_wait
        ) + tenacity.wait_random(0, config.retry_jitter)

        def stop(state: tenacity.RetryCallState) -> bool:
            work: Work[Any] = state.args[0]
            return state.attempt_number >= work.max_attempts

        def wait(state: tenacity.RetryCallState) -> float:
            work: Work[Any] = state.args[0]
            delay = min(float(backoff(state)), max_wait)
            left = remaining(work.deadline)  # raises once the deadline has passed
            return delay if left is None else min(delay, left)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            on_retry(state.args[0], exc)

        policy: dict[str, Any] = {
            "stop": stop,
            "wait": wait,
            "retry": tenacity.retry_if_exception(is_loop_error),
            "reraise": True,
            "before_sleep": before_sleep,
        }
        self._retrying = tenacity.Retrying(sleep=sleep, **policy)
        self._async_retrying = tenacity.AsyncRetrying(sleep=async_sleep, **policy)

    # The first attempt runs without tenacity: it succeeds almost always, and tenacity's
    # bookkeeping costs more than the rest of a call. When it fails with a loop error, tenacity
    # takes over from there: its first "attempt" re-raises that failure, so every decision
    # (retry, back-off, stop, logging) is still tenacity's, with the right attempt numbers.

    def call(self, attempt: Callable[[Work[T]], T], work: Work[T]) -> T:
        try:
            return attempt(work)
        except BaseException as exc:
            if work.max_attempts <= 1 or not is_loop_error(exc):
                raise
            first_failure: BaseException | None = exc

        def replay_then_attempt(work: Work[T]) -> T:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return attempt(work)

        result: T = self._retrying(replay_then_attempt, work)
        return result

    async def acall(self, attempt: Callable[[Work[T]], Awaitable[T]], work: Work[T]) -> T:
        try:
            return await attempt(work)
        except BaseException as exc:
            if work.max_attempts <= 1 or not is_loop_error(exc):
                raise
            first_failure: BaseException | None = exc

        async def replay_then_attempt(work: Work[T]) -> T:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return await attempt(work)

        result: T = await self._async_retrying(replay_then_attempt, work)
        return result
