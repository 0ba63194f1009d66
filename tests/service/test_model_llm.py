"""The saved model, loaded by MLflow, calling the real google-genai SDK against the stub."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest

from modelhub.serving import AsyncExecutor
from pharmacy_service.clinical import KnowledgeBase
from pharmacy_service.model import LLMUnavailableError, Pipeline, parse_rows
from pharmacy_service.model.llm import GeminiSettings, LLMObserver
from pharmacy_service.stub import StubConfig, StubServer

WARFARIN_NSAID = {"medications": ["Coumadin", "Advil"]}


class RecordingObserver(LLMObserver):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.lock = threading.Lock()

    def on_llm_call(self, backend: str, outcome: str, duration: float) -> None:
        with self.lock:
            self.calls[outcome] += 1

    def on_fallback(self, backend: str, reason: str) -> None:
        with self.lock:
            self.fallbacks[reason] += 1


@pytest.fixture
def load_gemini_model(load_model: Callable[..., Any]) -> Callable[..., Any]:
    return lambda **env: load_model("gemini", **env)


def predict_from_threads(
    model: Any, threads: int, calls: int, rows: int = 1
) -> tuple[list[dict[str, Any]], list[BaseException]]:
    """Like MLflow's scoring server: predict() from many worker threads at once."""
    outputs: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        barrier.wait(30)
        for n in range(calls):
            frame = pd.DataFrame(
                [{"patient_id": f"t{index}-{n}-{r}", **WARFARIN_NSAID} for r in range(rows)]
            )
            try:
                result = model.predict(frame).to_dict("records")
            except Exception as exc:  # noqa: BLE001 - counted
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    outputs.extend(result)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    return outputs, errors


@pytest.mark.slow
def test_predict_from_20_threads_with_the_real_sdk_has_no_failures(
    load_gemini_model: Callable[..., Any], stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_gemini_model()
    outputs, errors = predict_from_threads(model, threads=20, calls=5)
    assert errors == []
    assert len(outputs) == 100
    assert {row["note_source"] for row in outputs} == {"llm"}
    assert all(row["backend"] == "gemini" for row in outputs)
    assert all("warfarin + ibuprofen: major" in row["counseling_note"] for row in outputs)
    assert stub.stats.requests == 100
    assert stub.stats.connections <= 20  # one per concurrent caller at most: keep-alive reuse
    assert not [r for r in caplog.records if getattr(r, "event", None) == "async_retry"]


@pytest.mark.slow
def test_thirty_percent_faults_still_give_every_row_its_findings(
    load_gemini_model: Callable[..., Any], stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    stub.config = StubConfig(fault_rate=0.3, slow_seconds=3, seed=5)
    model = load_gemini_model(PHARMACY_LLM_TIMEOUT="0.5")
    observer = RecordingObserver()
    model.unwrap_python_model().pipeline.observer = observer
    outputs, errors = predict_from_threads(model, threads=5, calls=4, rows=5)
    assert errors == []
    assert len(outputs) == 100
    # The safety-critical part never depends on the LLM.
    assert all(row["highest_severity"] == "major" and row["interactions"] for row in outputs)
    sources = Counter(row["note_source"] for row in outputs)
    faults = sum(stub.stats.faults.values())
    assert 10 <= faults <= 50
    assert sources["fallback"] == faults
    assert sources["llm"] == stub.stats.responses["200"]
    assert sum(observer.fallbacks.values()) == faults
    assert observer.calls["ok"] == sources["llm"]
    fallback_lines = [r for r in caplog.records if getattr(r, "event", None) == "llm_fallback"]
    assert len(fallback_lines) == faults
    assert all(r.levelno == logging.WARNING for r in fallback_lines)
    for row in outputs:
        if row["note_source"] == "fallback":
            assert row["counseling_note"].startswith(
                "1 interaction found; highest severity: major."
            )


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        pytest.param("503", "upstream", id="upstream error"),
        pytest.param("slow", "timeout", id="timeout"),
    ],
)
def test_strict_mode_turns_an_llm_failure_into_an_error(
    load_gemini_model: Callable[..., Any], stub: StubServer, fault: str, kind: str
) -> None:
    stub.config = StubConfig(fault_rate=1.0, faults=(fault,), slow_seconds=3)
    model = load_gemini_model(PHARMACY_LLM_STRICT="true", PHARMACY_LLM_TIMEOUT="0.3")
    with pytest.raises(LLMUnavailableError) as caught:
        model.predict(pd.DataFrame([{"patient_id": "s1", **WARFARIN_NSAID}]))
    assert caught.value.kind == kind


def test_apredict_on_the_executor_loop_matches_predict(
    load_gemini_model: Callable[..., Any],
) -> None:
    model = load_gemini_model()
    frame = pd.DataFrame([{"patient_id": "a1", **WARFARIN_NSAID}])
    expected = model.predict(frame).to_dict("records")
    python_model = model.unwrap_python_model()

    async def endpoint() -> Any:
        return await AsyncExecutor.default().arun(python_model.apredict, frame)

    assert asyncio.run(endpoint()) == expected


def test_the_template_backend_is_deterministic(
    built_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHARMACY_LLM_BACKEND", "template")
    model = mlflow.pyfunc.load_model(str(built_model))
    frame = pd.DataFrame([{"patient_id": "d1", "medications": "Zoloft, tramadol, xyzzy"}])
    first, second = model.predict(frame).to_dict("records"), model.predict(frame).to_dict("records")
    assert first == second
    (row,) = first
    assert (row["note_source"], row["backend"]) == ("template", "template")
    assert row["unrecognized"] == ["xyzzy"]
    assert "xyzzy" in row["counseling_note"]
    assert set(row) == {
        "patient_id",
        "medications_normalized",
        "unrecognized",
        "not_covered",
        "corrections",
        "not_screened",
        "duplicates",
        "interactions",
        "interactions_omitted",
        "highest_severity",
        "counseling_note",
        "note_source",
        "backend",
        "disclaimer",
        "medications",
    }
    assert row["counseling_note"].endswith(row["disclaimer"])


def test_an_answer_naming_another_drug_is_not_used(knowledge: KnowledgeBase) -> None:
    class InventingLLM:
        """An LLM answer that mentions a drug the patient does not take."""

        name = "gemini"

        async def note(self, prompt: str) -> str:
            return "Warfarin and ibuprofen raise bleeding risk; also avoid simvastatin."

    observer = RecordingObserver()
    pipeline = Pipeline(knowledge, InventingLLM(), observer=observer)
    (row,) = asyncio.run(pipeline.run(parse_rows([{"patient_id": "g1", **WARFARIN_NSAID}])))
    assert row["note_source"] == "fallback"
    assert "simvastatin" not in row["counseling_note"]
    assert observer.fallbacks == Counter({"ungrounded": 1})


def test_a_rejected_note_is_logged_without_patient_data(
    knowledge: KnowledgeBase, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line says which row and what kind of problem, never the patient id nor the drug
    the LLM invented (before: ``reason=names drugs outside the facts: simvastatin
    patient_id=g1``)."""

    class InventingLLM:
        name = "gemini"

        async def note(self, prompt: str) -> str:
            return "Warfarin and ibuprofen raise bleeding risk; also avoid simvastatin."

    pipeline = Pipeline(knowledge, InventingLLM())
    with caplog.at_level(logging.INFO):
        asyncio.run(pipeline.run(parse_rows([{"patient_id": "MRN-77", **WARFARIN_NSAID}])))
    rejected = [r for r in caplog.records if getattr(r, "event", None) == "llm_note_rejected"]
    assert [(r.reason, r.row) for r in rejected] == [("invented_drugs", 0)]  # type: ignore[attr-defined]
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(map(str, vars(record).values()))
        assert "MRN-77" not in text
        assert "simvastatin" not in text


def test_a_faithful_note_repeating_the_findings_advice_is_used(
    load_gemini_model: Callable[..., Any], stub: StubServer
) -> None:
    """The stub answers as a careful LLM would: each finding's effect and advice, which for
    warfarin + NSAID names acetaminophen (a drug the patient does not take, but the facts do)."""
    model = load_gemini_model()
    rows = [
        {"patient_id": "f1", "medications": ["warfarin 5 mg PO nightly", "Advil 400 mg q6h prn"]},
        {"patient_id": "f2", "medications": ["warfarn", "etodolac 400 mg", "xyzzy"]},
    ]
    first, second = model.predict(pd.DataFrame(rows)).to_dict("records")
    assert first["note_source"] == "llm"
    assert "acetaminophen" in first["interactions"][0]["advice"]
    assert first["interactions"][0]["advice"] in first["counseling_note"]
    assert first["counseling_note"].endswith(first["disclaimer"])
    assert second["note_source"] == "llm"
    for fact in ("'warfarn' was read as warfarin", "etodolac", "xyzzy", "Only the interactions"):
        assert fact in second["counseling_note"]
    assert second["counseling_note"].endswith(second["disclaimer"])
    assert stub.stats.requests == 2


class _FixedNote:
    name = "gemini"

    def __init__(self, note: str) -> None:
        self.text = note

    async def note(self, prompt: str) -> str:
        return self.text


def test_a_note_that_omits_a_major_finding_is_not_used(knowledge: KnowledgeBase) -> None:
    observer = RecordingObserver()
    pipeline = Pipeline(
        knowledge, _FixedNote("Take your medicines as prescribed."), observer=observer
    )
    (row,) = asyncio.run(pipeline.run(parse_rows([{"patient_id": "g2", **WARFARIN_NSAID}])))
    assert row["note_source"] == "fallback"
    assert observer.fallbacks == Counter({"ungrounded": 1})


def test_a_note_naming_both_drugs_of_each_major_finding_is_used(knowledge: KnowledgeBase) -> None:
    note = "Coumadin (warfarin) with Advil raises bleeding risk; prefer acetaminophen for pain."
    pipeline = Pipeline(knowledge, _FixedNote(note))
    (row,) = asyncio.run(pipeline.run(parse_rows([{"patient_id": "g3", **WARFARIN_NSAID}])))
    assert row["note_source"] == "llm"
    assert row["counseling_note"].startswith(note)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        pytest.param({}, "GEMINI_API_KEY", id="no key and no base URL"),
        pytest.param(
            {"GEMINI_BASE_URL": "http://x", "PHARMACY_LLM_TIMEOUT": "soon"},
            "PHARMACY_LLM_TIMEOUT",
            id="bad timeout",
        ),
        pytest.param(
            {"GEMINI_BASE_URL": "http://x", "PHARMACY_LLM_ATTEMPTS": "0"},
            "PHARMACY_LLM_ATTEMPTS",
            id="bad attempts",
        ),
    ],
)
def test_gemini_settings_errors_name_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        GeminiSettings.from_env(env)


def test_an_unknown_backend_fails_at_load(
    built_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHARMACY_LLM_BACKEND", "gpt")
    with pytest.raises(ValueError, match="PHARMACY_LLM_BACKEND"):
        mlflow.pyfunc.load_model(str(built_model))


def test_the_prompt_is_bounded_like_the_answer(knowledge: KnowledgeBase) -> None:
    """A 50-drug list can interact in over a thousand pairs: the prompt's summary and facts list
    the MAX_FINDINGS most severe, as the answer does, and count the rest."""
    from pharmacy_service.clinical.notes import build_prompt
    from pharmacy_service.clinical.screening import MAX_FINDINGS, Screener

    generics = sorted(knowledge.drugs)
    screener = Screener(knowledge)
    windows = (screener.screen(generics[i : i + 50]) for i in range(0, len(generics) - 50, 25))
    result = next(r for r in windows if len(r.findings) > MAX_FINDINGS)
    prompt = build_prompt("p1", result, None)
    summary = prompt.splitlines()[1]
    assert summary.count(" + ") == MAX_FINDINGS
    assert f"and {len(result.findings) - MAX_FINDINGS} more" in summary


def test_llm_concurrency_names_the_setting_it_read() -> None:
    from pharmacy_service.model.pyfunc import DEFAULT_LLM_CONCURRENCY, llm_concurrency

    assert llm_concurrency(None, {}) == DEFAULT_LLM_CONCURRENCY
    assert llm_concurrency(None, {"PHARMACY_LLM_CONCURRENCY": "50"}) == 50
    assert llm_concurrency(3, {"PHARMACY_LLM_CONCURRENCY": "50"}) == 3  # model_config wins
    with pytest.raises(ValueError, match=r"^llm_concurrency='0' is invalid"):
        llm_concurrency(0, {"PHARMACY_LLM_CONCURRENCY": "50"})
    with pytest.raises(ValueError, match=r"^PHARMACY_LLM_CONCURRENCY='x' is invalid"):
        llm_concurrency(None, {"PHARMACY_LLM_CONCURRENCY": "x"})
