"""``pharmacy-build-model``: save the pharmacy model in MLflow format, or log and register it."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .pipeline import OUTPUT_COLUMNS

__all__ = ["INPUT_EXAMPLE", "MODEL_NAME", "build", "main", "pip_requirements", "signature"]

logger = logging.getLogger(__name__)

MODEL_NAME = "pharmacy-interaction-screener"
DEFAULT_ALIAS = "champion"

INPUT_EXAMPLE: list[dict[str, Any]] = [
    {
        "patient_id": "example-1",
        "medications": ["Coumadin", "ibuprofen 400 mg", "omeprazole"],
        "question": "Can I take Advil for my back pain?",
    },
    {"patient_id": "example-2", "medications": "Zoloft, tramadol", "question": None},
]

# What the saved model needs at run time, pinned to the versions it was built and tested with.
_RUNTIME = (
    "mlflow-skinny",
    "pandas",
    "pydantic",
    "rapidfuzz",
    "google-genai",
    "aiohttp",
    "tenacity",
)


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in _RUNTIME]


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "patient_id"),
                # A list of names, or one comma-separated string: both are accepted, and the
                # model validates them itself with errors that name the row and field.
                ColSpec(AnyType(), "medications"),  # type: ignore[no-untyped-call]
                # "any", not "string": MLflow cannot enforce an optional string column whose
                # values are all null (pandas makes it float64 NaN). The model checks it.
                ColSpec(AnyType(), "question", required=False),  # type: ignore[no-untyped-call]
            ]
        ),
        # Declared so that other servers can describe and encode the answer (MLServer's MLflow
        # runtime refuses a signature without outputs): one column per field of a row.
        outputs=Schema(
            [
                ColSpec(AnyType() if kind == "any" else kind, name)  # type: ignore[no-untyped-call]
                for name, kind in OUTPUT_COLUMNS
            ]
        ),
        # Seconds for the whole prediction (0: no deadline); the server passes its deadline.
        params=ParamSchema([ParamSpec("timeout", "double", 0.0)]),
    )


def _stage_code(directory: Path) -> list[str]:
    """Copy the two packages the model imports (without caches) for ``code_paths``."""
    import modelhub
    import pharmacy_service

    paths = []
    for package in (modelhub, pharmacy_service):
        source = Path(package.__file__ or "").parent
        target = directory / source.name
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        paths.append(str(target))
    return paths


def build(
    output: Path | None,
    *,
    register: bool = False,
    name: str = MODEL_NAME,
    alias: str = DEFAULT_ALIAS,
) -> str:
    """Save to ``output`` (a new directory), or log to ``MLFLOW_TRACKING_URI`` and register
    ``name`` with ``alias``. Returns the model's path or ``models:/`` URI."""
    import mlflow
    import pandas as pd

    from ..clinical.knowledge import BUNDLED

    with tempfile.TemporaryDirectory(prefix="pharmacy-model-code-") as staging:
        options: dict[str, Any] = {
            # A model from code: MLflow runs this file to build the model (no pickle).
            "python_model": str(Path(__file__).with_name("mlflow_model.py")),
            "artifacts": BUNDLED.as_artifacts(),
            "code_paths": _stage_code(Path(staging)),
            "pip_requirements": pip_requirements(),
            "signature": signature(),
            "input_example": pd.DataFrame(INPUT_EXAMPLE),
            # Keys a server may set when loading (MLflow ignores keys not saved here); empty
            # values mean "use the PHARMACY_* environment variables, then the defaults".
            "model_config": {
                "llm_backend": None,
                "llm_strict": None,
                "llm_concurrency": None,
                "inject_loop_errors": 0,
                "inject_loop_block": 0.0,
            },
        }
        if not register:
            if output is None:
                raise ValueError("--output is required unless --register is given")
            if output.exists() and any(output.iterdir()):
                raise FileExistsError(
                    f"{output} exists and is not empty; remove it or pick another"
                )
            mlflow.pyfunc.save_model(path=str(output), **options)
            return str(output)
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            raise ValueError("--register needs MLFLOW_TRACKING_URI (the tracking server to use)")
        mlflow.set_experiment("pharmacy-model")
        with mlflow.start_run(run_name="build"):
            info = mlflow.pyfunc.log_model(name="model", registered_model_name=name, **options)
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(name, alias, info.registered_model_version)
        return f"models:/{name}@{alias}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pharmacy-build-model",
        description="Save the pharmacy interaction screener in MLflow format.",
    )
    parser.add_argument("--output", type=Path, help="directory to create (must not exist)")
    parser.add_argument(
        "--register",
        action="store_true",
        help="log to MLFLOW_TRACKING_URI and register the model instead of saving locally",
    )
    parser.add_argument("--name", default=MODEL_NAME, help="registered model name")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="alias to point at the new version")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        where = build(args.output, register=args.register, name=args.name, alias=args.alias)
    except (ValueError, FileExistsError) as exc:
        sys.stderr.write(f"pharmacy-build-model: {exc}\n")
        return 2
    sys.stdout.write(f"{where}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
