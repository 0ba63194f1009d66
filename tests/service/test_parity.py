"""Parity with MLflow's scoring server: the same payloads, posted to `mlflow models serve` and to
this server on the same saved model, get the same predictions; bad ones are refused by both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pharmacy_service.model.build import INPUT_EXAMPLE
from tests.support.gunicorn import run_gunicorn
from tests.support.mlflow_serve import run_mlflow_serve

pytestmark = pytest.mark.slow

LIST_ROWS = [{**r, "medications": ["warfarin", "Advil"]} for r in INPUT_EXAMPLE]
GOOD: dict[str, tuple[str, str]] = {
    "dataframe_records": ("application/json", json.dumps({"dataframe_records": INPUT_EXAMPLE})),
    "dataframe_split": (
        "application/json",
        json.dumps(
            {
                "dataframe_split": {
                    "columns": ["patient_id", "medications", "question"],
                    "data": [
                        [r["patient_id"], r["medications"], r["question"]] for r in INPUT_EXAMPLE
                    ],
                }
            }
        ),
    ),
    "inputs": (
        "application/json",
        json.dumps(
            {
                "inputs": {
                    k: [r[k] for r in INPUT_EXAMPLE]
                    for k in ("patient_id", "medications", "question")
                }
            }
        ),
    ),
    "instances": ("application/json", json.dumps({"instances": LIST_ROWS})),
    "params": (
        "application/json",
        json.dumps({"dataframe_records": INPUT_EXAMPLE, "params": {"timeout": 20.0}}),
    ),
    "charset": (
        "application/json; charset=utf-8",
        json.dumps({"dataframe_records": INPUT_EXAMPLE}),
    ),
}
CSV = 'patient_id,medications\nc1,"Zocor, Biaxin"\nc2,warfarin\n'

BAD: dict[str, tuple[str, str]] = {
    "malformed JSON": ("application/json", "{nope"),
    "a JSON list": ("application/json", "[1, 2]"),
    "no format key": ("application/json", '{"rows": []}'),
    "two format keys": ("application/json", '{"dataframe_records": [], "inputs": {}}'),
    "missing column": ("application/json", '{"dataframe_records": [{"patient_id": "x"}]}'),
    "wrong content type": ("text/plain", "hello"),
    "unknown content type parameter": ("application/json; boundary=x", "{}"),
}


@pytest.fixture(scope="module")
def servers(
    built_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("parity")
    with (
        run_mlflow_serve(built_model, logs / "mlflow.log") as theirs,
        run_gunicorn(built_model, logs / "ours.log", workers=1) as ours,
    ):
        yield theirs, ours.base_url


def post(base: str, content_type: str, body: str) -> httpx.Response:
    return httpx.post(
        f"{base}/invocations",
        content=body.encode(),
        headers={"Content-Type": content_type},
        timeout=30,
    )


@pytest.mark.parametrize("name", list(GOOD))
def test_the_same_payload_gets_the_same_predictions(servers: tuple[str, str], name: str) -> None:
    theirs, ours = (post(base, *GOOD[name]) for base in servers)
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    assert ours.json() == theirs.json()


@pytest.mark.parametrize("name", list(BAD))
def test_the_same_bad_payload_is_refused_by_both(servers: tuple[str, str], name: str) -> None:
    theirs, ours = (post(base, *BAD[name]) for base in servers)
    assert 400 <= theirs.status_code < 500, theirs.text
    assert 400 <= ours.status_code < 500, ours.text
    body: dict[str, Any] = ours.json()  # ours always answers JSON naming the problem
    assert body["error_code"]
    assert body["message"]


def test_csv_works_here_where_mlflow_cannot_type_the_columns(servers: tuple[str, str]) -> None:
    """MLflow derives CSV column dtypes from the signature and fails on the "any" columns this
    model needs; this server parses the CSV and lets the model validate it."""
    theirs, ours = (post(base, "text/csv", CSV) for base in servers)
    assert theirs.status_code == 400
    assert "pandas types" in theirs.text
    assert ours.status_code == 200, ours.text
    assert [r["highest_severity"] for r in ours.json()["predictions"]] == [
        "contraindicated",
        "none",
    ]
