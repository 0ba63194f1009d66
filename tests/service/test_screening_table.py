"""The screener against a table of cases: names in, normalised drugs and findings out."""

from __future__ import annotations

import pytest

from pharmacy_service.model import Screener

Pairs = dict[tuple[str, str], str]

# (id, medications, normalised, unrecognised, {(drug_a, drug_b): severity}, highest)
CASES: list[tuple[str, list[str], list[str], list[str], Pairs, str]] = [
    (
        "no interaction",
        ["metformin", "atorvastatin"],
        ["metformin", "atorvastatin"],
        [],
        {},
        "none",
    ),
    ("single drug", ["lisinopril"], ["lisinopril"], [], {}, "none"),
    ("empty list", [], [], [], {}, "none"),
    ("blank names are ignored", ["  ", "warfarin", ""], ["warfarin"], [], {}, "none"),
    (
        "brand names",
        ["Coumadin", "Advil"],
        ["warfarin", "ibuprofen"],
        [],
        {("warfarin", "ibuprofen"): "major"},
        "major",
    ),
    (
        "case and spacing",
        ["  WARFARIN ", "Aspirin"],
        ["warfarin", "aspirin"],
        [],
        {("warfarin", "aspirin"): "major"},
        "major",
    ),
    (
        "brand and generic counted once",
        ["Zocor", "simvastatin", "clarithromycin"],
        ["simvastatin", "clarithromycin"],
        [],
        {("simvastatin", "clarithromycin"): "contraindicated"},
        "contraindicated",
    ),
    ("duplicates counted once", ["warfarin", "warfarin", "Warfarin"], ["warfarin"], [], {}, "none"),
    ("unknown name kept", ["warfarin", "xyzzyplex"], ["warfarin"], ["xyzzyplex"], {}, "none"),
    ("only unknown names", ["foo", "barbaz"], [], ["foo", "barbaz"], {}, "none"),
    ("unknown duplicates listed once", ["qwertyx", "qwertyx"], [], ["qwertyx"], {}, "none"),
    (
        "salt form",
        ["losartan potassium", "spironolactone"],
        ["losartan", "spironolactone"],
        [],
        {("losartan", "spironolactone"): "major"},
        "major",
    ),
    (
        "dose and form words",
        ["ibuprofen 400 mg tablet", "lithium carbonate 300mg"],
        ["ibuprofen", "lithium"],
        [],
        {("ibuprofen", "lithium"): "major"},
        "major",
    ),
    (
        "hydrochloride suffix",
        ["sertraline hydrochloride", "Ultram"],
        ["sertraline", "tramadol"],
        [],
        {("sertraline", "tramadol"): "major"},
        "major",
    ),
    (
        "typo corrected",
        ["warfarn", "asprin"],
        ["warfarin", "aspirin"],
        [],
        {("warfarin", "aspirin"): "major"},
        "major",
    ),
    (
        "typo in a brand",
        ["Zoloff", "Nardil"],
        ["sertraline", "phenelzine"],
        [],
        {("sertraline", "phenelzine"): "contraindicated"},
        "contraindicated",
    ),
    ("too far from anything", ["wrfrn"], [], ["wrfrn"], {}, "none"),
    (
        "warfarin + amiodarone",
        ["warfarin", "Pacerone"],
        ["warfarin", "amiodarone"],
        [],
        {("warfarin", "amiodarone"): "major"},
        "major",
    ),
    (
        "warfarin + fluconazole",
        ["Jantoven", "Diflucan"],
        ["warfarin", "fluconazole"],
        [],
        {("warfarin", "fluconazole"): "major"},
        "major",
    ),
    (
        "warfarin + co-trimoxazole",
        ["warfarin", "Bactrim DS"],
        ["warfarin", "sulfamethoxazole-trimethoprim"],
        [],
        {("warfarin", "sulfamethoxazole-trimethoprim"): "major"},
        "major",
    ),
    (
        "DOAC + NSAID class rule",
        ["Eliquis", "naproxen"],
        ["apixaban", "naproxen"],
        [],
        {("apixaban", "naproxen"): "major"},
        "major",
    ),
    (
        "DOAC + strong CYP3A4 inhibitor",
        ["rivaroxaban", "ketoconazole"],
        ["rivaroxaban", "ketoconazole"],
        [],
        {("rivaroxaban", "ketoconazole"): "major"},
        "major",
    ),
    (
        "sildenafil + nitrate",
        ["Viagra", "Imdur"],
        ["sildenafil", "isosorbide mononitrate"],
        [],
        {("sildenafil", "isosorbide mononitrate"): "contraindicated"},
        "contraindicated",
    ),
    (
        "tadalafil + nitroglycerin",
        ["Cialis", "Nitrostat"],
        ["tadalafil", "nitroglycerin"],
        [],
        {("tadalafil", "nitroglycerin"): "contraindicated"},
        "contraindicated",
    ),
    (
        "SSRI + linezolid",
        ["Lexapro", "Zyvox"],
        ["escitalopram", "linezolid"],
        [],
        {("escitalopram", "linezolid"): "major"},
        "major",
    ),
    (
        "two serotonergic drugs",
        ["trazodone", "sumatriptan"],
        ["trazodone", "sumatriptan"],
        [],
        {("trazodone", "sumatriptan"): "moderate"},
        "moderate",
    ),
    (
        "MAOI + decongestant",
        ["Parnate", "Sudafed"],
        ["tranylcypromine", "pseudoephedrine"],
        [],
        {("tranylcypromine", "pseudoephedrine"): "contraindicated"},
        "contraindicated",
    ),
    (
        "lisinopril + potassium",
        ["Zestril", "K-Dur"],
        ["lisinopril", "potassium chloride"],
        [],
        {("lisinopril", "potassium chloride"): "major"},
        "major",
    ),
    (
        "potassium chloride is a drug, not a salt",
        ["potassium chloride"],
        ["potassium chloride"],
        [],
        {},
        "none",
    ),
    (
        "methotrexate + trimethoprim",
        ["Trexall", "trimethoprim"],
        ["methotrexate", "trimethoprim"],
        [],
        {("methotrexate", "trimethoprim"): "major"},
        "major",
    ),
    (
        "digoxin + verapamil",
        ["Lanoxin", "Calan"],
        ["digoxin", "verapamil"],
        [],
        {("digoxin", "verapamil"): "major"},
        "major",
    ),
    (
        "clopidogrel + esomeprazole",
        ["Plavix", "Nexium"],
        ["clopidogrel", "esomeprazole"],
        [],
        {("clopidogrel", "esomeprazole"): "major"},
        "major",
    ),
    (
        "clopidogrel + pantoprazole is fine",
        ["Plavix", "Protonix"],
        ["clopidogrel", "pantoprazole"],
        [],
        {},
        "none",
    ),
    (
        "lithium + thiazide",
        ["Lithobid", "HCTZ"],
        ["lithium", "hydrochlorothiazide"],
        [],
        {("lithium", "hydrochlorothiazide"): "major"},
        "major",
    ),
    (
        "theophylline + ciprofloxacin",
        ["Theo-24", "Cipro"],
        ["theophylline", "ciprofloxacin"],
        [],
        {("theophylline", "ciprofloxacin"): "major"},
        "major",
    ),
    (
        "QT pair",
        ["haloperidol", "Zithromax"],
        ["haloperidol", "azithromycin"],
        [],
        {("haloperidol", "azithromycin"): "major"},
        "major",
    ),
    (
        "tizanidine + ciprofloxacin",
        ["Zanaflex", "ciprofloxacin"],
        ["tizanidine", "ciprofloxacin"],
        [],
        {("tizanidine", "ciprofloxacin"): "contraindicated"},
        "contraindicated",
    ),
    (
        "opioid + benzodiazepine",
        ["OxyContin", "Xanax"],
        ["oxycodone", "alprazolam"],
        [],
        {("oxycodone", "alprazolam"): "major"},
        "major",
    ),
    (
        "levothyroxine + calcium is moderate",
        ["Synthroid", "Tums"],
        ["levothyroxine", "calcium carbonate"],
        [],
        {("levothyroxine", "calcium carbonate"): "moderate"},
        "moderate",
    ),
    (
        "minor only",
        ["warfarin", "Tylenol"],
        ["warfarin", "acetaminophen"],
        [],
        {("warfarin", "acetaminophen"): "minor"},
        "minor",
    ),
    (
        "three drugs, three pairs",
        ["warfarin", "aspirin", "ibuprofen"],
        ["warfarin", "aspirin", "ibuprofen"],
        [],
        {
            ("warfarin", "aspirin"): "major",
            ("warfarin", "ibuprofen"): "major",
            ("aspirin", "ibuprofen"): "moderate",
        },
        "major",
    ),
    (
        "serotonin cluster",
        ["Zoloft", "Nardil", "tramadol"],
        ["sertraline", "phenelzine", "tramadol"],
        [],
        {
            ("sertraline", "phenelzine"): "contraindicated",
            ("phenelzine", "tramadol"): "contraindicated",
            ("sertraline", "tramadol"): "major",
        },
        "contraindicated",
    ),
    (
        "comma-separated names split by the pipeline, kept whole here",
        ["warfarin, ibuprofen"],
        [],
        ["warfarin, ibuprofen"],
        {},
        "none",
    ),
]

THIRTY = [
    "metformin",
    "Lipitor",
    "lisinopril",
    "amlodipine",
    "Toprol-XL",
    "warfarin",
    "omeprazole",
    "levothyroxine",
    "gabapentin",
    "sertraline",
    "furosemide",
    "potassium chloride",
    "allopurinol",
    "Tylenol",
    "ibuprofen",
    "prednisone",
    "albuterol",
    "tamsulosin",
    "finasteride",
    "Plavix",
    "digoxin",
    "spironolactone",
    "Lantus",
    "glipizide",
    "Flomax",
    "donepezil",
    "mirtazapine",
    "trazodone",
    "calcium carbonate",
    "ferrous sulfate",
]


@pytest.mark.parametrize(
    ("medications", "normalized", "unrecognized", "pairs", "highest"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_screening_table(
    screener: Screener,
    medications: list[str],
    normalized: list[str],
    unrecognized: list[str],
    pairs: Pairs,
    highest: str,
) -> None:
    result = screener.screen(medications)
    assert result.medications_normalized == normalized
    assert result.unrecognized == unrecognized
    assert {(f.drug_a, f.drug_b): f.rule.severity for f in result.findings} == pairs
    assert result.highest_severity == highest


def test_the_table_is_large_enough() -> None:
    assert len(CASES) + 1 >= 40


def test_thirty_medications_in_one_row(screener: Screener) -> None:
    result = screener.screen(THIRTY)
    # albuterol, finasteride and donepezil are not in the formulary: reported, not dropped.
    assert result.unrecognized == ["albuterol", "finasteride", "donepezil"]
    # Flomax is tamsulosin again: counted once.
    assert len(result.medications_normalized) == len(THIRTY) - 3 - 1
    found = {frozenset((f.drug_a, f.drug_b)): f.rule.severity for f in result.findings}
    for pair, severity in {
        ("lisinopril", "potassium chloride"): "major",
        ("lisinopril", "spironolactone"): "major",
        ("warfarin", "ibuprofen"): "major",
        ("warfarin", "clopidogrel"): "major",
        ("clopidogrel", "omeprazole"): "major",
        ("levothyroxine", "calcium carbonate"): "moderate",
        ("furosemide", "digoxin"): "moderate",
    }.items():
        assert found.get(frozenset(pair)) == severity, pair
    assert result.highest_severity == "major"
    # Sorted most severe first.
    ranks = ["contraindicated", "major", "moderate", "minor"]
    severities = [ranks.index(f.rule.severity) for f in result.findings]
    assert severities == sorted(severities)
