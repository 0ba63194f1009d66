"""The live Prometheus tests take minutes (the alert windows are real time): they run only
when selected with ``-m monitoring`` (``make monitoring``, which CI runs), not in ``make test``."""

from __future__ import annotations

import pytest

MARKER = "monitoring"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a real Prometheus scraping real servers (`make monitoring`)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in (config.getoption("markexpr") or "").split():
        return
    live = [item for item in items if item.get_closest_marker(MARKER)]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)]
