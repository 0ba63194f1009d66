"""Deadlines cancel the task in its loop; the caller's contextvars flow in, never back."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from typing import Any

import pytest

from modelhub.serving import ExecutorTimeoutError
from tests.conftest import RecordingHooks

user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="nobody")


def test_timeout_cancels_the_task_and_runs_its_finally(make_executor: Any, mode: str) -> None:
    hooks = RecordingHooks()
    executor = make_executor(mode, hooks=hooks)
    cleaned_up = threading.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()  # only cancellation ends it
        finally:
            cleaned_up.set()

    started = time.monotonic()
    with pytest.raises(ExecutorTimeoutError, match="stuck") as caught:
        executor.run(stuck, timeout=0.2)
    assert time.monotonic() - started >= 0.2  # never before the deadline
    assert isinstance(caught.value, TimeoutError)
    assert cleaned_up.wait(5)
    assert ("timeout", mode) in hooks.events
    assert ("call", mode, "timeout") in hooks.events


def test_the_configured_timeout_is_the_default(make_executor: Any) -> None:
    executor = make_executor(timeout=0.1)
    with pytest.raises(ExecutorTimeoutError):
        executor.run(asyncio.sleep, 60)


def test_a_timeout_raised_by_the_coroutine_is_not_the_executors(
    make_executor: Any, mode: str
) -> None:
    executor = make_executor(mode)

    async def own_timeout() -> None:
        raise TimeoutError("upstream took too long")

    with pytest.raises(TimeoutError, match="upstream") as caught:
        executor.run(own_timeout, timeout=10)
    assert type(caught.value) is TimeoutError


@pytest.mark.parametrize("timeout", [0, -1, "5"])
def test_invalid_timeouts_are_refused(make_executor: Any, timeout: Any) -> None:
    executor = make_executor()
    with pytest.raises(ValueError, match="timeout"):
        executor.run(asyncio.sleep, 0, timeout=timeout)


def test_caller_context_is_visible_and_changes_do_not_leak_back(
    make_executor: Any, mode: str
) -> None:
    executor = make_executor(mode)

    async def read_then_write() -> str:
        seen = user.get()
        user.set("changed inside")
        return seen

    token = user.set("alice")
    try:
        assert executor.run(read_then_write) == "alice"
        assert user.get() == "alice"
        assert executor.run(read_then_write) == "alice"  # nor into the next call
    finally:
        user.reset(token)


def test_concurrent_callers_each_see_their_own_context(make_executor: Any, mode: str) -> None:
    executor = make_executor(mode)
    barrier = threading.Barrier(8)
    seen: dict[str, str] = {}

    async def whoami() -> str:
        await asyncio.sleep(0.01)
        return user.get()

    def caller(name: str) -> None:
        user.set(name)
        barrier.wait(10)
        seen[name] = executor.run(whoami, timeout=10)

    threads = [threading.Thread(target=caller, args=(f"user-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {f"user-{i}": f"user-{i}" for i in range(8)}


def test_arun_does_not_block_the_callers_loop(
    make_executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor("shared")

    async def needs_the_callers_loop(
        caller_loop: asyncio.AbstractEventLoop,
    ) -> tuple[bool, asyncio.AbstractEventLoop]:
        """Finishes only if the caller's loop runs a callback while this call is in flight."""
        answered = threading.Event()
        caller_loop.call_soon_threadsafe(answered.set)
        return await asyncio.to_thread(answered.wait, 10), asyncio.get_running_loop()

    async def endpoint() -> tuple[bool, asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        caller_loop = asyncio.get_running_loop()
        answered, ran_on = await executor.arun(needs_the_callers_loop, caller_loop, timeout=20)
        return answered, ran_on, caller_loop

    answered, ran_on, caller_loop = asyncio.run(endpoint())
    assert answered  # the caller's loop kept running while the call was in flight
    assert ran_on is not caller_loop
    assert not [
        r for r in caplog.records if getattr(r, "event", None) == "async_caller_loop_blocked"
    ]


def test_arun_on_the_executors_own_loop_awaits_directly(make_executor: Any) -> None:
    executor = make_executor("shared")

    async def inner() -> str:
        return user.get()

    async def outer() -> str:
        user.set("outer")
        return await executor.arun(inner)  # type: ignore[no-any-return]

    assert executor.run(outer, timeout=10) == "outer"


def test_arun_timeout_and_cancellation_cancel_the_call(make_executor: Any, mode: str) -> None:
    executor = make_executor(mode)
    started, cancelled = threading.Event(), threading.Event()

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # only cancellation ends it
        finally:
            cancelled.set()

    async def caller() -> None:
        await executor.arun(stuck, timeout=0.1)

    with pytest.raises(ExecutorTimeoutError):
        asyncio.run(caller())
    assert cancelled.wait(5)

    # Cancelling the awaiting task cancels the call in its own loop (in isolated mode, the
    # fresh loop in its helper thread), whose finally blocks run; with and without a deadline.
    for timeout in (None, 30):
        started.clear()
        cancelled.clear()

        async def cancel_the_caller(deadline: float | None) -> None:
            task = asyncio.create_task(executor.arun(stuck, timeout=deadline))
            assert await asyncio.to_thread(started.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_the_caller(timeout))
        assert cancelled.wait(5), f"the call was not cancelled (timeout={timeout})"

    # Cancelled at once, before its loop (in isolated mode, its helper thread's) has started
    # the call: it never starts, or is cancelled; nothing is left running.
    started.clear()
    cancelled.clear()

    async def cancel_at_once() -> None:
        task = asyncio.create_task(executor.arun(stuck))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_at_once())
    for thread in threading.enumerate():
        if thread.name == "modelhub-isolated-call":
            thread.join(5)
            assert not thread.is_alive()
    assert not started.is_set() or cancelled.wait(5)


class LagSeen(RecordingHooks):
    """Records every hook call and says when a lag of at least ``threshold`` was reported."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.seen = threading.Event()

    def on_loop_lag(self, seconds: float) -> None:
        super().on_loop_lag(seconds)
        if seconds >= self.threshold:
            self.seen.set()


class EventLogged(logging.Handler):
    """Collects the SDK's log records with one ``event`` name and says when one arrived."""

    def __init__(self, event: str) -> None:
        super().__init__(logging.DEBUG)
        self.event = event
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == self.event:
            self.records.append(record)
            self.seen.set()


def test_loop_lag_is_measured_reported_and_warned(make_executor: Any) -> None:
    hooks = LagSeen(threshold=0.2)
    executor = make_executor(hooks=hooks, lag_interval=0.05, lag_warning=0.2)
    warnings = EventLogged("loop_lag")
    sdk_logger = logging.getLogger("modelhub.serving")
    sdk_logger.addHandler(warnings)

    async def blocks_the_loop() -> None:
        time.sleep(0.4)  # noqa: ASYNC251 - sync I/O inside async code: the bug the lag metric exists for

    try:
        executor.ping()  # the loop (and its lag watcher) runs before it is blocked
        executor.run(blocks_the_loop)
        assert hooks.seen.wait(5)
        assert warnings.seen.wait(5)
    finally:
        sdk_logger.removeHandler(warnings)
    assert warnings.records[0].levelname == "WARNING"
    assert warnings.records[0].lag_seconds >= 0.2  # type: ignore[attr-defined]


def test_ping_and_loop_lag_see_a_blocked_loop(make_executor: Any) -> None:
    executor = make_executor(lag_interval=0.05)
    blocking, release = threading.Event(), threading.Event()

    async def blocks_the_loop() -> None:
        blocking.set()
        release.wait(10)

    blocker = threading.Thread(target=executor.run, args=(blocks_the_loop,))
    blocker.start()
    try:
        assert blocking.wait(10)
        with pytest.raises(ExecutorTimeoutError, match="blocking"):
            executor.ping(timeout=0.3)
        assert executor.loop_lag >= 0.2
    finally:
        release.set()
        blocker.join(10)
    executor.ping(timeout=5)  # answers again: raises ExecutorTimeoutError otherwise


def test_a_coroutine_that_ignores_cancellation_cannot_hold_the_caller(
    make_executor: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client stuck on a dead loop may swallow cancellation; the caller still gets its
    timeout (isolated mode abandons the helper thread and says so)."""
    executor = make_executor(mode, shutdown_timeout=5)
    release, finished = threading.Event(), threading.Event()

    async def stubborn() -> None:
        try:
            while not release.is_set():
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    continue
        finally:
            finished.set()

    try:
        with pytest.raises(ExecutorTimeoutError):
            executor.run(stubborn, timeout=0.2)
        assert not finished.is_set()  # the caller got its timeout while the coroutine ran on
    finally:
        release.set()
    assert finished.wait(5)
    if mode == "isolated":
        assert [r for r in caplog.records if getattr(r, "event", None) == "async_abandoned"]
