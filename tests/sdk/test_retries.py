"""Retries: only loop-lifecycle errors, tenacity back-off, one log line per retry."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from modelhub.serving import (
    AsyncExecutor,
    ExecutorConfig,
    ExecutorTimeoutError,
    is_loop_error,
    request_id_var,
)
from tests.conftest import RecordingHooks, SleepRecorder

LOOP_ERRORS = [
    pytest.param(RuntimeError("Event loop is closed"), "loop_closed", id="closed"),
    pytest.param(
        RuntimeError("Timeout context manager should be used inside a task"),
        "timer_outside_task",
        id="aiohttp timer outside a task",
    ),
    pytest.param(
        RuntimeError("Executor shutdown has been called"),
        "executor_shut_down",
        id="default executor shut down",
    ),
    pytest.param(
        RuntimeError("Cannot run the event loop while another loop is running"),
        "another_loop_running",
        id="another running",
    ),
    pytest.param(
        RuntimeError("This event loop is already running"),
        "loop_already_running",
        id="already running",
    ),
    pytest.param(
        RuntimeError(
            "Task <Task pending> got Future <Future pending> attached to a different loop"
        ),
        "different_loop",
        id="future of a different loop",
    ),
    pytest.param(
        RuntimeError("<asyncio.locks.Lock object> is bound to a different event loop"),
        "different_loop",
        id="lock bound to another loop",
    ),
]


class Flaky:
    """Fails with ``error`` on the first ``failures`` calls, then returns ``"done"``."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0
        self.raised: list[BaseException] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            exc = type(self.error)(*self.error.args)
            self.raised.append(exc)
            raise exc
        return "done"


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "async_retry"]


def failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "async_failed"]


@pytest.mark.parametrize(("error", "reason"), LOOP_ERRORS)
def test_loop_errors_are_recognised(error: RuntimeError, reason: str) -> None:
    assert is_loop_error(error)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RuntimeError("something else broke"), id="other RuntimeError"),
        pytest.param(ValueError("Event loop is closed"), id="right message, wrong type"),
        pytest.param(TimeoutError(), id="timeout"),
    ],
)
def test_other_errors_are_not_loop_errors(error: BaseException) -> None:
    assert not is_loop_error(error)


def test_a_wrapped_loop_error_is_recognised() -> None:
    outer = ConnectionError("request failed")
    outer.__cause__ = RuntimeError("Event loop is closed")
    assert is_loop_error(outer)


@pytest.mark.parametrize(("error", "reason"), LOOP_ERRORS)
def test_one_loop_error_is_retried_and_logged_once(
    make_executor: Any,
    mode: str,
    error: RuntimeError,
    reason: str,
    caplog: pytest.LogCaptureFixture,
    sleeps: SleepRecorder,
) -> None:
    hooks = RecordingHooks()
    executor = make_executor(mode, hooks=hooks)
    flaky = Flaky(error, failures=1)
    token = request_id_var.set("req-42")
    try:
        assert executor.run(flaky) == "done"
    finally:
        request_id_var.reset(token)
    assert flaky.calls == 2
    (record,) = retry_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.name == "modelhub.serving"
    assert record.function.endswith("Flaky")  # type: ignore[attr-defined]
    assert (record.attempt, record.max_attempts, record.mode) == (1, 3, mode)  # type: ignore[attr-defined]
    assert record.request_id == "req-42"  # type: ignore[attr-defined]
    assert str(error) in record.error  # type: ignore[attr-defined]
    assert record.reason == reason  # type: ignore[attr-defined]
    assert "async_retry" in record.getMessage()
    assert "request_id=req-42" in record.getMessage()
    assert len(sleeps.delays) == 1
    assert ("retry", mode, reason) in hooks.events
    assert ("recovered", mode) in hooks.events
    assert ("call", mode, "ok") in hooks.events
    assert failure_records(caplog) == []


def test_backoff_grows_exponentially_with_jitter(make_executor: Any, sleeps: SleepRecorder) -> None:
    executor = make_executor(
        max_attempts=5, retry_initial_wait=0.1, retry_max_wait=10.0, retry_jitter=0.05
    )
    assert executor.run(Flaky(RuntimeError("Event loop is closed"), failures=4)) == "done"
    assert len(sleeps.delays) == 4
    for n, delay in enumerate(sleeps.delays):
        base = 0.1 * 2**n
        assert base <= delay <= base + 0.05


def test_backoff_with_its_jitter_never_exceeds_the_max_wait(
    make_executor: Any, sleeps: SleepRecorder
) -> None:
    executor = make_executor(
        max_attempts=6, retry_initial_wait=0.5, retry_max_wait=1.0, retry_jitter=0.5
    )
    assert executor.run(Flaky(RuntimeError("Event loop is closed"), failures=5)) == "done"
    assert len(sleeps.delays) == 5
    assert 0.5 <= sleeps.delays[0] <= 1.0
    assert all(delay <= 1.0 for delay in sleeps.delays)
    assert sleeps.delays[-1] == 1.0  # 0.5 * 2**4 capped


def test_every_attempt_failing_logs_one_error_and_reraises_the_original(
    make_executor: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = RecordingHooks()
    executor = make_executor(mode, hooks=hooks)
    flaky = Flaky(RuntimeError("Event loop is closed"), failures=99)
    with pytest.raises(RuntimeError, match="Event loop is closed") as caught:
        executor.run(flaky)
    assert flaky.calls == 3
    assert caught.value is flaky.raised[-1]
    assert [r.attempt for r in retry_records(caplog)] == [1, 2]  # type: ignore[attr-defined]
    (failure,) = failure_records(caplog)
    assert failure.levelno == logging.ERROR
    assert failure.exc_info is not None
    assert failure.exc_info[1] is caught.value
    assert ("failure", mode, "loop_closed") in hooks.events
    assert ("call", mode, "error") in hooks.events


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ValueError("bad input"), id="ValueError"),
        pytest.param(RuntimeError("model bug"), id="unrelated RuntimeError"),
        pytest.param(KeyError("missing"), id="KeyError"),
    ],
)
def test_other_exceptions_propagate_unchanged_on_the_first_attempt(
    make_executor: Any, mode: str, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor(mode)
    flaky = Flaky(error, failures=99)
    with pytest.raises(type(error)) as caught:
        executor.run(flaky)
    assert caught.value is flaky.raised[0]
    assert flaky.calls == 1
    assert retry_records(caplog) == []
    assert failure_records(caplog) == []


def test_a_coroutine_object_is_not_retried(
    make_executor: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor(mode)
    flaky = Flaky(RuntimeError("Event loop is closed"), failures=1)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        executor.run(flaky())
    assert flaky.calls == 1
    assert retry_records(caplog) == []
    (failure,) = failure_records(caplog)
    assert failure.max_attempts == 1  # type: ignore[attr-defined]


def test_max_attempts_one_means_no_retry(
    make_executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor(max_attempts=1)
    flaky = Flaky(RuntimeError("Event loop is closed"), failures=1)
    with pytest.raises(RuntimeError):
        executor.run(flaky)
    assert flaky.calls == 1
    assert len(failure_records(caplog)) == 1


class RealSleepRecorder(SleepRecorder):
    """Records each back-off delay, then really sleeps it, so the deadline really approaches."""

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        time.sleep(seconds)


def test_the_deadline_spans_all_attempts_and_back_off_never_sleeps_past_it(mode: str) -> None:
    """100 allowed attempts end at the one deadline, with ExecutorTimeoutError. The back-offs
    really sleep, one after another within the call, so if none reached past the deadline they
    add up to at most the timeout; uncapped they would add up to more (0.5 + 1.0 for a timeout
    of 1.0), however fast or slow the machine. The error is the executor's, not the
    coroutine's last loop error."""
    timeout = 1.0
    sleeps = RealSleepRecorder()
    config = ExecutorConfig(
        mode=mode,  # type: ignore[arg-type]
        max_attempts=100,
        retry_initial_wait=0.5,
        retry_max_wait=2.0,
        retry_jitter=0,
    )
    flaky = Flaky(RuntimeError("Event loop is closed"), failures=1000)
    with AsyncExecutor(config, sleep=sleeps) as executor, pytest.raises(ExecutorTimeoutError):
        executor.run(flaky, timeout=timeout)
    assert flaky.calls < config.max_attempts  # the deadline ended it, not the attempts
    assert sleeps.delays  # it did back off
    assert sum(sleeps.delays) <= timeout + 1e-6  # (the clock's float rounding)


def test_a_failing_hook_does_not_break_the_call(
    make_executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenHooks(RecordingHooks):
        def on_call(self, mode: str, outcome: str, duration: float) -> None:
            raise RuntimeError("metrics backend down")

    executor = make_executor(hooks=BrokenHooks())
    assert executor.run(Flaky(RuntimeError("Event loop is closed"), failures=1)) == "done"
    assert any("hook" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_arun_retries_with_the_async_sleep(
    make_executor: Any, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor()
    flaky = Flaky(RuntimeError("Event loop is closed"), failures=2)
    assert asyncio.run(executor.arun(flaky)) == "done"
    assert len(sleeps.delays) == 2
    assert len(retry_records(caplog)) == 2
