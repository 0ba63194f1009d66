"""The bundled knowledge base: a formulary (names -> generic, classes) and interaction rules.

Both are JSON files validated by the pydantic models below when they are loaded; the model's
MLflow artifacts carry them, so a saved model always screens with the data it was built with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BUNDLED_FORMULARY",
    "BUNDLED_INTERACTIONS",
    "SEVERITY_RANK",
    "DrugEntry",
    "Formulary",
    "InteractionRule",
    "InteractionRules",
    "KnowledgeBase",
    "RuleSide",
    "Severity",
]

Severity = Literal["contraindicated", "major", "moderate", "minor"]
SEVERITY_RANK: Mapping[str, int] = {"minor": 1, "moderate": 2, "major": 3, "contraindicated": 4}

_KNOWLEDGE = files("pharmacy_service.model").joinpath("knowledge")
BUNDLED_FORMULARY = Path(str(_KNOWLEDGE.joinpath("formulary.json")))
BUNDLED_INTERACTIONS = Path(str(_KNOWLEDGE.joinpath("interactions.json")))

_Name = Field(min_length=2, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9 .,'/+()#-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DrugClass(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = Field(min_length=3)


class DrugEntry(_Strict):
    generic: str = Field(min_length=2, max_length=80, pattern=r"^[a-z0-9][a-z0-9 '-]*$")
    classes: list[str] = Field(min_length=1)
    brands: list[str] = Field(default_factory=list)
    synonyms: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_are_valid(self) -> DrugEntry:
        for name in (*self.brands, *self.synonyms):
            DrugNameCheck(name=name)
        return self


class DrugNameCheck(_Strict):
    name: str = _Name


class Formulary(_Strict):
    version: str
    description: str
    classes: list[DrugClass]
    salt_suffixes: list[str]
    dose_form_words: list[str]
    drugs: list[DrugEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Formulary:
        class_ids = {c.id for c in self.classes}
        seen: dict[str, str] = {}
        for drug in self.drugs:
            unknown = set(drug.classes) - class_ids
            if unknown:
                raise ValueError(f"{drug.generic}: unknown classes {sorted(unknown)}")
            for name in (drug.generic, *drug.brands, *drug.synonyms):
                key = name.lower()
                if key in seen:
                    raise ValueError(
                        f"name {name!r} is listed for both {seen[key]} and {drug.generic}"
                    )
                seen[key] = drug.generic
        return self


class RuleSide(_Strict):
    drug: str | None = None
    class_: str | None = Field(default=None, alias="class")

    @model_validator(mode="after")
    def _exactly_one(self) -> RuleSide:
        if (self.drug is None) == (self.class_ is None):
            raise ValueError("a rule side names exactly one of 'drug' or 'class'")
        return self

    @property
    def key(self) -> str:
        return f"drug:{self.drug}" if self.drug is not None else f"class:{self.class_}"


class InteractionRule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    a: RuleSide
    b: RuleSide
    severity: Severity
    mechanism: str = Field(min_length=10)
    clinical_effect: str = Field(min_length=5)
    advice: str = Field(min_length=5)

    @property
    def specificity(self) -> int:
        """2 for a drug pair, 1 for a drug and a class, 0 for two classes."""
        return (self.a.drug is not None) + (self.b.drug is not None)


class InteractionRules(_Strict):
    version: str
    description: str
    rules: list[InteractionRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> InteractionRules:
        ids = [rule.id for rule in self.rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids: {duplicates}")
        return self


@dataclass(frozen=True)
class KnowledgeBase:
    """The validated formulary and rules, with the indexes the screener needs."""

    formulary: Formulary
    rules: InteractionRules
    drugs: Mapping[str, DrugEntry] = field(init=False)
    keys: Mapping[str, frozenset[str]] = field(init=False)
    """generic -> {"drug:<generic>", "class:<c>", ...}: what a rule side can match."""
    rule_index: Mapping[tuple[str, str], tuple[InteractionRule, ...]] = field(init=False)
    rank: Mapping[str, tuple[int, int, int]] = field(init=False)
    """rule id -> (severity, drugs named, -members covered): when several rules match a pair,
    the highest rank explains it (the most severe, then the most specific)."""

    def __post_init__(self) -> None:
        drugs = {d.generic: d for d in self.formulary.drugs}
        class_ids = {c.id for c in self.formulary.classes}
        index: dict[tuple[str, str], list[InteractionRule]] = {}
        for rule in self.rules.rules:
            for side in (rule.a, rule.b):
                if side.drug is not None and side.drug not in drugs:
                    raise ValueError(f"rule {rule.id}: drug {side.drug!r} is not in the formulary")
                if side.class_ is not None and side.class_ not in class_ids:
                    raise ValueError(
                        f"rule {rule.id}: class {side.class_!r} is not in the formulary"
                    )
            index.setdefault((rule.a.key, rule.b.key), []).append(rule)
            if rule.a.key != rule.b.key:
                index.setdefault((rule.b.key, rule.a.key), []).append(rule)
        object.__setattr__(self, "drugs", drugs)
        object.__setattr__(
            self,
            "keys",
            {
                g: frozenset({f"drug:{g}", *(f"class:{c}" for c in d.classes)})
                for g, d in drugs.items()
            },
        )
        object.__setattr__(self, "rule_index", {k: tuple(v) for k, v in index.items()})
        members: dict[str, int] = {}
        for drug in drugs.values():
            for class_id in drug.classes:
                members[class_id] = members.get(class_id, 0) + 1

        def covered(side: RuleSide) -> int:
            return 1 if side.class_ is None else members.get(side.class_, 0)

        object.__setattr__(
            self,
            "rank",
            {
                rule.id: (
                    SEVERITY_RANK[rule.severity],
                    rule.specificity,
                    -(covered(rule.a) + covered(rule.b)),
                )
                for rule in self.rules.rules
            },
        )

    @classmethod
    def load(
        cls, formulary: Path = BUNDLED_FORMULARY, interactions: Path = BUNDLED_INTERACTIONS
    ) -> KnowledgeBase:
        """Load and validate both files (the bundled ones by default)."""
        return cls(
            Formulary.model_validate(json.loads(formulary.read_text(encoding="utf-8"))),
            InteractionRules.model_validate(json.loads(interactions.read_text(encoding="utf-8"))),
        )
