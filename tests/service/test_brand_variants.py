"""A brand with a variant word is never read as another product (issue #24, items 1 and 2).

The typo corrector once matched "Mucinex D" to Mucinex (dropping the pseudoephedrine that makes
it contraindicated with an MAOI), "Tylenol Cold" to Tylenol No. 3 (codeine the patient does not
take), "Bayer PM" to "bayer 73"; the leading-name rule read "Excedrin Tension Headache" as
Excedrin (aspirin it does not contain). The rule for names holds for corrections too: a string
that starts with a brand and carries words not known with it is reported, with the reason, and
never searched for a neighbour; a correction keeps every word of the product.
"""

from __future__ import annotations

import pytest

from pharmacy_service.clinical import Screener

OTC_BRANDS = [
    "Tylenol",
    "Advil",
    "Motrin",
    "Aleve",
    "Excedrin",
    "Bayer",
    "Mucinex",
    "Sudafed",
    "Claritin",
    "Zyrtec",
    "Allegra",
    "Benadryl",
    "Robitussin",
    "Theraflu",
    "NyQuil",
    "DayQuil",
    "Alka-Seltzer",
    "Vicks",
    "Dimetapp",
    "Triaminic",
    "Coricidin",
    "Delsym",
    "Pepcid",
    "Prilosec",
    "Zantac",
    "Nexium",
    "Tums",
    "Midol",
    "Unisom",
    "Dramamine",
    "Imodium",
    "Xyzal",
    "Flonase",
    "Nasacort",
    "Ecotrin",
    "Bufferin",
    "Anacin",
    "Tavist",
    "Chlor-Trimeton",
    "Contac",
    "Comtrex",
    "Sominex",
    "Prevacid",
    "Tagamet",
]
VARIANT_WORDS = [
    "PM",
    "DM",
    "D",
    "Cold",
    "Sinus",
    "Flu",
    "Allergy",
    "Congestion",
    "Plus",
    "Cough",
    "Nighttime",
    "Night",
    "Daytime",
    "Day",
    "Multi-Symptom",
    "Severe",
    "CF",
    "HBP",
    "Decongestant",
    "Tension",
    "Headache",
    "Dual",
    "Action",
    "Migraine",
    "Menstrual",
    "Sleep",
    "Complete",
    "Chest",
    "PE",
    "Back",
    "Body",
    "Fast",
    "Mucus",
    "Relief",
    "Sore",
    "Throat",
    "Fever",
    "Pain",
    "Aid",
]
VARIANT_PHRASES = ["Cold Sinus", "Tension Headache", "Dual Action", "Back Body", "Sore Throat"]


def _sweep() -> list[str]:
    return [
        f"{brand} {words}" for brand in OTC_BRANDS for words in [*VARIANT_WORDS, *VARIANT_PHRASES]
    ]


def test_no_brand_and_variant_word_is_read_as_another_product(screener: Screener) -> None:
    """Every brand x variant string is either a product the formulary or the lexicon knows by
    that whole name, or not recognised (with a reason): never a neighbour, never the brand
    alone. (Before the fix: 961 of these 1,936 strings were read as something else, 101 of
    them by a typo correction, the rest as the brand alone.)"""
    misread = []
    for text in _sweep():
        entry = screener.screen([text]).entries[0]
        if entry.status == "unrecognized":
            assert entry.reason, text
            continue
        if screener.resolver.exact_name(text) is None:
            misread.append((text, [(r.method, r.read_as) for r in entry.resolutions]))
    assert misread == []


@pytest.mark.parametrize(
    ("written", "neighbour"),
    [
        ("Tylenol Cold", "tylenol no 3"),
        ("Bayer PM", "bayer 73"),
        ("Excedrin Day", "excedrin pm"),
        ("Tylenol D", "tylenol 3"),
    ],
)
def test_a_correction_never_changes_a_word_of_the_product(
    screener: Screener, written: str, neighbour: str
) -> None:
    assert screener.resolver.resolve(neighbour) is not None  # the neighbour is a real name
    result = screener.screen([written])
    assert result.corrections == []
    assert result.unrecognized == [written]
    assert result.medications_normalized == []


def test_a_misspelled_product_word_is_still_corrected(screener: Screener) -> None:
    """The guard is about whole words, not letters: a misspelt brand keeps its variant word."""
    result = screener.screen(["Mucinx D"])
    assert [c["read_as"] for c in result.corrections] == ["mucinex d"]
    assert result.medications_normalized == ["guaifenesin", "pseudoephedrine"]


def test_mucinex_d_with_an_maoi_is_contraindicated(screener: Screener) -> None:
    """Mucinex D is guaifenesin + pseudoephedrine (Drug Facts), and pseudoephedrine with an
    MAOI is contraindicated; read as plain Mucinex it gave no finding."""
    result = screener.screen(["phenelzine 15 mg tid", "Mucinex D"])
    pairs = {frozenset((f.drug_a, f.drug_b)): f.rule.severity for f in result.findings}
    assert pairs[frozenset(("phenelzine", "pseudoephedrine"))] == "contraindicated"


@pytest.mark.parametrize(
    ("written", "generics"),
    [
        ("Excedrin Tension Headache", ["acetaminophen", "caffeine"]),  # no aspirin
        ("Motrin Dual Action", ["ibuprofen", "acetaminophen"]),
        ("Zantac 360", ["famotidine"]),  # today's Zantac 360 is famotidine, not ranitidine
        ("Robitussin DM", ["guaifenesin", "dextromethorphan"]),
    ],
)
def test_variant_products_read_as_their_own_ingredients(
    screener: Screener, written: str, generics: list[str]
) -> None:
    assert screener.screen([written]).medications_normalized == generics


@pytest.mark.parametrize(
    "written", ["Excedrin Sinus Headache", "Advil Tension Relief", "Motrin Complete", "Aleve Back"]
)
def test_unknown_words_after_a_brand_are_reported_not_dropped(
    screener: Screener, written: str
) -> None:
    result = screener.screen([written, "warfarin"])
    assert result.unrecognized == [written]
    (entry, _) = result.entries
    assert entry.reason is not None
    assert "not read as" in entry.reason
    assert f"'{written}': " in _template_note(screener, [written])


@pytest.mark.parametrize(
    ("written", "generics"),
    [
        ("Medrol dose pack", ["methylprednisolone"]),
        ("Klor-Con M20", ["potassium chloride"]),
        ("Zithromax Z-Pak", ["azithromycin"]),
        ("Tylenol Extra Strength caplets 500 mg", ["acetaminophen"]),
        ("baby aspirin 81 mg", ["aspirin"]),
    ],
)
def test_words_that_only_say_how_it_is_packed_or_dosed_are_kept_reading(
    screener: Screener, written: str, generics: list[str]
) -> None:
    assert screener.screen([written]).medications_normalized == generics


def _template_note(screener: Screener, medications: list[str]) -> str:
    from pharmacy_service.clinical.notes import template_note

    return template_note(screener.screen(medications))
