"""The server's own OpenAPI document, fuzzed by Schemathesis against the real server (gunicorn,
one worker): every operation, every check (server errors, status codes, content types, response
schemas, schema-valid requests accepted, schema-violating ones rejected, auth, ...), hundreds of
cases. Schemathesis runs in a venv of its own (scripts/extra_venv.sh schemathesis); its settings
are tests/service/specs/schemathesis.toml, each with its reason. The seed is fixed so that a run
can be repeated; SCHEMATHESIS_SEED=random explores new cases."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from bench.harness import extra_venv

from tests.support.gunicorn import RunningGunicorn

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("specs") / "schemathesis.toml"
SEED = "20261205"


def test_schemathesis_finds_nothing_in_hundreds_of_cases(
    server: RunningGunicorn, tmp_path: Path
) -> None:
    schemathesis = extra_venv("schemathesis").with_name("schemathesis")
    seed = os.environ.get("SCHEMATHESIS_SEED", SEED)
    command = [str(schemathesis), "--no-color", "--config-file", str(CONFIG), "run"]
    command += [f"{server.base_url}/openapi.json", "--checks", "all", "--workers", "1"]
    command += ["--max-examples", "100", "--request-timeout", "30"]
    if seed != "random":
        command += ["--seed", seed]
    ran = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    report = ran.stdout + ran.stderr
    assert ran.returncode == 0, report[-8000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts, report[-3000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed
    assert generated >= 500, report[-3000:]
    assert "16/16" in report.replace(" ", ""), "every operation was selected"
