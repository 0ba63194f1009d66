"""MLflow's private functions the handler relies on, checked in one place.

MLflow's scoring protocol is parsed by MLflow's own code so that the accepted inputs stay the
same as ``mlflow models serve``; those functions are private and change without notice. This
module refuses to import with an MLflow outside the tested range, naming the range, so that an
upgrade fails at start-up instead of request by request. The range is the one pinned for
``mlflow-skinny`` in ``service/pyproject.toml``: widen both together, after the tests pass.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from packaging.specifiers import SpecifierSet

__all__ = [
    "TESTED",
    "TESTED_RANGE",
    "enforce_params_schema",
    "jsonable",
    "parse_json_data",
    "validate_prediction_input",
]

TESTED_RANGE = ">=3.17,<3.18"
TESTED = SpecifierSet(TESTED_RANGE)


def _installed() -> str:
    try:
        return importlib.metadata.version("mlflow-skinny")
    except importlib.metadata.PackageNotFoundError:  # the full distribution instead
        return importlib.metadata.version("mlflow")


_FOUND = _installed()
_FIX = (
    f"Install a version in that range (pip install 'mlflow-skinny{TESTED_RANGE}'), or run the "
    "tests on the new version and widen the range in service/pyproject.toml and "
    "pharmacy_service/_mlflow.py."
)
if _FOUND not in TESTED:
    raise ImportError(
        f"pharmacy-service calls private functions of MLflow's scoring server and is tested "
        f"with mlflow-skinny{TESTED_RANGE}; found {_FOUND}. {_FIX}"
    )

try:
    from mlflow.models.utils import _enforce_params_schema as enforce_params_schema
    from mlflow.pyfunc import _validate_prediction_input as validate_prediction_input
    from mlflow.pyfunc.scoring_server import _parse_json_data
    from mlflow.utils.proto_json_utils import _get_jsonable_obj
except ImportError as exc:  # pragma: no cover - only with an MLflow build that differs
    raise ImportError(
        f"MLflow {_FOUND} lacks a private function pharmacy-service calls ({exc}). {_FIX}"
    ) from exc


def parse_json_data(text: str, metadata: Any, input_schema: Any) -> Any:
    """MLflow's parser for the JSON formats of its scoring protocol (``.data``, ``.params``)."""
    return _parse_json_data(text, metadata, input_schema)  # type: ignore[no-untyped-call]


def jsonable(predictions: Any) -> Any:
    """A model's answer as ``mlflow models serve`` writes it: a table as a list of records, an
    array as a list; anything else as it is."""
    return _get_jsonable_obj(predictions, pandas_orient="records")  # type: ignore[no-untyped-call]
