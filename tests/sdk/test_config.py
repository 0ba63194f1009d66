from __future__ import annotations

import pytest

from modelhub.serving import AsyncExecutor, ExecutorConfig, ExecutorConfigError


def test_defaults_without_environment() -> None:
    config = ExecutorConfig.from_env({})
    assert (config.mode, config.max_attempts, config.timeout) == ("shared", 3, None)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({"MODELHUB_ASYNC_MODE": "isolated"}, ("isolated", 3, None), id="isolated"),
        pytest.param({"MODELHUB_ASYNC_MODE": " Shared "}, ("shared", 3, None), id="case and space"),
        pytest.param({"MODELHUB_ASYNC_MAX_ATTEMPTS": "5"}, ("shared", 5, None), id="attempts"),
        pytest.param({"MODELHUB_ASYNC_TIMEOUT": "2.5"}, ("shared", 3, 2.5), id="timeout"),
        pytest.param({"MODELHUB_ASYNC_TIMEOUT": "none"}, ("shared", 3, None), id="no timeout"),
        pytest.param({"MODELHUB_ASYNC_MODE": ""}, ("shared", 3, None), id="empty means default"),
    ],
)
def test_environment_values(environ: dict[str, str], expected: tuple[object, ...]) -> None:
    config = ExecutorConfig.from_env(environ)
    assert (config.mode, config.max_attempts, config.timeout) == expected


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        pytest.param("MODELHUB_ASYNC_MODE", "threaded", "shared, isolated", id="unknown mode"),
        pytest.param("MODELHUB_ASYNC_MAX_ATTEMPTS", "0", "at least 1", id="zero attempts"),
        pytest.param("MODELHUB_ASYNC_MAX_ATTEMPTS", "three", "whole number", id="word attempts"),
        pytest.param("MODELHUB_ASYNC_TIMEOUT", "-1", "above 0", id="negative timeout"),
        pytest.param("MODELHUB_ASYNC_TIMEOUT", "soon", "above 0", id="word timeout"),
        pytest.param("MODELHUB_ASYNC_TIMEOUT", "inf", "above 0", id="infinite timeout"),
    ],
)
def test_invalid_environment_names_variable_and_allowed_values(
    variable: str, value: str, allowed: str
) -> None:
    with pytest.raises(ExecutorConfigError) as caught:
        ExecutorConfig.from_env({variable: value})
    message = str(caught.value)
    assert variable in message
    assert repr(value) in message
    assert allowed in message


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"mode": "threads"}, id="mode"),
        pytest.param({"max_attempts": 0}, id="attempts"),
        pytest.param({"max_attempts": True}, id="bool attempts"),
        pytest.param({"timeout": 0}, id="zero timeout"),
        pytest.param({"retry_max_wait": -1}, id="negative wait"),
        pytest.param({"shutdown_timeout": float("nan")}, id="nan shutdown timeout"),
    ],
)
def test_invalid_config_fields_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ExecutorConfigError, match=next(iter(kwargs))):
        ExecutorConfig(**kwargs)  # type: ignore[arg-type]


def test_default_executor_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHUB_ASYNC_MODE", "isolated")
    monkeypatch.setenv("MODELHUB_ASYNC_MAX_ATTEMPTS", "7")
    executor = AsyncExecutor.default()
    assert (executor.mode, executor.config.max_attempts) == ("isolated", 7)


def test_default_executor_refuses_invalid_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async def noop() -> None:
        return None

    monkeypatch.setenv("MODELHUB_ASYNC_MODE", "bogus")
    with pytest.raises(ExecutorConfigError, match="MODELHUB_ASYNC_MODE"):
        AsyncExecutor.run_async(noop)
