"""The SDK-compatibility matrix, short: the pinned openai, anthropic and google-genai (and plain
aiohttp and httpx clients) in this venv, ONE module-level client each, against the stub.
Shared mode must never fail; the seed's fresh loop per call breaks openai, anthropic and the
plain clients. Older SDK releases run in `make bench` only (their venvs need the network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEQUENTIAL, THREADS, CALLS = 10, 5, 4
WIRE = {
    "openai": "openai",
    "anthropic": "anthropic",
    "genai": "gemini",
    "aiohttp": "openai",
    "httpx": "openai",
}
DISTRIBUTION = {"genai": "google-genai"}


def pinned(distribution: str) -> str:
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == distribution:
            return version.strip()
    raise AssertionError(f"{distribution} is not pinned in constraints.txt")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("sdk-compat") / "sdk_compat.md"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "sdk_compat.py"),
            "--pinned-only",
            f"--sequential={SEQUENTIAL}",
            f"--threads={THREADS}",
            f"--calls={CALLS}",
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
        timeout=250,
        check=False,
        cwd=ROOT,
    )
    assert done.stdout, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["returncode"] = done.returncode
    report["markdown"] = output.read_text()
    return report


def cell(matrix: dict[str, Any], client: str, mode: str, attempts: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = matrix["runs"]
    (run,) = (
        r for r in runs if (r["client"], r["mode"], r["attempts"]) == (client, mode, attempts)
    )
    return run


def outcomes(run: dict[str, Any], outcome: str) -> int:
    return int(run["sequential"].get(outcome, 0) + run["concurrent"].get(outcome, 0))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", sorted(WIRE))
def test_shared_mode_never_fails_with_one_module_level_client(
    matrix: dict[str, Any], client: str
) -> None:
    run = cell(matrix, client, "shared", 3)
    assert run["version"] == pinned(DISTRIBUTION.get(client, client))
    assert run["sequential"] == {"ok": SEQUENTIAL}
    assert run["concurrent"] == {"ok": THREADS * CALLS}
    assert run["attempt_errors"] == {}
    assert run["retries"] == {}
    assert run["caller_errors"] == {}
    assert run["stub"]["apis"] == {WIRE[client]: SEQUENTIAL + THREADS * CALLS}
    assert run["stub"]["connections"] <= THREADS + 1  # keep-alive: at most one per caller
    assert matrix["ok"] is True
    assert matrix["returncode"] == 0
    assert "| shared |" in matrix["markdown"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("client", "loop_error"),
    [
        ("openai", "Event loop is closed"),
        ("anthropic", "APIConnectionError <- Event loop is closed"),  # wrapped by the SDK
        ("aiohttp", "Event loop is closed"),
        ("httpx", "Event loop is closed"),
    ],
)
def test_a_fresh_loop_per_call_breaks_the_pinned_clients(
    matrix: dict[str, Any], client: str, loop_error: str
) -> None:
    """The seed (asyncio.run per call, no retry): a warm call finds the client bound to the
    previous, closed loop; about every other sequential call fails. Retries recover some (the
    executor follows anthropic's `raise APIConnectionError from RuntimeError`), each success
    on a new connection (aiohttp recovers none)."""
    seed = cell(matrix, client, "isolated", 1)
    assert seed["sequential"].get("failed", 0) >= SEQUENTIAL // 2 - 1
    assert seed["attempt_errors"].get(loop_error, 0) >= SEQUENTIAL // 2 - 1
    retried = cell(matrix, client, "isolated", 3)
    assert retried["retries"].get("loop_closed", 0) >= SEQUENTIAL // 2 - 1
    assert retried["stub"]["connections"] >= outcomes(retried, "ok")  # no call reused one


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_google_genai_pinned_survives_a_fresh_loop_but_reconnects_every_call(
    matrix: dict[str, Any],
) -> None:
    """google-genai 3.6.1 no longer fails with asyncio.run per call: it pays a new connection
    per call instead (shared mode reuses them)."""
    seed, shared = cell(matrix, "genai", "isolated", 1), cell(matrix, "genai", "shared", 3)
    assert outcomes(seed, "ok") == SEQUENTIAL + THREADS * CALLS
    assert seed["stub"]["connections"] >= SEQUENTIAL
    assert shared["stub"]["connections"] <= THREADS + 1
