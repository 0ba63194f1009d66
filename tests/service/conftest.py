from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pytest

from modelhub.serving import AsyncExecutor
from pharmacy_service.clinical import KnowledgeBase, Screener
from pharmacy_service.stub import StubConfig, StubServer, run_in_thread
from tests.support.gunicorn import RunningGunicorn, run_gunicorn


@pytest.fixture(scope="session")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture(scope="session")
def screener(knowledge: KnowledgeBase) -> Screener:
    return Screener(knowledge)


@pytest.fixture(scope="module")
def server(
    built_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGunicorn]:
    """The real server (gunicorn, one worker) on the built model, for one test module."""
    log = tmp_path_factory.mktemp("server") / "gunicorn.log"
    with run_gunicorn(built_model, log, workers=1) as running:
        yield running


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """The LLM stub on 127.0.0.1 for one test (faults drawn with a fixed seed)."""
    with run_in_thread(StubConfig(seed=3)) as server:
        yield server


def stub_base_url(backend: str, port: int) -> str:
    return f"http://127.0.0.1:{port}" + ("/v1" if backend == "openai" else "")


@pytest.fixture
def load_model(
    built_model: Path, stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """Load the saved model as MLflow does, with an LLM backend pointed at the stub and no key;
    each model's client is closed afterwards on the loop that opened its connections."""
    loaded: list[Any] = []

    def load(backend: str, **env: str) -> Any:
        prefix = backend.upper()
        monkeypatch.setenv("PHARMACY_LLM_BACKEND", backend)
        monkeypatch.setenv(f"{prefix}_BASE_URL", stub_base_url(backend, stub.port or 0))
        monkeypatch.delenv(f"{prefix}_API_KEY", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        model = mlflow.pyfunc.load_model(str(built_model))
        loaded.append(model)
        return model

    yield load
    for model in loaded:
        AsyncExecutor.run_async(model.unwrap_python_model().aclose)
