"""Counselling notes: the deterministic template, the LLM prompt, and the grounding check."""

from __future__ import annotations

import json
import re

from .normalize import Normalizer
from .screening import ScreeningResult

__all__ = ["DISCLAIMER", "build_prompt", "is_grounded", "summary_line", "template_note"]

DISCLAIMER = "This screening aid does not replace advice from your pharmacist or prescriber."

SYSTEM_INSTRUCTION = (
    "You are a clinical pharmacist writing a short counselling note for a patient. Use ONLY the "
    "findings given in the prompt. Never mention a medication or an interaction that is not in "
    "the findings. If there are no findings, say that no interactions were found among the "
    "recognised medications. Ask the patient to confirm unrecognised names with a pharmacist. "
    "At most 120 words, plain language, no dosing changes."
)


def summary_line(result: ScreeningResult) -> str:
    if not result.findings:
        return "no interactions found among " + (
            ", ".join(result.medications_normalized) or "the listed medications"
        )
    return "; ".join(f"{f.drug_a} + {f.drug_b}: {f.rule.severity}" for f in result.findings)


def template_note(result: ScreeningResult, question: str | None = None) -> str:
    """A deterministic note built only from the findings (the offline backend and the fallback)."""
    parts: list[str] = []
    if not result.medications_normalized:
        parts.append("None of the listed names could be matched to a known medication.")
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
        for n, finding in enumerate(result.findings, 1):
            rule = finding.rule
            parts.append(
                f"{n}. {finding.drug_a} + {finding.drug_b} ({rule.severity}): "
                f"{rule.clinical_effect} {rule.advice}"
            )
    if result.unrecognized:
        parts.append(
            "Not recognised, please confirm with a pharmacist: "
            + ", ".join(result.unrecognized)
            + "."
        )
    if question:
        parts.append("Your question has been noted for the pharmacist.")
    parts.append(DISCLAIMER)
    return " ".join(parts)


def build_prompt(patient_id: str, result: ScreeningResult, question: str | None) -> str:
    findings = [f.as_dict() for f in result.findings]
    for finding in findings:
        finding.pop("mechanism", None)
    payload = {
        "medications": result.medications_normalized,
        "unrecognized": result.unrecognized,
        "highest_severity": result.highest_severity,
        "findings": findings,
    }
    lines = [
        f"Patient reference: {patient_id}",
        f"Summary: {summary_line(result)}",
        "Findings (JSON, the only facts you may use):",
        json.dumps(payload, ensure_ascii=False),
    ]
    if question:
        lines.append(f"Patient question: {question}")
    lines.append("Write the counselling note now.")
    return "\n".join(lines)


_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


def is_grounded(note: str, result: ScreeningResult, normalizer: Normalizer) -> bool:
    """False if the note names a formulary medication that is not on the patient's list: the
    LLM invented something, so the template note is used instead."""
    allowed = set(result.medications_normalized)
    words = _WORD.findall(note.lower())
    for size in (1, 2, 3):
        for i in range(len(words) - size + 1):
            found = normalizer.exact(" ".join(words[i : i + size]))
            if found is not None and found not in allowed:
                return False
    return True
