"""Drug-name resolution: a parsed name -> the covered generics it means, or a real drug the
formulary does not cover, or nothing. Never a guess.

Order: the formulary's own names (generics, brands, synonyms, products, ambiguous names); the
same without salt or ester words (``metoprolol succinate``); a combination written out
(``lisinopril-hydrochlorothiazide``, ``hydrocodone/APAP``); the broad lexicon of real drug names
(a real drug outside the formulary is "recognised, not covered", never its neighbour); and last a
typo correction, only when one drug in the formulary *and* the lexicon is clearly the closest
(a margin over the next drug) and the edit is small for the word's length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from rapidfuzz import process
from rapidfuzz.distance import OSA

from .knowledge import KnowledgeBase, Product, ambiguous_label

__all__ = ["Method", "Resolution", "Resolver", "Unread", "max_typo_edits"]

Method = Literal[
    "generic", "brand", "synonym", "product", "salt", "combination", "lexicon", "typo", "ambiguous"
]

# Salt and ester words dropped from the end of a name ("losartan potassium"), unless the whole
# name is itself a drug ("potassium chloride").
_SALTS = frozenset(
    """hydrochloride hcl dihydrochloride sodium potassium calcium magnesium besylate besilate
    maleate mesylate citrate tartrate bitartrate succinate sulfate sulphate fumarate hyclate
    bromide hydrobromide acetate phosphate monohydrate dihydrate trihydrate hemihydrate dimesylate
    etexilate dipropionate propionate medoxomil axetil pivoxil valerate cypionate enanthate
    decanoate palmitate furoate xinafoate lactate gluconate carbonate chloride mononitrate?
    disodium dipotassium trometamol tromethamine lysine arginine estolate ethylsuccinate
    stearate aspartate mandelate hippurate napsylate pamoate embonate oxalate epolamine
    """.replace("?", "").split()
)
# Words that qualify a product without naming another ingredient ("baby aspirin").
_QUALIFIERS = frozenset(
    [
        "low",
        "dose",
        "baby",
        "adult",
        "extra",
        "strength",
        "regular",
        "maximum",
        "max",
        "junior",
        "children's",
        "childrens",
        "infant",
        "infants'",
        "arthritis",
        "generic",
        "brand",
        "otc",
        "plain",
        "liqui-gels",
        "liquigels",
        "gelcaps",
        "caplets",
        "caplet",
        "rapid",
        "release",
    ]
)
_COMBINATION = re.compile(r"\s*(?:/|\+|&|,|\band\b|\bwith\b|(?<=[a-z])-(?=[a-z]))\s*")
# The lexicon's combination names: "a/b", "a, b, and c", "a and b".
_LEXICON_PARTS = re.compile(r"\s*/\s*|\s*,\s*(?:and\s+)?|\s+and\s+")
# Words after a brand that name more ingredients than the brand alone ("Advil Cold and Sinus",
# "Motrin PM", "Mucinex DM", "Claritin-D"): such a name is not read as the brand alone.
_VARIANT_WORDS = frozenset(
    [
        "pm",
        "dm",
        "d",
        "cold",
        "sinus",
        "flu",
        "allergy",
        "congestion",
        "plus",
        "cough",
        "nighttime",
        "night",
        "daytime",
        "day",
        "multi-symptom",
        "severe",
        "cf",
        "hbp",
        "decongestant",
    ]
)
# Words a leading name may carry without changing what it is: how it is packed or dosed
# ("Medrol dose pack", "Zithromax Z-Pak"). Any other word after a name is unknown, and a name
# with an unknown word is not read as the name alone: a variant's word can mean other
# ingredients ("Excedrin Tension Headache" has no aspirin, "Motrin Dual Action" adds
# acetaminophen).
_REGIMEN_WORDS = frozenset(
    [
        "dose",
        "pack",
        "dosepak",
        "dosepack",
        "pak",
        "z-pak",
        "tri-pak",
        "titration",
        "starter",
        "kit",
    ]
)
_ROUTE_SPECIFIC: frozenset[Method] = frozenset(["generic", "brand", "synonym", "salt", "typo"])
"""How a drug must have been read for its route-specific product to be looked for (not a
product, a combination, an ambiguous name or a lexicon name, which say what they are)."""
_PRODUCT_NUMBER = re.compile(r"[a-z]?\d+(?:\.\d+)?")
"""A strength or a strength code after a brand ("Klor-Con M20")."""
_WORD_SPLIT = re.compile(r"[\s-]+")
_FORMULATION = re.compile(r"\s*\([^)]*\)\s*$")
_TYPO_MARGIN = 1
"""A typo is read as the closest drug only if every other drug is at least this many edits
further away."""


def max_typo_edits(length: int) -> int:
    """Edits allowed for a name of this length (Damerau-Levenshtein: a swap counts as one).
    Names of 4 characters or fewer are never corrected."""
    if length <= 4:
        return 0
    if length <= 7:
        return 1
    if length <= 11:
        return 2
    return 3


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one name means. ``generics``: covered drugs, screened; ``not_covered``: real drugs
    (the lexicon's canonical names) that the knowledge base does not cover."""

    name: str
    generics: tuple[str, ...]
    not_covered: tuple[str, ...]
    method: Method
    confidence: float = 1.0
    read_as: str | None = None
    """For a typo: the real name it was read as."""
    route: str | None = None
    """A product's fixed local route (``Vigamox``: ophthalmic)."""
    candidates: tuple[str, ...] = ()
    """For an ambiguous name: the drugs it could be."""


@dataclass(frozen=True, slots=True)
class Unread:
    """A name that was not read as any drug, and why (reported with it, never guessed)."""

    name: str
    reason: str


NOT_KNOWN = "not a drug name known here"
ORGAN_WORDS = frozenset({"thyroid"})
"""Drug names that are also the organ a drug treats (desiccated thyroid is sold as "Thyroid"):
alone in parentheses after another drug ("Synthroid (thyroid)") they are a comment, not a
second drug."""


@dataclass(frozen=True, slots=True)
class _Known:
    generics: tuple[str, ...]
    method: Method
    route: str | None = None
    candidates: tuple[str, ...] = ()


class Resolver:
    def __init__(self, knowledge: KnowledgeBase) -> None:
        self._known: dict[str, _Known] = {}
        for drug in knowledge.drug_file.drugs:
            self._add(drug.generic, _Known((drug.generic,), "generic"))
            for brand in drug.brands:
                self._add(brand, _Known((drug.generic,), "brand"))
            for synonym in drug.synonyms:
                self._add(synonym, _Known((drug.generic,), "synonym"))
        for product in knowledge.drug_file.products:
            for name in product.names:
                self._add(name, _product(product))
        for entry in knowledge.drug_file.ambiguous:
            label = ambiguous_label(entry)
            self._add(entry.name, _Known((label,), "ambiguous", None, tuple(entry.candidates)))
        self._ambiguous_labels = frozenset(
            ambiguous_label(e) for e in knowledge.drug_file.ambiguous
        )
        self._lexicon = knowledge.lexicon
        # The typo step searches every name a real drug goes by, grouped by length.
        self._by_length: dict[int, list[str]] = {}
        for name in sorted({*self._known, *self._lexicon}):
            self._by_length.setdefault(len(name), []).append(name)
        self._closest = lru_cache(maxsize=4096)(self._closest_drug)

    def _add(self, name: str, known: _Known) -> None:
        for variant in _variants(clean(name)):
            self._known.setdefault(variant, known)

    def correct(self, name: str) -> Resolution | Unread:
        """A misspelling read as the one drug clearly closest to it, or why not (the typo
        search alone: call it after :meth:`lookup` found nothing it may search for)."""
        cleaned = clean(name)
        return self._typo(name, cleaned) if cleaned else Unread(name, NOT_KNOWN)

    def exact_name(self, text: str) -> Resolution | None:
        """The whole text as one name, exactly (``Tylenol 3``, ``Humulin 70/30``, ``oral
        contraceptive``), before the parser splits it into a name and its attributes."""
        cleaned = clean(text)
        found = self._exact(cleaned) if cleaned else None
        return _with_name(found, text.strip()) if found is not None else None

    def is_ambiguous(self, label: str) -> bool:
        """``label`` is how an ambiguous name is shown (``isosorbide (... or ...)``)."""
        return label in self._ambiguous_labels

    def known_generics(self, name: str) -> tuple[str, ...]:
        """The drugs a formulary name (generic, brand, synonym, product) means, exactly."""
        known = self._known.get(name)
        return known.generics if known is not None else ()

    def resolve(
        self, name: str, *, allow_typo: bool = True, allow_partial: bool = True
    ) -> Resolution | None:
        """Resolve one name as written, or ``None`` if it is not read as any drug (see
        :meth:`lookup`, which also says why)."""
        found = self.lookup(name, allow_typo=allow_typo, allow_partial=allow_partial)
        return found if isinstance(found, Resolution) else None

    def lookup(
        self, name: str, *, allow_typo: bool = True, allow_partial: bool = True
    ) -> Resolution | Unread:
        """One name as written: the drugs it means, or why it is read as none.
        ``allow_typo=False`` skips the typo search (the screener budgets searches);
        ``allow_partial=False`` refuses a leading name with other words after it (a comment in
        parentheses, "aspirin allergy", is not a drug the patient takes). A known name followed
        by words it is not known with ("Excedrin Tension Headache", "Mucinex D") is reported,
        and never searched for a neighbour: the neighbour would be another product."""
        cleaned = clean(name)
        if not cleaned:
            return Unread(name, NOT_KNOWN)
        found = self._exact(cleaned)
        if found is None:
            bare = _drop_qualifiers(cleaned)
            if bare != cleaned and bare:
                found = self._exact(bare)
        if found is None:
            found = self._combination(cleaned)
        if found is None and allow_partial:
            leading = self._leading_name(cleaned)
            if isinstance(leading, str):
                return Unread(name, leading)
            found = leading
        if found is not None:
            return _with_name(found, name)
        return self._typo(name, cleaned) if allow_typo else Unread(name, NOT_KNOWN)

    def for_route(
        self, found: Resolution, route: str | None, form: str | None
    ) -> Resolution | None:
        """The route-specific product of a drug read from a string's route or dose-form words
        (``selegiline transdermal``, ``selegiline ... patch``: Emsam, whose contraindications
        are not oral selegiline's; ``diclofenac ... patch``: Flector, topical), or ``None`` when
        the drug has none for that route or form. Only a single covered drug read by its own
        name is looked for: the written name and the generic, each with the route or the form
        after it (``<name> transdermal``, ``<name> patch``, ``<name> eye drops``) or the route
        before it (``transdermal <name>``), must be a name of the formulary exactly."""
        if len(found.generics) != 1 or found.method not in _ROUTE_SPECIFIC:
            return None
        words = [w for w in (route, form) if w]
        if form == "drops" and route in {"ophthalmic", "otic"}:
            words.insert(0, "eye drops" if route == "ophthalmic" else "ear drops")
        if not words:
            return None
        for base in dict.fromkeys((clean(found.name), found.generics[0])):
            for word in words:
                for candidate in (f"{base} {word}", f"{word} {base}"):
                    known = self._known.get(candidate)
                    if known is None or known.method == "ambiguous":
                        continue
                    if known.generics == found.generics and known.route == found.route:
                        return None  # the same drug by the same route: nothing to change
                    return replace(  # a misspelling stays a correction, reported as one
                        found,
                        generics=known.generics,
                        not_covered=(),
                        method="typo" if found.method == "typo" else known.method,
                        read_as=candidate,
                        route=known.route,
                    )
        return None

    def unknown_words(self, name: str) -> str | None:
        """Why a name that starts with a known name is not read as it, or ``None``."""
        found = self._leading_name(clean(name))
        return found if isinstance(found, str) else None

    def _leading_name(self, name: str) -> Resolution | str | None:
        """``Medrol dose pack``, ``Klor-Con M20``, ``Maxzide-25``, ``Tylenol Extra Strength
        caplets``: the longest leading words that are a known name, when every later word only
        says how it is packed, dosed or how strong it is, or names the same drug. A later word
        that names another drug, a variant ("PM", "D", "Cold") or nothing known gives the
        reason it is not read as the leading name (a string); ``None`` when no leading words
        are a known name."""
        words = name.split()
        numbered = re.fullmatch(r"(.*[a-z])-\d+(?:\.\d+)?", words[0]) if words else None
        if numbered:  # a brand with its strength joined by a hyphen: "maxzide-25"
            words = [numbered.group(1), *words[1:]]
        for size in range(len(words) - (0 if numbered else 1), 0, -1):
            leading = " ".join(words[:size])
            found = self._exact(leading)
            if found is None or found.method == "ambiguous":
                continue
            same = {*found.generics, *found.not_covered}
            rest = words[size:]
            unknown: list[str] = []
            i = 0
            while i < len(rest):
                for j in range(min(i + 4, len(rest)), i, -1):  # the longest drug name first
                    named = self._drugs_in(" ".join(rest[i:j]))
                    if named:
                        if named - same:
                            return f"'{leading}' is followed by another drug's name"
                        i = j
                        break
                else:
                    if not _harmless(rest[i]):
                        unknown.append(rest[i])
                    i += 1
            if unknown:
                variant = "a variant's" if _VARIANT_WORDS.intersection(unknown) else "unknown"
                return (
                    f"'{leading}' with {variant} words ({' '.join(unknown)}): a product's "
                    f"variant can have other ingredients, so it is not read as {leading}"
                )
            return found
        return None

    def _drugs_of(self, name: str) -> tuple[str, ...]:
        """The drugs an exact name (formulary or lexicon) stands for: covered generics, and the
        lexicon's names of real drugs not covered; nothing for a name known nowhere."""
        known = self._known.get(name)
        if known is not None:
            return known.generics
        canonical = self._lexicon.get(name)
        if canonical is None:
            return ()
        found = self._from_lexicon(name, canonical)
        return (*found.generics, *found.not_covered)

    def _drugs_in(self, phrase: str) -> set[str]:
        """The drugs a phrase names exactly, or nothing (phrases under 3 letters name none)."""
        return set(self._drugs_of(phrase)) if len(phrase) >= 3 else set()

    def _exact(self, name: str) -> Resolution | None:
        """A known name, the same without salt words, or a real drug from the lexicon."""
        for variant in _variants(name):
            known = self._known.get(variant)
            if known is not None:
                return _from_known(name, known, known.method)
        stripped = _strip_salts(name, self._known)
        if stripped != name:
            for variant in _variants(stripped):
                known = self._known.get(variant)
                if known is not None:
                    if known.method == "ambiguous":
                        # "magnesium sulfate": a salt of its own, not one of the candidates
                        # (magnesium oxide or hydroxide); recognised, not covered
                        canonical = self._lexicon.get(name)
                        if canonical is not None:
                            return self._from_lexicon(name, canonical)
                        return Resolution(name, (), (name,), "salt")
                    return _from_known(name, known, "salt")
        for candidate in (name, stripped):
            canonical = self._lexicon.get(candidate)
            if canonical is not None:
                return self._from_lexicon(name, canonical)
        return None

    def _from_lexicon(self, name: str, canonical: str) -> Resolution:
        """A lexicon drug: each component (``a/b`` canonical names are combinations) is either a
        covered generic or recognised but not covered."""
        generics: list[str] = []
        not_covered: list[str] = []
        for component in _LEXICON_PARTS.split(canonical):
            # "paclitaxel (with polyoxyethylated castor oil)": the drug, not its formulation
            component = _FORMULATION.sub("", component).strip()
            if not component:
                continue
            known = self._known.get(component)
            if known is None:  # a salt of a covered drug; not of an ambiguous name
                known = self._known.get(_strip_salts(component, self._known))
                if known is not None and known.method == "ambiguous":
                    known = None
            if known is not None:
                _extend(generics, known.generics)
            else:
                _extend(not_covered, (component,))
        return Resolution(name, tuple(generics), tuple(not_covered), "lexicon")

    def _combination(self, name: str) -> Resolution | None:
        """``lisinopril-hydrochlorothiazide``, ``hydrocodone/APAP``, ``a + b``: every part must
        resolve exactly (no typo correction inside a combination)."""
        parts = [p for p in _COMBINATION.split(name) if p]
        if len(parts) < 2:
            return None
        generics: list[str] = []
        not_covered: list[str] = []
        for part in parts:
            found = self._exact(part) or self._exact(_drop_qualifiers(part))
            if found is None or found.method == "ambiguous":
                return None
            _extend(generics, found.generics)
            _extend(not_covered, found.not_covered)
        return Resolution(name, tuple(generics), tuple(not_covered), "combination")

    def _typo(self, raw: str, name: str) -> Resolution | Unread:
        closest = self._closest(name)
        if closest is None:
            return Unread(raw, NOT_KNOWN)
        best, distance = closest
        found = self._exact(best)
        if found is None or found.method == "ambiguous":
            return Unread(raw, NOT_KNOWN)
        if not _same_product(name, best):
            return Unread(
                raw,
                f"the closest name, '{best}', differs by a whole word: a correction never "
                "reads one product as another",
            )
        return Resolution(
            raw,
            found.generics,
            found.not_covered,
            "typo",
            round(1 - distance / max(len(name), len(best)), 3),
            read_as=best,
            route=found.route,
        )

    def _closest_drug(self, name: str) -> tuple[str, int] | None:
        """The one real drug name clearly closest to ``name`` and its distance, or ``None``.
        Distance: optimal string alignment (Damerau-Levenshtein where a swap of two adjacent
        letters is one edit)."""
        edits = max_typo_edits(len(name))
        if edits == 0:
            return None
        reach = edits + _TYPO_MARGIN  # far enough to see the nearest competitor
        choices = [
            candidate
            for length in range(len(name) - reach, len(name) + reach + 1)
            for candidate in self._by_length.get(length, ())
        ]
        hits = process.extract(name, choices, scorer=OSA.distance, score_cutoff=reach, limit=50)
        # Per drug, its closest name (a formulary name before a lexicon spelling).
        by_drug: dict[tuple[str, ...], tuple[int, int, str]] = {}
        for candidate, distance, _ in hits:
            identity = self._identity(candidate)
            key = (int(distance), candidate not in self._known, candidate)
            if identity not in by_drug or key < by_drug[identity]:
                by_drug[identity] = key
        if not by_drug:
            return None
        ranked = sorted(by_drug.values())
        best_distance, _, best = ranked[0]
        runner_up = ranked[1][0] if len(ranked) > 1 else reach + 1
        if best_distance > edits or runner_up - best_distance < _TYPO_MARGIN:
            return None  # too far, or another drug is about as close: do not guess
        return best, best_distance

    def _identity(self, name: str) -> tuple[str, ...]:
        """Which drug a name stands for, so that two names of one drug do not compete."""
        return self._drugs_of(name) or (name,)


def _product(product: Product) -> _Known:
    return _Known(tuple(dict.fromkeys(product.components)), "product", product.route)


def _from_known(name: str, known: _Known, method: Method) -> Resolution:
    return Resolution(
        name, known.generics, (), method, route=known.route, candidates=known.candidates
    )


def _with_name(found: Resolution, name: str) -> Resolution:
    return Resolution(
        name,
        found.generics,
        found.not_covered,
        found.method,
        found.confidence,
        found.read_as,
        found.route,
        found.candidates,
    )


def _extend(target: list[str], items: Iterable[str]) -> None:
    for item in items:
        if item not in target:
            target.append(item)


def _variants(name: str) -> tuple[str, ...]:
    """Spellings that mean the same name: ``co-trimoxazole`` / ``co trimoxazole``,
    ``st. john's wort`` / ``st john's wort``."""
    variants = [name]
    for candidate in (name.replace("-", " "), name.replace(".", ""), name.replace("'", "")):
        if candidate not in variants:
            variants.append(candidate)
    return tuple(variants)


def _strip_salts(name: str, known: dict[str, _Known]) -> str:
    words = name.split()
    while len(words) > 1 and words[-1] in _SALTS:
        if " ".join(words) in known:  # "potassium chloride" is a drug
            break
        words.pop()
    while len(words) > 1 and words[0] in _SALTS and " ".join(words) not in known:
        words.pop(0)  # "sodium valproate"
    return " ".join(words)


def _harmless(word: str) -> bool:
    """A word after a name that does not change which product it is."""
    return (
        word in _QUALIFIERS or word in _REGIMEN_WORDS or _PRODUCT_NUMBER.fullmatch(word) is not None
    )


def _same_product(written: str, known: str) -> bool:
    """A misspelling keeps the product's identity: the same words, in order, each either the
    same or a misspelling of it (a word of 4 letters or fewer, a variant word or a number only
    the same). "Tylenol Cold" is not "Tylenol No 3", "Bayer PM" not "Bayer 73"."""
    ours, theirs = _WORD_SPLIT.split(written), _WORD_SPLIT.split(known)
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs, strict=True):
        if a == b:
            continue
        if a in _VARIANT_WORDS or b in _VARIANT_WORDS or not (a.isalpha() and b.isalpha()):
            return False
        if OSA.distance(a, b) > max_typo_edits(max(len(a), len(b))):
            return False
    return True


def _drop_qualifiers(name: str) -> str:
    """Without qualifier words and product numbers ("codeine #3")."""
    return " ".join(
        w for w in name.split() if w not in _QUALIFIERS and not (w[:1] == "#" and w[1:].isdigit())
    )


_NOISE = re.compile(r"[®™©*\"“”]")
_SPACES = re.compile(r"\s+")


def clean(name: str) -> str:
    """Lower case, trademark signs and quotes dropped, spacing collapsed."""
    name = _NOISE.sub(" ", name.lower()).replace("\u2019", "'").replace("_", " ")
    return _SPACES.sub(" ", name).strip(" .,;:-/")
