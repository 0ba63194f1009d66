"""google-genai 1.67.0 over httpx, in a separate cached venv: isolated mode breaks, shared does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run installs google-genai 1.67.0 into .cache/
def test_shared_mode_survives_an_sdk_version_that_breaks_isolated_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "sdk_compat.py"),
            "--rounds",
            "1",
            "--output",
            str(tmp_path / "sdk_compat.md"),
        ],
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
        cwd=ROOT,
    )
    assert done.stdout, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    isolated, shared = (
        next(r for r in report["runs"] if r["mode"] == m) for m in ("isolated", "shared")
    )
    assert shared["google_genai"] == "1.67.0"
    assert shared["errors"] == {}
    assert shared["events"] == {}  # no retry, no fallback, no failure
    assert shared["sequential"] == {"llm": 50}
    assert shared["concurrent"] == {"llm": 200}
    assert shared["stub"]["connections"] <= 21  # 1 sequential + at most 20 concurrent
    assert isolated["events"].get("async_retry", 0) > 0 or isolated["errors"]
    assert isolated["stub"]["connections"] > shared["stub"]["connections"]
    assert report["ok"] is True
    assert done.returncode == 0
