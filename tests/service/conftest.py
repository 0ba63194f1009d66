from __future__ import annotations

import pytest

from pharmacy_service.model import KnowledgeBase, Screener


@pytest.fixture(scope="session")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


@pytest.fixture(scope="session")
def screener(knowledge: KnowledgeBase) -> Screener:
    return Screener(knowledge)
