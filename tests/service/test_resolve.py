"""Name resolution: real drugs are never read as another drug; typos only with a clear margin."""

from __future__ import annotations

import pytest

from pharmacy_service.clinical import Screener
from pharmacy_service.clinical.resolve import max_typo_edits
from pharmacy_service.clinical.screening import MAX_TYPO_SEARCHES

# Real drugs that an earlier version "corrected" into a neighbouring formulary drug (etodolac
# was read as ketorolac, and etodolac + aspirin reported as contraindicated).
REAL_DRUGS = [
    "etodolac",
    "fluvastatin",
    "pitavastatin",
    "fosinopril",
    "felodipine",
    "digitoxin",
    "protriptyline",
    "liothyronine",
    "loxapine",
    "dexlansoprazole",
    "nabumetone",
    "oxaprozin",
    "trandolapril",
    "nisoldipine",
    "perphenazine",
    "trimipramine",
]


@pytest.mark.parametrize("name", REAL_DRUGS)
def test_a_real_drug_is_itself_covered_or_reported_never_another_drug(
    screener: Screener, name: str
) -> None:
    found = screener.resolver.resolve(name)
    assert found is not None
    assert found.method != "typo"
    assert (found.generics, found.not_covered) in (((name,), ()), ((), (name,)))


def test_a_drug_outside_the_formulary_is_recognised_not_covered(screener: Screener) -> None:
    covered = set(screener.knowledge.drugs)
    outside = [n for n in REAL_DRUGS if n not in covered]
    assert outside, "the list must keep some drugs the formulary does not cover"
    result = screener.screen([f"{outside[0]} 10 mg daily", "aspirin 81"])
    assert result.not_covered == [{"input": f"{outside[0]} 10 mg daily", "name": outside[0]}]
    assert result.medications_normalized == ["aspirin"]
    assert result.findings == []


@pytest.mark.parametrize(
    ("written", "generics", "method"),
    [
        ("Coumadin", ("warfarin",), "brand"),
        ("metoprolol succinate", ("metoprolol",), "salt"),
        ("lithium carbonate", ("lithium",), "salt"),
        ("potassium chloride", ("potassium chloride",), "generic"),
        ("hydrocodone/APAP", ("hydrocodone", "acetaminophen"), "combination"),
        ("lisinopril-hctz", ("lisinopril", "hydrochlorothiazide"), "combination"),
        ("tylenol with codeine #3", ("acetaminophen", "codeine"), None),
        ("Norco", ("hydrocodone", "acetaminophen"), "product"),
        ("marevan", ("warfarin",), "lexicon"),  # an international brand only the lexicon knows
        ("baby aspirin", ("aspirin",), None),
    ],
)
def test_names_as_written_resolve_to_their_drugs(
    screener: Screener, written: str, generics: tuple[str, ...], method: str | None
) -> None:
    found = screener.resolver.resolve(written)
    assert found is not None
    assert set(found.generics) == set(generics)
    if method is not None:
        assert found.method == method


@pytest.mark.parametrize(
    ("typo", "generic"),
    [
        ("warfarn", "warfarin"),
        ("asprin", "aspirin"),
        ("simvastatn", "simvastatin"),
        ("lisinoprel", "lisinopril"),
        ("clopidogral", "clopidogrel"),
        ("ibuprofin", "ibuprofen"),
        ("predisone", "prednisone"),
    ],
)
def test_a_clear_misspelling_is_read_and_reported(
    screener: Screener, typo: str, generic: str
) -> None:
    found = screener.resolver.resolve(typo)
    assert found is not None
    assert (found.method, found.generics) == ("typo", (generic,))
    assert found.read_as is not None
    assert 0 < found.confidence < 1
    result = screener.screen([typo])
    assert result.corrections[0]["input"] == typo


def test_short_names_are_never_corrected(screener: Screener) -> None:
    assert max_typo_edits(4) == 0
    assert screener.resolver.resolve("zocr") is None


@pytest.mark.parametrize(
    ("written", "neighbours"),
    [
        ("losinopril", ("lisinopril", "fosinopril")),
        ("pansoprazole", ("pantoprazole", "lansoprazole")),
        ("tizatidine", ("tizanidine", "nizatidine")),
        ("nimedipine", ("nifedipine", "nimodipine")),
        ("oiazepam", ("diazepam", "oxazepam")),
    ],
)
def test_a_name_as_close_to_two_drugs_is_not_guessed(
    screener: Screener, written: str, neighbours: tuple[str, str]
) -> None:
    for neighbour in neighbours:  # one edit from each, so no margin between them
        assert screener.resolver.resolve(neighbour) is not None
    assert screener.resolver.resolve(written) is None
    assert screener.screen([written]).unrecognized == [written]


def test_typo_searches_per_row_are_bounded(screener: Screener) -> None:
    long_names = sorted(g for g in screener.knowledge.drugs if len(g) >= 9 and " " not in g)
    typos = [name[:4] + name[5:] for name in long_names]  # one letter dropped
    readable = [t for t in typos if screener.resolver.resolve(t) is not None][
        : MAX_TYPO_SEARCHES + 5
    ]
    assert len(readable) == MAX_TYPO_SEARCHES + 5
    fresh = Screener(screener.knowledge)
    result = fresh.screen(readable)
    assert len(result.corrections) == MAX_TYPO_SEARCHES
    assert result.unrecognized == readable[MAX_TYPO_SEARCHES:]


def test_an_ambiguous_name_is_screened_for_what_its_candidates_share(screener: Screener) -> None:
    result = screener.screen(["isosorbide", "sildenafil"])
    (entry, _) = result.entries
    assert entry.resolutions[0].candidates == ("isosorbide mononitrate", "isosorbide dinitrate")
    assert [f.rule.severity for f in result.findings] == ["contraindicated"]


# -- found by a second review: each of these gave a wrong answer before ---------------------------


@pytest.mark.parametrize(
    ("medications", "pair", "severity"),
    [
        (["sertraline/phenelzine"], ("sertraline", "phenelzine"), "contraindicated"),
        (["warfarin and aspirin"], ("warfarin", "aspirin"), "major"),
        (["Tylenol 3", "Xanax 0.5"], ("codeine", "alprazolam"), "major"),
        (["Symtuza", "simvastatin 40"], ("darunavir", "simvastatin"), "contraindicated"),
        (
            ["lisdexamfetamine dimesylate", "phenelzine"],
            ("lisdexamfetamine", "phenelzine"),
            "contraindicated",
        ),
    ],
)
def test_drugs_written_together_or_as_one_name_are_screened(
    screener: Screener, medications: list[str], pair: tuple[str, str], severity: str
) -> None:
    result = screener.screen(medications)
    found = {frozenset((f.drug_a, f.drug_b)): f.rule.severity for f in result.findings}
    assert found.get(frozenset(pair)) == severity, found


def test_the_components_of_one_product_are_not_screened_against_each_other(
    screener: Screener,
) -> None:
    assert screener.screen(["Paxlovid"]).findings == []
    assert screener.screen(["Suboxone 8/2"]).findings == []


@pytest.mark.parametrize("product", ["Advil Cold and Sinus", "Motrin PM", "Tylenol Cold"])
def test_a_brand_with_more_ingredients_is_not_read_as_the_brand_alone(
    screener: Screener, product: str
) -> None:
    result = screener.screen([product, "phenelzine"])
    assert result.unrecognized == [product]


def test_a_comment_in_parentheses_is_not_a_drug_the_patient_takes(screener: Screener) -> None:
    result = screener.screen(["Plavix 75 mg (aspirin allergy)", "warfarin 5 mg"])
    assert result.medications_normalized == ["clopidogrel", "warfarin"]


def test_a_salt_of_an_ambiguous_name_is_its_own_drug(screener: Screener) -> None:
    result = screener.screen(["magnesium sulfate"])
    assert result.medications_normalized == []
    assert result.not_covered == [{"input": "magnesium sulfate", "name": "magnesium sulfate"}]


def test_grounding_reads_the_longest_name_and_hyphenated_names(screener: Screener) -> None:
    from pharmacy_service.clinical.notes import grounding_problem

    imdur = screener.screen(["Imdur 30", "amlodipine"])
    note = "Take isosorbide mononitrate and amlodipine as prescribed."
    assert grounding_problem(note, None, imdur, screener.resolver) is None
    bleeding = screener.screen(["warfarin", "ibuprofen"])
    invented = "Warfarin with ibuprofen raises bleeding; use oxycodone-acetaminophen instead."
    assert grounding_problem(invented, None, bleeding, screener.resolver) is not None


# A route or dose-form word chooses the drug's route-specific product when the formulary has one
# (the string as written, the entry's screened and local drugs, the route).
ROUTE_SPECIFIC = [
    (
        "selegiline transdermal 6 mg/24 hr patch",
        ("selegiline transdermal",),
        (),
        "transdermal",
    ),
    ("selegiline 9 mg/24hr patch daily", ("selegiline transdermal",), (), "transdermal"),
    ("transdermal selegiline 6 mg", ("selegiline transdermal",), (), "transdermal"),
    ("selegilne 6 mg/24 hr patch", ("selegiline transdermal",), (), "transdermal"),
    ("selegiline 5 mg po bid", ("selegiline",), (), "oral"),
    ("selegiline 5 mg", ("selegiline",), (), None),
    ("Zelapar 1.25 mg ODT", ("selegiline",), (), None),
    ("diclofenac 1.3% patch bid", (), ("diclofenac",), "topical"),
    ("diclofenac 75 mg DR bid", ("diclofenac",), (), None),
    ("ciprofloxacin 0.3% ophthalmic soln 1 gtt OU q4h", (), ("ciprofloxacin",), "ophthalmic"),
    ("cyclosporine 0.05% ophthalmic emulsion 1 gtt OU bid", (), ("cyclosporine",), "ophthalmic"),
    ("cyclosporine 100 mg po bid", ("cyclosporine",), (), "oral"),
    ("clindamycin 2% vaginal cream qhs", (), ("clindamycin",), "vaginal"),
    ("tacrolimus 0.1% ointment bid", (), ("tacrolimus",), "topical"),
    ("tacrolimus 1 mg po bid", ("tacrolimus",), (), "oral"),
    # the label says the interaction applies by that route: still screened
    ("timolol 0.5% eye drops 1 gtt OU bid", ("timolol",), (), "ophthalmic"),
    # no route-specific product: the drug itself, by the route written
    ("fentanyl 25 mcg/hr patch", ("fentanyl",), (), "transdermal"),
    ("estradiol 0.05 mg/24 hr patch", ("estradiol",), (), "transdermal"),
]


@pytest.mark.parametrize(
    ("text", "screened", "local", "route"), ROUTE_SPECIFIC, ids=[c[0] for c in ROUTE_SPECIFIC]
)
def test_a_route_or_form_word_chooses_the_route_specific_product(
    screener: Screener,
    text: str,
    screened: tuple[str, ...],
    local: tuple[str, ...],
    route: str | None,
) -> None:
    (entry,) = screener.screen([text]).entries
    assert (entry.screened, entry.local, entry.route) == (screened, local, route)


def test_a_misspelling_read_as_a_route_specific_product_is_reported_as_a_correction(
    screener: Screener,
) -> None:
    result = screener.screen(["selegilne 6 mg/24 hr patch"])
    (entry,) = result.entries
    assert entry.screened == ("selegiline transdermal",)
    assert [c["input"] for c in result.corrections] == ["selegilne"]
    assert result.corrections[0]["generics"] == ["selegiline transdermal"]


def test_transdermal_selegiline_written_out_gets_the_patch_contraindications(
    screener: Screener,
) -> None:
    patch = screener.screen(["selegiline 6 mg/24 hr patch", "sertraline 50 mg daily"])
    assert [(f.drug_a, f.drug_b, f.rule.severity) for f in patch.findings] == [
        ("selegiline transdermal", "sertraline", "contraindicated")
    ]
    (read,) = patch.entries[0].resolutions
    assert (read.name, read.read_as) == ("selegiline", "selegiline transdermal")
    oral = screener.screen(["selegiline 5 mg po bid", "sertraline 50 mg daily"])
    assert [f.rule.severity for f in oral.findings] == ["moderate"]
