"""One call: what it runs on each attempt, how many attempts it has had, and its deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .errors import ExecutorTimeoutError

__all__ = ["CANCEL_GRACE", "Work", "await_call", "describe", "remaining"]

T = TypeVar("T")

# How long a timed-out call waits for its cancelled task to unwind (``finally`` blocks) before
# raising: short, so that the caller gets its timeout close to the deadline.
CANCEL_GRACE = 0.02


class Work(Generic[T]):
    """What one call runs: a function to call per attempt, or a single awaitable."""

    __slots__ = (
        "_args",
        "_awaitable",
        "_fn",
        "_kwargs",
        "_label",
        "attempts",
        "deadline",
        "max_attempts",
    )

    def __init__(
        self,
        target: Callable[..., Awaitable[T]] | Awaitable[T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        max_attempts: int,
        deadline: float | None,
    ) -> None:
        self._fn: Callable[..., Awaitable[T]] | None
        self._awaitable: Awaitable[T] | None
        if inspect.isawaitable(target):
            if args or kwargs:
                raise TypeError(
                    "run_async() got arguments for an awaitable; pass the async function and its "
                    "arguments instead (run_async(fn, *args)), which can also be retried."
                )
            self._fn, self._awaitable = None, target
            self._label = getattr(target, "__qualname__", type(target).__qualname__)
            max_attempts = 1  # an awaitable can be awaited once; only a function can be retried
        elif callable(target):
            self._fn, self._awaitable = target, None
        else:
            raise TypeError(
                f"run_async() needs an async function or an awaitable, not {type(target).__name__}."
            )
        self._args, self._kwargs = args, kwargs
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.attempts = 0

    @property
    def name(self) -> str:
        """What the logs call it: ``module.qualname`` of the function (computed only for logs)."""
        return self._label if self._fn is None else describe(self._fn)

    def make(self) -> Awaitable[T]:
        if self._fn is None:
            if self._awaitable is None:
                raise RuntimeError("An awaitable cannot be awaited twice; pass the async function.")
            awaitable, self._awaitable = self._awaitable, None
            return awaitable
        awaitable = self._fn(*self._args, **self._kwargs)
        if not inspect.isawaitable(awaitable):
            raise TypeError(
                f"{self.name} returned {type(awaitable).__name__}, not an awaitable: "
                "run_async() needs an async function."
            )
        return awaitable

    def discard(self) -> None:
        """Close an awaitable that will never run, so Python does not warn it was never awaited."""
        awaitable, self._awaitable = self._awaitable, None
        if inspect.iscoroutine(awaitable):
            awaitable.close()

    def timeout_error(self) -> ExecutorTimeoutError:
        return ExecutorTimeoutError(
            f"{self.name} did not finish before its deadline; its task was cancelled."
        )


def describe(fn: Callable[..., Any]) -> str:
    inner = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(inner, "__module__", None) or ""
    name = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    return f"{module}.{name}" if module else name


def remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (``None``: no deadline); raises once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise ExecutorTimeoutError("The call's deadline passed before the attempt could start.")
    return left


async def await_call(
    future: concurrent.futures.Future[T], cancel: Callable[[], None], within: float | None
) -> asyncio.Future[T] | None:
    """Await, from this loop, a call running on another loop: its ``future``, done, or None
    when ``within`` seconds passed first. If the awaiting task is cancelled, or the time
    passes, the call is cancelled (``cancel``) in its own loop; after a timeout it gets
    :data:`CANCEL_GRACE` to unwind."""
    waiter = asyncio.wrap_future(future)
    waiter.add_done_callback(_consume_exception)
    try:
        done, _ = await asyncio.wait({waiter}, timeout=within)
    except BaseException:  # the awaiting task was cancelled: cancel the call too
        cancel()
        raise
    if done:
        return waiter
    cancel()
    await asyncio.wait({waiter}, timeout=CANCEL_GRACE)
    return None


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # A waiter nobody reads (its caller was cancelled) must not be logged as never retrieved.
    if not future.cancelled():
        future.exception()
