"""The typed API's request and response models (``POST /v1/screen``) and the error body."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MEDICATION_TEXT",
    "NOT_BLANK",
    "Correction",
    "Duplicate",
    "ErrorBody",
    "Interaction",
    "Medication",
    "NotCovered",
    "NotScreened",
    "PatientIn",
    "ResolvedBy",
    "ScreenRequest",
    "ScreenResponse",
    "ScreenResult",
]


NOT_BLANK = r"[^\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
"""A character that is not white space as Python's ``str.strip`` sees it, which is what the
model checks (``patient_id.strip()``). Spelt out: ``\\S`` differs between the regex engines
that read it (Rust's for pydantic, ECMA's for JSON Schema tools, Python's), on U+001C-U+001F
(space to Python only) and U+FEFF (space to ECMA only)."""


MEDICATION_TEXT = r"^[^,;\n]{0,200}([,;\n][^,;\n]{0,200}){0,49}$"
"""Medications as one string: at most 50 entries separated by commas, semicolons or new lines,
each at most 200 characters (what the model takes; blank entries are skipped)."""


class PatientIn(BaseModel):
    # A misspelt field is refused, never dropped. Patterns are read by Python's re, as the
    # model reads its input (Rust's engine, pydantic's default, cannot compile MEDICATION_TEXT).
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    patient_id: str = Field(min_length=1, max_length=128, pattern=NOT_BLANK, examples=["p-001"])
    medications: (
        Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=50)]
        | Annotated[str, Field(pattern=MEDICATION_TEXT)]
    ) = Field(
        description="Names (at most 50), or one comma-separated string",
        examples=[["Coumadin", "Advil"]],
    )
    question: str | None = Field(default=None, max_length=2000)


class ScreenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patients: list[PatientIn] = Field(min_length=1, max_length=1000)


class Interaction(BaseModel):
    drug_a: str
    drug_b: str
    severity: Literal["contraindicated", "major", "moderate", "minor"]
    mechanism: str
    clinical_effect: str
    advice: str = Field(description="Advice for this pair (the rule's advice for its members)")
    rule_id: str
    basis: Literal["drug pair", "drug and class", "class pair"]
    source: str = Field(description="The label section or reference the rule follows")


class NotCovered(BaseModel):
    input: str = Field(description="The medication string as written")
    name: str = Field(description="The real drug it names, which the knowledge base does not cover")


class Correction(BaseModel):
    input: str = Field(description="The name as written")
    read_as: str = Field(description="The real drug name it was read as")
    generics: list[str]
    confidence: float


class NotScreened(BaseModel):
    input: str
    generic: str
    route: str
    reason: str


class Duplicate(BaseModel):
    generic: str
    inputs: list[str] = Field(description="The medication strings that all supply this drug")


class ResolvedBy(BaseModel):
    name: str
    method: Literal[
        "generic",
        "brand",
        "synonym",
        "product",
        "salt",
        "combination",
        "lexicon",
        "typo",
        "ambiguous",
    ]
    confidence: float
    read_as: str | None
    candidates: list[str]


class Medication(BaseModel):
    """One medication string: its parsed fields, and what the screen did with it."""

    text: str
    name: str | None
    strength: str | None
    unit: str | None
    form: str | None
    route: str | None
    frequency: str | None
    as_needed: bool
    release: str | None
    dose: str | None
    modifier: str | None
    sig: str | None
    strength_per: str | None = Field(
        description="What the strength is per (10 mg/5 mL: '5 mL'; 25 mcg/hr: '1 hr'), or null"
    )
    strength_type: str | None = Field(
        description="With strength_per: concentration, rate, per body weight, per body surface "
        "area or per dose unit"
    )
    dose_count: float | None = Field(
        description="The dose as a number of units (ii tabs: 2; 1/2 tab: 0.5), or null"
    )
    status: Literal["screened", "not_covered", "local_route", "unrecognized"]
    generics: list[str] = Field(description="Drugs screened for interactions")
    not_covered: list[str]
    not_screened: list[str] = Field(description="Drugs in a local product (eye, ear, skin)")
    reason: str | None = Field(
        description="Why an unrecognized string was read as no drug (null otherwise)"
    )
    resolved_by: list[ResolvedBy]


class ScreenResult(BaseModel):
    patient_id: str
    medications_normalized: list[str] = Field(description="The drugs screened, each once")
    unrecognized: list[str]
    not_covered: list[NotCovered] = Field(description="Real drugs recognised but not covered")
    corrections: list[Correction] = Field(description="Names read as a likely misspelling")
    not_screened: list[NotScreened]
    duplicates: list[Duplicate]
    interactions: list[Interaction] = Field(
        description="The most severe first, at most 100 per patient"
    )
    interactions_omitted: int = Field(
        description="Interactions found beyond the 100 listed (the note counts them too)"
    )
    highest_severity: Literal["contraindicated", "major", "moderate", "minor", "none"]
    counseling_note: str
    note_source: Literal["llm", "template", "fallback"]
    backend: str
    disclaimer: str
    medications: list[Medication]


class ScreenResponse(BaseModel):
    results: list[ScreenResult]


class ErrorBody(BaseModel):
    error_code: str
    message: str
    field: str | None = None
    request_id: str | None = None
