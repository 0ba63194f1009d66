"""Deadlines cancel the task in its loop; the caller's contextvars flow in, never back."""

from __future__ import annotations

import asyncio
import contextvars
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
            await asyncio.sleep(60)
        finally:
            cleaned_up.set()

    started = time.monotonic()
    with pytest.raises(ExecutorTimeoutError, match="stuck") as caught:
        executor.run(stuck, timeout=0.2)
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, TimeoutError)
    assert elapsed >= 0.2  # never early
    assert elapsed < 30  # it did not wait for the coroutine
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

    async def on_executor_loop() -> asyncio.AbstractEventLoop:
        await asyncio.sleep(0.2)
        return asyncio.get_running_loop()

    async def endpoint() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        ran_on = await executor.arun(on_executor_loop, timeout=10)
        task.cancel()
        return ran_on, asyncio.get_running_loop(), ticks

    ran_on, caller_loop, ticks = asyncio.run(endpoint())
    assert ran_on is not caller_loop
    assert ticks >= 5  # the caller's loop kept running while the call was in flight
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
    cancelled = threading.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    async def caller() -> None:
        await executor.arun(stuck, timeout=0.1)

    with pytest.raises(ExecutorTimeoutError):
        asyncio.run(caller())
    assert cancelled.wait(5)

    if mode == "shared":  # isolated mode runs the call in a thread, which cannot be cancelled
        cancelled.clear()

        async def cancel_the_caller() -> None:
            task = asyncio.create_task(executor.arun(stuck))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_the_caller())
        assert cancelled.wait(5)


def test_loop_lag_is_measured_reported_and_warned(
    make_executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = RecordingHooks()
    executor = make_executor(hooks=hooks, lag_interval=0.05, lag_warning=0.2)

    async def blocks_the_loop() -> None:
        time.sleep(0.4)  # noqa: ASYNC251 - sync I/O inside async code: the bug the lag metric exists for

    assert executor.ping() < 1.0
    executor.run(blocks_the_loop)
    # The next measurement lands one interval later; wait for it without sleeping blindly.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        e[0] == "lag" and e[1] >= 0.2 for e in hooks.events
    ):
        time.sleep(0.02)
    assert any(e[0] == "lag" and e[1] >= 0.2 for e in hooks.events)
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "loop_lag"]
    assert warnings
    assert warnings[0].levelname == "WARNING"


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
    assert executor.ping(timeout=5) < 5


def test_a_coroutine_that_ignores_cancellation_cannot_hold_the_caller(
    make_executor: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client stuck on a dead loop may swallow cancellation; the caller still gets its
    timeout (isolated mode abandons the helper thread and says so)."""
    executor = make_executor(mode, shutdown_timeout=5)
    release = threading.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    started = time.monotonic()
    try:
        with pytest.raises(ExecutorTimeoutError):
            executor.run(stubborn, timeout=0.2)
        assert time.monotonic() - started < 5
    finally:
        release.set()
    if mode == "isolated":
        assert [r for r in caplog.records if getattr(r, "event", None) == "async_abandoned"]
