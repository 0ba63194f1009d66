"""Rows in: every malformed input is refused with an error naming the row and field."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from pharmacy_service.model import InvalidInputError, parse_rows
from pharmacy_service.model.pipeline import MAX_MEDICATIONS, MAX_ROWS, Row


def test_a_dataframe_with_lists_strings_and_missing_questions() -> None:
    frame = pd.DataFrame(
        [
            {"patient_id": "a", "medications": ["warfarin", "aspirin"], "question": None},
            {"patient_id": "b", "medications": "Zoloft, tramadol; Nardil\nAdvil"},
        ]
    )
    assert parse_rows(frame) == [
        Row("a", ["warfarin", "aspirin"], None),
        Row("b", ["Zoloft", "tramadol", "Nardil", "Advil"], None),
    ]


def test_records_and_a_single_mapping() -> None:
    assert parse_rows({"patient_id": 7, "medications": ["x"], "question": " why? "}) == [
        Row("7", ["x"], "why?")
    ]
    assert parse_rows([{"patient_id": "p", "medications": (" a ", "")}]) == [Row("p", ["a"])]


def test_whole_number_ids_are_read_as_their_digits() -> None:
    # 2181.0 is an integer to JSON Schema, and pandas stores an integer column with a missing
    # value as floats; up to 2^53 - 1 a double holds every integer exactly.
    rows = [{"patient_id": n, "medications": ["a"]} for n in (2181.0, -(2**53) + 1, 2**53 - 1)]
    assert [row.patient_id for row in parse_rows(rows)] == [
        "2181",
        str(-(2**53) + 1),
        str(2**53 - 1),
    ]


def test_a_nan_question_means_no_question() -> None:
    assert (
        parse_rows([{"patient_id": "p", "medications": ["a"], "question": math.nan}])[0].question
        is None
    )


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        pytest.param([], "rows", "no rows", id="no rows"),
        pytest.param("warfarin", None, "expected rows", id="a bare string"),
        pytest.param([1], "rows[0]", "must be an object", id="row not an object"),
        pytest.param(
            [{"medications": ["a"]}], "rows[0].patient_id", "required", id="missing patient_id"
        ),
        pytest.param(
            [{"patient_id": "", "medications": ["a"]}],
            "rows[0].patient_id",
            "non-empty",
            id="empty patient_id",
        ),
        pytest.param(
            [{"patient_id": True, "medications": ["a"]}],
            "rows[0].patient_id",
            "required",
            id="boolean patient_id",
        ),
        pytest.param(
            [{"patient_id": "p"}], "rows[0].medications", "required", id="missing medications"
        ),
        pytest.param(
            [{"patient_id": "p", "medications": 5}],
            "rows[0].medications",
            "list of strings",
            id="medications a number",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": ["a", 3]}],
            "rows[0].medications[1]",
            "must be a string",
            id="a number in the list",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": ["x" * 201]}],
            "rows[0].medications[0]",
            "longer than",
            id="a 201-character name",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": ["a"] * (MAX_MEDICATIONS + 1)}],
            "rows[0].medications",
            "at most",
            id="too many medications",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": ["a", *[""] * MAX_MEDICATIONS]}],
            "rows[0].medications",
            "at most",
            id="too many entries, blanks counted (what the OpenAPI schema says)",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": "a" + "," * MAX_MEDICATIONS}],
            "rows[0].medications",
            "51 entries",
            id="too many entries in one string",
        ),
        pytest.param(
            [{"patient_id": 2**53, "medications": ["a"]}],
            "rows[0].patient_id",
            "as a string",
            id="an integer id past 2^53 - 1",
        ),
        pytest.param(
            [{"patient_id": 1.5, "medications": ["a"]}],
            "rows[0].patient_id",
            "non-empty string",
            id="a fractional id",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": ["a"], "question": 3}],
            "rows[0].question",
            "must be a string",
            id="question a number",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": ["a"], "dose": 1}],
            "rows[0].dose",
            "unknown fields",
            id="unknown field",
        ),
        pytest.param(
            [{"patient_id": "p", "medications": ["a"]}] * (MAX_ROWS + 1),
            "rows",
            "allowed per request",
            id="too many rows",
        ),
    ],
)
def test_bad_input_names_the_field(data: Any, field: str | None, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words) as caught:
        parse_rows(data)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
