"""The Open Inference Protocol spoken with the clients users script against: ``tritonclient``
(binary tensors, its default, and JSON) and the ``kserve`` SDK (binary), against the real server
(gunicorn, one worker). They run in a venv of their own (scripts/extra_venv.sh kserve-client:
their pins conflict with the project's) through tests/support/v2_clients.py; what they decode
must be exactly what ``/invocations`` answers for the same rows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from bench.harness import extra_venv

from tests.support.gunicorn import RunningGunicorn

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = "pharmacy-interaction-screener"
ROWS = [
    {"patient_id": "p1", "medications": ["Coumadin 5 mg", "Advil 400 mg"]},
    {"patient_id": "00123", "medications": ["Zoloft", "tramadol", "xyzzy", "etodolac"]},
    {"patient_id": "p3", "medications": ["Tylenol Cold", "phenelzine", "Mucinex D"]},
]


@pytest.fixture(scope="module")
def clients_python() -> str:
    return str(extra_venv("kserve-client"))


def test_tritonclient_and_kserve_get_what_invocations_answers(
    clients_python: str, server: RunningGunicorn
) -> None:
    ran = subprocess.run(
        [clients_python, "tests/support/v2_clients.py", server.base_url, MODEL, json.dumps(ROWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads(ran.stdout)
    expected = httpx.post(
        f"{server.base_url}/invocations", json={"dataframe_records": ROWS}, timeout=30
    ).json()["predictions"]
    assert set(report) == {"tritonclient binary", "tritonclient json", "kserve"}
    for client, result in report.items():
        assert result["health"] == {"live": True, "ready": True, "model_ready": True}, client
        assert result["rows"] == expected, client
        assert result["id"] == ("kserve-1" if client == "kserve" else "triton-1")
    lines = server.log_lines()
    infers = [line for line in lines if '"path": "/v2/models/' in line and "/infer" in line]
    assert len(infers) == 3
    assert all('"status": 200' in line for line in infers)
