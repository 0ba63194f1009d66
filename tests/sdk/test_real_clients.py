"""The measured failure, reproduced with real loop-affine clients against real local servers.

A module-level client cached on first use (the production shape of an LLM SDK) is bound to the
loop it first ran on. ``isolated`` mode (a fresh loop per call) breaks it; ``shared`` mode
(one loop per process) never does, and reuses keep-alive connections.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelhub.serving import AsyncExecutor
from tests.support.http_servers import echo_app, serve_app
from tests.support.loop_affine import CALLS_PER_THREAD, THREADS, ModuleLevelSession, hammer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_shared_mode_aiohttp_session_has_no_failures_and_reuses_connections(
    make_executor: Callable[..., AsyncExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor("shared")
    with serve_app(echo_app(delay=0.01)) as server:
        client = ModuleLevelSession(server.base_url)
        try:
            results, errors = hammer(lambda value: executor.run(client.echo, value, timeout=30))
        finally:
            executor.run(client.close)
        assert errors == []
        assert len(results) == THREADS * CALLS_PER_THREAD
        assert server.stats.requests == THREADS * CALLS_PER_THREAD
        assert server.stats.connections <= THREADS
    assert not [r for r in caplog.records if getattr(r, "event", None) == "async_retry"]


@pytest.mark.slow
def test_isolated_mode_reproduces_event_loop_is_closed() -> None:
    """Runs in a subprocess: the broken session leaks sockets, which is the bug itself."""
    with serve_app(echo_app(delay=0.01)) as server:
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.isolated_mode_failure", server.base_url],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=ROOT,
        )
    report = json.loads(done.stdout)
    assert report["ok"] + len(report["errors"]) == THREADS * CALLS_PER_THREAD
    assert any("RuntimeError: Event loop is closed" in e for e in report["errors"]), report[
        "errors"
    ][:3]
    retries = [e for e in report["events"] if e["event"] == "async_retry"]
    assert retries
    assert {(e["level"], e["mode"]) for e in retries} == {("WARNING", "isolated")}
    assert any(e["event"] == "async_failed" and e["level"] == "ERROR" for e in report["events"])
