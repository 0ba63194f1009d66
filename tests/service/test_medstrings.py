"""The medication-string parser against strings as pharmacy and clinic systems write them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy_service.clinical.medstrings import parse_medication

# (text, expected fields; a field not named must be empty: None, False or no extra names)
CASES: list[tuple[str, dict[str, Any]]] = [
    ("warfarin", {"name": "warfarin"}),
    (
        "warfarin 5 mg PO nightly",
        {
            "name": "warfarin",
            "strength": "5",
            "unit": "mg",
            "route": "oral",
            "frequency": "at bedtime",
        },
    ),
    (
        "sertraline 50mg qhs",
        {"name": "sertraline", "strength": "50", "unit": "mg", "frequency": "at bedtime"},
    ),
    (
        "ibuprofen 400 mg q6h prn",
        {
            "name": "ibuprofen",
            "strength": "400",
            "unit": "mg",
            "frequency": "every 6 hours",
            "as_needed": True,
        },
    ),
    ("Xarelto 20", {"name": "Xarelto", "strength": "20"}),
    ("asa 81", {"name": "asa", "strength": "81"}),
    ("hctz 25", {"name": "hctz", "strength": "25"}),
    (
        "methotrexate 2.5mg weekly",
        {"name": "methotrexate", "strength": "2.5", "unit": "mg", "frequency": "weekly"},
    ),
    ("isosorbide", {"name": "isosorbide"}),
    ("Norco 5/325", {"name": "Norco", "strength": "5/325"}),
    ("norco (hydrocodone)", {"name": "norco", "names": ("norco", "hydrocodone")}),
    (
        "Coumadin [warfarin] 5mg",
        {"name": "Coumadin", "names": ("Coumadin", "warfarin"), "strength": "5", "unit": "mg"},
    ),
    ("Tylenol #3", {"name": "Tylenol #3"}),
    (
        "Tylenol with codeine #3 1 tab q4h prn",
        {
            "name": "Tylenol with codeine #3",
            "dose": "1 tablet",
            "form": "tablet",
            "frequency": "every 4 hours",
            "as_needed": True,
        },
    ),
    (
        "lisinopril-hydrochlorothiazide 20-12.5 mg",
        {"name": "lisinopril-hydrochlorothiazide", "strength": "20-12.5", "unit": "mg"},
    ),
    (
        "Voltaren 1% gel",
        {"name": "Voltaren", "strength": "1", "unit": "%", "form": "gel", "route": "topical"},
    ),
    ("Vigamox eye drops", {"name": "Vigamox", "form": "drops", "route": "ophthalmic"}),
    (
        "moxifloxacin 0.5% ophth soln 1 gtt OU TID",
        {
            "name": "moxifloxacin",
            "strength": "0.5",
            "unit": "%",
            "form": "solution",
            "route": "ophthalmic",
            "frequency": "three times daily",
            "dose": "1 drops",
        },
    ),
    (
        "ciprofloxacin otic 0.2% ear drops",
        {"name": "ciprofloxacin", "route": "otic", "strength": "0.2", "unit": "%", "form": "drops"},
    ),
    (
        "fentanyl 25 mcg/hr patch",
        {
            "name": "fentanyl",
            "strength": "25",
            "unit": "mcg/hr",
            "form": "patch",
            "route": "transdermal",
        },
    ),
    (
        "metoprolol succinate ER 50 mg tab",
        {
            "name": "metoprolol succinate",
            "strength": "50",
            "unit": "mg",
            "form": "tablet",
            "release": "ER",
        },
    ),
    (
        "Toprol XL 25mg daily",
        {"name": "Toprol", "strength": "25", "unit": "mg", "release": "XL", "frequency": "daily"},
    ),
    ("Cardizem CD 240mg", {"name": "Cardizem", "strength": "240", "unit": "mg", "release": "CD"}),
    (
        "aspirin 81 mg EC daily",
        {"name": "aspirin", "strength": "81", "unit": "mg", "release": "EC", "frequency": "daily"},
    ),
    (
        "Depakote delayed-release 500 mg bid",
        {
            "name": "Depakote",
            "release": "DR",
            "strength": "500",
            "unit": "mg",
            "frequency": "twice daily",
        },
    ),
    (
        "Bactrim DS 1 tab bid x 7 days",
        {
            "name": "Bactrim",
            "modifier": "double strength",
            "dose": "1 tablet",
            "form": "tablet",
            "frequency": "twice daily",
            "sig": "x 7 days",
        },
    ),
    (
        "nitroglycerin 0.4 mg SL prn chest pain",
        {
            "name": "nitroglycerin",
            "strength": "0.4",
            "unit": "mg",
            "route": "sublingual",
            "as_needed": True,
            "sig": "chest pain",
        },
    ),
    (
        "1% hydrocortisone cream",
        {
            "name": "hydrocortisone",
            "strength": "1",
            "unit": "%",
            "form": "cream",
            "route": "topical",
        },
    ),
    (
        "Vitamin D3 1000 IU daily",
        {"name": "Vitamin D3", "strength": "1000", "unit": "units", "frequency": "daily"},
    ),
    (
        "insulin glargine 10 units SC qhs",
        {
            "name": "insulin glargine",
            "strength": "10",
            "unit": "units",
            "route": "subcutaneous",
            "frequency": "at bedtime",
        },
    ),
    (
        "oxycodone 5 mg every 4-6 hours as needed for pain",
        {
            "name": "oxycodone",
            "strength": "5",
            "unit": "mg",
            "frequency": "every 4-6 hours",
            "as_needed": True,
            "sig": "for pain",
        },
    ),
    ("KCl 20 mEq ER", {"name": "KCl", "strength": "20", "unit": "mEq", "release": "ER"}),
    (
        "metformin 500 mg od",
        {"name": "metformin", "strength": "500", "unit": "mg", "frequency": "daily"},
    ),
    (
        "albuterol HFA 2 puffs q4h prn",
        {
            "name": "albuterol",
            "form": "inhaler",
            "route": "inhaled",
            "dose": "2 puffs",
            "frequency": "every 4 hours",
            "as_needed": True,
        },
    ),
    (
        "fluticasone nasal spray 50 mcg",
        {"name": "fluticasone", "route": "nasal", "form": "spray", "strength": "50", "unit": "mcg"},
    ),
    ("miconazole oral gel", {"name": "miconazole", "form": "gel", "route": "oral"}),
    (
        "Metrogel-Vaginal 0.75% 1 applicator pv qhs",
        {
            "name": "Metrogel-Vaginal",
            "strength": "0.75",
            "unit": "%",
            "dose": "1 applicator",
            "route": "vaginal",
            "frequency": "at bedtime",
        },
    ),
    (
        "amoxicillin-clavulanate 875-125 mg BID",
        {
            "name": "amoxicillin-clavulanate",
            "strength": "875-125",
            "unit": "mg",
            "frequency": "twice daily",
        },
    ),
    (
        "levothyroxine 88 mcg qam",
        {"name": "levothyroxine", "strength": "88", "unit": "mcg", "frequency": "every morning"},
    ),
    (
        "ZOLOFT® 100MG TABLETS",
        {"name": "ZOLOFT", "strength": "100", "unit": "mg", "form": "tablet"},
    ),
    (
        "enoxaparin 40 mg/0.4 mL subq daily",
        {
            "name": "enoxaparin",
            "strength": "40",
            "unit": "mg/0.4",
            "route": "subcutaneous",
            "frequency": "daily",
        },
    ),
    ("St. John's Wort 300 mg", {"name": "St John's Wort", "strength": "300", "unit": "mg"}),
    (
        "prednisone 10 mg take 2 tabs daily",
        {
            "name": "prednisone",
            "strength": "10",
            "unit": "mg",
            "dose": "2 tablet",
            "form": "tablet",
            "frequency": "daily",
            "sig": "take",
        },
    ),
]

_EMPTY = {
    "strength": None,
    "unit": None,
    "form": None,
    "route": None,
    "frequency": None,
    "as_needed": False,
    "release": None,
    "dose": None,
    "modifier": None,
    "sig": None,
}


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_medication_strings_parse_into_their_fields(text: str, expected: dict[str, Any]) -> None:
    parsed = parse_medication(text)
    got = parsed.as_dict()
    names = expected.pop("names", (expected["name"],))
    assert parsed.names == names
    assert got["text"] == text
    assert {k: got[k] for k in ("name", *_EMPTY)} == {
        "name": expected["name"],
        **_EMPTY,
        **expected,
    }


@given(st.text(max_size=200))
def test_any_string_parses_without_raising_and_keeps_its_text(text: str) -> None:
    parsed = parse_medication(text)
    assert parsed.text == text.strip()
    assert all(name == name.strip() and name for name in parsed.names)


def test_a_number_with_a_thousands_separator_is_one_strength() -> None:
    parsed = parse_medication("Vitamin D 50,000 units weekly")
    assert (parsed.strength, parsed.unit, parsed.sig) == ("50,000", "units", None)
