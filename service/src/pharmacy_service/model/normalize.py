"""Medication name normalisation: case and spacing, brands, salts and dose forms, small typos."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from .knowledge import KnowledgeBase

__all__ = ["Match", "Normalizer"]

Method = Literal["exact", "brand", "synonym", "salt_or_form", "typo"]


# Typo correction by Damerau-Levenshtein distance (a swap of two letters counts as one edit).
# Short names allow fewer edits; names of 4 characters or fewer are never corrected. A name as
# close to two different drugs is left unrecognised rather than guessed.
def max_typo_edits(length: int) -> int:
    if length <= 4:
        return 0
    if length <= 7:
        return 1
    if length <= 11:
        return 2
    return 3


_DOSE = re.compile(
    r"\b\d+(?:[.,]\d+)?\s*(?:mg|mcg|µg|ug|g|ml|mL|iu|units?|%|meq|mmol)\b(?:\s*/\s*\w+)?",
    re.IGNORECASE,
)
_NOISE = re.compile(r"[®™©*\"“”]|\([^)]*\)|\[[^\]]*\]")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Match:
    """How one input name was resolved."""

    input: str
    generic: str
    method: Method
    confidence: float


class Normalizer:
    def __init__(self, knowledge: KnowledgeBase) -> None:
        self._names: dict[str, tuple[str, Method]] = {}
        for drug in knowledge.formulary.drugs:
            self._add(drug.generic, drug.generic, "exact")
            for brand in drug.brands:
                self._add(brand, drug.generic, "brand")
            for synonym in drug.synonyms:
                self._add(synonym, drug.generic, "synonym")
        self._salts = frozenset(s.lower() for s in knowledge.formulary.salt_suffixes)
        self._forms = frozenset(w.lower() for w in knowledge.formulary.dose_form_words)
        self._choices = list(self._names)

    def _add(self, name: str, generic: str, method: Method) -> None:
        for variant in {_clean(name), _clean(name).replace("-", " ")}:
            self._names.setdefault(variant, (generic, method))

    def normalize(self, raw: str) -> Match | None:
        """Resolve one name, or ``None`` if it matches nothing in the formulary."""
        cleaned = _clean(raw)
        if not cleaned:
            return None
        found = self._lookup(cleaned)
        if found is not None:
            generic, method = found
            return Match(raw, generic, method, 1.0)
        stripped = self._strip(cleaned)
        if stripped != cleaned and stripped:
            found = self._lookup(stripped)
            if found is not None:
                return Match(raw, found[0], "salt_or_form", 1.0)
        return self._typo(raw, stripped or cleaned)

    def exact(self, name: str) -> str | None:
        """The generic for a name known exactly (generic, brand or synonym), else ``None``."""
        found = self._lookup(name)
        return found[0] if found is not None else None

    def _lookup(self, name: str) -> tuple[str, Method] | None:
        return self._names.get(name) or self._names.get(name.replace("-", " "))

    def _strip(self, name: str) -> str:
        """Drop dose strengths, dose-form words and trailing salt names ("losartan potassium")."""
        name = _DOSE.sub(" ", name)
        words = [w for w in _SPACES.split(name) if w and w not in self._forms]
        while len(words) > 1 and words[-1] in self._salts:
            if self._lookup(" ".join(words)) is not None:  # "potassium chloride" is a drug
                break
            words.pop()
        return " ".join(words)

    def _typo(self, raw: str, name: str) -> Match | None:
        edits = max_typo_edits(len(name))
        if edits == 0:
            return None
        candidates = process.extract(
            name, self._choices, scorer=DamerauLevenshtein.distance, score_cutoff=edits, limit=8
        )
        if not candidates:
            return None
        best_distance = min(distance for _, distance, _ in candidates)
        generics = {self._names[c][0] for c, distance, _ in candidates if distance == best_distance}
        if len(generics) != 1:
            return None  # as close to two different drugs: do not guess
        best = next(c for c, distance, _ in candidates if distance == best_distance)
        confidence = 1 - best_distance / max(len(name), len(best))
        return Match(raw, generics.pop(), "typo", round(confidence, 3))


def _clean(name: str) -> str:
    name = _NOISE.sub(" ", name.lower())
    name = name.replace("\u2019", "'").replace("_", " ").strip(" .,;:")
    return _SPACES.sub(" ", name).strip()
