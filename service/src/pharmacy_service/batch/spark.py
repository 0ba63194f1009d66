"""The pharmacy model on Apache Spark: the Spark type of its output, a local session bound to
loopback, and ``mlflow.pyfunc.spark_udf`` with the settings the model needs in Spark's workers.

Each Python worker is one process with one modelhub executor (one event loop) and one LLM
client; a ``predict`` call scores one Arrow batch, writing its notes concurrently
(``PHARMACY_LLM_CONCURRENCY``, 8 by default). Every executor core runs its own calls, so the
notes in flight across a job are that bound times the cores: the upstream's rate limit must
allow it.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clinical.screening import MAX_FINDINGS, MAX_TYPO_SEARCHES, OUTPUT_FIELDS
from ..model.pipeline import MAX_FINDINGS_PER_REQUEST, MAX_MEDICATIONS, MAX_ROWS, OUTPUT_COLUMNS
from ..model.pyfunc import llm_concurrency

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import DataType, StructType

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "LOOPBACK",
    "MODEL_INPUT",
    "batch_deadline",
    "local_session",
    "result_type",
    "screening_udf",
    "worker_env",
]

LOOPBACK = "127.0.0.1"
DEFAULT_BATCH_ROWS = MAX_FINDINGS_PER_REQUEST // MAX_FINDINGS
"""Rows per ``predict`` call (Arrow batch): 100, so that no batch can hit the model's bound
on the interactions one answer lists (every row listing its most, 100). Spark's own default
(10,000) is past the model's limit of rows per call (1,000): every batch would fail."""
MODEL_INPUT = ("patient_id", "medications", "question")
"""The model's input columns, in the order the UDF takes them."""
FORWARDED = re.compile(r"(PHARMACY|MODELHUB)_\w+|(GEMINI|OPENAI|ANTHROPIC)_(BASE_URL|MODEL)")
"""The settings passed from the driver's environment to the workers (``spark_udf``'s
``extra_env``). API keys are not: a cluster's executors get them from their own environment
(a Kubernetes Secret), not from the job's closure."""
_LOCAL_MASTER = re.compile(r"local(\[(\*|\d+)\])?$")


def result_type() -> StructType:
    """The Spark type of one output row: every field of ``OUTPUT_COLUMNS``, nested fields as
    arrays of structs, derived from the clinical code's declared shapes
    (``screening.OUTPUT_FIELDS``)."""
    from pyspark.sql.types import StructField, StructType

    fields = []
    for name, kind in OUTPUT_COLUMNS:
        if kind == "any":
            if name not in OUTPUT_FIELDS:
                raise LookupError(f"output column {name!r} has no declared shape in OUTPUT_FIELDS")
            shape: Any = OUTPUT_FIELDS[name]
        else:
            shape = {"string": str, "long": int}[kind]
        fields.append(StructField(name, _spark_type(shape)))
    return StructType(fields)


def _spark_type(shape: Any) -> DataType:
    from pyspark.sql import types

    if isinstance(shape, list):
        (element,) = shape
        return types.ArrayType(_spark_type(element))
    if isinstance(shape, dict):
        return types.StructType(
            [types.StructField(key, _spark_type(value)) for key, value in shape.items()]
        )
    primitive: type[DataType] = {
        str: types.StringType,
        bool: types.BooleanType,
        float: types.DoubleType,
        int: types.LongType,
    }[shape]
    return primitive()


def local_master(master: str, task_attempts: int = 4) -> str:
    """``local[N]`` tries a failed task once; ``local[N,F]`` tries it F times, as a cluster does
    (``spark.task.maxFailures``, 4 by default): a Python worker that dies is retried."""
    match = _LOCAL_MASTER.match(master)
    if match is None:
        return master
    return f"local[{match.group(2) or 1},{task_attempts}]"


def local_session(
    master: str = "local[2]",
    app_name: str = "pharmacy-batch",
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """A SparkSession for this machine: the driver bound to 127.0.0.1 (Spark takes the first
    non-loopback address otherwise), the workers started with this interpreter (not ``python3``
    from PATH), failed tasks tried 4 times. Any other master (a cluster) keeps its own network
    and interpreter settings: there the executors must reach the driver."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master.startswith("local"):
        os.environ["SPARK_LOCAL_IP"] = LOOPBACK
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        builder = (
            builder.master(local_master(master))
            .config("spark.driver.bindAddress", LOOPBACK)
            .config("spark.driver.host", LOOPBACK)
            .config("spark.sql.shuffle.partitions", "4")
        )
    else:
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def batch_deadline(batch_rows: int, environ: Mapping[str, str] | None = None) -> float:
    """Seconds one batch may take before its task fails (and Spark retries it): its notes in
    rounds of the configured concurrency, each round at most the LLM's timeout per attempt,
    plus a minute for screening and start-up."""
    env = os.environ if environ is None else environ
    rounds = math.ceil(batch_rows / llm_concurrency(None, env))
    note = float(env.get("PHARMACY_LLM_TIMEOUT") or 10) * int(env.get("PHARMACY_LLM_ATTEMPTS") or 1)
    return rounds * note + 60.0


def worker_env(batch_rows: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a batch's workers need: the driver's model settings (:data:`FORWARDED`),
    tracing only when ``PHARMACY_TRACING`` says so (``spark_udf`` hands the workers the
    driver's tracking URI, MLflow's default included), and name-resolution budgets per call
    sized for the batch, so that each row gets what it would get alone (20 typo searches, 50
    lookups) whichever rows share its batch."""
    env = os.environ if environ is None else environ
    # PHARMACY_TRACING among them when the driver sets it; unset, the model traces nothing in
    # a Spark task (model/tracing.py: wanted).
    forwarded = {key: value for key, value in env.items() if FORWARDED.fullmatch(key)}
    forwarded.setdefault("PHARMACY_TYPO_SEARCHES_PER_REQUEST", str(MAX_TYPO_SEARCHES * batch_rows))
    forwarded.setdefault("PHARMACY_LOOKUPS_PER_REQUEST", str(MAX_MEDICATIONS * batch_rows))
    return forwarded


def screening_udf(
    spark: SparkSession,
    model_uri: str,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Any:
    """``mlflow.pyfunc.spark_udf`` for the pharmacy model: the full result type, the local
    environment (the workers' Python has the model's packages), batches of ``batch_rows`` (set
    on the session: ``spark.sql.execution.arrow.maxRecordsPerBatch``), a deadline per batch
    (``timeout`` seconds, by default :func:`batch_deadline`), and :func:`worker_env`.

    Call it on the input columns: ``df.select(udf("patient_id", "medications",
    "question").alias("result"))``. A malformed row fails its batch: validate rows first (as
    ``pharmacy-batch`` does) when bad input is possible."""
    import mlflow.pyfunc

    if not 1 <= batch_rows <= MAX_ROWS:
        raise ValueError(f"batch_rows={batch_rows} is invalid: use 1 to {MAX_ROWS}.")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    return mlflow.pyfunc.spark_udf(
        spark,
        model_uri,
        result_type=result_type(),
        env_manager="local",
        params={"timeout": timeout if timeout is not None else batch_deadline(batch_rows)},
        extra_env=worker_env(batch_rows, env),
    )
