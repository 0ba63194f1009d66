"""The MLflow pyfunc wrapper: sync ``predict`` through AsyncExecutor, and ``apredict``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from modelhub.serving import AsyncExecutor

from ..clinical.knowledge import KNOWLEDGE_ARTIFACTS, KnowledgeBase, KnowledgeFiles
from . import tracing
from ._env import env_flag
from .llm import BACKENDS as LLM_BACKENDS
from .llm import NoteBackend, backend_from_env
from .pipeline import OUTPUT_COLUMNS, Pipeline, Row, parse_rows

__all__ = ["BACKENDS", "DEFAULT_LLM_CONCURRENCY", "PharmacyModel", "as_table", "llm_concurrency"]

BACKENDS = ("template", *LLM_BACKENDS)
DEFAULT_LLM_CONCURRENCY = 8


class PharmacyModel(PythonModel):
    """Medication-interaction screener. Configuration is read when the model is loaded:

    - ``PHARMACY_LLM_BACKEND``: ``template`` (default), ``gemini``, ``openai`` or ``anthropic``;
    - ``PHARMACY_LLM_STRICT``: ``true`` turns an LLM failure into an error instead of the
      template fallback;
    - ``PHARMACY_LLM_CONCURRENCY``: notes written at once per ``predict`` call (default 8);
    - ``PHARMACY_LLM_TIMEOUT``, ``PHARMACY_LLM_ATTEMPTS``, and per backend ``<GEMINI|OPENAI|
      ANTHROPIC>_API_KEY``, ``_BASE_URL``, ``_MODEL``.
    """

    pipeline: Pipeline

    def load_context(self, context: Any) -> None:
        artifacts = context.artifacts
        knowledge = KnowledgeBase.load(
            KnowledgeFiles(*(Path(artifacts[name]) for name in KNOWLEDGE_ARTIFACTS))
        )
        # Settings given when loading (the server passes model_config) win over environment
        # variables (what `mlflow models serve` users set), which win over the defaults.
        config = context.model_config or {}
        name = str(
            config.get("llm_backend") or os.environ.get("PHARMACY_LLM_BACKEND") or "template"
        )
        if name not in BACKENDS:
            raise ValueError(
                f"PHARMACY_LLM_BACKEND={name!r} is invalid: use one of {', '.join(BACKENDS)}."
            )
        strict = config.get("llm_strict")
        backend: NoteBackend | None = None
        if name != "template":
            backend = backend_from_env(name)
        strict_mode = (
            env_flag(os.environ, "PHARMACY_LLM_STRICT") if strict is None else bool(strict)
        )
        concurrency = llm_concurrency(config.get("llm_concurrency"))
        loop_errors = int(config.get("inject_loop_errors") or 0)
        loop_block = float(config.get("inject_loop_block") or 0.0)
        if loop_errors or loop_block:  # tests and chaos drills only
            from .faults import FaultInjectingPipeline

            self.pipeline = FaultInjectingPipeline(
                knowledge,
                backend,
                strict=strict_mode,
                max_concurrency=concurrency,
                loop_errors=loop_errors,
                loop_block=loop_block,
            )
        else:
            self.pipeline = Pipeline(
                knowledge, backend, strict=strict_mode, max_concurrency=concurrency
            )
        tracing.setup()  # per process: this runs in each server worker, after the fork

    # pd.DataFrame on purpose: MLflow reads predict's type hints, and a `list[...]` hint would
    # make it pass a list of the table's first column. A DataFrame hint passes the table as is.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Screen the rows: one output row per input row, a column per field (the saved
        signature's outputs), so that every MLflow consumer can encode it: MLflow's scoring
        server, MLServer's pandas codec, ``spark_udf``'s struct result. Runs the async pipeline
        on modelhub's shared event loop, which is what makes a module-level LLM client safe
        from MLflow's worker threads. Traced: a child of the server's span, or the root of its
        own trace (``mlflow models serve``)."""
        with tracing.request_span("predict", "CHAIN", self._span_attributes()):
            rows = _parsed(model_input)
            timeout = (params or {}).get("timeout")  # seconds; 0 or absent: no deadline
            result: list[dict[str, Any]] = AsyncExecutor.run_async(
                self.pipeline.run, rows, timeout=float(timeout) if timeout else None
            )
            return as_table(result)

    async def aclose(self) -> None:
        """Close the LLM client's connections; run it on the executor's loop before shutdown:
        ``AsyncExecutor.run_async(model.aclose)``."""
        await self.pipeline.aclose()

    async def apredict(self, model_input: Any, params: Any = None) -> list[dict[str, Any]]:
        """The same contract as :meth:`predict`, for servers that can await it (run it on the
        executor's loop: ``await executor.arun(model.apredict, rows)``). Each of the executor's
        attempts is its own span."""
        with tracing.request_span("apredict", "CHAIN", self._span_attributes()):
            return await self.pipeline.run(_parsed(model_input))

    def _span_attributes(self) -> dict[str, Any]:
        return {"pharmacy.backend": self.pipeline.backend_name}


def llm_concurrency(configured: Any = None, environ: Mapping[str, str] | None = None) -> int:
    """How many notes one ``predict`` call writes at once: ``model_config``'s
    ``llm_concurrency``, else ``PHARMACY_LLM_CONCURRENCY``, else 8. Per call, so per process
    and per Spark task: the upstream's rate limit bounds it times the calls running at once."""
    env = os.environ if environ is None else environ
    raw = str(configured if configured is not None else env.get("PHARMACY_LLM_CONCURRENCY", ""))
    raw = raw.strip()
    if not raw:
        return DEFAULT_LLM_CONCURRENCY
    if not raw.isdigit() or int(raw) < 1:
        source = "llm_concurrency" if configured is not None else "PHARMACY_LLM_CONCURRENCY"
        raise ValueError(f"{source}={raw!r} is invalid: use a whole number of at least 1.")
    return int(raw)


def as_table(outputs: list[dict[str, Any]]) -> pd.DataFrame:
    """Output rows as a table of Python objects (lists stay lists, a missing severity stays
    ``None``: pandas would make it NaN), the count of omitted interactions as integers."""
    table = pd.DataFrame(outputs, columns=[name for name, _ in OUTPUT_COLUMNS], dtype=object)
    return table.astype({"interactions_omitted": "int64"})


def _parsed(model_input: Any) -> list[Row]:
    """The rows, parsed in their own span; the request's own strings are marked for masking."""
    with tracing.span("parse_rows", "PARSER") as span:
        rows = parse_rows(model_input)
        span.set_outputs(
            {"rows": len(rows), "medication_count": sum(len(row.medications) for row in rows)}
        )
    if tracing.trace_id(span) is not None:  # this request is traced (and sampled)
        tracing.hide([value for row in rows for value in (row.patient_id, row.question)])
        tracing.hide([name for row in rows for name in row.medications], medications=True)
    return rows
