"""The bundled knowledge base: the formulary, drug classes, interaction rules and the lexicon.

The files are data with a source on every class and rule (see ``knowledge/README.md``); the
pydantic models below validate them when they are loaded, and :class:`KnowledgeBase` checks that
they agree with each other. The model's MLflow artifacts carry the files, so a saved model always
screens with the data it was built with.

``python -m pharmacy_service.model`` validates the bundled files and prints their size and any
rule that can never be the one shown for a pair.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from itertools import combinations
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BUNDLED",
    "KNOWLEDGE_ARTIFACTS",
    "LOCAL_ROUTES",
    "SEVERITY_RANK",
    "Ambiguous",
    "ClassFile",
    "DrugClass",
    "DrugEntry",
    "DrugFile",
    "InteractionRule",
    "KnowledgeBase",
    "KnowledgeFiles",
    "Product",
    "RuleFile",
    "RuleSide",
    "Severity",
    "generics_covered",
]

Severity = Literal["contraindicated", "major", "moderate", "minor"]
SEVERITY_RANK: Mapping[str, int] = {"minor": 1, "moderate": 2, "major": 3, "contraindicated": 4}
LocalRoute = Literal["topical", "ophthalmic", "otic", "vaginal"]
LOCAL_ROUTES: frozenset[str] = frozenset(get_args(LocalRoute))
"""Routes whose products are not screened as systemic exposure (unless a label says so)."""

_Generic = Field(min_length=2, max_length=80, pattern=r"^[a-z0-9][a-z0-9 .,'-]*$")
_Name = Field(min_length=2, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9 .,'/+()#&-]*$")
_Source = Field(min_length=8, max_length=1000)


def _refuse_duplicates(what: str, ids: list[str]) -> None:
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate {what}: {duplicates}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DrugEntry(_Strict):
    generic: str = _Generic
    brands: list[str] = Field(default_factory=list)
    synonyms: list[str] = Field(default_factory=list)
    local_routes_screened: dict[LocalRoute, str] = Field(default_factory=dict)
    """Local routes still screened as systemic exposure, each with the label's words."""
    local_route_partners: dict[LocalRoute, list[str]] = Field(default_factory=dict)
    """For a local route screened: the drugs (``drug:<generic>``) and classes (``class:<id>``)
    its label names; the local product is screened against those only. A route not listed is
    screened against everything (a gel for systemic testosterone replacement)."""

    @model_validator(mode="after")
    def _partners_for_screened_routes(self) -> DrugEntry:
        unscreened = sorted(set(self.local_route_partners) - set(self.local_routes_screened))
        if unscreened:
            raise ValueError(
                f"{self.generic}: local_route_partners for routes not screened: {unscreened}"
            )
        return self

    @model_validator(mode="after")
    def _names_are_valid(self) -> DrugEntry:
        for name in (*self.brands, *self.synonyms):
            _NameCheck(name=name)
        return self


class _NameCheck(_Strict):
    name: str = _Name


class Product(_Strict):
    """A combination product, or a brand sold only for a local route."""

    names: list[str] = Field(min_length=1)
    components: list[str] = Field(min_length=1)
    route: LocalRoute | None = None
    source: str = _Source

    @model_validator(mode="after")
    def _names_are_valid(self) -> Product:
        for name in self.names:
            _NameCheck(name=name)
        return self


class Ambiguous(_Strict):
    """A name used for several drugs: screened only for what every candidate shares."""

    name: str = _Name
    candidates: list[str] = Field(min_length=2)


class DrugFile(_Strict):
    version: str
    description: str
    drugs: list[DrugEntry] = Field(min_length=1)
    products: list[Product] = Field(default_factory=list)
    ambiguous: list[Ambiguous] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DrugFile:
        generics = {d.generic for d in self.drugs}
        seen: dict[str, str] = {}

        def claim(name: str, owner: str) -> None:
            key = " ".join(name.lower().split())
            if key in seen and seen[key] != owner:
                raise ValueError(f"name {name!r} is listed for both {seen[key]} and {owner}")
            seen[key] = owner

        for drug in self.drugs:
            for name in (drug.generic, *drug.brands, *drug.synonyms):
                claim(name, drug.generic)
        for product in self.products:
            missing = sorted(set(product.components) - generics)
            if missing:
                raise ValueError(f"product {product.names[0]!r}: unknown components {missing}")
            for name in product.names:
                claim(name, "product " + " + ".join(product.components))
        for entry in self.ambiguous:
            missing = sorted(set(entry.candidates) - generics)
            if missing:
                raise ValueError(f"ambiguous {entry.name!r}: unknown candidates {missing}")
            claim(entry.name, "ambiguous " + " or ".join(entry.candidates))
        return self


class DrugClass(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = Field(min_length=3)
    source: str = _Source
    members: list[str] = Field(default_factory=list)


class ClassFile(_Strict):
    version: str
    description: str
    classes: list[DrugClass] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ClassFile:
        _refuse_duplicates("class ids", [c.id for c in self.classes])
        return self


class RuleSide(_Strict):
    drug: str | None = None
    class_: str | None = Field(default=None, alias="class")
    except_: list[str] = Field(default_factory=list, alias="except")
    forms: list[str] | None = None
    """Dose forms (as the parser names them: ``tablet``, ``capsule``, ...) the rule is about;
    a drug written in another form does not match this side, one with no form written does."""

    @model_validator(mode="after")
    def _exactly_one(self) -> RuleSide:
        if (self.drug is None) == (self.class_ is None):
            raise ValueError("a rule side names exactly one of 'drug' or 'class'")
        if self.except_ and self.class_ is None:
            raise ValueError("'except' applies to a class side only")
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
    advice_for: dict[str, str] = Field(default_factory=dict)
    """Advice for one member (keyed by generic) where the rule's advice does not fit it."""
    source: str = _Source
    sources_disagree: str | None = None
    min_age: int | None = Field(default=None, ge=18, le=120)
    """Set on a rule of an age-specific reference (the AGS Beers Criteria: 65). The screen does
    not know the patient's age, so such a rule never stands in for the pair's own rule: its
    advice, which states the age, is added to that rule's; it is shown alone only when no other
    rule matches the pair."""

    min_count: int | None = Field(default=None, ge=3, le=10)
    """Set on a rule whose two sides are the same class: it applies to a pair of the class's
    members only when the patient takes at least this many of them (the AGS Beers Criteria:
    three or more CNS-active drugs)."""

    @model_validator(mode="after")
    def _count_is_of_one_class(self) -> InteractionRule:
        if self.min_count is not None and (
            self.a.class_ is None or self.a.key != self.b.key or self.a.except_ != self.b.except_
        ):
            raise ValueError(f"rule {self.id}: min_count needs both sides to be the same class")
        return self

    @model_validator(mode="after")
    def _age_is_stated(self) -> InteractionRule:
        if self.min_age is not None:
            for text in (self.advice, *self.advice_for.values()):
                if str(self.min_age) not in text:
                    raise ValueError(
                        f"rule {self.id}: the advice of a rule for patients aged "
                        f"{self.min_age} and older must state the age: {text!r}"
                    )
        return self

    @property
    def specificity(self) -> int:
        """2 for a drug pair, 1 for a drug and a class, 0 for two classes."""
        return (self.a.drug is not None) + (self.b.drug is not None)

    def advice_for_pair(self, drug_a: str, drug_b: str) -> str:
        return self.advice_for.get(drug_a) or self.advice_for.get(drug_b) or self.advice

    def side_for(self, generic: str, keys: tuple[str, ...]) -> RuleSide:
        """The side that ``generic`` (with these rule keys) matches."""
        return self.a if self.a.key in keys and generic not in self.a.except_ else self.b


class RuleFile(_Strict):
    version: str
    description: str
    rules: list[InteractionRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleFile:
        _refuse_duplicates("rule ids", [rule.id for rule in self.rules])
        return self


@dataclass(frozen=True)
class KnowledgeFiles:
    """Where the four files are (the bundled ones, or a saved model's artifacts)."""

    drugs: Path
    classes: Path
    rules: Path
    lexicon: Path

    @classmethod
    def in_directory(cls, directory: Path) -> KnowledgeFiles:
        return cls(
            directory / "drugs.json",
            directory / "classes.json",
            directory / "rules.json",
            directory / "lexicon.tsv.gz",
        )

    def as_artifacts(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in KNOWLEDGE_ARTIFACTS}


KNOWLEDGE_ARTIFACTS = ("drugs", "classes", "rules", "lexicon")
"""The MLflow artifact names of the four files, in :class:`KnowledgeFiles` order."""


BUNDLED = KnowledgeFiles.in_directory(Path(str(files("pharmacy_service.clinical") / "knowledge")))


@dataclass(frozen=True)
class KnowledgeBase:
    """The validated files, cross-checked, with the indexes the resolver and screener need."""

    drug_file: DrugFile
    class_file: ClassFile
    rule_file: RuleFile
    lexicon: Mapping[str, str] = field(default_factory=dict)
    """Lexicon variant (lower case) -> canonical name, for real drugs outside the formulary."""

    drugs: Mapping[str, DrugEntry] = field(init=False)
    classes_of: Mapping[str, frozenset[str]] = field(init=False)
    """generic -> the ids of its classes."""
    keys: Mapping[str, tuple[str, ...]] = field(init=False)
    """generic -> ("drug:<generic>", "class:<c>", ...), sorted: what a rule side can match."""
    candidates: Mapping[str, frozenset[str]] = field(init=False)
    """An ambiguous name's label -> the generics it could be."""
    rule_index: Mapping[tuple[str, str], tuple[InteractionRule, ...]] = field(init=False)
    """(key, key) -> the rules for everyone (no ``min_age``) that name those sides."""
    age_rule_index: Mapping[tuple[str, str], tuple[InteractionRule, ...]] = field(init=False)
    """(key, key) -> the age-specific rules (``min_age`` set) that name those sides."""
    rank: Mapping[str, tuple[int, int, int, str]] = field(init=False)
    """rule id -> its sort key: when several rules match a pair, the smallest key explains it
    (the most severe, then the most specific, then the fewest drugs covered, then the id)."""
    _best: dict[tuple[str, str], InteractionRule | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _best_for_age: dict[tuple[str, str], InteractionRule | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        drugs = {d.generic: d for d in self.drug_file.drugs}
        classes = {c.id: c for c in self.class_file.classes}
        classes_of: dict[str, set[str]] = {g: set() for g in drugs}
        for drug_class in self.class_file.classes:
            for member in drug_class.members:
                if member not in drugs:
                    raise ValueError(f"class {drug_class.id}: member {member!r} is not a drug")
                classes_of[member].add(drug_class.id)
        used: set[str] = set()
        index: dict[tuple[str, str], list[InteractionRule]] = {}
        age_index: dict[tuple[str, str], list[InteractionRule]] = {}
        for rule in self.rule_file.rules:
            for side in (rule.a, rule.b):
                if side.drug is not None and side.drug not in drugs:
                    raise ValueError(f"rule {rule.id}: drug {side.drug!r} is not in drugs.json")
                if side.class_ is not None:
                    if side.class_ not in classes:
                        raise ValueError(f"rule {rule.id}: class {side.class_!r} is not defined")
                    used.add(side.class_)
                    outside = sorted(set(side.except_) - set(classes[side.class_].members))
                    if outside:
                        raise ValueError(
                            f"rule {rule.id}: 'except' names non-members of {side.class_}: "
                            f"{outside}"
                        )
            unknown = sorted(set(rule.advice_for) - generics_covered(rule, classes))
            if unknown:
                raise ValueError(
                    f"rule {rule.id}: advice_for names drugs it cannot match: {unknown}"
                )
            into = index if rule.min_age is None else age_index
            into.setdefault((rule.a.key, rule.b.key), []).append(rule)
            if rule.a.key != rule.b.key:
                into.setdefault((rule.b.key, rule.a.key), []).append(rule)
        for drug in self.drug_file.drugs:
            for route, partners in drug.local_route_partners.items():
                for key in partners:
                    kind, _, name = key.partition(":")
                    known = drugs if kind == "drug" else classes if kind == "class" else {}
                    if name not in known:
                        raise ValueError(
                            f"{drug.generic}: local_route_partners[{route}] names {key!r}, "
                            "not a drug or class of the knowledge base"
                        )
        empty = sorted(c for c in used if not classes[c].members)
        if empty:
            raise ValueError(f"classes used by rules have no members: {empty}")
        object.__setattr__(self, "drugs", drugs)
        object.__setattr__(self, "classes_of", {g: frozenset(c) for g, c in classes_of.items()})
        keys = {g: (f"drug:{g}", *sorted(f"class:{c}" for c in classes_of[g])) for g in drugs}
        candidates: dict[str, frozenset[str]] = {}
        for entry in self.drug_file.ambiguous:  # screened for what every candidate shares
            shared = frozenset.intersection(*(frozenset(classes_of[c]) for c in entry.candidates))
            keys[ambiguous_label(entry)] = tuple(sorted(f"class:{c}" for c in shared))
            candidates[ambiguous_label(entry)] = frozenset(entry.candidates)
        object.__setattr__(self, "candidates", candidates)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "rule_index", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "age_rule_index", {k: tuple(v) for k, v in age_index.items()})

        def covered(side: RuleSide) -> int:
            if side.class_ is None:
                return 1
            return len(classes[side.class_].members) - len(side.except_)

        object.__setattr__(
            self,
            "rank",
            {
                rule.id: (
                    -SEVERITY_RANK[rule.severity],
                    -rule.specificity,
                    covered(rule.a) + covered(rule.b),
                    rule.id,
                )
                for rule in self.rule_file.rules
            },
        )

    @classmethod
    def load(cls, where: KnowledgeFiles = BUNDLED) -> KnowledgeBase:
        """Load and validate the four files (the bundled ones by default)."""
        return cls(
            DrugFile.model_validate(_read_json(where.drugs)),
            ClassFile.model_validate(_read_json(where.classes)),
            RuleFile.model_validate(_read_json(where.rules)),
            load_lexicon(where.lexicon),
        )

    def best_rule(
        self, a: str, b: str, excluded: frozenset[str] = frozenset(), *, for_age: bool = False
    ) -> InteractionRule | None:
        """Among the rules for everyone (``for_age``: the age-specific rules) matching the pair,
        but the ``excluded`` ids, the one with the smallest rank key (memoised when nothing is
        excluded: the answer never changes)."""
        index = self.age_rule_index if for_age else self.rule_index
        if excluded:
            return self._find_best_rule(index, a, b, excluded)
        pair = (a, b)
        memo = self._best_for_age if for_age else self._best
        if pair not in memo:
            memo[pair] = memo[(b, a)] = self._find_best_rule(index, a, b, excluded)
        return memo[pair]

    def _applies(self, rule: InteractionRule, key_a: str, a: str, key_b: str, b: str) -> bool:
        """The rule matches drug ``a`` (through ``key_a``) and ``b`` (through ``key_b``) on one
        of its orientations, with each side's ``except`` list honoured (an ambiguous name is
        excepted only when every drug it could be is)."""
        forward = rule.a.key == key_a and rule.b.key == key_b
        if forward and not self.excepted(a, rule.a) and not self.excepted(b, rule.b):
            return True
        backward = rule.b.key == key_a and rule.a.key == key_b
        return backward and not self.excepted(b, rule.a) and not self.excepted(a, rule.b)

    def excepted(self, generic: str, side: RuleSide) -> bool:
        """``generic`` is excepted from the side (an ambiguous name: when every drug it could
        be is)."""
        if not side.except_:
            return False
        could_be = self.candidates.get(generic)
        if could_be is None:
            return generic in side.except_
        return could_be <= set(side.except_)

    def _find_best_rule(
        self,
        index: Mapping[tuple[str, str], tuple[InteractionRule, ...]],
        a: str,
        b: str,
        excluded: frozenset[str],
    ) -> InteractionRule | None:
        best: InteractionRule | None = None
        for key_a in self.keys[a]:
            for key_b in self.keys[b]:
                for rule in index.get((key_a, key_b), ()):
                    if rule.id in excluded or not self._applies(rule, key_a, a, key_b, b):
                        continue
                    if best is None or self.rank[rule.id] < self.rank[best.id]:
                        best = rule
        return best


def ambiguous_label(entry: Ambiguous) -> str:
    """How an ambiguous name is shown: ``isosorbide (isosorbide mononitrate or ...)``."""
    return f"{entry.name.lower()} ({' or '.join(entry.candidates)})"


def generics_covered(rule: InteractionRule, classes: Mapping[str, DrugClass]) -> set[str]:
    """The generics a rule can fire on: each side's drug, or its class's members but those it
    excepts."""
    covered: set[str] = set()
    for side in (rule.a, rule.b):
        if side.drug is not None:
            covered.add(side.drug)
        elif side.class_ is not None and side.class_ in classes:
            covered.update(set(classes[side.class_].members) - set(side.except_))
    return covered


def _read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def load_lexicon(path: Path) -> dict[str, str]:
    """``canonical<TAB>variant|variant...`` lines (``#`` comments) -> {variant: canonical}."""
    lexicon: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("#") or not line.strip():
                continue
            canonical, _, variants = line.rstrip("\n").partition("\t")
            lexicon.setdefault(canonical, canonical)
            for variant in variants.split("|") if variants else ():
                lexicon.setdefault(variant, canonical)
    return lexicon


def unreachable_rules(knowledge: KnowledgeBase) -> list[str]:
    """Rules that are never the one shown for any pair of covered drugs."""
    shown: set[str] = set()
    generics = sorted(knowledge.drugs)
    for a, b in combinations(generics, 2):
        for for_age in (False, True):
            rule = knowledge.best_rule(a, b, for_age=for_age)
            if rule is not None:
                shown.add(rule.id)
    return sorted({r.id for r in knowledge.rule_file.rules} - shown)
