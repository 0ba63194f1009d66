"""The Spark result type covers every field a real prediction returns, nested ones included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from pyspark.sql import types

from pharmacy_service.batch.spark import result_type
from pharmacy_service.model.pipeline import OUTPUT_COLUMNS

# Rows that fill every nested list: interactions, a misspelling, a drug not covered, a local
# route, a duplicate, an ambiguous name, a name that is no drug, a combination product, a
# concentration (strength per a quantity).
ROWS = [
    {"patient_id": "p1", "medications": ["Coumadin 5 mg PO nightly", "Advil 400 mg q6h prn"]},
    {"patient_id": "p2", "medications": ["warfarn", "simvastatn 20mg qhs", "Biaxin"]},
    {"patient_id": "p3", "medications": ["digitoxin", "Voltaren 1% gel", "xyzzy", "isosorbide"]},
    {
        "patient_id": "p6",
        "medications": [
            "metoprolol succinate ER 50 mg tab",
            "albuterol HFA 2 puffs",
            "ibuprofen 400 mg take with food",
            "Bactrim DS",
            "amoxicillin 250 mg/5 mL susp",
        ],
    },
    {"patient_id": "p4", "medications": ["Norco 5/325", "Tylenol #3", "sertraline", "tramadol"]},
    {"patient_id": "p5", "medications": "Zoloft, phenelzine", "question": "Is this safe?"},
]


def _check(value: Any, kind: types.DataType, where: str, seen: set[str]) -> None:
    """``value`` has exactly the shape of ``kind``: every key of a struct, no more, no fewer."""
    if value is None:
        return
    seen.add(where)
    if isinstance(kind, types.StructType):
        assert isinstance(value, dict), where
        assert set(value) == set(kind.fieldNames()), where
        for field in kind.fields:
            _check(value[field.name], field.dataType, f"{where}.{field.name}", seen)
    elif isinstance(kind, types.ArrayType):
        assert isinstance(value, list), where
        for item in value:
            _check(item, kind.elementType, f"{where}[]", seen)
    elif isinstance(kind, types.StringType):
        assert isinstance(value, str), where
    elif isinstance(kind, types.BooleanType):
        assert isinstance(value, bool), where
    elif isinstance(kind, types.LongType):
        assert type(value) is int, where
    elif isinstance(kind, types.DoubleType):
        assert type(value) in (int, float), where
    else:
        raise AssertionError(f"{where}: {kind} is not a type the model's output uses")


def _paths(kind: types.DataType, where: str) -> set[str]:
    if isinstance(kind, types.StructType):
        nested = {p for f in kind.fields for p in _paths(f.dataType, f"{where}.{f.name}")}
        return {where} | nested
    if isinstance(kind, types.ArrayType):
        return {where} | _paths(kind.elementType, f"{where}[]")
    return {where}


def test_result_type_is_every_output_field_in_order() -> None:
    assert result_type().fieldNames() == [name for name, _ in OUTPUT_COLUMNS]


def test_result_type_covers_every_key_of_real_predictions(built_model: Path) -> None:
    model = mlflow.pyfunc.load_model(str(built_model))
    table = model.predict(pd.DataFrame(ROWS))
    kind = result_type()
    seen: set[str] = set()
    for row in table.to_dict(orient="records"):
        row["interactions_omitted"] = int(row["interactions_omitted"])
        _check(row, kind, "row", seen)
    # Every field of the type was seen with a value in these rows: none is declared for
    # nothing, and the rows above exercise all of them.
    never = _paths(kind, "row") - seen
    assert not never
