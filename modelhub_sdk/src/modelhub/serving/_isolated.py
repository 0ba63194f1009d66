"""Isolated mode: each attempt runs on a fresh event loop of its own (``asyncio.run``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._loop import running_loop
from ._work import CANCEL_GRACE, Work, await_call, remaining

__all__ = ["attempt_isolated", "attempt_isolated_async"]

T = TypeVar("T")


class _IsolatedCall:
    """One ``asyncio.run`` in a helper thread (isolated mode with a deadline)."""

    def __init__(self, main: Callable[[], Awaitable[Any]]) -> None:
        self._main = main
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="modelhub-isolated-call", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self.future.set_result(asyncio.run(self._track()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self.future.set_exception(exc)

    async def _track(self) -> Any:
        with self._lock:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            if self._cancelled:  # cancelled before its loop ran: the call never starts
                raise asyncio.CancelledError
        return await self._main()

    def result(self, timeout: float | None) -> Any:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)


def _within_deadline(work: Work[T], left: float | None) -> Callable[[], Coroutine[Any, Any, T]]:
    """The attempt's coroutine function, for its fresh loop: ``work`` within ``left`` seconds."""

    async def main() -> T:
        awaitable = work.make()
        if left is None:
            return await awaitable
        try:
            async with asyncio.timeout(left) as scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise work.timeout_error() from None
            raise

    return main


def attempt_isolated(work: Work[T], on_abandoned: Callable[[Work[T]], None]) -> T:
    """One attempt of ``work`` on a fresh loop. ``on_abandoned`` is told when a timed-out
    attempt's thread does not stop after cancellation (the coroutine ignores it)."""
    work.attempts += 1
    left = remaining(work.deadline)
    main = _within_deadline(work, left)
    if left is None and running_loop() is None:
        return asyncio.run(main())
    # With a deadline (or inside a running loop, where asyncio.run() refuses to start) the
    # fresh loop runs in a helper thread carrying the caller's context, so that a coroutine
    # that ignores cancellation (a client stuck on a closed loop) cannot hold the caller
    # past its deadline.
    call = _IsolatedCall(main)
    wait = None if left is None else left + CANCEL_GRACE
    try:
        result: T = call.result(wait)
        return result
    except TimeoutError:
        if call.done():  # the coroutine's own TimeoutError
            raise
        call.cancel()
        if not call.wait(CANCEL_GRACE):
            on_abandoned(work)
        raise work.timeout_error() from None


async def attempt_isolated_async(work: Work[T], on_abandoned: Callable[[Work[T]], None]) -> T:
    """The same, awaited from another loop (``arun``): the fresh loop runs in a helper thread,
    and cancelling the awaiting task cancels the call's task in that loop (its ``finally``
    blocks run there) instead of leaving it to run on."""
    work.attempts += 1
    left = remaining(work.deadline)
    call = _IsolatedCall(_within_deadline(work, left))
    wait = None if left is None else left + CANCEL_GRACE
    waiter = await await_call(call.future, call.cancel, wait)
    if waiter is None:
        if not call.done():
            on_abandoned(work)
        raise work.timeout_error()
    result: T = waiter.result()
    return result
