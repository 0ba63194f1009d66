"""``pharmacy-batch INPUT OUTPUT``: screen a file of patients on Spark and write every output field.

Input: CSV (a header row), JSON Lines or Parquet with ``patient_id``, ``medications`` (a list, or
one string separated by commas, semicolons or new lines) and an optional ``question``. Output:
Parquet (or JSON Lines), one row per input row: the model's fields, and ``error`` for a row the
model refuses (its fields empty). The job writes through Spark's output committer: the output is
complete, or absent when the job fails. An output that exists is refused unless ``--overwrite``.
At the end the note sources are counted; when the rows whose LLM note fell back to the template
exceed ``--max-fallback-share`` (``--strict``: any), the command exits 3: an unreachable LLM
does not pass as a success.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model.errors import InvalidInputError
from ..model.pipeline import MAX_ROWS, parse_rows
from .spark import DEFAULT_BATCH_ROWS, MODEL_INPUT, local_session, result_type, screening_udf

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["EXIT_FALLBACKS", "EXIT_USAGE", "Summary", "execute", "main", "parser", "prepare", "run"]

logger = logging.getLogger("pharmacy_service.batch")

EXIT_USAGE = 2
"""Bad arguments, an input that cannot be read, an output that exists."""
EXIT_FALLBACKS = 3
"""The job ran and its output is complete, but too many notes fell back to the template."""
EXIT_FAILED = 1
FORMATS = ("csv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_CORRUPT = "_corrupt_record"
PREPARED_SCHEMA = "patient_id string, medications array<string>, question string, error string"
"""Rows after validation: the model's input as the model reads it, or the row's error."""


@dataclass(frozen=True)
class Summary:
    rows: int
    errors: int
    note_sources: dict[str, int]

    @property
    def fallback_share(self) -> float:
        """Of the rows that have a note, the share whose note fell back to the template."""
        noted = sum(self.note_sources.values())
        return self.note_sources.get("fallback", 0) / noted if noted else 0.0


def input_format(path: str, given: str | None) -> str:
    if given:
        return given
    suffix = Path(path.rstrip("/")).suffix.lower()
    return _SUFFIXES.get(suffix, "parquet")


def read_input(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    """The input with ``patient_id``, ``medications`` and ``question`` (null when absent), and
    ``_corrupt_record`` for a JSON line that is not JSON. Every CSV cell is read as the text it
    is (``00123`` stays ``00123``); a JSON list of medications arrives as its JSON text."""
    from pyspark.sql import functions as F

    if fmt == "csv":
        frame = spark.read.csv(path, header=True, multiLine=True, escape='"', inferSchema=False)
    elif fmt == "jsonl":
        # Strings for every field: a list in a line is kept as its JSON text (parsed by
        # `prepare`), whatever the other lines hold, instead of failing the schema.
        frame = spark.read.json(
            path,
            schema=f"patient_id string, medications string, question string, {_CORRUPT} string",
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=_CORRUPT,
        )
    else:
        frame = spark.read.parquet(path)
    missing = [name for name in ("patient_id", "medications") if name not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path} has no column {' or '.join(missing)}")
    columns = [
        frame["patient_id"].cast("string").alias("patient_id"),
        frame["medications"],
        (frame["question"] if "question" in frame.columns else F.lit(None))
        .cast("string")
        .alias("question"),
        (frame[_CORRUPT] if _CORRUPT in frame.columns else F.lit(None).cast("string")).alias(
            _CORRUPT
        ),
    ]
    return frame.select(*columns)


def prepare(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Each row checked as the model checks it (``parse_rows``, one row at a time): a valid
    row becomes the model's input (medications as a list), a bad row keeps its patient id and
    gets the error, so that one bad row never fails its batch, nor the job."""
    import pandas as pd

    for batch in batches:
        prepared: list[tuple[Any, Any, Any, Any]] = []
        for record in batch.to_dict(orient="records"):
            corrupt = record.pop(_CORRUPT, None)
            raw_id = record.get("patient_id")
            if isinstance(corrupt, str):
                prepared.append((raw_id, None, None, "not a JSON object: " + corrupt[:200]))
                continue
            record["medications"] = _listed(record.get("medications"))
            try:
                (row,) = parse_rows([record])
            except InvalidInputError as exc:
                message = str(exc).removeprefix("rows[0].")
                prepared.append((raw_id, None, None, message))
                continue
            prepared.append((row.patient_id, row.medications, row.question, None))
        yield pd.DataFrame(prepared, columns=["patient_id", "medications", "question", "error"])


def _listed(value: Any) -> Any:
    """A JSON list written as text (JSON Lines' medications) as the list it is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, list) else value
    return value


def screened(spark: SparkSession, frame: DataFrame, model_uri: str, batch_rows: int) -> DataFrame:
    """Every input row once: the valid ones scored by the model, the bad ones with their error
    and the model's fields empty."""
    from pyspark.sql import functions as F

    # Kept once computed: both branches below read it, which would read the input and validate
    # every row twice (freed with the session when the command ends).
    prepared = frame.mapInPandas(prepare, PREPARED_SCHEMA).persist()
    udf = screening_udf(spark, model_uri, batch_rows=batch_rows)
    fields = result_type()
    good = (
        prepared.where(F.col("error").isNull())
        .select(udf(*MODEL_INPUT).alias("result"))
        .select("result.*", F.lit(None).cast("string").alias("error"))
    )
    bad = prepared.where(F.col("error").isNotNull()).select(
        *(
            F.col(field.name)
            if field.name == "patient_id"
            else F.lit(None).cast(field.dataType).alias(field.name)
            for field in fields.fields
        ),
        F.col("error"),
    )
    return good.unionByName(bad)


def _filesystem(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """Hadoop's FileSystem for ``path`` (local, HDFS, S3...) and the path, through the JVM."""
    jvm: Any = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    config = spark.sparkContext._jsc.hadoopConfiguration()
    return hadoop_path.getFileSystem(config), hadoop_path


def write(frame: DataFrame, spark: SparkSession, output: str, fmt: str, overwrite: bool) -> None:
    """Through Spark's committer: files appear in ``output`` only when the job commits. A
    failed job leaves nothing: the directory Spark created for it is removed."""
    writer = frame.write.mode("overwrite" if overwrite else "errorifexists")
    try:
        if fmt == "parquet":
            writer.parquet(output)
        else:
            writer.option("ignoreNullFields", "false").json(output)
    except BaseException:
        fs, path = _filesystem(spark, output)
        success = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path, "_SUCCESS")  # type: ignore[union-attr]
        if fs.exists(path) and not fs.exists(success):
            fs.delete(path, True)
        raise


def summarise(spark: SparkSession, output: str, fmt: str) -> Summary:
    """Counted from what was written (exact, whatever tasks were retried)."""
    written = spark.read.parquet(output) if fmt == "parquet" else spark.read.json(output)
    counts = {
        (row["note_source"], row["failed"]): row["count"]
        for row in written.groupBy("note_source", written["error"].isNotNull().alias("failed"))
        .count()
        .collect()
    }
    sources: dict[str, int] = {}
    for (source, failed), count in counts.items():
        if not failed and source is not None:
            sources[source] = sources.get(source, 0) + count
    errors = sum(count for (_, failed), count in counts.items() if failed)
    return Summary(rows=sum(counts.values()), errors=errors, note_sources=sources)


def run(
    spark: SparkSession,
    source: str,
    output: str,
    *,
    model_uri: str,
    input_fmt: str,
    output_fmt: str = "parquet",
    overwrite: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Summary:
    """Screen ``source`` into ``output``; raise FileExistsError before any work when the
    output exists and ``overwrite`` is not set."""
    fs, path = _filesystem(spark, output)
    if fs.exists(path) and not overwrite:
        raise FileExistsError(f"{output} exists: pass --overwrite to replace it")
    frame = read_input(spark, source, input_fmt)
    cores = spark.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() < cores:  # a small file is one partition: use every core
        frame = frame.repartition(cores)
    write(screened(spark, frame, model_uri, batch_rows), spark, output, output_fmt, overwrite)
    return summarise(spark, output, output_fmt)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pharmacy-batch",
        description="Screen patients' medication lists on Apache Spark with the pharmacy model.",
    )
    parser.add_argument("input", help="a CSV, JSON Lines or Parquet file or directory")
    parser.add_argument("output", help="the directory to write (Parquet or JSON Lines files)")
    parser.add_argument(
        "--input-format",
        choices=FORMATS,
        help="default: from the name (.csv, .jsonl), else parquet",
    )
    parser.add_argument("--output-format", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument(
        "--model",
        help="an MLflow model URI (a directory, models:/name@alias with MLFLOW_TRACKING_URI); "
        "default: the bundled model, built into a temporary directory",
    )
    parser.add_argument(
        "--master",
        default="local[2]",
        help="Spark master (default local[2]: two cores here, bound to 127.0.0.1); with "
        "spark-submit, the one it sets",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=DEFAULT_BATCH_ROWS,
        help=f"rows per model call (default {DEFAULT_BATCH_ROWS}, at most {MAX_ROWS})",
    )
    parser.add_argument(
        "--max-fallback-share",
        type=float,
        default=0.1,
        help="exit 3 when more than this share of the notes fell back to the template "
        "(default 0.1)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 3 when any note fell back to the template"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pharmacy-batch: %(message)s")
    # The progress of each stage on the console; Spark's own log lines from WARN up.
    spark = local_session(args.master, conf={"spark.ui.showConsoleProgress": "true"})
    spark.sparkContext.setLogLevel("WARN")
    try:
        return execute(args, spark)
    finally:
        spark.stop()


def execute(args: argparse.Namespace, spark: SparkSession) -> int:
    """The command on a session: its exit status."""
    if not 0.0 <= args.max_fallback_share <= 1.0:
        logger.error("--max-fallback-share must be from 0 to 1")
        return EXIT_USAGE
    if not 1 <= args.batch_rows <= MAX_ROWS:
        logger.error("--batch-rows must be from 1 to %d", MAX_ROWS)
        return EXIT_USAGE
    threshold = 0.0 if args.strict else args.max_fallback_share
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pharmacy-batch-model-") as scratch:
        model_uri = args.model
        if model_uri is None:
            from ..model.build import build

            model_uri = build(Path(scratch) / "model")
            logger.info("built the bundled model into %s", model_uri)
        try:
            summary = run(
                spark,
                args.input,
                args.output,
                model_uri=model_uri,
                input_fmt=input_format(args.input, args.input_format),
                output_fmt=args.output_format,
                overwrite=args.overwrite,
                batch_rows=args.batch_rows,
            )
        except (FileExistsError, InvalidInputError) as exc:
            logger.error("%s", exc)
            return EXIT_USAGE
        except Exception as exc:  # noqa: BLE001 - Spark's errors are many; the output is absent
            logger.error("the job failed; %s was not written: %s", args.output, exc)
            return EXIT_FAILED
    logger.info(
        "%d rows written to %s in %.1f s: %d with an error; notes: %s",
        summary.rows,
        args.output,
        time.monotonic() - started,
        summary.errors,
        ", ".join(f"{source} {count}" for source, count in sorted(summary.note_sources.items()))
        or "none",
    )
    if summary.fallback_share > threshold:
        logger.error(
            "%.1f%% of the notes fell back to the template (allowed: %.1f%%): is the LLM "
            "reachable? The output is complete; its findings do not depend on the LLM",
            100 * summary.fallback_share,
            100 * threshold,
        )
        return EXIT_FALLBACKS
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
