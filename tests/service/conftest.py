from __future__ import annotations

from pathlib import Path

import pytest

from pharmacy_service.model import KnowledgeBase, Screener


@pytest.fixture(scope="session")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture(scope="session")
def screener(knowledge: KnowledgeBase) -> Screener:
    return Screener(knowledge)


@pytest.fixture(scope="session")
def built_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pharmacy model saved once per run with the real pharmacy-build-model code."""
    from pharmacy_service.model.build import build

    output = tmp_path_factory.mktemp("model") / "pharmacy-model"
    build(output)
    return output
