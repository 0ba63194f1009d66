"""AsyncExecutor: run coroutines from synchronous code without event-loop lifecycle errors.

``shared`` mode keeps one event loop per process in a named daemon thread and submits every
call to it, so loop-affine clients (an ``aiohttp.ClientSession`` or google-genai's client, cached
at module level) always see the same loop and keep their connections alive. ``isolated`` mode is
the original fix: a fresh loop per call with ``asyncio.run``. Both retry loop-lifecycle errors.

The parts live beside this module: the loop thread (``_loop``), isolated mode (``_isolated``),
the retry policy (``_retry``), one call (``_work``), logs and hooks (``_report``) and fork/exit
handling (``_lifecycle``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from . import _lifecycle
from ._isolated import attempt_isolated, attempt_isolated_async
from ._loop import LoopThread, running_loop
from ._report import Reporter
from ._retry import RetryPolicy
from ._work import CANCEL_GRACE, Work, await_call, remaining
from .config import ExecutorConfig
from .errors import (
    CalledFromExecutorLoopError,
    ExecutorClosedError,
    ExecutorTimeoutError,
)
from .hooks import ExecutorHooks

__all__ = ["AsyncExecutor", "run_async"]

T = TypeVar("T")
M = TypeVar("M")


class _Run(Protocol):
    """The signature of :meth:`AsyncExecutor.run` (and of both forms of ``run_async``)."""

    def __call__(
        self,
        fn: Callable[..., Awaitable[T]] | Awaitable[T],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T: ...


class _DefaultOrInstance(Generic[M]):
    """A method with two forms: looked up on the class it acts on the process-wide default
    executor (the original API); looked up on an instance it acts on that instance."""

    def __init__(self, on_class: str, on_instance: str, doc: str) -> None:
        self._on_class, self._on_instance = on_class, on_instance
        self.__doc__ = doc

    def __get__(self, instance: AsyncExecutor | None, owner: type[AsyncExecutor]) -> M:
        if instance is None:
            return cast(M, getattr(owner, self._on_class))
        return cast(M, getattr(instance, self._on_instance))


class AsyncExecutor:
    """Run coroutines from synchronous code (and from other loops) without loop errors.

    Use the process-wide default through the class, as the original API did::

        AsyncExecutor.run_async(fetch, url, timeout=30)
        AsyncExecutor.shutdown()

    or an instance with its own configuration::

        with AsyncExecutor(ExecutorConfig(mode="shared", max_attempts=5)) as executor:
            executor.run(fetch, url, timeout=30)
            # from async code, without blocking the caller's loop:
            await executor.arun(fetch, url)

    ``run_async`` and ``shutdown`` mean what they say wherever they are looked up: on the class
    they act on the default executor; on an instance, ``executor.run_async(...)`` is
    ``executor.run(...)`` and ``executor.shutdown()`` is ``executor.close()``.
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
        self._report = Reporter(self.config, hooks if hooks is not None else ExecutorHooks())
        self._lock = threading.Lock()
        self._loop_thread: LoopThread | None = None
        self._closed = False
        self._retry = RetryPolicy(
            self.config, on_retry=self._report.retry, sleep=sleep, async_sleep=async_sleep
        )
        _lifecycle.track(self)

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
    def _run_on_default(
        cls,
        async_func: Callable[..., Awaitable[T]] | Awaitable[T],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``async_func(*args, **kwargs)`` on the default executor and return its result.

        ``AsyncExecutor.run_async(...)`` uses the default executor; ``executor.run_async(...)``
        on an instance is ``executor.run(...)``.
        """
        return cls.default().run(async_func, *args, timeout=timeout, **kwargs)

    @classmethod
    def _shutdown_default(cls) -> None:
        """Close the default executor: cancel its tasks, stop its loop thread and join it.

        The next ``run_async`` starts a new default executor (re-reading the environment);
        calls in flight during ``shutdown()`` raise :class:`ExecutorClosedError`.
        ``executor.shutdown()`` on an instance is ``executor.close()``.
        """
        with cls._default_lock:
            executor, cls._default = cls._default, None
        if executor is not None:
            executor.close()

    run_async = _DefaultOrInstance[_Run](
        "_run_on_default",
        "run",
        "On the class, run on the default executor; on an instance, the same as run().",
    )
    shutdown = _DefaultOrInstance[Callable[[], None]](
        "_shutdown_default",
        "close",
        "On the class, close the default executor; on an instance, the same as close().",
    )

    # -- instance API ------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def hooks(self) -> ExecutorHooks:
        """The metrics hooks this executor reports to."""
        return self._report.hooks

    @hooks.setter
    def hooks(self, hooks: ExecutorHooks) -> None:
        self._report.hooks = hooks

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
        instead of a function runs once, without retries. A call the executor's ``close()``
        interrupts raises :class:`ExecutorClosedError`.
        """
        # Typing note: ``timeout`` sits between *args and **kwargs, which PEP 612 forbids for a
        # ParamSpec, so the arguments are ``Any``; the result type is still checked.
        self._check_open()
        work = Work(fn, args, kwargs, self.config.max_attempts, self._deadline(timeout))
        caller_loop = running_loop()
        if caller_loop is not None:
            self._check_blocking_call(caller_loop)
        attempt = self._attempt_shared if self.config.mode == "shared" else self._attempt_isolated
        with self._report.observed(work):
            return self._retry.call(attempt, work)

    async def arun(
        self,
        fn: Callable[..., Awaitable[T]] | Awaitable[T],
        /,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - same contract as run()
        **kwargs: Any,
    ) -> T:
        """``await`` this from async code: the call runs on the executor's loop (``shared``) or on
        a fresh loop in a helper thread (``isolated``) and never blocks the caller's loop. Same
        contract as :meth:`run`; cancelling the awaiting task cancels the call."""
        self._check_open()
        work = Work(fn, args, kwargs, self.config.max_attempts, self._deadline(timeout))
        attempt = self._aattempt_shared if self.config.mode == "shared" else self._aattempt_isolated
        with self._report.observed(work):
            return await self._retry.acall(attempt, work)

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
        loop_thread.call_soon(answered.set)
        if not answered.wait(timeout):
            raise ExecutorTimeoutError(
                f"The executor's event loop did not answer within {timeout:.2f} s; "
                "a coroutine is blocking it (look for sync I/O or CPU work inside async code)."
            )
        return time.monotonic() - started

    def close(self) -> None:
        """Cancel pending tasks, stop the loop and join its thread. Calls in flight raise
        :class:`ExecutorClosedError`, and so do later calls. Safe to call twice; refused (and
        nothing changes) from the executor's own loop thread."""
        with self._lock:
            loop_thread = self._loop_thread
            own = loop_thread is not None and loop_thread.pid == os.getpid()
            if own and loop_thread is not None and loop_thread.is_current_thread():
                raise CalledFromExecutorLoopError(
                    "close() was called from the executor's own loop thread; call it from "
                    "another thread (it joins the loop thread)."
                )
            self._closed = True
            self._loop_thread = None
        if own and loop_thread is not None:
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

    def _attempt_shared(self, work: Work[T]) -> T:
        work.attempts += 1
        left = remaining(work.deadline)
        future = self._ensure_loop().submit(work)
        try:
            result: T = future.result(left)
            return result
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, or a result just in time
                late: T = future.result()
                return late
            future.cancel_task()
            concurrent.futures.wait([future], timeout=CANCEL_GRACE)
            raise work.timeout_error() from None
        except BaseException:
            # The coroutine's own exception passes through untouched; KeyboardInterrupt in the
            # main thread must not leave the task running.
            if not future.done():
                future.cancel_task()
            raise

    def _attempt_isolated(self, work: Work[T]) -> T:
        return attempt_isolated(work, self._report.abandoned)

    async def _aattempt_isolated(self, work: Work[T]) -> T:
        return await attempt_isolated_async(work, self._report.abandoned)

    async def _aattempt_shared(self, work: Work[T]) -> T:
        work.attempts += 1
        left = remaining(work.deadline)
        loop_thread = self._ensure_loop()
        if asyncio.get_running_loop() is loop_thread.loop:
            try:
                async with asyncio.timeout(left) as scope:
                    return await work.make()
            except TimeoutError:
                if scope.expired():
                    raise work.timeout_error() from None
                raise
        future = loop_thread.submit(work)
        waiter = await await_call(future, future.cancel_task, left)
        if waiter is None:
            raise work.timeout_error()
        result: T = waiter.result()
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _ensure_loop(self) -> LoopThread:
        # The fast path reads without the lock: a loop thread that starts closing meanwhile
        # refuses the submission itself, under its own lock.
        loop_thread = self._loop_thread
        if loop_thread is not None and loop_thread.alive and loop_thread.pid == os.getpid():
            return loop_thread
        with self._lock:
            self._check_open()  # under the lock: close() may have run since the caller checked
            loop_thread = self._loop_thread
            if loop_thread is None or not loop_thread.alive or loop_thread.pid != os.getpid():
                loop_thread = LoopThread(self.config, self._report.lag)
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
        self._report.blocked_caller()

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

    def _after_fork_in_child(self) -> None:
        # The parent's loop thread does not exist in the child: forget it (a new one starts on
        # the next call), keeping it referenced so its loop is never collected half-alive.
        self._lock = threading.Lock()
        if self._loop_thread is not None:
            _lifecycle.keep_inherited(self._loop_thread)
            self._loop_thread = None


def _reset_default_lock_after_fork() -> None:
    AsyncExecutor._default_lock = threading.Lock()


_lifecycle.on_fork_in_child(_reset_default_lock_after_fork)


def run_async(
    async_func: Callable[..., Awaitable[T]] | Awaitable[T],
    /,
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> T:
    """Module-level shortcut for :meth:`AsyncExecutor.run_async` (the default executor)."""
    return AsyncExecutor.default().run(async_func, *args, timeout=timeout, **kwargs)
