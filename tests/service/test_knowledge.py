"""The knowledge base files: schema, cross-checks, size, sources, reachability, and the label
facts it must get right."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pharmacy_service.clinical import KnowledgeBase, Screener
from pharmacy_service.clinical.knowledge import BUNDLED, KnowledgeFiles, unreachable_rules


def test_the_bundled_files_are_the_four_documented_ones() -> None:
    folder = BUNDLED.drugs.parent
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        "README.md",
        "beers2023.json",
        "classes.json",
        "drugs.json",
        "label_statements.json",
        "lexicon.tsv.gz",
        "rules.json",
        "top300.tsv",
    ]


def test_the_knowledge_base_is_big_enough(knowledge: KnowledgeBase) -> None:
    assert len(knowledge.drugs) >= 300
    assert len(knowledge.rule_file.rules) >= 250
    assert len(knowledge.lexicon) >= 100_000
    brands = sum(len(d.brands) for d in knowledge.drug_file.drugs)
    assert brands >= 400
    mechanism = {
        "strong_cyp3a4_inhibitor",
        "moderate_cyp3a4_inhibitor",
        "strong_cyp3a4_inducer",
        "cyp2c9_inhibitor",
        "strong_cyp2c19_inhibitor",
        "strong_cyp2d6_inhibitor",
        "strong_cyp1a2_inhibitor",
        "pgp_inhibitor",
        "oatp1b1_inhibitor",
        "cyp3a4_sensitive_substrate",
        "cyp3a4_nti_substrate",
    }
    sizes = {c.id: len(c.members) for c in knowledge.class_file.classes}
    assert mechanism <= set(sizes)
    assert all(sizes[c] >= 2 for c in mechanism), {c: sizes[c] for c in mechanism}


def test_every_rule_and_class_names_its_source(knowledge: KnowledgeBase) -> None:
    for drug_class in knowledge.class_file.classes:
        assert len(drug_class.source.split()) >= 2, drug_class.id
    for rule in knowledge.rule_file.rules:
        assert len(rule.source.split()) >= 2, rule.id
        if rule.severity == "contraindicated":  # a label section or a named reference
            assert any(w in rule.source.lower() for w in ("label", "section", "fda")), rule.id


def test_every_rule_is_the_one_shown_for_some_pair(knowledge: KnowledgeBase) -> None:
    assert unreachable_rules(knowledge) == []


def test_advice_for_members_is_used_for_their_pairs(
    knowledge: KnowledgeBase, screener: Screener
) -> None:
    checked = 0
    for rule in knowledge.rule_file.rules:
        for generic, advice in rule.advice_for.items():
            partners = [
                other
                for other in sorted(knowledge.drugs)
                if other != generic and knowledge.best_rule(generic, other) is rule
            ]
            for partner in partners[:3]:
                result = screener.screen([generic, partner])
                assert [f.advice for f in result.findings] == [advice], (rule.id, partner)
                checked += 1
    assert checked >= 5


def test_every_pair_is_screened_the_same_both_ways(knowledge: KnowledgeBase) -> None:
    generics = sorted(knowledge.drugs)
    for a, b in combinations(generics[::3], 2):
        assert knowledge.best_rule(a, b) is knowledge.best_rule(b, a)


# -- label facts the review found wrong (severities follow the labels) ----------------------------


def _severity(screener: Screener, a: str, b: str) -> str | None:
    result = screener.screen([a, b])
    return result.findings[0].rule.severity if result.findings else None


def _advice(screener: Screener, a: str, b: str) -> str:
    result = screener.screen([a, b])
    assert result.findings, f"{a} + {b}: no finding"
    return result.findings[0].advice


@pytest.mark.parametrize(
    ("a", "b", "severity"),
    [
        ("alprazolam", "ketoconazole", "contraindicated"),  # Xanax label, section 4
        ("alprazolam", "itraconazole", "contraindicated"),
        ("simvastatin", "cyclosporine", "contraindicated"),  # Zocor label, section 4
        # Lovastatin's label says "avoid" with cyclosporine (FDA statin labeling of 2012): major
        ("lovastatin", "cyclosporine", "major"),
        ("amiloride", "potassium chloride", "contraindicated"),  # Midamor label, section 4
        ("triamterene", "potassium chloride", "contraindicated"),
        ("sertraline", "linezolid", "contraindicated"),  # Zoloft label, section 4
        ("sertraline", "methylene blue", "contraindicated"),
        ("sertraline", "phenelzine", "contraindicated"),
        ("rasagiline", "meperidine", "contraindicated"),  # Azilect label, section 4
        ("tizanidine", "ciprofloxacin", "contraindicated"),  # Zanaflex label, section 4
        ("tizanidine", "fluvoxamine", "contraindicated"),
        ("simvastatin", "clarithromycin", "contraindicated"),
        ("sildenafil", "nitroglycerin", "contraindicated"),
        # Tamoxifen label section 4 (risk reduction and DCIS: coumarin-type anticoagulants);
        # the screen cannot tell the indication, so the advice states the condition
        ("tamoxifen", "warfarin", "contraindicated"),
        ("amlodipine", "tacrolimus", "moderate"),  # Norvasc label, section 7: monitor troughs
        ("amlodipine", "cyclosporine", "moderate"),
    ],
)
def test_label_severities(screener: Screener, a: str, b: str, severity: str) -> None:
    assert _severity(screener, a, b) == severity


# The ONC high-priority list (Phansalkar et al., JAMIA 2012;19:735): pairs that every EHR should
# alert on. One representative pair per entry; each must be found as major or contraindicated
# (where a label rates a pair lower than the list, the rule says so in sources_disagree).
ONC_HIGH_PRIORITY = [
    ("amphetamine", "phenelzine"),
    ("atazanavir", "omeprazole"),
    ("febuxostat", "azathioprine"),
    ("febuxostat", "mercaptopurine"),
    ("fluoxetine", "phenelzine"),
    ("irinotecan", "ketoconazole"),
    ("meperidine", "tranylcypromine"),
    ("amitriptyline", "phenelzine"),
    ("pimozide", "clarithromycin"),
    ("ramelteon", "fluvoxamine"),
    ("rifampin", "atazanavir"),
    ("simvastatin", "ritonavir"),
    ("ergotamine", "clarithromycin"),
    ("tizanidine", "ciprofloxacin"),
    ("tranylcypromine", "procarbazine"),
    ("sumatriptan", "phenelzine"),
]


@pytest.mark.parametrize(
    ("a", "b"), ONC_HIGH_PRIORITY, ids=[f"{a} + {b}" for a, b in ONC_HIGH_PRIORITY]
)
def test_every_onc_high_priority_pair_is_found(screener: Screener, a: str, b: str) -> None:
    result = screener.screen([a, b])
    assert result.medications_normalized == [a, b]
    assert _severity(screener, a, b) in ("major", "contraindicated")
    finding = result.findings[0]
    if finding.rule.severity != "contraindicated" and "Phansalkar" not in finding.rule.source:
        assert finding.rule.sources_disagree, finding.rule.id


def test_mao_b_selective_drugs_do_not_inherit_the_non_selective_contraindications(
    screener: Screener,
) -> None:
    for drug in ("rasagiline", "selegiline"):
        assert _severity(screener, drug, "sertraline") not in (None, "contraindicated")


def test_ritonavir_is_exempt_from_alprazolams_strong_inhibitor_contraindication(
    screener: Screener,
) -> None:
    assert _severity(screener, "alprazolam", "ritonavir") == "major"


def test_advice_fits_the_pair(screener: Screener) -> None:
    assert "ppi" not in _advice(screener, "clopidogrel", "fluoxetine").lower()
    assert "pantoprazole" not in _advice(screener, "clopidogrel", "fluoxetine").lower()
    theophylline = screener.screen(["theophylline", "azithromycin"])
    for finding in theophylline.findings:
        assert "azithromycin" not in finding.advice.lower().split("choose", 1)[-1][:40]
    moxifloxacin = _advice(screener, "moxifloxacin", "calcium carbonate")
    assert "4 hours" in moxifloxacin
    assert "8 hours" in moxifloxacin
    ciprofloxacin = _advice(screener, "ciprofloxacin", "calcium carbonate")
    assert "2 hours" in ciprofloxacin
    assert "6 hours" in ciprofloxacin


# -- the loader refuses inconsistent data ---------------------------------------------------------


@pytest.fixture
def edited(tmp_path: Path) -> Callable[[str, Callable[[dict[str, Any]], None]], KnowledgeFiles]:
    """Copy the bundled files, apply one edit to one of them, return where they are."""

    def edit(name: str, change: Callable[[dict[str, Any]], None]) -> KnowledgeFiles:
        for path in BUNDLED.as_artifacts().values():
            shutil.copy(path, tmp_path)
        target = tmp_path / f"{name}.json"
        data = json.loads(target.read_text())
        change(data)
        target.write_text(json.dumps(data))
        return KnowledgeFiles.in_directory(tmp_path)

    return edit


def test_the_bundled_copy_loads(edited: Any) -> None:
    KnowledgeBase.load(edited("rules", lambda data: None))


@pytest.mark.parametrize(
    ("name", "change", "error", "words"),
    [
        pytest.param(
            "rules",
            lambda d: d["rules"][0].update(a={"drug": "unobtainium"}),
            ValueError,
            "unobtainium",
            id="a rule naming an unknown drug",
        ),
        pytest.param(
            "rules",
            lambda d: d["rules"][0].update(severity="catastrophic"),
            ValidationError,
            "severity",
            id="a bad severity",
        ),
        pytest.param(
            "rules",
            lambda d: d["rules"][0].update(b={"drug": "warfarin", "class": "nsaid"}),
            ValidationError,
            "exactly one",
            id="a side naming a drug and a class",
        ),
        pytest.param(
            "rules",
            lambda d: d["rules"][0].pop("source"),
            ValidationError,
            "source",
            id="a rule without a source",
        ),
        pytest.param(
            "rules",
            lambda d: d["rules"][0].update(advice_for={"unobtainium": "do this"}),
            ValueError,
            "advice_for",
            id="advice for a drug the rule cannot match",
        ),
        pytest.param(
            "rules",
            lambda d: d["rules"][0].update(min_age=65),
            ValidationError,
            "must state the age",
            id="an age-specific rule whose advice does not state the age",
        ),
        pytest.param(
            "rules",
            lambda d: d["rules"].append(dict(d["rules"][0])),
            ValidationError,
            "duplicate rule ids",
            id="a duplicate rule id",
        ),
        pytest.param(
            "drugs",
            lambda d: d["drugs"][1]["brands"].append(d["drugs"][0]["generic"].title()),
            ValidationError,
            "listed for both",
            id="a name listed for two drugs",
        ),
        pytest.param(
            "drugs",
            lambda d: d["products"][0]["components"].append("unobtainium"),
            ValidationError,
            "unknown components",
            id="a product with an unknown component",
        ),
        pytest.param(
            "classes",
            lambda d: d["classes"][0]["members"].append("unobtainium"),
            ValueError,
            "unobtainium",
            id="a class member that is not a drug",
        ),
    ],
)
def test_inconsistent_data_is_refused_with_the_reason(
    edited: Any, name: str, change: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        KnowledgeBase.load(edited(name, change))


def test_an_except_naming_a_non_member_is_refused(edited: Any) -> None:
    def change(data: dict[str, Any]) -> None:
        rule = next(r for r in data["rules"] if "class" in r["b"])
        rule["b"]["except"] = ["unobtainium"]

    with pytest.raises(ValueError, match="non-members"):
        KnowledgeBase.load(edited("rules", change))


def test_tamoxifen_with_warfarin_states_the_indication_it_depends_on(screener: Screener) -> None:
    advice = _advice(screener, "Soltamox 20 mg daily", "Coumadin 5 mg")
    assert "does not know why tamoxifen is taken" in advice
    assert "DCIS" in advice
    assert "PT/INR" in advice


@pytest.mark.parametrize("immunosuppressant", ["tacrolimus", "cyclosporine"])
def test_amlodipine_with_a_calcineurin_inhibitor_asks_for_trough_levels(
    screener: Screener, immunosuppressant: str
) -> None:
    advice = _advice(screener, "Norvasc 5 mg", f"{immunosuppressant} 1 mg po bid")
    assert f"{immunosuppressant} trough" in advice


def _finding(screener: Screener, a: str, b: str) -> dict[str, Any]:
    (finding,) = screener.screen([a, b]).findings
    return finding.as_dict()


def test_a_beers_rule_adds_its_age_advice_to_the_pairs_own_rule(screener: Screener) -> None:
    shown = _finding(screener, "warfarin 5 mg daily", "amiodarone 200 mg daily")
    assert shown["rule_id"] == "warfarin-amiodarone"
    assert shown["severity"] == "major"
    assert "Patients 65 and older (AGS Beers Criteria 2023): avoid when possible" in shown["advice"]
    assert shown["advice"].index("65 and older") > 0, "the label's advice comes first"
    assert "Coumadin" in shown["source"] or "warfarin" in shown["source"].lower()
    assert "AGS Beers Criteria 2023" in shown["source"]


def test_a_beers_rule_stands_alone_when_no_label_rule_matches(screener: Screener) -> None:
    shown = _finding(screener, "doxazosin 4 mg qhs", "furosemide 40 mg daily")
    assert shown["rule_id"] == "beers-alpha1-blocker-loop-diuretic"
    assert shown["severity"] == "moderate"
    assert shown["advice"].startswith("Patients 65 and older (AGS Beers Criteria 2023)")
    # a selective alpha-1 blocker is not in the Beers row
    assert screener.screen(["tamsulosin 0.4 mg", "furosemide 40 mg"]).findings == []


def test_the_beers_warfarin_macrolide_row_excludes_azithromycin(screener: Screener) -> None:
    assert "65 and older" in _finding(screener, "warfarin", "clarithromycin")["advice"]
    assert "65 and older" not in _finding(screener, "warfarin", "azithromycin")["advice"]


def test_two_strong_anticholinergics_are_flagged_for_older_adults(screener: Screener) -> None:
    shown = _finding(screener, "oxybutynin 5 mg tid", "Benadryl 25 mg qhs")
    assert shown["rule_id"] == "beers-anticholinergic-pair"
    assert "65 and older" in shown["advice"]
    # inhaled antimuscarinics are not in the Beers list of strong anticholinergics
    assert all(
        f.rule.id != "beers-anticholinergic-pair"
        for f in screener.screen(["Spiriva 18 mcg inhaled daily", "oxybutynin 5 mg"]).findings
    )


def test_three_cns_active_drugs_are_flagged_two_are_not(screener: Screener) -> None:
    two = screener.screen(["oxycodone 5 mg q6h prn", "sertraline 50 mg"])
    assert all(
        "beers-three-or-more-cns-active" not in (f.rule.id, f.age_rule and f.age_rule.id)
        for f in two.findings
    )
    three = screener.screen(["oxycodone 5 mg q6h prn", "sertraline 50 mg", "quetiapine 25 mg"])
    pairs = {frozenset((f.drug_a, f.drug_b)): f for f in three.findings}
    assert len(pairs) == 3
    for finding in pairs.values():
        assert "three or more CNS-active drugs" in finding.advice
        assert "65 and older" in finding.advice
    # the opioid with quetiapine keeps its own (boxed-warning) rule, the count adds its advice
    opioid_quetiapine = pairs[frozenset(("oxycodone", "quetiapine"))]
    assert opioid_quetiapine.rule.id == "opioid-cns-depressant"
    assert opioid_quetiapine.age_rule is not None
    assert opioid_quetiapine.age_rule.id == "beers-three-or-more-cns-active"


def test_a_counting_rule_needs_one_class_on_both_sides(edited: Any) -> None:
    def change(data: dict[str, Any]) -> None:
        rule = next(r for r in data["rules"] if r["id"] == "beers-three-or-more-cns-active")
        rule["b"] = {"class": "nsaid", "except": []}

    with pytest.raises(ValidationError, match="same class"):
        KnowledgeBase.load(edited("rules", change))


@pytest.mark.parametrize(
    ("local", "partner", "shown"),
    [
        ("MetroGel-Vaginal 1 applicator qhs", "warfarin 5 mg", "warfarin-metronidazole"),
        ("MetroGel-Vaginal 1 applicator qhs", "lithium 300 mg tid", None),
        ("metronidazole 500 mg bid", "lithium 300 mg tid", "metronidazole-lithium"),
        ("Monistat 7 vaginal cream", "warfarin 5 mg", "warfarin-miconazole"),
        ("Monistat 7 vaginal cream", "glipizide 5 mg", None),
        ("timolol 0.5% eye drops 1 gtt OU bid", "verapamil 240 mg", "beta-blocker-ccb-nondhp"),
        ("timolol 0.5% eye drops 1 gtt OU bid", "olanzapine 10 mg", None),
    ],
)
def test_a_local_product_is_screened_only_against_what_its_label_names(
    screener: Screener, local: str, partner: str, shown: str | None
) -> None:
    findings = screener.screen([local, partner]).findings
    assert [f.rule.id for f in findings] == ([shown] if shown else [])


def test_local_route_partners_must_name_known_drugs_or_classes(edited: Any) -> None:
    def change(data: dict[str, Any]) -> None:
        drug = next(d for d in data["drugs"] if d["generic"] == "miconazole")
        drug["local_route_partners"]["vaginal"].append("class:unobtainium")

    with pytest.raises(ValueError, match="unobtainium"):
        KnowledgeBase.load(edited("drugs", change))
