"""AsyncExecutor: run coroutines from synchronous code without event-loop lifecycle errors.

``shared`` mode keeps one event loop per process in a named daemon thread and submits every
call to it, so loop-affine clients (an ``aiohttp.ClientSession`` or google-genai's client, cached
at module level) always see the same loop and keep their connections alive. ``isolated`` mode is
the original fix: a fresh loop per call with ``asyncio.run``. Both retry loop-lifecycle errors.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import tenacity

from ._loop_errors import is_loop_error, loop_error_reason
from .config import ExecutorConfig
from .context import request_id_var
from .errors import (
    CalledFromExecutorLoopError,
    ExecutorClosedError,
    ExecutorTimeoutError,
)
from .hooks import CallOutcome, ExecutorHooks

__all__ = ["AsyncExecutor", "run_async"]

logger = logging.getLogger("modelhub.serving")

T = TypeVar("T")

# How long a timed-out call waits for its cancelled task to unwind (``finally`` blocks) before
# raising; small, so the timeout is raised well within 50 ms of the deadline.
_CANCEL_GRACE = 0.02


class _Work(Generic[T]):
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
        return self._label if self._fn is None else _describe(self._fn)

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


def _describe(fn: Callable[..., Any]) -> str:
    inner = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(inner, "__module__", None) or ""
    name = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    return f"{module}.{name}" if module else name


class _CallFuture(concurrent.futures.Future[Any]):
    """The caller's side of one coroutine submitted to the shared loop from another thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, work: _Work[Any]) -> None:
        super().__init__()
        self._loop = loop
        self._work = work
        self._task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        """Runs on the loop thread, inside the caller's copied context (the task inherits it)."""
        if not self.set_running_or_notify_cancel():
            self._work.discard()
            return
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        # Setting the result from inside the task, rather than from a done-callback, saves the
        # caller one more turn of the loop per call.
        try:
            result = await self._work.make()
        except asyncio.CancelledError:
            self.set_exception(concurrent.futures.CancelledError())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self.set_exception(exc)
        else:
            self.set_result(result)

    def cancel_task(self) -> None:
        """Cancel from any thread: before it starts, or as a task in the loop."""
        if self.cancel():
            return
        # A RuntimeError means the loop is already closed: nothing is left to cancel.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._cancel_in_loop)

    def _cancel_in_loop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class _IsolatedCall:
    """One ``asyncio.run`` in a helper thread (isolated mode with a deadline)."""

    def __init__(self, main: Callable[[], Awaitable[Any]]) -> None:
        self._main = main
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="modelhub-isolated-call", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self._future.set_result(asyncio.run(self._track()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self._future.set_exception(exc)

    async def _track(self) -> Any:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        return await self._main()

    def result(self, timeout: float | None) -> Any:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)


class _LoopThread:
    """An event loop running forever in a named daemon thread, owned by one executor."""

    def __init__(self, config: ExecutorConfig, on_lag: Callable[[float], None]) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._interval = config.lag_interval
        self._on_lag = on_lag
        self.lag = 0.0
        self.last_tick = time.monotonic()
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
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

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
        return self.thread.is_alive() and not self.loop.is_closed()

    def current_lag(self) -> float:
        """The last measured lag, or how overdue the next measurement is if the loop is stuck."""
        if self._interval <= 0:
            return 0.0
        overdue = time.monotonic() - self.last_tick - self._interval
        return max(self.lag, overdue, 0.0)

    def is_current_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def submit(self, work: _Work[Any]) -> _CallFuture:
        future = _CallFuture(self.loop, work)
        try:
            self.loop.call_soon_threadsafe(future.start, context=contextvars.copy_context())
        except RuntimeError as exc:  # closed between the check and the call
            work.discard()
            raise ExecutorClosedError("The executor's event loop was shut down.") from exc
        return future

    def stop(self, timeout: float) -> None:
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            return
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.warning(
                "executor_stop_timeout: the event loop thread %s did not stop within %.1f s; "
                "a task is ignoring cancellation",
                self.thread.name,
                timeout,
                extra={"event": "executor_stop_timeout"},
            )


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    # asyncio's own non-raising lookup (in asyncio.events.__all__): get_running_loop() would
    # build and raise a RuntimeError on every call from a plain worker thread.
    return asyncio.events._get_running_loop()


def _call_site() -> tuple[str, int]:
    """The first frame outside this package: the code that called run()/run_async()."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "modelhub.serving"
    ):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


class AsyncExecutor:
    """Run coroutines from synchronous code (and from other loops) without loop errors.

    Use the process-wide default through the class methods, as the original API did::

        AsyncExecutor.run_async(fetch, url, timeout=30)

    or an instance with its own configuration::

        with AsyncExecutor(ExecutorConfig(mode="shared", max_attempts=5)) as executor:
            executor.run(fetch, url, timeout=30)
            # from async code, without blocking the caller's loop:
            await executor.arun(fetch, url)
    """

    _default: ClassVar[AsyncExecutor | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        config: ExecutorConfig | None = None,
        *,
        hooks: ExecutorHooks | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``sleep``/``async_sleep`` are used for retry back-off (inject them in tests)."""
        self.config = config if config is not None else ExecutorConfig()
        self.hooks = hooks if hooks is not None else ExecutorHooks()
        self._lock = threading.Lock()
        self._loop_thread: _LoopThread | None = None
        self._closed = False
        self._warned_sites: set[tuple[str, int]] = set()
        # One retry policy per executor, shared by all calls: tenacity keeps per-call state in
        # the RetryCallState and the rest thread-locally, and the policy reads the call's
        # _Work from the state's arguments. Building one per call cost ~25 µs.
        policy = self._policy()
        self._retrying = tenacity.Retrying(sleep=sleep, **policy)
        self._async_retrying = tenacity.AsyncRetrying(sleep=async_sleep, **policy)
        _live_executors.add(self)

    # -- the original class-level API, on the default executor -------------------------------

    @classmethod
    def default(cls) -> AsyncExecutor:
        """The process-wide executor, configured from ``MODELHUB_ASYNC_*`` on first use."""
        executor = cls._default
        if executor is None:
            with cls._default_lock:
                if cls._default is None:
                    cls._default = cls(ExecutorConfig.from_env())
                executor = cls._default
        return executor

    @classmethod
    def set_default(cls, executor: AsyncExecutor) -> None:
        """Make ``executor`` the one ``run_async`` uses (a server wiring its metrics hooks)."""
        with cls._default_lock:
            previous, cls._default = cls._default, executor
        if previous is not None and previous is not executor:
            previous.close()

    @classmethod
    def run_async(
        cls,
        async_func: Callable[..., Awaitable[T]] | Awaitable[T],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``async_func(*args, **kwargs)`` on the default executor and return its result."""
        return cls.default().run(async_func, *args, timeout=timeout, **kwargs)

    @classmethod
    def shutdown(cls) -> None:
        """Close the default executor: cancel its tasks, stop its loop thread and join it.

        The next ``run_async`` starts a new default executor (re-reading the environment);
        calls in flight during ``shutdown()`` are cancelled.
        """
        with cls._default_lock:
            executor, cls._default = cls._default, None
        if executor is not None:
            executor.close()

    # -- instance API ------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def loop_lag(self) -> float:
        """Seconds the shared loop is running late now (0 when no loop runs)."""
        loop_thread = self._loop_thread
        if loop_thread is None or not loop_thread.alive:
            return 0.0
        return loop_thread.current_lag()

    def run(
        self,
        fn: Callable[..., Awaitable[T]] | Awaitable[T],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` from synchronous code and return its result.

        ``timeout`` (seconds, default ``config.timeout``) is one deadline across all attempts;
        when it passes the task is cancelled in its loop and :class:`ExecutorTimeoutError` is
        raised. Loop-lifecycle errors are retried up to ``config.max_attempts`` times; any other
        exception propagates unchanged from the first attempt. An awaitable (a coroutine object)
        instead of a function runs once, without retries.
        """
        # Typing note: ``timeout`` sits between *args and **kwargs, which PEP 612 forbids for a
        # ParamSpec, so the arguments are ``Any``; the result type is still checked.
        self._check_open()
        work = _Work(fn, args, kwargs, self.config.max_attempts, self._deadline(timeout))
        caller_loop = _running_loop()
        if caller_loop is not None:
            self._check_blocking_call(caller_loop)
        attempt = self._attempt_shared if self.config.mode == "shared" else self._attempt_isolated
        started = time.monotonic()
        outcome: CallOutcome = "error"
        try:
            result: T = self._with_retries(attempt, work)
            outcome = "ok"
        except ExecutorTimeoutError:
            outcome = "timeout"
            self._emit(self.hooks.on_timeout, self.mode)
            raise
        except BaseException as exc:
            self._log_failure(work, exc)
            raise
        finally:
            self._emit(self.hooks.on_call, self.mode, outcome, time.monotonic() - started)
        if work.attempts > 1:
            self._log_recovery(work)
        return result

    async def arun(
        self,
        fn: Callable[..., Awaitable[T]] | Awaitable[T],
        /,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - same contract as run()
        **kwargs: Any,
    ) -> T:
        """``await`` this from async code: the call runs on the executor's loop (``shared``) or in
        a worker thread (``isolated``) and never blocks the caller's loop. Same contract as
        :meth:`run`; cancelling the awaiting task cancels the call."""
        self._check_open()
        if self.config.mode == "isolated":
            return await asyncio.to_thread(
                functools.partial(self.run, fn, *args, timeout=timeout, **kwargs)
            )
        work = _Work(fn, args, kwargs, self.config.max_attempts, self._deadline(timeout))
        started = time.monotonic()
        outcome: CallOutcome = "error"
        try:
            result: T = await self._with_async_retries(self._aattempt_shared, work)
            outcome = "ok"
        except ExecutorTimeoutError:
            outcome = "timeout"
            self._emit(self.hooks.on_timeout, self.mode)
            raise
        except BaseException as exc:
            self._log_failure(work, exc)
            raise
        finally:
            self._emit(self.hooks.on_call, self.mode, outcome, time.monotonic() - started)
        if work.attempts > 1:
            self._log_recovery(work)
        return result

    def ping(self, timeout: float = 1.0) -> float:
        """Round-trip time in seconds of a no-op through the shared loop (starting it if needed).

        Raises :class:`ExecutorTimeoutError` if the loop does not answer within ``timeout``
        (a coroutine is blocking it). In ``isolated`` mode there is no loop to ask: returns 0.
        """
        self._check_open()
        if self.config.mode == "isolated":
            return 0.0
        loop_thread = self._ensure_loop()
        if loop_thread.is_current_thread():
            return 0.0
        answered = threading.Event()
        started = time.monotonic()
        loop_thread.loop.call_soon_threadsafe(answered.set)
        if not answered.wait(timeout):
            raise ExecutorTimeoutError(
                f"The executor's event loop did not answer within {timeout:.2f} s; "
                "a coroutine is blocking it (look for sync I/O or CPU work inside async code)."
            )
        return time.monotonic() - started

    def close(self) -> None:
        """Cancel pending tasks, stop the loop and join its thread. Later calls raise
        :class:`ExecutorClosedError`. Safe to call twice."""
        with self._lock:
            self._closed = True
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is None or loop_thread.pid != os.getpid():
            return
        if loop_thread.is_current_thread():
            raise CalledFromExecutorLoopError(
                "close() was called from the executor's own loop thread; call it from another "
                "thread (it joins the loop thread)."
            )
        loop_thread.stop(self.config.shutdown_timeout)

    def __enter__(self) -> AsyncExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._loop_thread else "idle")
        return f"<AsyncExecutor mode={self.mode} max_attempts={self.config.max_attempts} {state}>"

    # -- attempts ----------------------------------------------------------------------------

    # The first attempt runs without tenacity: it succeeds almost always, and tenacity's
    # bookkeeping cost more than the rest of a call. When it fails with a loop error, tenacity
    # takes over from there: its first "attempt" re-raises that failure, so every decision
    # (retry, back-off, stop, logging) is still tenacity's, with the right attempt numbers.

    def _with_retries(self, attempt: Callable[[_Work[T]], T], work: _Work[T]) -> T:
        try:
            return attempt(work)
        except BaseException as exc:
            if work.max_attempts <= 1 or not is_loop_error(exc):
                raise
            first_failure: BaseException | None = exc

        def replay_then_attempt(work: _Work[T]) -> T:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return attempt(work)

        result: T = self._retrying(replay_then_attempt, work)
        return result

    async def _with_async_retries(
        self, attempt: Callable[[_Work[T]], Awaitable[T]], work: _Work[T]
    ) -> T:
        try:
            return await attempt(work)
        except BaseException as exc:
            if work.max_attempts <= 1 or not is_loop_error(exc):
                raise
            first_failure: BaseException | None = exc

        async def replay_then_attempt(work: _Work[T]) -> T:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return await attempt(work)

        result: T = await self._async_retrying(replay_then_attempt, work)
        return result

    def _attempt_shared(self, work: _Work[T]) -> T:
        work.attempts += 1
        remaining = _remaining(work.deadline)
        loop_thread = self._ensure_loop()
        future = loop_thread.submit(work)
        try:
            result: T = future.result(remaining)
            return result
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, or a result just in time
                late: T = future.result()
                return late
            future.cancel_task()
            concurrent.futures.wait([future], timeout=_CANCEL_GRACE)
            raise self._timeout_error(work) from None
        except BaseException:
            # The coroutine's own exception passes through untouched; KeyboardInterrupt in the
            # main thread must not leave the task running.
            if not future.done():
                future.cancel_task()
            raise

    def _attempt_isolated(self, work: _Work[T]) -> T:
        work.attempts += 1
        remaining = _remaining(work.deadline)

        async def main() -> T:
            awaitable = work.make()
            if remaining is None:
                return await awaitable
            try:
                async with asyncio.timeout(remaining) as scope:
                    return await awaitable
            except TimeoutError:
                if scope.expired():
                    raise self._timeout_error(work) from None
                raise

        if remaining is None and _running_loop() is None:
            return asyncio.run(main())
        # With a deadline (or inside a running loop, where asyncio.run() refuses to start) the
        # fresh loop runs in a helper thread carrying the caller's context, so that a coroutine
        # that ignores cancellation (a client stuck on a closed loop) cannot hold the caller
        # past its deadline.
        call = _IsolatedCall(main)
        wait = None if remaining is None else remaining + _CANCEL_GRACE
        try:
            result: T = call.result(wait)
            return result
        except TimeoutError:
            if call.done():  # the coroutine's own TimeoutError
                raise
            call.cancel()
            if not call.wait(_CANCEL_GRACE):
                self._log_event(logging.WARNING, "async_abandoned", work)
            raise self._timeout_error(work) from None

    async def _aattempt_shared(self, work: _Work[T]) -> T:
        work.attempts += 1
        remaining = _remaining(work.deadline)
        loop_thread = self._ensure_loop()
        if asyncio.get_running_loop() is loop_thread.loop:
            try:
                async with asyncio.timeout(remaining) as scope:
                    return await work.make()
            except TimeoutError:
                if scope.expired():
                    raise self._timeout_error(work) from None
                raise
        future = loop_thread.submit(work)
        waiter = asyncio.wrap_future(future)
        waiter.add_done_callback(_consume_exception)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=remaining)
        except BaseException:  # the awaiting task was cancelled: cancel the call too
            future.cancel_task()
            raise
        if not done:
            future.cancel_task()
            await asyncio.wait({waiter}, timeout=_CANCEL_GRACE)
            raise self._timeout_error(work)
        result: T = waiter.result()
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _ensure_loop(self) -> _LoopThread:
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.alive and loop_thread.pid == os.getpid():
            return loop_thread
        with self._lock:
            self._check_open()  # under the lock: close() may have run since the caller checked
            loop_thread = self._loop_thread
            if loop_thread is None or not loop_thread.alive or loop_thread.pid != os.getpid():
                loop_thread = _LoopThread(self.config, self._report_lag)
                self._loop_thread = loop_thread
            return loop_thread

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutorClosedError(
                "This AsyncExecutor was closed; create a new one, or use "
                "AsyncExecutor.run_async(), whose default executor restarts by itself."
            )

    def _check_blocking_call(self, caller_loop: asyncio.AbstractEventLoop) -> None:
        loop_thread = self._loop_thread
        if loop_thread is not None and caller_loop is loop_thread.loop:
            raise CalledFromExecutorLoopError(
                "run()/run_async() was called from the executor's own event loop, where waiting "
                "would deadlock; in async code use `await executor.arun(fn, ...)` or await the "
                "coroutine directly."
            )
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

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            timeout = self.config.timeout
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(
                f"timeout must be a number of seconds above 0 or None, not {timeout!r}."
            )
        return time.monotonic() + timeout

    def _timeout_error(self, work: _Work[Any]) -> ExecutorTimeoutError:
        return ExecutorTimeoutError(
            f"{work.name} did not finish before its deadline; its task was cancelled."
        )

    def _policy(self) -> dict[str, Any]:
        """The retry policy, shared by the sync and async paths. Per-call values (attempts
        allowed, deadline) come from the call's ``_Work``, the first argument of each attempt."""
        config = self.config
        backoff = tenacity.wait_exponential_jitter(
            initial=config.retry_initial_wait, max=config.retry_max_wait, jitter=config.retry_jitter
        )

        def stop(state: tenacity.RetryCallState) -> bool:
            work: _Work[Any] = state.args[0]
            return state.attempt_number >= work.max_attempts

        def wait(state: tenacity.RetryCallState) -> float:
            work: _Work[Any] = state.args[0]
            delay = float(backoff(state))
            remaining = _remaining(work.deadline)  # raises once the deadline has passed
            return delay if remaining is None else min(delay, remaining)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            work: _Work[Any] = state.args[0]
            exc = state.outcome.exception() if state.outcome is not None else None
            reason = self._log_event(logging.WARNING, "async_retry", work, exc)
            self._emit(self.hooks.on_retry, self.mode, reason or "unknown")

        return {
            "stop": stop,
            "wait": wait,
            "retry": tenacity.retry_if_exception(is_loop_error),
            "reraise": True,
            "before_sleep": before_sleep,
        }

    def _log_failure(self, work: _Work[Any], exc: BaseException) -> None:
        """One ERROR when retries did not save the call, or a loop error ended its last attempt.
        Other exceptions belong to the caller and are not logged here."""
        if work.attempts <= 1 and not is_loop_error(exc):
            return
        reason = self._log_event(logging.ERROR, "async_failed", work, exc, traceback=True)
        self._emit(self.hooks.on_failure, self.mode, reason or "other")

    def _log_recovery(self, work: _Work[Any]) -> None:
        self._log_event(logging.INFO, "async_recovered", work)
        self._emit(self.hooks.on_recovered, self.mode)

    def _log_event(
        self,
        level: int,
        event: str,
        work: _Work[Any],
        exc: BaseException | None = None,
        *,
        traceback: bool = False,
    ) -> str | None:
        """One log line with a stable event name and fields, for grep and for JSON formatters.
        Returns the loop-error reason code of ``exc``, if any."""
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

    def _report_lag(self, lag: float) -> None:
        self._emit(self.hooks.on_loop_lag, lag)
        if lag >= self.config.lag_warning:
            logger.warning(
                "loop_lag: the shared event loop ran %.3f s late; a coroutine is blocking it",
                lag,
                extra={"event": "loop_lag", "lag_seconds": round(lag, 6), "mode": self.mode},
            )

    @staticmethod
    def _emit(hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            logger.exception("executor hook %s failed", getattr(hook, "__qualname__", hook))

    def _after_fork_in_child(self) -> None:
        # The parent's loop thread does not exist in the child: forget it (a new one starts on
        # the next call). Keep a reference so its loop is never garbage-collected half-alive.
        self._lock = threading.Lock()
        if self._loop_thread is not None:
            _inherited_loops.append(self._loop_thread)
            self._loop_thread = None


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ExecutorTimeoutError("The call's deadline passed before the attempt could start.")
    return remaining


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def run_async(
    async_func: Callable[..., Awaitable[T]] | Awaitable[T],
    /,
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> T:
    """Module-level shortcut for :meth:`AsyncExecutor.run_async` (the default executor)."""
    return AsyncExecutor.default().run(async_func, *args, timeout=timeout, **kwargs)


_live_executors: weakref.WeakSet[AsyncExecutor] = weakref.WeakSet()
_inherited_loops: list[_LoopThread] = []


def _reset_after_fork() -> None:
    AsyncExecutor._default_lock = threading.Lock()
    for executor in list(_live_executors):
        executor._after_fork_in_child()


def _close_all_at_exit() -> None:
    for executor in list(_live_executors):
        try:
            executor.close()
        except Exception:  # best effort at interpreter exit
            logger.debug("closing %r at exit failed", executor, exc_info=True)


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_all_at_exit)
