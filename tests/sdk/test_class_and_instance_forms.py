"""run_async() and shutdown(): on the class they mean the default executor, on an instance
they mean that instance."""

from __future__ import annotations

import threading
from collections.abc import Callable

from modelhub.serving import AsyncExecutor

DEFAULT_THREAD = "modelhub-async-loop"
OWN_THREAD = "own-loop"


async def thread_name() -> str:
    return threading.current_thread().name


def test_run_async_on_the_class_runs_on_the_default_executor() -> None:
    assert AsyncExecutor.run_async(thread_name) == DEFAULT_THREAD


def test_run_async_on_an_instance_runs_on_that_instance(
    make_executor: Callable[..., AsyncExecutor],
) -> None:
    executor = make_executor("shared", thread_name=OWN_THREAD)
    assert executor.run_async(thread_name, timeout=10) == OWN_THREAD
    assert [t for t in threading.enumerate() if t.name == DEFAULT_THREAD] == []


def test_shutdown_on_the_class_closes_the_default_executor() -> None:
    default = AsyncExecutor.default()
    AsyncExecutor.shutdown()
    assert default.closed
    assert AsyncExecutor.default() is not default


def test_shutdown_on_an_instance_closes_that_instance(
    make_executor: Callable[..., AsyncExecutor],
) -> None:
    executor = make_executor("shared", thread_name=OWN_THREAD)
    assert executor.run(thread_name) == OWN_THREAD
    default = AsyncExecutor.default()
    assert default.run(thread_name) == DEFAULT_THREAD
    executor.shutdown()
    assert executor.closed
    assert not default.closed
    assert AsyncExecutor.default() is default
    assert [t.name for t in threading.enumerate() if t.name in (OWN_THREAD, DEFAULT_THREAD)] == [
        DEFAULT_THREAD
    ]
