"""The knowledge base files: schema, size, and the classic interactions they must contain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pharmacy_service.model import KnowledgeBase, Screener
from pharmacy_service.model.knowledge import (
    BUNDLED_FORMULARY,
    BUNDLED_INTERACTIONS,
    Formulary,
    InteractionRules,
)


def test_every_bundled_file_validates_against_its_schema() -> None:
    Formulary.model_validate(json.loads(BUNDLED_FORMULARY.read_text()))
    InteractionRules.model_validate(json.loads(BUNDLED_INTERACTIONS.read_text()))
    assert sorted(p.name for p in BUNDLED_FORMULARY.parent.glob("*.json")) == [
        "formulary.json",
        "interactions.json",
    ]


def test_the_knowledge_base_is_big_enough(knowledge: KnowledgeBase) -> None:
    drugs = knowledge.formulary.drugs
    names = {n.lower() for d in drugs for n in (d.generic, *d.brands, *d.synonyms)}
    assert len(drugs) >= 90
    assert len(names) >= 200
    assert len(knowledge.rules.rules) >= 100
    assert any(r.a.class_ and r.b.class_ for r in knowledge.rules.rules)  # class rules exist


def test_every_class_has_a_member_and_every_rule_can_fire(knowledge: KnowledgeBase) -> None:
    members = {c.id: 0 for c in knowledge.formulary.classes}
    for drug in knowledge.formulary.drugs:
        for class_id in drug.classes:
            members[class_id] += 1
    assert [c for c, n in members.items() if n == 0] == []
    for rule in knowledge.rules.rules:
        if rule.a.key == rule.b.key:  # "any two members": the class needs two
            assert rule.a.class_ is not None, rule.id
            assert members[rule.a.class_] >= 2, rule.id


@pytest.mark.parametrize(
    ("a", "b", "severity"),
    [
        pytest.param("warfarin", "ibuprofen", "major", id="warfarin + NSAID"),
        pytest.param("warfarin", "aspirin", "major", id="warfarin + aspirin"),
        pytest.param("warfarin", "amiodarone", "major", id="warfarin + amiodarone"),
        pytest.param("warfarin", "fluconazole", "major", id="warfarin + fluconazole"),
        pytest.param(
            "simvastatin", "clarithromycin", "contraindicated", id="simvastatin + clarithromycin"
        ),
        pytest.param("sildenafil", "nitroglycerin", "contraindicated", id="sildenafil + nitrate"),
        pytest.param("sertraline", "phenelzine", "contraindicated", id="SSRI + MAOI"),
        pytest.param("sertraline", "linezolid", "major", id="SSRI + linezolid"),
        pytest.param("fluoxetine", "tramadol", "major", id="SSRI + tramadol"),
        pytest.param("lisinopril", "spironolactone", "major", id="lisinopril + spironolactone"),
        pytest.param("lisinopril", "potassium chloride", "major", id="lisinopril + potassium"),
        pytest.param("methotrexate", "trimethoprim", "major", id="methotrexate + trimethoprim"),
        pytest.param("digoxin", "amiodarone", "major", id="digoxin + amiodarone"),
        pytest.param("digoxin", "verapamil", "major", id="digoxin + verapamil"),
        pytest.param("clopidogrel", "omeprazole", "major", id="clopidogrel + omeprazole"),
        pytest.param("lithium", "naproxen", "major", id="lithium + NSAID"),
        pytest.param("lithium", "hydrochlorothiazide", "major", id="lithium + thiazide"),
        pytest.param("theophylline", "ciprofloxacin", "major", id="theophylline + ciprofloxacin"),
        pytest.param("citalopram", "azithromycin", "major", id="QT pair"),
        pytest.param("oxycodone", "alprazolam", "major", id="opioid + benzodiazepine"),
    ],
)
def test_classic_interactions_are_present(
    screener: Screener, a: str, b: str, severity: str
) -> None:
    result = screener.screen([a, b])
    assert [(f.drug_a, f.drug_b, f.rule.severity) for f in result.findings] == [(a, b, severity)]


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_a_rule_naming_an_unknown_drug_is_rejected(tmp_path: Path) -> None:
    rules = json.loads(BUNDLED_INTERACTIONS.read_text())
    rules["rules"][0]["a"] = {"drug": "unobtainium"}
    with pytest.raises(ValueError, match="unobtainium"):
        KnowledgeBase.load(BUNDLED_FORMULARY, write(tmp_path, "rules.json", rules))


def test_a_name_listed_for_two_drugs_is_rejected(tmp_path: Path) -> None:
    formulary = json.loads(BUNDLED_FORMULARY.read_text())
    formulary["drugs"][1]["brands"].append(formulary["drugs"][0]["brands"][0])
    with pytest.raises(ValidationError, match="listed for both"):
        KnowledgeBase.load(write(tmp_path, "formulary.json", formulary), BUNDLED_INTERACTIONS)


def test_a_rule_with_a_bad_severity_is_rejected(tmp_path: Path) -> None:
    rules = json.loads(BUNDLED_INTERACTIONS.read_text())
    rules["rules"][0]["severity"] = "catastrophic"
    with pytest.raises(ValidationError, match="severity"):
        KnowledgeBase.load(BUNDLED_FORMULARY, write(tmp_path, "rules.json", rules))


def test_a_rule_side_must_name_a_drug_or_a_class(tmp_path: Path) -> None:
    rules = json.loads(BUNDLED_INTERACTIONS.read_text())
    rules["rules"][0]["b"] = {"drug": "warfarin", "class": "nsaid"}
    with pytest.raises(ValidationError, match="exactly one"):
        KnowledgeBase.load(BUNDLED_FORMULARY, write(tmp_path, "rules.json", rules))
