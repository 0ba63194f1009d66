from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhub.serving import AsyncExecutor, ExecutorConfig, ExecutorHooks

# MLflow's usage telemetry would send events to MLflow's servers from this process and the
# servers it starts: the tests' traffic stays on 127.0.0.1.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class SleepRecorder:
    """Injected as the executor's back-off sleep: records delays, never sleeps."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.delays.append(seconds)


class RecordingHooks(ExecutorHooks):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_call(self, mode: str, outcome: str, duration: float) -> None:
        self.events.append(("call", mode, outcome))

    def on_retry(self, mode: str, reason: str) -> None:
        self.events.append(("retry", mode, reason))

    def on_recovered(self, mode: str) -> None:
        self.events.append(("recovered", mode))

    def on_failure(self, mode: str, reason: str) -> None:
        self.events.append(("failure", mode, reason))

    def on_timeout(self, mode: str) -> None:
        self.events.append(("timeout", mode))

    def on_loop_lag(self, seconds: float) -> None:
        self.events.append(("lag", seconds))


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_executor(sleeps: SleepRecorder) -> Iterator[Callable[..., AsyncExecutor]]:
    """Build executors whose back-off never really sleeps; all are closed after the test."""
    created: list[AsyncExecutor] = []

    def make(
        mode: str = "shared", *, hooks: ExecutorHooks | None = None, **config: Any
    ) -> AsyncExecutor:
        executor = AsyncExecutor(
            ExecutorConfig(mode=mode, **config),  # type: ignore[arg-type]
            hooks=hooks,
            sleep=sleeps,
            async_sleep=sleeps.asleep,
        )
        created.append(executor)
        return executor

    yield make
    for executor in created:
        executor.close()


@pytest.fixture(autouse=True)
def _fresh_default_executor() -> Iterator[None]:
    """Each test starts and ends without a default executor running."""
    AsyncExecutor.shutdown()
    yield
    AsyncExecutor.shutdown()


@pytest.fixture(params=["shared", "isolated"], ids=["shared mode", "isolated mode"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run the test once per executor mode."""
    mode: str = request.param
    return mode


@pytest.fixture(scope="session")
def built_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pharmacy model saved once per run with the real pharmacy-build-model code."""
    from pharmacy_service.model.build import build

    output = tmp_path_factory.mktemp("model") / "pharmacy-model"
    build(output)
    return output
