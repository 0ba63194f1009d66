"""Screen one patient's medications: normalise the names, then find every interacting pair."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from .knowledge import SEVERITY_RANK, InteractionRule, KnowledgeBase
from .normalize import Match, Normalizer

__all__ = ["Finding", "Screener", "ScreeningResult"]

_BASIS = {2: "drug pair", 1: "drug and class", 0: "class pair"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One interacting pair and the rule that explains it."""

    drug_a: str
    drug_b: str
    rule: InteractionRule

    def as_dict(self) -> dict[str, Any]:
        return {
            "drug_a": self.drug_a,
            "drug_b": self.drug_b,
            "severity": self.rule.severity,
            "mechanism": self.rule.mechanism,
            "clinical_effect": self.rule.clinical_effect,
            "advice": self.rule.advice,
            "rule_id": self.rule.id,
            "basis": _BASIS[self.rule.specificity],
        }


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    medications_normalized: list[str]
    unrecognized: list[str]
    matches: list[Match]
    findings: list[Finding] = field(default_factory=list)

    @property
    def highest_severity(self) -> str:
        if not self.findings:
            return "none"
        return max((f.rule.severity for f in self.findings), key=SEVERITY_RANK.__getitem__)


class Screener:
    def __init__(self, knowledge: KnowledgeBase) -> None:
        self.knowledge = knowledge
        self.normalizer = Normalizer(knowledge)

    def screen(self, medications: list[str]) -> ScreeningResult:
        generics: list[str] = []  # first-seen order; a brand and its generic count once
        unrecognized: list[str] = []
        matches: list[Match] = []
        for raw in medications:
            if not raw.strip():
                continue
            match = self.normalizer.normalize(raw)
            if match is None:
                if raw.strip() not in unrecognized:
                    unrecognized.append(raw.strip())
                continue
            matches.append(match)
            if match.generic not in generics:
                generics.append(match.generic)
        findings = [
            Finding(a, b, rule)
            for a, b in combinations(generics, 2)
            if (rule := self._best_rule(a, b)) is not None
        ]
        findings.sort(key=lambda f: -SEVERITY_RANK[f.rule.severity])  # stable: input order within
        return ScreeningResult(generics, unrecognized, matches, findings)

    def _best_rule(self, a: str, b: str) -> InteractionRule | None:
        """Among all rules matching the pair, the most severe, then the most specific."""
        keys, index, rank = self.knowledge.keys, self.knowledge.rule_index, self.knowledge.rank
        best: InteractionRule | None = None
        for key_a in keys[a]:
            for key_b in keys[b]:
                for rule in index.get((key_a, key_b), ()):
                    if best is None or rank[rule.id] > rank[best.id]:
                        best = rule
        return best
