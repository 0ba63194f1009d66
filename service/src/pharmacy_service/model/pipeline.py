"""The async screening pipeline: parse rows, screen each, write notes concurrently across rows."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelhub.serving import request_id_var

from ..clinical.knowledge import KnowledgeBase
from ..clinical.notes import (
    DISCLAIMER,
    build_prompt,
    finish_llm_note,
    grounding_problem,
    template_note,
)
from ..clinical.screening import MAX_FINDINGS, Budget, Screener, ScreeningResult
from . import tracing
from .errors import (
    InvalidInputError,
    LimitExceededError,
    LLMUnavailableError,
    MalformedInputError,
)
from .llm import LLMObserver, NoteBackend, observed_call

__all__ = [
    "MAX_FINDINGS",
    "MAX_MEDICATIONS",
    "MAX_NAME_LENGTH",
    "MAX_ROWS",
    "OUTPUT_COLUMNS",
    "Pipeline",
    "Row",
    "Slices",
    "budget_from_env",
    "parse_rows",
]

logger = logging.getLogger(__name__)

MAX_ROWS = 1000
MAX_MEDICATIONS = 50
"""Medication strings per row: a patient's list is tens of items (polypharmacy in older adults
is 10-20), not hundreds; every pair of drugs is looked up, so the cost grows with the square."""
MAX_FINDINGS_PER_REQUEST = 10_000
"""Interactions listed in one answer, all rows together: past it the request is refused (413)
rather than answered with tens of megabytes."""
TYPO_SEARCHES_PER_REQUEST = 100
LOOKUPS_PER_REQUEST = 20_000
OUTPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("patient_id", "string"),
    ("medications_normalized", "any"),
    ("unrecognized", "any"),
    ("not_covered", "any"),
    ("corrections", "any"),
    ("not_screened", "any"),
    ("duplicates", "any"),
    ("interactions", "any"),
    ("interactions_omitted", "long"),
    ("highest_severity", "string"),
    ("counseling_note", "string"),
    ("note_source", "string"),
    ("backend", "string"),
    ("disclaimer", "string"),
    ("medications", "any"),
)
"""The fields of one output row (:meth:`Pipeline._output`), in order, with their MLflow
column types: the saved model's output signature and the columns of ``predict``'s table."""
_SLICE_SECONDS = 0.005
"""CPU-bound screening yields the event loop at least this often, so that other requests (and
the LLM calls in flight) keep running beside a large one."""
MAX_INTEGER_ID = 2**53 - 1
"""A patient id sent as a JSON number is read as its digits up to here; past it a double (what
many JSON clients use) no longer holds every integer, so the id may not be the one meant."""
MAX_NAME_LENGTH = 200
MAX_QUESTION_LENGTH = 2000
_SPLIT = re.compile(r"[,;\n]")


@dataclass(frozen=True, slots=True)
class Row:
    patient_id: str
    medications: list[str]
    question: str | None = None


def parse_rows(data: Any) -> list[Row]:
    """Rows from a pandas DataFrame, a list of mappings, or one mapping.

    Raises :class:`InvalidInputError` naming the row and field that is wrong.
    """
    records: list[Any]
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
        records = data.to_dict(orient="records")
    elif isinstance(data, Mapping):
        records = [data]
    elif isinstance(data, list | tuple):
        records = list(data)
    else:
        raise InvalidInputError(
            f"expected rows (a table or a list of objects), got {type(data).__name__}"
        )
    if not records:
        raise InvalidInputError("no rows: send at least one patient", field="rows")
    if len(records) > MAX_ROWS:
        raise LimitExceededError(
            f"{len(records)} rows is more than the {MAX_ROWS} allowed per request", field="rows"
        )
    return [_parse_row(i, record) for i, record in enumerate(records)]


def _parse_row(index: int, record: Any) -> Row:
    where = f"rows[{index}]"
    if not isinstance(record, Mapping):
        raise InvalidInputError(
            f"{where} must be an object, got {type(record).__name__}", field=where
        )
    unknown = set(record) - {"patient_id", "medications", "question"}
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown fields {sorted(map(str, unknown))}; "
            "expected patient_id, medications, question",
            field=f"{where}.{sorted(map(str, unknown))[0]}",
        )
    patient_id = record.get("patient_id")
    if isinstance(patient_id, bool) or _missing(patient_id):
        raise InvalidInputError(f"{where}.patient_id is required", field=f"{where}.patient_id")
    if isinstance(patient_id, float) and patient_id.is_integer():
        patient_id = int(patient_id)  # a whole number, as JSON Schema reads 2181.0 (and pandas
        # stores an integer column that has a missing value)
    if isinstance(patient_id, int):
        if abs(patient_id) > MAX_INTEGER_ID:
            raise InvalidInputError(
                f"{where}.patient_id is an integer past 2^53 - 1, where JSON numbers lose "
                "digits (many clients read them as doubles): send the id as a string",
                field=f"{where}.patient_id",
            )
        patient_id = str(patient_id)
    if not isinstance(patient_id, str) or not patient_id.strip() or len(patient_id) > 128:
        raise InvalidInputError(
            f"{where}.patient_id must be a non-empty string of at most 128 characters",
            field=f"{where}.patient_id",
        )
    _check_text(patient_id, f"{where}.patient_id")
    medications = _parse_medications(where, record.get("medications"))
    question = record.get("question")
    if _missing(question):
        question = None
    elif not isinstance(question, str):
        raise InvalidInputError(
            f"{where}.question must be a string, got {type(question).__name__}",
            field=f"{where}.question",
        )
    elif len(question) > MAX_QUESTION_LENGTH:
        raise InvalidInputError(
            f"{where}.question is longer than {MAX_QUESTION_LENGTH} characters",
            field=f"{where}.question",
        )
    else:
        _check_text(question, f"{where}.question")
    return Row(patient_id.strip(), medications, question.strip() or None if question else None)


def _parse_medications(where: str, value: Any) -> list[str]:
    field = f"{where}.medications"
    items: Iterable[Any]
    if _missing(value):
        raise InvalidInputError(f"{field} is required", field=field)
    if isinstance(value, str):
        items = _SPLIT.split(value)
    elif isinstance(value, list | tuple) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else value
    else:
        raise InvalidInputError(
            f"{field} must be a list of strings or a comma-separated string, "
            f"got {type(value).__name__}",
            field=field,
        )
    items = list(items)
    if len(items) > MAX_MEDICATIONS:  # blank entries count: the limit is on what was sent
        raise LimitExceededError(
            f"{field} lists {len(items)} entries; at most {MAX_MEDICATIONS} medications are "
            "screened per row (a patient's list, not a catalogue)",
            field=field,
        )
    names: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputError(
                f"{field}[{i}] must be a string, got {type(item).__name__}", field=f"{field}[{i}]"
            )
        _check_text(item, f"{field}[{i}]")
        if len(item) > MAX_NAME_LENGTH:
            raise InvalidInputError(
                f"{field}[{i}] is longer than {MAX_NAME_LENGTH} characters", field=f"{field}[{i}]"
            )
        if item.strip():
            names.append(item.strip())
    return names


def _check_text(value: str, field: str) -> None:
    """A string that is Unicode: JSON can carry a lone surrogate (``"\\ud800"``), which no
    encoding can write; refused as malformed (400) on every route, as /v1/screen's parser does."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        raise MalformedInputError(
            f"{field} is not valid Unicode: a lone surrogate (\\u{ord(bad):04x}) at character "
            f"{exc.start}",
            field=field,
        ) from None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def budget_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The per-request name-resolution budget: ``PHARMACY_TYPO_SEARCHES_PER_REQUEST`` (default
    100) and ``PHARMACY_LOOKUPS_PER_REQUEST`` (default 20,000), whole numbers of at least 1."""
    env = os.environ if env is None else env
    values = []
    for name, default in (
        ("PHARMACY_TYPO_SEARCHES_PER_REQUEST", TYPO_SEARCHES_PER_REQUEST),
        ("PHARMACY_LOOKUPS_PER_REQUEST", LOOKUPS_PER_REQUEST),
    ):
        raw = env.get(name, "").strip()
        if not raw:
            values.append(default)
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{name}={raw!r} is invalid: use a whole number of at least 1.")
        values.append(int(raw))
    return values[0], values[1]


class Slices:
    """Yields the event loop once a slice of CPU-bound work has run: the loop is shared with
    every other request and LLM call of the process, and must not stall behind one request.
    A cancelled request (its deadline, its client gone) stops at the next slice."""

    def __init__(self) -> None:
        self._until = time.perf_counter() + _SLICE_SECONDS

    async def tick(self) -> None:
        if time.perf_counter() >= self._until:
            await asyncio.sleep(0)
            self._until = time.perf_counter() + _SLICE_SECONDS


class Pipeline:
    """Screens rows and writes one note per row, the LLM calls running concurrently."""

    def __init__(
        self,
        knowledge: KnowledgeBase,
        backend: NoteBackend | None = None,
        *,
        strict: bool = False,
        max_concurrency: int = 8,
        observer: LLMObserver | None = None,
    ) -> None:
        self.screener = Screener(knowledge)
        self.backend = backend
        self.strict = strict
        self.max_concurrency = max_concurrency
        self.observer = observer if observer is not None else LLMObserver()
        self.typo_searches_per_request, self.lookups_per_request = budget_from_env()

    async def aclose(self) -> None:
        """Release the backend's connections (on the loop that used them)."""
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    @property
    def backend_name(self) -> str:
        return self.backend.name if self.backend is not None else "template"

    async def run(self, rows: list[Row]) -> list[dict[str, Any]]:
        slices = Slices()
        with tracing.span("screen", "TOOL", {"pharmacy.rows": len(rows)}) as span:
            results = await self._screen(rows, slices)
            if tracing.trace_id(span) is not None:  # this request is traced (and sampled)
                span.set_outputs(_screening_summary(rows, results))
                tracing.hide(_names_in(results), medications=True)
        listed = sum(min(len(result.findings), MAX_FINDINGS) for result in results)
        if listed > MAX_FINDINGS_PER_REQUEST:
            raise LimitExceededError(
                f"the answer would list {listed} interactions; at most "
                f"{MAX_FINDINGS_PER_REQUEST} are listed per request: send fewer rows",
                field="rows",
            )
        if self.backend is None:
            outputs = []
            for row, result in zip(rows, results, strict=True):
                await slices.tick()
                note = template_note(result, row.question)
                outputs.append(self._output(row, result, note, "template"))
            return outputs
        limit = asyncio.Semaphore(self.max_concurrency)
        tasks = [
            asyncio.ensure_future(self._llm_row(limit, index, row, result))
            for index, (row, result) in enumerate(zip(rows, results, strict=True))
        ]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _screen(self, rows: list[Row], slices: Slices) -> list[ScreeningResult]:
        """Every row's screening, in slices (see :class:`Slices`), within one budget."""
        budget = Budget(self.typo_searches_per_request, self.lookups_per_request)
        results = []
        for row in rows:
            steps = self.screener.steps(row.medications, budget)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    results.append(done.value)
                    break
                await slices.tick()
            await slices.tick()  # the row's last step (its drug pairs) ran without a yield after it
        return results

    async def _llm_row(
        self, limit: asyncio.Semaphore, index: int, row: Row, result: ScreeningResult
    ) -> dict[str, Any]:
        with tracing.span("note", "CHAIN", {"pharmacy.row": index}) as span:
            output = await self._note_row(limit, index, row, result)
            span.set_attribute("pharmacy.note_source", output["note_source"])
            return output

    async def _note_row(
        self, limit: asyncio.Semaphore, index: int, row: Row, result: ScreeningResult
    ) -> dict[str, Any]:
        assert self.backend is not None
        prompt = build_prompt(row.patient_id, result, row.question)
        async with limit:
            note, failure = await observed_call(self.backend, prompt, self.observer)
        if note is not None:
            problem = grounding_problem(note, row.question, result, self.screener.resolver)
            # On the row's span, not a span of its own: each span costs the request CPU.
            tracing.current_attribute("pharmacy.grounded", problem is None)
            if problem is None:
                return self._output(row, result, finish_llm_note(note, result), "llm")
            # A drug the LLM invented is a medication name like any other: masked in traces,
            # and only the kind of problem is logged.
            tracing.hide(problem.drugs, medications=True)
            tracing.current_attribute("pharmacy.grounding_problem", str(problem))
            logger.info(
                "llm_note_rejected reason=%s row=%d request_id=%s",
                problem.kind,
                index,
                request_id_var.get(),
                extra={"event": "llm_note_rejected", "reason": problem.kind, "row": index},
            )
            note, failure = None, "ungrounded"
        assert failure is not None
        if self.strict:
            raise LLMUnavailableError(
                f"The LLM backend failed ({failure}) for rows[{index}]; "
                "strict mode forbids the template fallback.",
                kind="timeout" if failure == "timeout" else "upstream",
            )
        tracing.current_attribute("pharmacy.fallback_reason", failure)
        self.observer.on_fallback(self.backend.name, failure)
        logger.warning(
            "llm_fallback backend=%s reason=%s row=%d request_id=%s",
            self.backend.name,
            failure,
            index,
            request_id_var.get(),
            extra={
                "event": "llm_fallback",
                "backend": self.backend.name,
                "reason": failure,
                "row": index,
            },
        )
        return self._output(row, result, template_note(result, row.question), "fallback")

    def _output(self, row: Row, result: ScreeningResult, note: str, source: str) -> dict[str, Any]:
        return {
            "patient_id": row.patient_id,
            "medications_normalized": result.medications_normalized,
            "unrecognized": result.unrecognized,
            "not_covered": result.not_covered,
            "corrections": result.corrections,
            "not_screened": result.not_screened,
            "duplicates": result.duplicates,
            "interactions": [finding.as_dict() for finding in result.findings[:MAX_FINDINGS]],
            "interactions_omitted": max(0, len(result.findings) - MAX_FINDINGS),
            "highest_severity": result.highest_severity,
            "counseling_note": note,
            "note_source": source,
            "backend": self.backend_name,
            "disclaimer": DISCLAIMER,
            "medications": [entry.as_dict() for entry in result.entries],
        }


def _screening_summary(rows: list[Row], results: list[ScreeningResult]) -> dict[str, Any]:
    """The screen span's output: per row what was read and found (the masking processor
    replaces patient ids, and medication names unless they may be kept)."""
    return {
        "rows": [
            {
                "patient_id": row.patient_id,
                "medication_count": len(row.medications),
                "medications_normalized": result.medications_normalized,
                "interactions": [
                    {
                        "drug_a": f.drug_a,
                        "drug_b": f.drug_b,
                        "severity": f.rule.severity,
                        "rule": f.rule.id,
                    }
                    for f in result.findings
                ],
                "highest_severity": result.highest_severity,
                "unrecognized": result.unrecognized,
                "not_covered": len(result.not_covered),
            }
            for row, result in zip(rows, results, strict=True)
        ]
    }


def _names_in(results: list[ScreeningResult]) -> list[str | None]:
    """Every string a screening read or reports, whether or not the knowledge base covers it:
    each entry's text as written, the names read in it (and any comment beside them), what each
    was read as (drugs not covered, local-route products, typos' readings, an ambiguous name's
    candidates) and why a string was read as no drug. Masked in the trace wherever it appears:
    an upstream's error can quote the prompt, which names them apart from the text written."""
    names: list[str | None] = []
    for result in results:
        names.extend(result.medications_normalized)
        for entry in result.entries:
            names += (entry.parsed.text, *entry.parsed.names, entry.reason)
            names += (*entry.screened, *entry.not_covered, *entry.local)
            for read in entry.resolutions:
                names += (read.name, read.read_as, *read.generics, *read.not_covered)
                names.extend(read.candidates)
        for finding in result.findings:
            names.extend((finding.drug_a, finding.drug_b))
    return names
