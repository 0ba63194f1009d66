"""The shared loop: an event loop running forever in a named daemon thread, the watcher that
measures its lag, and the submission of calls to it from other threads.

Closing is one-way and ordered: ``stop()`` marks the loop thread closing under the same lock
``submit()`` holds, so every accepted call is queued before the loop's stop; the shutdown then
cancels their tasks, and every call still unfinished when the loop closes fails with
:class:`ExecutorClosedError`. No caller is left waiting on a call the loop will never run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ._work import Work
from .config import ExecutorConfig
from .errors import ExecutorClosedError

__all__ = ["CallFuture", "LoopThread", "running_loop"]

logger = logging.getLogger("modelhub.serving")


def _closed_while_running() -> ExecutorClosedError:
    return ExecutorClosedError(
        "The AsyncExecutor was closed before this call finished; its task was cancelled."
    )


class CallFuture(concurrent.futures.Future[Any]):
    """The caller's side of one coroutine submitted to the shared loop from another thread."""

    def __init__(self, owner: LoopThread, work: Work[Any]) -> None:
        super().__init__()
        self._owner = owner
        self._work = work
        self._task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        """Runs on the loop thread, inside the caller's copied context (the task inherits it)."""
        try:
            running = self.set_running_or_notify_cancel()
        except RuntimeError:  # already failed by the loop's shutdown
            running = False
        if not running:
            self._owner.pending.discard(self)
            self._work.discard()
            return
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        # Setting the result from inside the task, rather than from a done-callback, saves the
        # caller one more turn of the loop per call.
        try:
            result = await self._work.make()
        except asyncio.CancelledError:
            self._fail(
                _closed_while_running()
                if self._owner.closing
                else concurrent.futures.CancelledError()
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self._fail(exc)
        else:
            try:  # noqa: SIM105 - every call passes here: no context manager per call
                self.set_result(result)
            except concurrent.futures.InvalidStateError:  # failed by close() meanwhile
                pass
        self._owner.pending.discard(self)

    def _fail(self, exc: BaseException) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self.set_exception(exc)

    def fail_closed(self, discard: bool) -> None:
        """End a call the loop will not finish; ``discard`` only once the loop has closed."""
        self._fail(_closed_while_running())
        if discard:
            self._work.discard()

    def cancel_task(self) -> None:
        """Cancel from any thread: before it starts, or as a task in the loop."""
        if self.cancel():
            return
        # A RuntimeError means the loop is already closed: nothing is left to cancel.
        with contextlib.suppress(RuntimeError):
            self._owner.loop.call_soon_threadsafe(self._cancel_in_loop)

    def _cancel_in_loop(self) -> None:
        task = self._task
        if task is not None and task.cancel():
            # A task cancelled before its first step never runs _run(): end the call here.
            task.add_done_callback(self._after_cancel)

    def _after_cancel(self, task: asyncio.Future[Any]) -> None:
        self._owner.pending.discard(self)
        self._fail(concurrent.futures.CancelledError())


class LoopThread:
    """An event loop running forever in a named daemon thread, owned by one executor."""

    def __init__(self, config: ExecutorConfig, on_lag: Callable[[float], None]) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.closing = False
        self.pending: set[CallFuture] = set()
        self.lag = 0.0
        self.last_tick = time.monotonic()
        self._lock = threading.Lock()
        self._interval = config.lag_interval
        self._on_lag = on_lag
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._main, name=config.thread_name, daemon=True)
        self.thread.start()
        self._started.wait()

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            if self._interval > 0:
                loop.create_task(self._watch_lag(), name="modelhub-loop-lag")
            loop.call_soon(self._started.set)
            loop.run_forever()
        finally:
            with self._lock:  # whatever stopped the loop, it accepts no more calls
                self.closing = True
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self._fail_pending(discard=True)

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            self.last_tick = time.monotonic()
            await asyncio.sleep(self._interval)
            self.lag = max(0.0, loop.time() - before - self._interval)
            self._on_lag(self.lag)

    @property
    def alive(self) -> bool:
        """Running and accepting calls."""
        return not self.closing and self.thread.is_alive() and not self.loop.is_closed()

    def current_lag(self) -> float:
        """The last measured lag, or how overdue the next measurement is if the loop is stuck."""
        if self._interval <= 0:
            return 0.0
        overdue = time.monotonic() - self.last_tick - self._interval
        return max(self.lag, overdue, 0.0)

    def is_current_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def submit(self, work: Work[Any]) -> CallFuture:
        """Queue ``work`` on the loop, in the caller's context; refused once closing began."""
        future = CallFuture(self, work)
        context = contextvars.copy_context()
        with self._lock:
            if not self.closing:
                self.pending.add(future)
                self.loop.call_soon_threadsafe(future.start, context=context)
                return future
        work.discard()
        raise ExecutorClosedError(
            "The AsyncExecutor is closing and accepts no more calls; create a new one, or use "
            "AsyncExecutor.run_async(), whose default executor restarts by itself."
        )

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop thread; refused once closing began."""
        with self._lock:
            if not self.closing:
                self.loop.call_soon_threadsafe(callback)
                return
        raise ExecutorClosedError("The AsyncExecutor is closing; its event loop is stopping.")

    def stop(self, timeout: float) -> None:
        """Refuse new calls, stop the loop (its shutdown cancels every task) and join it."""
        with self._lock:
            stopping, self.closing = self.closing, True
            if not stopping:  # else the loop stopped by itself and is shutting down already
                self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.warning(
                "executor_stop_timeout: the event loop thread %s did not stop within %.1f s; "
                "a task is ignoring cancellation",
                self.thread.name,
                timeout,
                extra={"event": "executor_stop_timeout"},
            )
            # Their tasks may still run; their callers must not wait for them.
            self._fail_pending(discard=False)

    def _fail_pending(self, discard: bool) -> None:
        with self._lock:
            unfinished = list(self.pending)
            if discard:
                self.pending.clear()
        for future in unfinished:
            future.fail_closed(discard)


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def running_loop() -> asyncio.AbstractEventLoop | None:
    # asyncio's own non-raising lookup (in asyncio.events.__all__): get_running_loop() would
    # build and raise a RuntimeError on every call from a plain worker thread.
    return asyncio.events._get_running_loop()
