"""Every context the executor is called from, in both modes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from modelhub.serving import (
    AsyncExecutor,
    CalledFromExecutorLoopError,
    ExecutorClosedError,
    run_async,
)

LOOP_THREAD = "modelhub-async-loop"


async def double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


def run_in_thread(target: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the call hung"
    if "error" in box:
        raise box["error"]
    return box["result"]


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD]


def test_worker_thread_without_loop(make_executor: Any, mode: str) -> None:
    executor = make_executor(mode)
    assert run_in_thread(lambda: executor.run(double, 21)) == 42


def test_main_thread_without_loop(make_executor: Any, mode: str) -> None:
    assert threading.current_thread() is threading.main_thread()
    executor = make_executor(mode)
    assert executor.run(double, 4) == 8


def test_thread_whose_current_loop_is_closed(make_executor: Any, mode: str) -> None:
    executor = make_executor(mode)

    def call() -> int:
        closed = asyncio.new_event_loop()
        closed.close()
        asyncio.set_event_loop(closed)
        try:
            return executor.run(double, 5)  # type: ignore[no-any-return]
        finally:
            asyncio.set_event_loop(None)

    assert run_in_thread(call) == 10


def test_thread_running_another_loop_works_and_warns_once_per_call_site(
    make_executor: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor(mode)

    async def endpoint() -> list[int]:
        results = [executor.run(double, n) for n in range(3)]  # one call site, three calls
        results.append(executor.run(double, 10))  # a second call site
        return results

    assert asyncio.run(endpoint()) == [0, 2, 4, 20]
    warnings = [
        r for r in caplog.records if getattr(r, "event", None) == "async_caller_loop_blocked"
    ]
    assert len(warnings) == 2
    assert {r.levelname for r in warnings} == {"WARNING"}
    assert all(r.call_site.startswith(__file__) for r in warnings)  # type: ignore[attr-defined]
    assert "await executor.arun" in warnings[0].getMessage()


def test_call_from_the_executors_own_loop_raises_at_once(make_executor: Any) -> None:
    executor = make_executor("shared")

    async def reentrant() -> int:
        return executor.run(double, 1)  # type: ignore[no-any-return]

    with pytest.raises(CalledFromExecutorLoopError, match=r"await executor\.arun"):
        executor.run(reentrant, timeout=10)


def test_call_from_own_loop_does_not_deadlock_in_a_fresh_process() -> None:
    """The deadlock regression runs in a subprocess with a hard time limit."""
    script = textwrap.dedent(
        """
        from modelhub.serving import AsyncExecutor, CalledFromExecutorLoopError
        async def inner():
            return 1
        async def outer():
            try:
                AsyncExecutor.run_async(inner)
            except CalledFromExecutorLoopError:
                return "refused"
            return "ran"
        print(AsyncExecutor.run_async(outer))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "refused"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() exists on POSIX only")
def test_after_fork_the_child_starts_its_own_loop(make_executor: Any) -> None:
    executor = make_executor("shared")
    assert executor.run(double, 1) == 2  # the parent's loop thread is running
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            ok = executor.run(double, 21, timeout=10) == 42
            ok = ok and len(loop_threads()) == 1 and executor.run(double, 1) == 2
            os.write(write_end, b"ok" if ok else b"wrong")
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write_end, repr(exc).encode()[:200])
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_end, 256).decode()
    os.close(read_end)
    assert report == "ok"
    assert os.waitstatus_to_exitcode(status) == 0
    assert executor.run(double, 2) == 4  # the parent is untouched


def test_shutdown_then_the_default_executor_starts_a_fresh_loop() -> None:
    assert run_async(double, 1) == 2
    (first,) = loop_threads()
    AsyncExecutor.shutdown()
    assert not first.is_alive()
    assert loop_threads() == []
    assert AsyncExecutor.run_async(double, 2) == 4
    (second,) = loop_threads()
    assert second is not first


def test_a_closed_instance_refuses_calls(make_executor: Any, mode: str) -> None:
    executor = make_executor(mode)
    assert executor.run(double, 1) == 2
    executor.close()
    executor.close()  # twice is fine
    with pytest.raises(ExecutorClosedError, match="create a new one"):
        executor.run(double, 1)
    assert loop_threads() == []


def test_context_manager_closes(make_executor: Any) -> None:
    with make_executor("shared") as executor:
        assert executor.run(double, 3) == 6
        assert len(loop_threads()) == 1
    assert executor.closed
    assert loop_threads() == []


def test_shared_mode_runs_every_call_on_one_loop(make_executor: Any) -> None:
    executor = make_executor("shared")

    async def current_loop() -> int:
        return id(asyncio.get_running_loop())

    loops = {run_in_thread(lambda: executor.run(current_loop)) for _ in range(5)}
    assert len(loops) == 1


def test_isolated_mode_runs_every_call_on_a_fresh_loop(make_executor: Any) -> None:
    executor = make_executor("isolated")
    seen: list[asyncio.AbstractEventLoop] = []

    async def current_loop() -> None:
        seen.append(asyncio.get_running_loop())

    for _ in range(3):
        executor.run(current_loop)
    assert len({id(loop) for loop in seen}) == 3
    assert all(loop.is_closed() for loop in seen)
    assert loop_threads() == []


def test_a_coroutine_object_runs_once(make_executor: Any, mode: str) -> None:
    executor = make_executor(mode)
    assert executor.run(double(8)) == 16


def test_a_coroutine_object_with_arguments_is_refused(make_executor: Any) -> None:
    executor = make_executor("shared")
    coroutine = double(1)
    try:
        with pytest.raises(TypeError, match="pass the async function"):
            executor.run(coroutine, 2)
    finally:
        coroutine.close()


def test_a_sync_function_is_refused_with_a_clear_error(make_executor: Any, mode: str) -> None:
    executor = make_executor(mode)
    with pytest.raises(TypeError, match="not an awaitable"):
        executor.run(lambda: 42)
