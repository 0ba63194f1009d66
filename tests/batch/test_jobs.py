"""pharmacy-batch on real Spark (local[2], 127.0.0.1) with the openai backend against the stub:
thousands of rows with bad ones mixed in, a Python worker killed mid-job, an upstream failing a
third of its calls, a job that fails, and tracing in the workers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from pharmacy_service.batch.cli import EXIT_FAILED, EXIT_FALLBACKS
from pharmacy_service.model import tracing
from pharmacy_service.stub import StubConfig, StubServer, run_in_thread
from tests.batch.conftest import SPARK_WARNINGS, kill, pharmacy_batch, python_workers, write_jsonl

pytestmark = [pytest.mark.slow, *SPARK_WARNINGS]

LISTS = [
    ["Coumadin 5 mg PO nightly", "Advil 400 mg q6h prn"],
    ["Zocor 40 mg", "Biaxin 500 mg bid"],
    ["sertraline 50mg qhs", "tramadol 50 mg q6h prn", "warfarn"],
    ["lisinopril 10 mg", "KCl 20 mEq ER", "spironolactone 25 mg"],
    ["metformin 500 mg bid"],
    ["Norco 5/325", "Tylenol #3", "digitoxin", "Voltaren 1% gel"],
]
BAD: list[dict[str, Any] | str] = [
    {"medications": ["warfarin"]},  # no patient id
    {"patient_id": "bad-type", "medications": ["warfarin", 5]},
    {"patient_id": "bad-empty", "medications": None},
    {"patient_id": "bad-long", "medications": ["aspirin"] * 51},
    {"patient_id": "bad-name", "medications": ["x" * 201]},
    {"patient_id": "bad-question", "medications": ["aspirin"], "question": "?" * 2001},
    "{not json",
]


def rows(count: int, bad_every: int = 0) -> list[dict[str, Any] | str]:
    """``count`` patients with distinct ids; every ``bad_every``-th row a bad one instead."""
    out: list[dict[str, Any] | str] = []
    for i in range(count):
        if bad_every and i % bad_every == bad_every - 1:
            bad = BAD[(i // bad_every) % len(BAD)]
            out.append(bad if isinstance(bad, str) else {**bad, "row": i})
        else:
            out.append({"patient_id": f"p{i:05d}", "medications": LISTS[i % len(LISTS)]})
    return out


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with run_in_thread(StubConfig(seed=7)) as server:
        yield server


@pytest.fixture
def openai_stub(stub: StubServer, monkeypatch: pytest.MonkeyPatch) -> StubServer:
    """The openai backend pointed at the stub (no key); the stub's faults and counts reset."""
    base = f"http://127.0.0.1:{stub.port}"
    httpx.post(f"{base}/config", json={"fault_rate": 0, "latency_ms": 20}).raise_for_status()
    httpx.post(f"{base}/stats/reset").raise_for_status()
    monkeypatch.setenv("PHARMACY_LLM_BACKEND", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{base}/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return stub


def configure(stub: StubServer, **values: Any) -> None:
    httpx.post(f"http://127.0.0.1:{stub.port}/config", json=values).raise_for_status()


def read(output: Path) -> pd.DataFrame:
    return pd.read_parquet(output)


def test_every_row_once_bad_rows_with_their_error_llm_notes(
    spark: SparkSession, openai_stub: StubServer, built_model: Path, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "patients.jsonl", rows(2100, bad_every=15))
    output = tmp_path / "out"
    assert pharmacy_batch(spark, str(source), str(output), "--model", str(built_model)) == 0
    result = read(output)
    assert len(result) == 2100
    good = result[result["error"].isna()]
    bad = result[result["error"].notna()]
    assert len(good) == 1960
    assert good["patient_id"].is_unique
    assert set(good["patient_id"]) == {f"p{i:05d}" for i in range(2100) if i % 15 != 14}
    assert len(bad) == 140
    errors = Counter(
        next(
            (kind for kind in ("required", "string", "50", "2000", "200", "JSON") if kind in e),
            e,
        )
        for e in bad["error"]
    )
    assert errors == {"required": 40, "string": 20, "50": 20, "200": 20, "2000": 20, "JSON": 20}
    assert bad["note_source"].isna().all()
    assert bad["interactions"].isna().all()
    assert set(bad["patient_id"].dropna()) >= {"bad-type", "bad-long", "bad-name"}
    # Every good row has its LLM note, one call each, and its findings.
    assert set(good["note_source"]) == {"llm"}
    assert openai_stub.stats.apis["openai"] == 1960
    warfarin = good[good["patient_id"] == "p00000"].iloc[0]
    assert warfarin["highest_severity"] == "major"
    assert [i["drug_b"] for i in warfarin["interactions"]] == ["ibuprofen"]


def test_python_worker_killed_mid_job_every_row_still_once(
    spark: SparkSession, openai_stub: StubServer, built_model: Path, tmp_path: Path
) -> None:
    configure(openai_stub, latency_ms=100)
    source = write_jsonl(tmp_path / "patients.jsonl", rows(1000))
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if openai_stub.stats.requests >= 150 and (workers := python_workers(spark)):
                kill(workers[0])
                killed.append(workers[0])
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    output = tmp_path / "out"
    assert pharmacy_batch(spark, str(source), str(output), "--model", str(built_model)) == 0
    thread.join()
    assert killed, "no Python worker was found to kill"
    result = read(output)
    assert len(result) == 1000
    assert result["patient_id"].is_unique
    assert set(result["note_source"]) == {"llm"}
    # The killed task's rows were scored again: the upstream billed more calls than rows.
    assert openai_stub.stats.apis["openai"] > 1000


def test_third_of_llm_calls_failing_findings_kept_notes_from_template(
    spark: SparkSession, openai_stub: StubServer, built_model: Path, tmp_path: Path
) -> None:
    configure(openai_stub, fault_rate=1 / 3, faults="503")
    source = write_jsonl(tmp_path / "patients.jsonl", rows(600))
    output = tmp_path / "out"
    status = pharmacy_batch(spark, str(source), str(output), "--model", str(built_model))
    # More than the default 10% fell back: the job says so, and its output is complete.
    assert status == EXIT_FALLBACKS
    result = read(output)
    assert len(result) == 600
    assert result["error"].isna().all()
    sources = Counter(result["note_source"])
    assert set(sources) == {"llm", "fallback"}
    assert 0.2 < sources["fallback"] / 600 < 0.45
    # A fallback row has the same findings as a row with an LLM note for the same list.
    by_list = result.assign(kind=[int(p[1:]) % len(LISTS) for p in result["patient_id"]])
    for _, group in by_list.groupby("kind"):
        assert group["highest_severity"].nunique() == 1
        assert (
            group["interactions"].map(lambda i: [x["rule_id"] for x in i]).map(tuple).nunique() == 1
        )
    fallback = result[result["note_source"] == "fallback"]
    assert fallback["counseling_note"].str.contains("not medical advice").all()
    # The same output passes with a threshold above what fell back.
    rerun = pharmacy_batch(
        spark,
        str(source),
        str(tmp_path / "again"),
        "--model",
        str(built_model),
        "--max-fallback-share",
        "0.6",
    )
    assert rerun == 0


def test_failed_job_leaves_no_output(
    spark: SparkSession,
    openai_stub: StubServer,
    built_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Strict mode turns every LLM failure into an error: every attempt of a task fails, so
    does the job, and nothing is left where the output was to be."""
    configure(openai_stub, fault_rate=1, faults="503")
    monkeypatch.setenv("PHARMACY_LLM_STRICT", "true")
    source = write_jsonl(tmp_path / "patients.jsonl", rows(50))
    output = tmp_path / "out"
    status = pharmacy_batch(spark, str(source), str(output), "--model", str(built_model))
    assert status == EXIT_FAILED
    assert not output.exists()


def test_tracing_in_a_spark_task_only_when_asked(spark: SparkSession) -> None:
    """spark_udf sets the driver's tracking URI in every worker (MLflow's default if none):
    in a task that alone does not turn tracing on; PHARMACY_TRACING does. Outside a task, the
    tracking URI still does (the server's rule)."""
    uri = {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    environments = [uri, {**uri, "PHARMACY_TRACING": "true"}, {"PHARMACY_TRACING": "false"}]
    in_tasks = spark.sparkContext.parallelize(environments, 3).map(tracing.wanted).collect()
    assert in_tasks == [False, True, False]
    assert tracing.wanted(uri) is True
