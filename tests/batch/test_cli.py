"""pharmacy-batch's input formats, outputs and refusals (template notes: no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from pharmacy_service.batch.cli import EXIT_USAGE
from pharmacy_service.model.pipeline import OUTPUT_COLUMNS
from tests.batch.conftest import SPARK_WARNINGS, pharmacy_batch, write_jsonl

pytestmark = [pytest.mark.slow, *SPARK_WARNINGS]

CSV = (
    "patient_id,medications,question\n"
    '00123,"Coumadin 5 mg PO nightly; Advil 400 mg q6h prn",\n'
    'p2,"Zocor, Biaxin",Is this safe?\n'
    'p3,"sertraline 50mg qhs\ntramadol",\n'
    ',"warfarin",\n'
)
EXPECTED = {
    "00123": ("major", ["warfarin", "ibuprofen"]),
    "p2": ("contraindicated", ["simvastatin", "clarithromycin"]),
    "p3": ("major", ["sertraline", "tramadol"]),
}


@pytest.fixture(autouse=True)
def _template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHARMACY_LLM_BACKEND", raising=False)


def _inputs(tmp_path: Path) -> dict[str, Path]:
    csv = tmp_path / "patients.csv"
    csv.write_text(CSV)
    jsonl = write_jsonl(
        tmp_path / "patients.jsonl",
        [
            {"patient_id": "00123", "medications": ["Coumadin 5 mg PO nightly", "Advil 400 mg"]},
            {"patient_id": "p2", "medications": "Zocor, Biaxin", "question": "Is this safe?"},
            {"patient_id": "p3", "medications": ["sertraline 50mg qhs", "tramadol"]},
            {"medications": ["warfarin"]},
        ],
    )
    parquet = tmp_path / "patients.parquet"
    pd.DataFrame(
        {
            "patient_id": ["00123", "p2", "p3", None],
            "medications": [
                ["Coumadin", "Advil"],
                ["Zocor", "Biaxin"],
                ["Zoloft", "tramadol"],
                ["warfarin"],
            ],
            "question": [None, "Is this safe?", None, None],
        }
    ).to_parquet(parquet)
    return {"csv": csv, "jsonl": jsonl, "parquet": parquet}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_round_trip_each_input_format(
    spark: SparkSession, built_model: Path, tmp_path: Path, fmt: str
) -> None:
    source = _inputs(tmp_path)[fmt]
    output = tmp_path / "out"
    assert pharmacy_batch(spark, str(source), str(output), "--model", str(built_model)) == 0
    result = pd.read_parquet(output).set_index("patient_id", drop=False)
    assert len(result) == 4
    for patient, (severity, drugs) in EXPECTED.items():
        row = result.loc[patient]
        assert row["highest_severity"] == severity
        assert list(row["medications_normalized"]) == drugs
        assert row["note_source"] == "template"
        assert row["error"] is None
    assert result.loc["p2", "counseling_note"].count("Is this safe?") <= 1
    missing = pd.read_parquet(output).query("patient_id.isna()")
    assert list(missing["error"]) == ["patient_id is required"]


def test_json_lines_output_keeps_every_field(
    spark: SparkSession, built_model: Path, tmp_path: Path
) -> None:
    source = _inputs(tmp_path)["csv"]
    output = tmp_path / "out"
    status = pharmacy_batch(
        spark, str(source), str(output), "--model", str(built_model), "--output-format", "jsonl"
    )
    assert status == 0
    written = pd.concat(pd.read_json(p, lines=True) for p in output.glob("part-*.json"))
    assert len(written) == 4
    # Every field, even where a bad row has none (Spark's JSON writer drops nulls by default).
    assert written.columns.tolist() == [*(name for name, _ in OUTPUT_COLUMNS), "error"]


def test_existing_output_refused_unless_overwrite(
    spark: SparkSession, built_model: Path, tmp_path: Path
) -> None:
    source = _inputs(tmp_path)["jsonl"]
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("not ours")
    args = [str(source), str(output), "--model", str(built_model)]
    assert pharmacy_batch(spark, *args) == EXIT_USAGE
    assert [p.name for p in output.iterdir()] == ["keep.txt"]
    assert pharmacy_batch(spark, *args, "--overwrite") == 0
    assert not (output / "keep.txt").exists()
    assert (output / "_SUCCESS").exists()
    assert len(pd.read_parquet(output)) == 4


def test_input_without_medications_column_is_refused(
    spark: SparkSession, built_model: Path, tmp_path: Path
) -> None:
    source = tmp_path / "patients.csv"
    source.write_text("patient_id,drugs\np1,warfarin\n")
    output = tmp_path / "out"
    assert (
        pharmacy_batch(spark, str(source), str(output), "--model", str(built_model)) == EXIT_USAGE
    )
    assert not output.exists()


def test_command_line_entry_point(tmp_path: Path) -> None:
    """The installed command end to end, in its own process (its own JVM), building the bundled
    model itself."""
    source = tmp_path / "patients.csv"
    source.write_text(CSV)
    output = tmp_path / "out"
    command = Path(sys.executable).with_name("pharmacy-batch")
    env = {k: v for k, v in os.environ.items() if k != "PHARMACY_LLM_BACKEND"}
    done = subprocess.run(
        [str(command), str(source), str(output), "--strict"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 rows written" in done.stderr
    assert "1 with an error" in done.stderr
    assert len(pd.read_parquet(output)) == 4
