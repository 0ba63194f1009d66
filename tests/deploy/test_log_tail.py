"""The documented one-liner that tails the retry warnings from Kubernetes (k8s/README.md), run
on real JSON log lines from the real server, prefixed as ``kubectl logs --prefix`` prefixes
them. (The compose one-liner runs against real compose logs in the container smoke test.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.deploy.kustomize import K8S
from tests.support.gunicorn import run_gunicorn

pytestmark = pytest.mark.slow

POD = "pharmacy-model-6b7f8d9c5-q7m2n"


def documented_jq() -> str:
    """The jq half of the README's ``kubectl logs ... | jq ...`` line."""
    (line,) = [
        line
        for line in (K8S / "README.md").read_text().splitlines()
        if line.startswith("kubectl logs") and "| jq " in line
    ]
    return line.split(" | ", 1)[1]


def test_the_kubectl_tail_shows_each_retry_with_its_pod_and_request(
    built_model: Path, tmp_path: Path
) -> None:
    assert shutil.which("jq"), "jq is needed (apt-get install -y jq), as .ci/run installs it"
    env = {"PHARMACY_FAULT_LOOP_ERRORS": "2"}  # the first request retries twice, then succeeds
    with run_gunicorn(built_model, tmp_path / "server.log", workers=1, env=env) as server:
        answer = httpx.post(
            f"{server.base_url}/v1/screen",
            json={"patients": [{"patient_id": "p1", "medications": ["Coumadin", "Advil"]}]},
            headers={"X-Request-ID": "tail-demo-1"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        (pid,) = server.worker_pids()
        lines = server.log_lines()
    assert sum('"event": "async_retry"' in line for line in lines) == 2
    # what kubectl logs --prefix prints: every line (JSON or not) after its pod and container
    logs = "".join(f"[pod/{POD}/server] {line}\n" for line in lines)
    result = subprocess.run(
        ["bash", "-c", documented_jq()],
        input=logs,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = [row.split("\t") for row in result.stdout.splitlines()]
    assert len(rows) == 2, result.stdout
    for attempt, (time, pod, process, function, attempts, request_id) in enumerate(rows, 1):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", time), time
        assert (pod, process, request_id) == (POD, str(pid), "tail-demo-1")
        assert function.endswith("PharmacyModel.apredict"), function
        assert attempts == f"attempt {attempt}/3"
