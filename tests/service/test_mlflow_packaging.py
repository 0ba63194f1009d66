"""The saved model in MLflow's own tools: a fresh process, `mlflow models serve`, the registry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import pandas as pd
import pytest

from pharmacy_service.model.build import INPUT_EXAMPLE, MODEL_NAME, main
from tests.support.mlflow_serve import run_mlflow_serve

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_saved_model_has_its_artifacts_code_and_pins(built_model: Path) -> None:
    for name in ("drugs.json", "classes.json", "rules.json", "lexicon.tsv.gz"):
        assert (built_model / "artifacts" / name).is_file(), name
    assert (built_model / "code" / "modelhub" / "serving" / "_executor.py").is_file()
    assert not list((built_model / "code").rglob("__pycache__"))
    requirements = (built_model / "requirements.txt").read_text().split()
    for name in ("mlflow-skinny", "google-genai", "tenacity", "pandas", "rapidfuzz"):
        assert any(line.startswith(f"{name}==") for line in requirements), name
    example = json.loads((built_model / "input_example.json").read_text())
    assert example["columns"] == ["patient_id", "medications", "question"]


def test_loads_and_predicts_in_a_fresh_process(built_model: Path, tmp_path: Path) -> None:
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "rows = [{'patient_id': 'f1', 'medications': ['Zocor', 'Biaxin']}]\n"
        "print(json.dumps(model.predict(pd.DataFrame(rows)).to_dict('records')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    done = subprocess.run(
        [sys.executable, "-c", script, str(built_model)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    (row,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["highest_severity"] == "contraindicated"
    assert row["interactions"][0]["rule_id"] == "simvastatin-clarithromycin"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, built_model: Path) -> Iterator[str]:
    log = tmp_path_factory.mktemp("mlflow-serve") / "server.log"
    with run_mlflow_serve(built_model, log) as base:
        yield base


PAYLOADS = {
    "dataframe_records": {"dataframe_records": INPUT_EXAMPLE},
    "dataframe_split": {
        "dataframe_split": {
            "columns": ["patient_id", "medications", "question"],
            "data": [[r["patient_id"], r["medications"], r["question"]] for r in INPUT_EXAMPLE],
        }
    },
    "inputs": {
        "inputs": {
            "patient_id": [r["patient_id"] for r in INPUT_EXAMPLE],
            "medications": [r["medications"] for r in INPUT_EXAMPLE],
            "question": [r["question"] for r in INPUT_EXAMPLE],
        }
    },
    # MLflow turns `instances` into a numpy array first, so every row's medications must have
    # the same shape: lists here (a list in one row and a string in another is refused).
    "instances": {
        "instances": [{**r, "medications": ["warfarin", "Advil"]} for r in INPUT_EXAMPLE]
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", list(PAYLOADS))
def test_mlflow_models_serve_answers_the_scoring_protocol(
    mlflow_server: str, built_model: Path, protocol: str
) -> None:
    answer = httpx.post(f"{mlflow_server}/invocations", json=PAYLOADS[protocol], timeout=30)
    assert answer.status_code == 200, answer.text
    rows = PAYLOADS["instances"]["instances"] if protocol == "instances" else INPUT_EXAMPLE
    expected = (
        mlflow.pyfunc.load_model(str(built_model)).predict(pd.DataFrame(rows)).to_dict("records")
    )
    assert answer.json() == {"predictions": expected}
    first = answer.json()["predictions"][0]
    assert first["highest_severity"] == "major"
    assert "warfarin-nsaid" in {i["rule_id"] for i in first["interactions"]}


def test_predict_answers_a_table_with_the_signature_outputs(built_model: Path) -> None:
    # A table, one column per declared output, is what other consumers encode: MLServer's
    # pandas codec (a list of dicts has none: every V2 infer answered 500) and spark_udf.
    model: Any = mlflow.pyfunc.load_model(str(built_model))
    rows = [
        {"patient_id": "t1", "medications": ["Zocor", "Biaxin"]},
        {"patient_id": "t2", "medications": ["xyzzy"]},
    ]
    table = model.predict(pd.DataFrame(rows))
    assert isinstance(table, pd.DataFrame)
    outputs = model.metadata.get_output_schema().input_names()
    assert list(table.columns) == outputs
    assert table["interactions_omitted"].dtype == "int64"
    first, second = table.to_dict("records")
    assert isinstance(first["interactions"], list)
    assert first["interactions"][0]["severity"] == "contraindicated"
    assert second["highest_severity"] == "none"
    assert not [v for row in (first, second) for v in row.values() if isinstance(v, float)]
    assert second["unrecognized"] == ["xyzzy"]


def test_the_cli_refuses_a_non_empty_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["--output", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_the_cli_needs_a_tracking_uri_to_register(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["--register"]) == 2
    assert "MLFLOW_TRACKING_URI" in capsys.readouterr().err


@pytest.mark.slow
def test_register_then_load_by_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A local file store stands in for a tracking server here (MLflow 3 asks for an opt-in).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.chdir(tmp_path)
    assert main(["--register"]) == 0
    model: Any = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    (row,) = model.predict(
        pd.DataFrame([{"patient_id": "r1", "medications": ["Viagra", "Imdur"]}])
    ).to_dict("records")
    assert row["highest_severity"] == "contraindicated"
