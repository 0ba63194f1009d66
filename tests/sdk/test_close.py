"""close() while calls are in flight or arriving: every call ends, with its result or
ExecutorClosedError; never a CancelledError nobody asked for, never a wait without end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from modelhub.serving import (
    AsyncExecutor,
    CalledFromExecutorLoopError,
    ExecutorClosedError,
)

LOOP_THREAD = "modelhub-async-loop"


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD]


async def double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


class Outcome:
    """Runs ``call`` in a daemon thread (a hung call must not hold the test process) and keeps
    what it returned or raised."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(call,), daemon=True)
        self._thread.start()

    def _main(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            self.error = exc

    def ended(self, timeout: float = 10) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def test_a_call_in_flight_during_close_raises_executor_closed_error(
    make_executor: Callable[..., AsyncExecutor],
) -> None:
    executor = make_executor("shared")
    started = threading.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()

    call = Outcome(lambda: executor.run(stuck))  # no deadline: only close() can end it
    assert started.wait(10)
    executor.close()
    assert call.ended(), "the call never ended"
    assert isinstance(call.error, ExecutorClosedError), repr(call.error)
    assert loop_threads() == []


def test_arun_in_flight_during_close_raises_executor_closed_error(
    make_executor: Callable[..., AsyncExecutor],
) -> None:
    """Not an asyncio.CancelledError in a task nobody cancelled: a server's ``except Exception``
    must see the error."""
    executor = make_executor("shared")
    started = threading.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()

    async def endpoint() -> BaseException | None:
        call = asyncio.create_task(executor.arun(stuck))
        assert await asyncio.to_thread(started.wait, 10)
        closer = Outcome(executor.close)
        try:
            await call
        except BaseException as exc:  # noqa: BLE001 - inspected below
            return exc
        finally:
            assert await asyncio.to_thread(closer.ended)
        return None

    error = asyncio.run(endpoint())
    assert isinstance(error, ExecutorClosedError), repr(error)


def test_a_call_arriving_while_the_loop_shuts_down_is_refused_not_dropped(
    make_executor: Callable[..., AsyncExecutor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: a caller took the running loop thread before close() began and submits after
    the loop stopped, before it closed. It must get ExecutorClosedError, not wait forever on a
    task destroyed while pending. The caller is held at the submission until the loop is in its
    shutdown, so the race is hit every time."""
    executor = make_executor("shared", shutdown_timeout=10)
    first_started, in_shutdown, late_call_done = (threading.Event() for _ in range(3))

    async def slow_to_cancel() -> None:
        first_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            in_shutdown.set()  # the loop has stopped; close() is cancelling its tasks
            await asyncio.to_thread(late_call_done.wait, 10)
            raise

    first = Outcome(lambda: executor.run(slow_to_cancel))
    assert first_started.wait(10)
    loop_thread = executor._loop_thread  # white-box: hold the late caller at the submission
    assert loop_thread is not None
    submit = loop_thread.submit
    reached_submit = threading.Event()

    def submit_during_shutdown(work: Any) -> Any:
        reached_submit.set()
        try:
            assert in_shutdown.wait(10)
            return submit(work)
        finally:
            late_call_done.set()

    monkeypatch.setattr(loop_thread, "submit", submit_during_shutdown)
    late = Outcome(lambda: executor.run(asyncio.sleep, 60))  # no deadline
    assert reached_submit.wait(10)
    executor.close()
    assert late.ended(), "the call submitted during shutdown waits forever"
    assert isinstance(late.error, ExecutorClosedError), repr(late.error)
    assert first.ended()
    assert isinstance(first.error, ExecutorClosedError), repr(first.error)
    assert loop_threads() == []


def test_close_from_the_loop_thread_raises_and_leaves_the_executor_working(
    make_executor: Callable[..., AsyncExecutor],
) -> None:
    executor = make_executor("shared")

    async def close_from_inside() -> None:
        executor.close()

    with pytest.raises(CalledFromExecutorLoopError, match="from another thread"):
        executor.run(close_from_inside, timeout=10)
    assert not executor.closed
    assert executor.run(double, 2) == 4
    (thread,) = loop_threads()
    executor.close()
    assert not thread.is_alive()
    with pytest.raises(ExecutorClosedError):
        executor.run(double, 1)


def test_calls_after_close_are_refused(
    make_executor: Callable[..., AsyncExecutor], mode: str
) -> None:
    executor = make_executor(mode)
    executor.close()
    with pytest.raises(ExecutorClosedError):
        executor.run(double, 1)
    with pytest.raises(ExecutorClosedError):
        asyncio.run(executor.arun(double, 1))
    with pytest.raises(ExecutorClosedError):
        executor.ping()
