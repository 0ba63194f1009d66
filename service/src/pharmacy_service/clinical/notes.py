"""Counselling notes: the deterministic template, the LLM prompt, the facts every note carries,
and the grounding check an LLM note must pass."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from .resolve import NOT_KNOWN, Resolver
from .screening import MAX_FINDINGS, ScreeningResult

__all__ = [
    "DISCLAIMER",
    "TABLE_LIMITS",
    "GroundingProblem",
    "build_prompt",
    "finish_llm_note",
    "grounding_problem",
    "screening_facts",
    "summary_line",
    "template_note",
]

DISCLAIMER = (
    "This is a screening aid, not medical advice: it does not replace advice from your "
    "pharmacist or prescriber."
)
NOTE_FINDINGS = 10
"""Findings a template note writes out in full (the most severe first); it counts the rest."""
TABLE_LIMITS = (
    "Only the interactions in this screening table were checked; a clean result does not mean "
    "the combination is safe."
)

SYSTEM_INSTRUCTION = (
    "You are a clinical pharmacist writing a short counselling note for a patient. Use ONLY the "
    "facts given in the prompt. Never mention a medication or an interaction that is not in the "
    "facts. Mention every finding of major or contraindicated severity by the names of both "
    "drugs. If there are no findings, say that no interactions were found among the screened "
    "medications. At most 120 words, plain language, no dosing changes. Do not add a "
    "disclaimer: one is appended."
)


def summary_line(result: ScreeningResult) -> str:
    if not result.findings:
        return "no interactions found among " + (
            ", ".join(result.medications_normalized) or "the listed medications"
        )
    listed = "; ".join(
        f"{f.drug_a} + {f.drug_b}: {f.rule.severity}" for f in result.findings[:MAX_FINDINGS]
    )
    rest = len(result.findings) - MAX_FINDINGS
    return f"{listed}; and {rest} more, less severe" if rest > 0 else listed


def screening_facts(result: ScreeningResult) -> list[str]:
    """The sentences every note ends with, LLM or template: how names were read, what was not
    recognised, not covered or not screened, the table's limits, and the disclaimer."""
    facts: list[str] = []
    for correction in result.corrections:
        facts.append(
            f"'{correction['input']}' was read as {correction['read_as']} "
            "(a likely misspelling): please confirm."
        )
    for entry in result.entries:
        for resolution in entry.resolutions:
            if resolution.candidates:
                facts.append(
                    f"'{resolution.name}' could be {' or '.join(resolution.candidates)}: "
                    "it was checked only for what they have in common; please confirm which."
                )
    if result.unrecognized:
        facts.append(
            "Not recognised, please confirm with a pharmacist: "
            + ", ".join(result.unrecognized)
            + "."
        )
        for entry in result.entries:
            if entry.reason is not None and entry.reason != NOT_KNOWN:
                facts.append(f"'{entry.parsed.text}': {entry.reason}.")
    if result.not_covered:
        facts.append(
            "Recognised but not covered by this screen (not checked for interactions): "
            + ", ".join(sorted({item["name"] for item in result.not_covered}))
            + "."
        )
    for item in result.not_screened:
        facts.append(
            f"{item['input']}: {item['route']} product, not screened as exposure of the whole body."
        )
    for item in result.duplicates:
        facts.append(
            f"{item['generic']} is listed {len(item['inputs'])} times "
            f"({'; '.join(item['inputs'])}): check the total daily dose."
        )
    facts.append(TABLE_LIMITS)
    facts.append(DISCLAIMER)
    return facts


def template_note(result: ScreeningResult, question: str | None = None) -> str:
    """A deterministic note built only from the findings (the offline backend and the fallback)."""
    parts: list[str] = []
    if not result.medications_normalized:
        parts.append("None of the listed names could be screened for interactions.")
    elif not result.findings:
        parts.append(
            "No interactions were found among: " + ", ".join(result.medications_normalized) + "."
        )
    else:
        count = len(result.findings)
        parts.append(
            f"{count} interaction{'s' if count != 1 else ''} found; "
            f"highest severity: {result.highest_severity}."
        )
        for n, finding in enumerate(result.findings[:NOTE_FINDINGS], 1):
            parts.append(
                f"{n}. {finding.drug_a} + {finding.drug_b} ({finding.rule.severity}): "
                f"{finding.rule.clinical_effect} {finding.advice}"
            )
        rest = result.findings[NOTE_FINDINGS:]
        if rest:
            by_severity = Counter(f.rule.severity for f in rest)
            counts = ", ".join(f"{n} {severity}" for severity, n in by_severity.items())
            if len(result.findings) <= MAX_FINDINGS:
                parts.append(
                    f"{len(rest)} more interactions ({counts}) are listed in the screening results."
                )
            else:
                parts.append(
                    f"{len(rest)} more interactions ({counts}) were found; the screening results "
                    f"list the {MAX_FINDINGS} most severe."
                )
    if question:
        parts.append("Your question has been noted for the pharmacist.")
    parts.extend(screening_facts(result))
    return " ".join(parts)


def finish_llm_note(note: str, result: ScreeningResult) -> str:
    """The LLM's note followed by the facts every note carries (and the disclaimer, last)."""
    return " ".join([note.strip(), *screening_facts(result)])


def build_prompt(patient_id: str, result: ScreeningResult, question: str | None) -> str:
    findings = [f.as_dict() for f in result.findings[:MAX_FINDINGS]]
    for finding in findings:
        for key in ("mechanism", "source", "basis"):
            finding.pop(key, None)
    payload = {
        "medications_screened": result.medications_normalized,
        "read_as_misspelling": [
            {"written": c["input"], "read_as": c["read_as"]} for c in result.corrections
        ],
        "not_recognised": result.unrecognized,
        "recognised_not_covered": sorted({item["name"] for item in result.not_covered}),
        "not_screened_local_products": [item["input"] for item in result.not_screened],
        "highest_severity": result.highest_severity,
        "findings": findings,
    }
    lines = [
        f"Patient reference: {patient_id}",
        f"Summary: {summary_line(result)}",
        "Facts (JSON, the only facts you may use):",
        json.dumps(payload, ensure_ascii=False),
    ]
    if question:
        lines.append(f"Patient question: {question}")
    lines.append("Write the counselling note now.")
    return "\n".join(lines)


_WORD = re.compile(r"[a-z0-9][a-z0-9'.#-]*")


def _drugs_named(text: str, resolver: Resolver) -> set[str]:
    """Every formulary drug a text names (generic, brand, synonym or product, 1 to 4 words),
    the longest name first at each place ("isosorbide mononitrate", not "isosorbide"); read
    once as written and once with hyphens and slashes as spaces ("oxycodone-acetaminophen")."""
    named: set[str] = set()
    lowered = text.lower()
    for variant in (lowered, lowered.replace("-", " ").replace("/", " ")):
        words = [w.strip(".'-") for w in _WORD.findall(variant)]
        i = 0
        while i < len(words):
            for size in (4, 3, 2, 1):
                found = resolver.known_generics(" ".join(words[i : i + size]))
                if found and i + size <= len(words):
                    named.update(found)
                    i += size
                    break
            else:
                i += 1
    return named


@lru_cache(maxsize=8192)
def _drugs_named_in_rule_text(text: str, resolver: Resolver) -> frozenset[str]:
    """The same for a rule's own text (a finding's effect and advice): the texts are the
    knowledge base's, so the answer is kept."""
    return frozenset(_drugs_named(text, resolver))


def allowed_drugs(result: ScreeningResult, question: str | None, resolver: Resolver) -> set[str]:
    """The drugs a note may name: the patient's, those in local products, and those the
    prompt's facts name (the findings' effect and advice text, the patient's question)."""
    allowed = set(result.medications_normalized)
    allowed.update(item["generic"] for item in result.not_screened)
    for finding in result.findings:
        allowed |= _drugs_named_in_rule_text(finding.rule.clinical_effect, resolver)
        allowed |= _drugs_named_in_rule_text(finding.advice, resolver)
    if question:
        allowed |= _drugs_named(question, resolver)
    return allowed


@dataclass(frozen=True, slots=True)
class GroundingProblem:
    """Why an LLM note cannot be used: ``kind`` (``invented_drugs`` or ``omitted_finding``),
    safe to log; ``drugs``, the drug names it is about (patient data: masked wherever it goes)."""

    kind: str
    drugs: tuple[str, ...]

    def __str__(self) -> str:
        if self.kind == "invented_drugs":
            return f"names drugs outside the facts: {', '.join(self.drugs)}"
        return f"omits the finding {' + '.join(self.drugs)}"


def grounding_problem(
    note: str, question: str | None, result: ScreeningResult, resolver: Resolver
) -> GroundingProblem | None:
    """Why an LLM note cannot be used, or ``None``: it names a drug that is neither the
    patient's nor in the prompt's facts (advice and effect text included), or it leaves out a
    major or contraindicated finding."""
    named = _drugs_named(note, resolver)
    # A name that means several drugs ("potassium") names none of them in particular.
    invented = sorted(
        n for n in named - allowed_drugs(result, question, resolver) if not resolver.is_ambiguous(n)
    )
    if invented:
        return GroundingProblem("invented_drugs", tuple(invented))
    for finding in result.findings:
        if finding.rule.severity in ("major", "contraindicated"):
            missing = [d for d in (finding.drug_a, finding.drug_b) if d not in named]
            if missing:
                return GroundingProblem("omitted_finding", (finding.drug_a, finding.drug_b))
    return None
