"""Screen one patient's medications: parse each string, resolve its names, find every interacting
pair among the drugs with systemic exposure."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, cast

from .knowledge import (
    LOCAL_ROUTES,
    SEVERITY_RANK,
    InteractionRule,
    KnowledgeBase,
    LocalRoute,
    RuleSide,
)
from .medstrings import PARSED_FIELDS, ParsedMedication, parse_medication
from .resolve import NOT_KNOWN, ORGAN_WORDS, Resolution, Resolver, Unread, clean

__all__ = [
    "MAX_FINDINGS",
    "OUTPUT_FIELDS",
    "Budget",
    "Entry",
    "Finding",
    "Screener",
    "ScreeningResult",
]

_BASIS = {2: "drug pair", 1: "drug and class", 0: "class pair"}
MAX_TYPO_SEARCHES = 20
"""Typo searches per row (each scans the lexicon); later unknown names are reported as not
recognised without one, so that a list of junk cannot cost unbounded CPU."""
MAX_FINDINGS = 100
"""Interactions listed per row, the most severe first; more are counted in
``interactions_omitted`` and named in the note (50 drugs can make 1,225 pairs)."""
_PAIRS_PER_STEP = 200
ROW_LIMIT = f"not searched: at most {MAX_TYPO_SEARCHES} misspellings per row"
REQUEST_BUDGET = "not searched: the request's budget"
"""Why a name was not searched: the row's typo searches, or the request's budget, spent."""
"""Drug pairs looked up between two yields of :meth:`Screener.steps`."""


@dataclass(slots=True)
class Budget:
    """What one request may spend on name resolution, across all its rows: typo searches
    (each scans the lexicon, 2-4 ms) and name lookups (one per medication string). Past
    either, the remaining names are reported as not recognised, with the reason, not searched.
    """

    typo_searches: int
    lookups: int

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(typo_searches=1 << 62, lookups=1 << 62)


@dataclass(frozen=True, slots=True)
class Finding:
    """One interacting pair and the rule that explains it."""

    drug_a: str
    drug_b: str
    rule: InteractionRule
    age_rule: InteractionRule | None = None
    """An age-specific rule (AGS Beers Criteria) matching the pair beside ``rule``: its advice
    and source are added to the rule's."""

    @property
    def advice(self) -> str:
        advice = self.rule.advice_for_pair(self.drug_a, self.drug_b)
        if self.age_rule is None:
            return advice
        return f"{advice} {self.age_rule.advice_for_pair(self.drug_a, self.drug_b)}"

    @property
    def source(self) -> str:
        if self.age_rule is None:
            return self.rule.source
        return f"{self.rule.source}; {self.age_rule.source}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "drug_a": self.drug_a,
            "drug_b": self.drug_b,
            "severity": self.rule.severity,
            "mechanism": self.rule.mechanism,
            "clinical_effect": self.rule.clinical_effect,
            "advice": self.advice,
            "rule_id": self.rule.id,
            "basis": _BASIS[self.rule.specificity],
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Entry:
    """One medication string: parsed, resolved, and what the screen did with it."""

    parsed: ParsedMedication
    resolutions: tuple[Resolution, ...]
    status: str
    """``screened``, ``not_covered`` (real drugs the knowledge base does not cover),
    ``local_route`` (a topical, eye, ear or vaginal product: not systemic exposure),
    ``unrecognized``."""
    screened: tuple[str, ...] = ()
    not_covered: tuple[str, ...] = ()
    local: tuple[str, ...] = ()
    route: str | None = None
    reason: str | None = None
    """Why an ``unrecognized`` string was read as no drug."""

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.parsed.as_dict(),
            "route": self.route,
            "status": self.status,
            "generics": list(self.screened),
            "not_covered": list(self.not_covered),
            "not_screened": list(self.local),
            "reason": self.reason,
            "resolved_by": [
                {
                    "name": r.name,
                    "method": r.method,
                    "confidence": r.confidence,
                    "read_as": r.read_as,
                    "candidates": list(r.candidates),
                }
                for r in self.resolutions
            ],
        }


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    entries: list[Entry]
    medications_normalized: list[str]
    """The drugs screened (systemic exposure), in first-seen order, each once."""
    findings: list[Finding] = field(default_factory=list)

    @property
    def unrecognized(self) -> list[str]:
        return _unique(e.parsed.text for e in self.entries if e.status == "unrecognized")

    @property
    def not_covered(self) -> list[dict[str, str]]:
        seen: list[dict[str, str]] = []
        for entry in self.entries:
            for name in entry.not_covered:
                item = {"input": entry.parsed.text, "name": name}
                if item not in seen:
                    seen.append(item)
        return seen

    @property
    def corrections(self) -> list[dict[str, Any]]:
        return [
            {
                "input": r.name,
                "read_as": r.read_as,
                "generics": list(r.generics),
                "confidence": r.confidence,
            }
            for e in self.entries
            for r in e.resolutions
            if r.method == "typo"
        ]

    @property
    def not_screened(self) -> list[dict[str, str]]:
        return [
            {
                "input": e.parsed.text,
                "generic": generic,
                "route": e.route or "",
                "reason": f"{e.route} product: not screened as systemic exposure",
            }
            for e in self.entries
            for generic in e.local
        ]

    @property
    def duplicates(self) -> list[dict[str, Any]]:
        """A drug that several entries supply (``Norco`` and ``Tylenol``: acetaminophen twice)."""
        sources: dict[str, list[str]] = {}
        for entry in self.entries:
            for generic in entry.screened:
                sources.setdefault(generic, [])
                if entry.parsed.text not in sources[generic]:
                    sources[generic].append(entry.parsed.text)
        return [{"generic": g, "inputs": s} for g, s in sources.items() if len(s) > 1]

    @property
    def highest_severity(self) -> str:
        if not self.findings:
            return "none"
        return max((f.rule.severity for f in self.findings), key=SEVERITY_RANK.__getitem__)


FINDING_FIELDS: dict[str, Any] = {
    "drug_a": str,
    "drug_b": str,
    "severity": str,
    "mechanism": str,
    "clinical_effect": str,
    "advice": str,
    "rule_id": str,
    "basis": str,
    "source": str,
}
"""The keys of :meth:`Finding.as_dict` and their types."""
ENTRY_FIELDS: dict[str, Any] = {
    **PARSED_FIELDS,
    "route": str,
    "status": str,
    "generics": [str],
    "not_covered": [str],
    "not_screened": [str],
    "reason": str,
    "resolved_by": [
        {"name": str, "method": str, "confidence": float, "read_as": str, "candidates": [str]}
    ],
}
"""The keys of :meth:`Entry.as_dict` and their types."""
OUTPUT_FIELDS: dict[str, Any] = {
    "medications_normalized": [str],
    "unrecognized": [str],
    "not_covered": [{"input": str, "name": str}],
    "corrections": [{"input": str, "read_as": str, "generics": [str], "confidence": float}],
    "not_screened": [{"input": str, "generic": str, "route": str, "reason": str}],
    "duplicates": [{"generic": str, "inputs": [str]}],
    "interactions": [FINDING_FIELDS],
    "highest_severity": str,
    "medications": [ENTRY_FIELDS],
}
"""The shape of what a screening contributes to an output row (the model's nested fields:
``interactions`` are the findings, ``medications`` the entries), declared beside the code that
writes it so that a typed consumer (a Spark result type) is derived, not retyped. The notation:
a Python type (``str``, ``bool``, ``float``), ``[t]`` a list of ``t``, a dict an object with
those keys; any value may be None. A test checks it against real outputs, key for key."""


class Screener:
    def __init__(self, knowledge: KnowledgeBase) -> None:
        self.knowledge = knowledge
        self.resolver = Resolver(knowledge)

    def screen(self, medications: list[str], budget: Budget | None = None) -> ScreeningResult:
        """Screen one patient's list (all at once: see :meth:`steps` to screen in slices)."""
        steps = self.steps(medications, budget)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                result: ScreeningResult = done.value
                return result

    def steps(
        self, medications: list[str], budget: Budget | None = None
    ) -> Generator[None, None, ScreeningResult]:
        """The screening, one medication string (or one slice of drug pairs) per step: the
        caller may yield to other work between steps, and stop by not asking for more."""
        budget = budget if budget is not None else Budget.unlimited()
        entries: list[Entry] = []
        searches_left = MAX_TYPO_SEARCHES
        for text in medications:
            if not text.strip():
                continue
            if budget.lookups <= 0:
                parsed = parse_medication(text)
                entries.append(self._entry(parsed, [], REQUEST_BUDGET))
                yield
                continue
            budget.lookups -= 1
            # Why a misspelling search is not allowed, or None when it is.
            spent = ROW_LIMIT if searches_left <= 0 else None
            if spent is None and budget.typo_searches <= 0:
                spent = REQUEST_BUDGET
            resolutions, parsed, searched, reason = self._resolve(text, spent)
            searches_left -= searched
            budget.typo_searches -= searched
            entries.append(self._entry(parsed, resolutions, reason))
            yield
        supplied_by: dict[str, set[int]] = {}  # generic -> the entries that supply it
        for index, entry in enumerate(entries):
            for generic in entry.screened:
                supplied_by.setdefault(generic, set()).add(index)
        generics = list(supplied_by)
        limited = self._limited(entries, supplied_by)
        keys = self.knowledge.keys
        findings: list[Finding] = []
        for n, (a, b) in enumerate(combinations(generics, 2), 1):
            if n % _PAIRS_PER_STEP == 0:
                yield
            if _one_product(supplied_by[a], supplied_by[b], entries):
                continue
            if (a in limited and limited[a].isdisjoint(keys[b])) or (
                b in limited and limited[b].isdisjoint(keys[a])
            ):
                continue  # vaginal metronidazole: its label names warfarin and disulfiram only
            rule = self._rule_for_forms(a, b, entries, supplied_by, for_age=False)
            age_rule = self._rule_for_forms(a, b, entries, supplied_by, for_age=True)
            if rule is not None:
                findings.append(Finding(a, b, rule, age_rule))
            elif age_rule is not None:
                findings.append(Finding(a, b, age_rule))
        # Most severe first; within a severity, the order of the input (stable sort).
        findings.sort(key=lambda f: -SEVERITY_RANK[f.rule.severity])
        return ScreeningResult(entries, generics, findings)

    def _rule_for_forms(
        self,
        a: str,
        b: str,
        entries: list[Entry],
        supplied_by: dict[str, set[int]],
        *,
        for_age: bool,
    ) -> InteractionRule | None:
        """The pair's rule (``for_age``: its age-specific rule), skipping rules about dose
        forms the patient does not take (solid potassium chloride: not an oral solution)."""
        excluded: frozenset[str] = frozenset()
        while (rule := self.knowledge.best_rule(a, b, excluded, for_age=for_age)) is not None:
            if rule.min_count is not None and self._taken(rule.a, supplied_by) < rule.min_count:
                excluded |= {rule.id}
                continue
            if all(
                _takes_form(rule.side_for(g, self.knowledge.keys[g]), entries, supplied_by[g])
                for g in (a, b)
            ):
                return rule
            excluded |= {rule.id}
        return None

    def _resolve(
        self, text: str, search_refused: str | None
    ) -> tuple[list[Resolution], ParsedMedication, bool, str | None]:
        """The string's resolutions, its parsed fields, whether a typo search was spent, and
        why its main name was read as no drug (``None`` when it was read). ``search_refused``
        says why a typo search may not be spent on it (``None``: it may)."""
        parsed = parse_medication(text)
        whole = self.resolver.exact_name(text)  # "Tylenol 3", "oral contraceptive": one name
        if whole is not None:
            return [whole], parsed, False, None
        resolutions: list[Resolution] = []
        searched = False
        reason: str | None = None
        for position, name in enumerate(parsed.names):
            if position != 0 and clean(name) in ORGAN_WORDS:
                continue  # "Synthroid (thyroid)": the organ, not desiccated thyroid
            found = self.resolver.lookup(name, allow_typo=False, allow_partial=position == 0)
            if isinstance(found, Unread):
                if position != 0:
                    continue  # after the main name: a comment, not a drug
                if found.reason != NOT_KNOWN:  # a known name with unknown words: no search
                    reason = found.reason
                    continue
                if search_refused is not None:
                    reason = search_refused
                    continue
                searched = True  # only the main name may be a misspelling, not a comment
                found = self.resolver.correct(name)
                if isinstance(found, Unread):
                    reason = found.reason
                    continue
            if position == 0:  # "selegiline ... patch": the transdermal product, Emsam
                form_route = self.resolver.for_route(found, parsed.route, parsed.form)
                found = form_route if form_route is not None else found
            # After the main name, parentheses hold a generic ("norco (hydrocodone)") or a
            # comment, which resolves to nothing.
            if position == 0 or found.generics or found.not_covered:
                resolutions.append(found)
        return resolutions, parsed, searched, reason

    def _entry(
        self, parsed: ParsedMedication, resolutions: list[Resolution], reason: str | None
    ) -> Entry:
        if not resolutions:
            return Entry(parsed, (), "unrecognized", route=parsed.route, reason=reason or NOT_KNOWN)
        route = next((r.route for r in resolutions if r.route), None) or parsed.route
        screened: list[str] = []
        local: list[str] = []
        not_covered: list[str] = []
        for resolution in resolutions:
            for generic in resolution.generics:
                target = local if self._local_only(generic, route) else screened
                if generic not in target:
                    target.append(generic)
            for name in resolution.not_covered:
                if name not in not_covered:
                    not_covered.append(name)
        if screened:
            status = "screened"
        elif local:
            status = "local_route"
        else:
            status = "not_covered"
        return Entry(
            parsed,
            tuple(resolutions),
            status,
            tuple(screened),
            tuple(not_covered),
            tuple(local),
            route,
        )

    def _limited(
        self, entries: list[Entry], supplied_by: dict[str, set[int]]
    ) -> dict[str, frozenset[str]]:
        """Generics taken only by a local route whose label names the drugs it interacts with:
        generic -> the rule keys (``drug:...``, ``class:...``) it is screened against."""
        limited: dict[str, frozenset[str]] = {}
        for generic, sources in supplied_by.items():
            drug = self.knowledge.drugs.get(generic)
            if drug is None or not drug.local_route_partners:
                continue
            allowed: set[str] = set()
            for index in sources:
                partners = drug.local_route_partners.get(cast(LocalRoute, entries[index].route))
                if partners is None:
                    break  # taken by a route screened against everything
                allowed.update(partners)
            else:
                limited[generic] = frozenset(allowed)
        return limited

    def _taken(self, side: RuleSide, supplied_by: dict[str, set[int]]) -> int:
        """How many of the patient's drugs a class side matches (as a pair's side is matched:
        through the drug's keys, ``except`` honoured)."""
        knowledge = self.knowledge
        return sum(
            1
            for generic in supplied_by
            if side.key in knowledge.keys[generic] and not knowledge.excepted(generic, side)
        )

    def _local_only(self, generic: str, route: str | None) -> bool:
        """A topical, eye, ear or vaginal product is not systemic exposure, unless the drug's
        label says the interaction applies by that route."""
        if route not in LOCAL_ROUTES:
            return False
        drug = self.knowledge.drugs.get(generic)
        return drug is None or route not in drug.local_routes_screened


def _takes_form(side: RuleSide, entries: list[Entry], sources: set[int]) -> bool:
    """Some entry supplying the drug is in one of the side's forms, or has no form written."""
    if side.forms is None:
        return True
    return any(entries[i].parsed.form in (None, *side.forms) for i in sources)


def _one_product(a: set[int], b: set[int], entries: list[Entry]) -> bool:
    """Both drugs come only from one and the same string, and that string names a product
    (Suboxone, Paxlovid, Zestoretic): its components are combined on purpose and not screened
    against each other. Two drugs written together ("warfarin and aspirin") are screened."""
    if len(a) != 1 or a != b:
        return False
    (index,) = a
    return all(r.method in ("product", "lexicon") for r in entries[index].resolutions)


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))
