"""The executor in Spark's Python workers (#23, part 3): a pandas UDF calling the LLM stub
through a module-level ``openai.AsyncOpenAI`` client, the seed's way (``asyncio.run`` per row
or per Arrow batch) beside ``AsyncExecutor.run_async``, with Python worker reuse on (Spark's
default) and off. Real pyspark on 127.0.0.1; one session per reuse setting (a core setting,
fixed when the context starts).

The job module (tests/support/spark_llm_udf.py) is shipped to the workers as a file, as a user's
``--py-files`` is, so each worker process keeps its module-level clients across its tasks."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from pharmacy_service.batch.spark import local_session
from pharmacy_service.stub import StubConfig, StubServer, run_in_thread
from tests.batch.conftest import SPARK_WARNINGS

pytestmark = [pytest.mark.slow, *SPARK_WARNINGS]

logger = logging.getLogger(__name__)

JOB_MODULE = Path(__file__).parents[1] / "support" / "spark_llm_udf.py"
ROWS = 400
PARTITIONS = 4
BATCH_ROWS = 50
"""400 rows in 4 partitions (tasks) of 100, Arrow batches of 50: two batches per task."""
BATCHES = ROWS // BATCH_ROWS


def job_module() -> ModuleType:
    """The job module under the name the workers import it by (``spark_llm_udf``), so that
    cloudpickle sends its functions by reference, not by value: a function sent by value would
    get a copy of the module's globals per task, not the worker's module-level clients."""
    name = JOB_MODULE.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, JOB_MODULE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass(frozen=True)
class Job:
    way: str
    outcomes: Counter[str]
    """Rows by outcome: ``ok``, or the failure's class, loop-error reason and message."""
    pids: frozenset[int]
    """The worker processes that answered rows."""
    requests: int
    """Requests the stub received (each is billed work upstream)."""

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]

    @property
    def failed(self) -> int:
        return ROWS - self.ok

    @property
    def loop_closed(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if " loop_closed " in kind)


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with run_in_thread(StubConfig(seed=11, latency_ms=10)) as server:
        yield server


@pytest.fixture(scope="module", params=["true", "false"], ids=["reuse", "no reuse"])
def jobs(request: pytest.FixtureRequest, stub: StubServer) -> Iterator[dict[str, Job]]:
    """Each way's job over the same rows, on a session with Python worker reuse on or off."""
    reuse: str = request.param
    spark = local_session(
        "local[2]",
        app_name=f"executor-in-workers-reuse-{reuse}",
        conf={
            "spark.ui.enabled": "false",
            "spark.python.worker.reuse": reuse,
            "spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH_ROWS),
        },
    )
    spark.sparkContext.setLogLevel("WARN")
    try:
        assert spark.sparkContext.getConf().get("spark.python.worker.reuse") == reuse
        spark.sparkContext.addPyFile(str(JOB_MODULE))
        yield {way: run_job(spark, stub, way) for way in job_module().WAYS}
    finally:
        spark.stop()


def run_job(spark: SparkSession, stub: StubServer, way: str) -> Job:
    stub.stats.requests = 0
    udf = pandas_udf(job_module().WAYS[way], "string")  # type: ignore[call-overload]
    frame = spark.range(ROWS, numPartitions=PARTITIONS).select(
        F.concat(F.lit("Write a note for row "), F.col("id").cast("string")).alias("prompt")
    )
    base_url = F.lit(f"http://127.0.0.1:{stub.port}/v1")
    started = time.monotonic()
    results = [row[0] for row in frame.select(udf("prompt", base_url)).collect()]
    seconds = time.monotonic() - started
    outcomes: Counter[str] = Counter()
    pids: set[int] = set()
    for result in results:
        if result.startswith("ok pid="):
            outcomes["ok"] += 1
            pids.add(int(result.removeprefix("ok pid=")))
        else:
            outcomes[result] += 1
    logger.info(
        "%s: %s, %d workers, %d requests, %.1f s",
        way,
        dict(outcomes),
        len(pids),
        stub.stats.requests,
        seconds,
    )
    return Job(way, outcomes, frozenset(pids), stub.stats.requests)


def reused(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.callspec.params["jobs"] == "true")


def test_every_row_once_through_the_executor(jobs: dict[str, Job]) -> None:
    """Per row or per batch, with reuse on or off: every call on the worker's one loop, 0 rows
    lost, each answered by one request."""
    for way in ("executor_per_row", "executor_per_batch"):
        job = jobs[way]
        assert (job.ok, job.failed) == (ROWS, 0), (way, job.outcomes)
        assert job.requests == ROWS


def test_the_sessions_really_reuse_their_workers_or_not(
    jobs: dict[str, Job], request: pytest.FixtureRequest
) -> None:
    """With reuse, the 4 tasks of a job run in the two workers local[2] keeps; without, each
    task in a worker of its own."""
    workers = len(jobs["executor_per_batch"].pids)
    assert workers < PARTITIONS if reused(request) else workers == PARTITIONS


def test_asyncio_run_per_row_fails_every_other_row(jobs: dict[str, Job]) -> None:
    """A new loop per row: a call that picks up the connection the last call pooled on its
    (now closed) loop fails with `Event loop is closed` and drops it; the next opens a new one
    and succeeds. Half the rows fail, with reuse or without (every task calls more than once),
    and the stub served every one of them: each lost row is billed work."""
    job = jobs["seed_per_row"]
    assert abs(job.failed - ROWS // 2) <= PARTITIONS, job.outcomes
    assert job.loop_closed == job.failed, job.outcomes
    assert job.requests == ROWS


def test_asyncio_run_per_batch_fails_a_batch_of_calls_after_a_workers_first(
    jobs: dict[str, Job], request: pytest.FixtureRequest
) -> None:
    """A new loop per Arrow batch: a worker's first batch succeeds and leaves its connections
    (one per concurrent call, 8) pooled; every later batch in that worker loses the 8 calls
    that pick them up. With reuse a worker's later batches include other tasks' (2 workers:
    (8 - 2) x 8 = 48 rows lost); without, only its own task's second batch ((8 - 4) x 8 = 32)."""
    job = jobs["seed_per_batch"]
    first_batches = len(job.pids) if reused(request) else PARTITIONS
    assert job.failed == (BATCHES - first_batches) * job_module().CONCURRENCY, job.outcomes
    assert job.loop_closed == job.failed, job.outcomes
    assert job.requests == ROWS
