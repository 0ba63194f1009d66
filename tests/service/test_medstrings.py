"""The medication-string parser against strings as pharmacy and clinic systems write them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
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
            "dose_count": 1.0,
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
            "dose_count": 1.0,
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
            "strength_per": "1 hr",
            "strength_type": "rate",
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
            "dose_count": 1.0,
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
            "dose_count": 2.0,
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
            "dose_count": 1.0,
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
            "unit": "mg/0.4 mL",
            "strength_per": "0.4 mL",
            "strength_type": "concentration",
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
            "dose_count": 2.0,
            "form": "tablet",
            "frequency": "daily",
            "sig": "take",
        },
    ),
    # concentrations and rates: the strength per a quantity
    (
        "amoxicillin 250 mg/5 mL susp",
        {
            "name": "amoxicillin",
            "strength": "250",
            "unit": "mg/5 mL",
            "strength_per": "5 mL",
            "strength_type": "concentration",
            "form": "suspension",
        },
    ),
    (
        "cefdinir 125mg/5ml",
        {
            "name": "cefdinir",
            "strength": "125",
            "unit": "mg/5 mL",
            "strength_per": "5 mL",
            "strength_type": "concentration",
        },
    ),
    (
        "amoxicillin 400 mg / 5 mL bid",
        {
            "name": "amoxicillin",
            "strength": "400",
            "unit": "mg/5 mL",
            "strength_per": "5 mL",
            "strength_type": "concentration",
            "frequency": "twice daily",
        },
    ),
    (
        "acetaminophen 160 mg per 5 mL",
        {
            "name": "acetaminophen",
            "strength": "160",
            "unit": "mg/5 mL",
            "strength_per": "5 mL",
            "strength_type": "concentration",
        },
    ),
    (
        "insulin lispro 100 units/mL",
        {
            "name": "insulin lispro",
            "strength": "100",
            "unit": "units/mL",
            "strength_per": "1 mL",
            "strength_type": "concentration",
        },
    ),
    (
        "selegiline transdermal 6 mg/24 hr patch daily",
        {
            "name": "selegiline",
            "strength": "6",
            "unit": "mg/24 hr",
            "strength_per": "24 hr",
            "strength_type": "rate",
            "form": "patch",
            "route": "transdermal",
            "frequency": "daily",
        },
    ),
    (
        "clonidine 0.1mg/24hr patch weekly",
        {
            "name": "clonidine",
            "strength": "0.1",
            "unit": "mg/24 hr",
            "strength_per": "24 hr",
            "strength_type": "rate",
            "form": "patch",
            "route": "transdermal",
            "frequency": "weekly",
        },
    ),
    (
        "nitroglycerin 0.1 mg/hr patch",
        {
            "name": "nitroglycerin",
            "strength": "0.1",
            "unit": "mg/hr",
            "strength_per": "1 hr",
            "strength_type": "rate",
            "form": "patch",
            "route": "transdermal",
        },
    ),
    (
        "irinotecan 125 mg/m2 IV weekly",
        {
            "name": "irinotecan",
            "strength": "125",
            "unit": "mg/m2",
            "strength_per": "1 m2",
            "strength_type": "per body surface area",
            "route": "intravenous",
            "frequency": "weekly",
        },
    ),
    # Latin and fractional counts; "iv" is a count only before a dose form
    (
        "lisinopril 10 mg i po qd",
        {
            "name": "lisinopril",
            "strength": "10",
            "unit": "mg",
            "dose": "1",
            "dose_count": 1.0,
            "route": "oral",
            "frequency": "daily",
        },
    ),
    (
        "metoprolol 25 mg ii tabs bid",
        {
            "name": "metoprolol",
            "strength": "25",
            "unit": "mg",
            "dose": "2 tablet",
            "dose_count": 2.0,
            "form": "tablet",
            "frequency": "twice daily",
        },
    ),
    (
        "docusate 100 mg iii caps qhs",
        {
            "name": "docusate",
            "strength": "100",
            "unit": "mg",
            "dose": "3 capsule",
            "dose_count": 3.0,
            "form": "capsule",
            "frequency": "at bedtime",
        },
    ),
    (
        "prednisone 5 mg iv tabs po daily",
        {
            "name": "prednisone",
            "strength": "5",
            "unit": "mg",
            "dose": "4 tablet",
            "dose_count": 4.0,
            "form": "tablet",
            "route": "oral",
            "frequency": "daily",
        },
    ),
    (
        "vancomycin 1 g iv q12h",
        {
            "name": "vancomycin",
            "strength": "1",
            "unit": "g",
            "route": "intravenous",
            "frequency": "every 12 hours",
        },
    ),
    (
        "ondansetron 4 mg IV",
        {"name": "ondansetron", "strength": "4", "unit": "mg", "route": "intravenous"},
    ),
    (
        "metoprolol 25 mg 1/2 tab po bid",
        {
            "name": "metoprolol",
            "strength": "25",
            "unit": "mg",
            "dose": "1/2 tablet",
            "dose_count": 0.5,
            "form": "tablet",
            "route": "oral",
            "frequency": "twice daily",
        },
    ),
    (
        "warfarin 5 mg ½ tab",
        {
            "name": "warfarin",
            "strength": "5",
            "unit": "mg",
            "dose": "1/2 tablet",
            "dose_count": 0.5,
            "form": "tablet",
        },
    ),
    (
        "warfarin 5 mg 1½ tabs qpm",
        {
            "name": "warfarin",
            "strength": "5",
            "unit": "mg",
            "dose": "1 1/2 tablet",
            "dose_count": 1.5,
            "form": "tablet",
            "frequency": "every evening",
        },
    ),
    (
        "levothyroxine 50 mcg i ss tab qam",
        {
            "name": "levothyroxine",
            "strength": "50",
            "unit": "mcg",
            "dose": "1 1/2 tablet",
            "dose_count": 1.5,
            "form": "tablet",
            "frequency": "every morning",
        },
    ),
    (
        "amlodipine 10 mg ss tab daily",
        {
            "name": "amlodipine",
            "strength": "10",
            "unit": "mg",
            "dose": "1/2 tablet",
            "dose_count": 0.5,
            "form": "tablet",
            "frequency": "daily",
        },
    ),
    (
        "Bactrim SS 1 tab po bid",
        {
            "name": "Bactrim",
            "modifier": "single strength",
            "dose": "1 tablet",
            "dose_count": 1.0,
            "form": "tablet",
            "route": "oral",
            "frequency": "twice daily",
        },
    ),
    (
        "tramadol 50 mg i-ii tabs q6h prn",
        {
            "name": "tramadol",
            "strength": "50",
            "unit": "mg",
            "dose": "1-2 tablet",
            "form": "tablet",
            "frequency": "every 6 hours",
            "as_needed": True,
        },
    ),
    (
        "oxycodone 1-2 tabs po",
        {"name": "oxycodone", "dose": "1-2 tablet", "form": "tablet", "route": "oral"},
    ),
    ("Norco 5/325 tab", {"name": "Norco", "strength": "5/325", "form": "tablet"}),
    ("Factor II", {"name": "Factor II"}),
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
    "strength_per": None,
    "strength_type": None,
    "dose_count": None,
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


@settings(deadline=None)  # correctness, not speed: bench/screening.py measures that
@given(st.text(max_size=200))
def test_any_string_parses_without_raising_and_keeps_its_text(text: str) -> None:
    parsed = parse_medication(text)
    assert parsed.text == text.strip()
    assert all(name == name.strip() and name for name in parsed.names)


def test_a_number_with_a_thousands_separator_is_one_strength() -> None:
    parsed = parse_medication("Vitamin D 50,000 units weekly")
    assert (parsed.strength, parsed.unit, parsed.sig) == ("50,000", "units", None)


# The grammar of a sig, generated: a name, a strength (maybe per a quantity), a count (arabic,
# fraction or Latin numeral) with a dose form, a route and a frequency, in the order written.
_AMOUNT_UNITS = {"mg": "mg", "mcg": "mcg", "g": "g", "units": "units", "mEq": "mEq"}
_PER_WRITTEN = {
    "mL": ("mL", "concentration"),
    "ml": ("mL", "concentration"),
    "hr": ("hr", "rate"),
    "h": ("hr", "rate"),
    "hours": ("hr", "rate"),
    "day": ("day", "rate"),
    "kg": ("kg", "per body weight"),
}
_COUNTS = {
    "1": ("1", 1.0),
    "2": ("2", 2.0),
    "1/2": ("1/2", 0.5),
    "½": ("1/2", 0.5),
    "1 1/2": ("1 1/2", 1.5),
    "i": ("1", 1.0),
    "ii": ("2", 2.0),
    "iii": ("3", 3.0),
    "iv": ("4", 4.0),
    "i ss": ("1 1/2", 1.5),
}
_COUNT_FORMS = {"tab": "tablet", "tabs": "tablet", "cap": "capsule", "caps": "capsule"}
_SIG_ROUTES = {"po": "oral", "PO": "oral", "sl": "sublingual", "IV": "intravenous"}
_SIG_FREQUENCIES = {
    "qd": "daily",
    "bid": "twice daily",
    "qhs": "at bedtime",
    "q8h": "every 8 hours",
}
_NAMES = ["warfarin", "amoxicillin", "Zoloft", "insulin glargine", "selegiline", "metoprolol"]


@st.composite
def _sigs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(_NAMES))
    value = draw(st.sampled_from(["5", "10", "2.5", "0.1", "250", "1,000"]))
    unit = draw(st.sampled_from(sorted(_AMOUNT_UNITS)))
    expected: dict[str, Any] = {"name": name, "strength": value, "unit": _AMOUNT_UNITS[unit]}
    words = [name, value + unit if draw(st.booleans()) else f"{value} {unit}"]
    if draw(st.booleans()):  # per a quantity: "/5 mL", "/hr", " per 24 hr"
        written = draw(st.sampled_from(sorted(_PER_WRITTEN)))
        shown, kind = _PER_WRITTEN[written]
        number = draw(st.sampled_from([None, "5", "24", "0.4"]))
        quantity = f"{number} {written}" if number else written
        joiner = draw(st.sampled_from(["/", " / ", " per "] if number else ["/", " per "]))
        if number and joiner == "/" and draw(st.booleans()):
            quantity = number + written  # "5ml", "24hr"
        words[-1] += joiner + quantity
        expected["unit"] += "/" + (f"{number} {shown}" if number else shown)
        expected["strength_per"] = f"{number or 1} {shown}"
        expected["strength_type"] = kind
    if draw(st.booleans()):
        count = draw(st.sampled_from(sorted(_COUNTS)))
        form = draw(st.sampled_from(sorted(_COUNT_FORMS)))
        words += [count, form]
        figures, number_of = _COUNTS[count]
        expected.update(
            dose=f"{figures} {_COUNT_FORMS[form]}", dose_count=number_of, form=_COUNT_FORMS[form]
        )
    if draw(st.booleans()):
        route = draw(st.sampled_from(sorted(_SIG_ROUTES)))
        words.append(route)
        expected["route"] = _SIG_ROUTES[route]
    if draw(st.booleans()):
        frequency = draw(st.sampled_from(sorted(_SIG_FREQUENCIES)))
        words.append(frequency)
        expected["frequency"] = _SIG_FREQUENCIES[frequency]
    return " ".join(words), expected


@settings(deadline=None)
@given(_sigs())
def test_generated_sigs_read_strength_per_quantity_and_counts(
    sig: tuple[str, dict[str, Any]],
) -> None:
    text, expected = sig
    got = parse_medication(text).as_dict()
    assert {k: got[k] for k in ("name", *_EMPTY)} == {**_EMPTY, **expected}, text


@pytest.mark.parametrize("numeral", ["i", "ii", "iii"])
@pytest.mark.parametrize("after", sorted({**_SIG_ROUTES, **_SIG_FREQUENCIES, "prn": None}))
def test_a_latin_numeral_before_a_route_or_frequency_is_a_count(numeral: str, after: str) -> None:
    parsed = parse_medication(f"lisinopril 10 mg {numeral} {after}")
    assert parsed.dose_count == _COUNTS[numeral][1]
    assert parsed.dose == _COUNTS[numeral][0]


@pytest.mark.parametrize(
    "after", ["", "q8h", "q12h", "daily", "bid", "over 30 min", "push", "po", "PO q8h prn"]
)
def test_iv_before_no_dose_form_is_the_route(after: str) -> None:
    # "iv po": intravenous or by mouth, not four tablets
    parsed = parse_medication(f"ondansetron 4 mg iv {after}".strip())
    assert (parsed.route, parsed.dose, parsed.dose_count) == ("intravenous", None, None)


@pytest.mark.parametrize(
    ("text", "name"),
    [("Factor II IV", "Factor II"), ("Vitamin D ii daily", "Vitamin D ii"), ("ii po bid", "ii")],
)
def test_a_latin_numeral_without_a_strength_or_dose_form_is_part_of_the_name(
    text: str, name: str
) -> None:
    parsed = parse_medication(text)
    assert (parsed.names[0], parsed.dose, parsed.dose_count) == (name, None, None)


def test_a_slash_between_two_amounts_is_not_a_concentration() -> None:
    # "5 mg / 325 mg": two ingredients' strengths, not mg per 325
    parsed = parse_medication("Norco 5 mg / 325 mg tab")
    assert (parsed.strength, parsed.unit, parsed.strength_per) == ("5", "mg", None)
    assert "325" in (parsed.sig or "")
