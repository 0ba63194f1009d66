"""Bad input: tests/service/test_bad_input.py against the real server; no 5xx, and what it tried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.reliability.processes import ROOT, Stub
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    """Runs tests/service/test_bad_input.py (real gunicorn) and reports what it tried."""
    report = logs / "bad-input.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/service/test_bad_input.py",
        ],
        cwd=ROOT,
        env={**os.environ, "BAD_INPUT_REPORT": str(report)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tried = json.loads(report.read_text()) if report.exists() else {}
    summary = (
        result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    )
    return Result(
        "bad-input",
        result.returncode == 0,
        {
            "hand-written /invocations cases": tried.get("invocations corpus", 0),
            "generated /v1/screen bodies (hypothesis)": tried.get("screen generated", 0),
            "oversized headers": tried.get("headers", 0),
            "maximum-size junk bodies (1,000 rows x 50 random strings)": tried.get(
                "junk bodies", 0
            ),
            "pytest": summary,
        },
        "Every answer a 4xx with a JSON body (error_code, message, request_id) or a 200 for odd "
        "but valid input; no 5xx; a maximum-size junk body answered 200 inside the deadline and "
        "a one-drug request served after it; the server healthy afterwards with no ERROR line "
        "in its log.",
    )
