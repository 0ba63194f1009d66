"""The model on real prescriptions: a table of cases (tests/service/cases/prescriptions.yaml) run
through the saved MLflow model in a fresh process, and the same answers under any hash seed.

Each case lists what must come out, exactly: the drugs screened (in first-seen order), every
interacting pair with its severity, and the names not recognised, recognised but not covered,
read as a misspelling, or not screened because of their route. A field left out must be empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.predict_in_process import predict_in_fresh_process

CASES_FILE = Path(__file__).with_name("cases") / "prescriptions.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))
_SEVERITY_ORDER = ["none", "minor", "moderate", "major", "contraindicated"]


def _rows() -> list[dict[str, Any]]:
    return [{"patient_id": case["id"], "medications": case["medications"]} for case in CASES]


@pytest.fixture(scope="module")
def predictions(built_model: Path) -> dict[str, dict[str, Any]]:
    return {row["patient_id"]: row for row in predict_in_fresh_process(built_model, _rows())}


def test_the_case_table_is_broad() -> None:
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids)), "case ids are unique"
    assert len(CASES) >= 150
    tags = {tag for case in CASES for tag in case.get("tags", [])}
    assert {
        "classic",
        "onc",
        "sig",
        "combination",
        "lookalike",
        "not-covered",
        "local-route",
        "typo",
        "edge",
    } <= tags


def test_common_safe_combinations_guard_against_false_alarms() -> None:
    """At least 30 pairs of common drugs with no clinically significant interaction, each
    expecting no finding (test_case checks that none is reported)."""
    safe = [case for case in CASES if "safe" in case.get("tags", [])]
    assert len(safe) >= 30
    for case in safe:
        assert not case.get("interactions"), case["id"]
        assert len(case["screened"]) == len(case["medications"]), case["id"]


_CASE_KEYS = {
    "id",
    "tags",
    "medications",
    "screened",
    "interactions",
    "unrecognized",
    "not_covered",
    "corrections",
    "not_screened",
    "duplicates",
}


def test_every_case_key_is_checked() -> None:
    for case in CASES:
        assert set(case) <= _CASE_KEYS, (case["id"], set(case) - _CASE_KEYS)


def _pairs(items: list[list[str]]) -> dict[frozenset[str], str]:
    return {frozenset(item[:2]): item[2] for item in items}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case: dict[str, Any], predictions: dict[str, dict[str, Any]]) -> None:
    row = predictions[case["id"]]
    got_pairs = {frozenset((f["drug_a"], f["drug_b"])): f["severity"] for f in row["interactions"]}
    expected_pairs = _pairs(case.get("interactions", []))
    assert got_pairs == expected_pairs
    assert row["medications_normalized"] == case.get("screened", [])
    assert row["unrecognized"] == case.get("unrecognized", [])
    assert sorted({item["name"] for item in row["not_covered"]}) == sorted(
        case.get("not_covered", [])
    )
    assert {c["input"]: c["read_as"] for c in row["corrections"]} == case.get("corrections", {})
    assert sorted(item["generic"] for item in row["not_screened"]) == sorted(
        case.get("not_screened", [])
    )
    if "duplicates" in case:
        assert {d["generic"]: d["inputs"] for d in row["duplicates"]} == case["duplicates"]
    highest = max(expected_pairs.values(), key=_SEVERITY_ORDER.index, default="none")
    assert row["highest_severity"] == highest
    assert row["counseling_note"].endswith(row["disclaimer"])
    for name in case.get("not_covered", []):
        assert name in row["counseling_note"]
    for written in case.get("corrections", {}):
        assert written in row["counseling_note"]


def test_the_same_input_gives_the_same_output_under_any_hash_seed(
    built_model: Path, predictions: dict[str, dict[str, Any]]
) -> None:
    rows = _rows()
    first = predict_in_fresh_process(built_model, rows, {"PYTHONHASHSEED": "1"})
    second = predict_in_fresh_process(built_model, rows, {"PYTHONHASHSEED": "2"})
    assert first == second
    assert {row["patient_id"]: row for row in first} == predictions
