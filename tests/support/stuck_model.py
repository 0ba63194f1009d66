"""A pyfunc model whose ``predict`` ignores its deadline: it returns only when a test releases
it. Loaded in the test's own process, so the test holds the same events."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

STARTED = threading.Event()
RELEASE = threading.Event()


class StuckModel(PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        STARTED.set()
        RELEASE.wait(60)
        return [{"patient_id": str(p)} for p in model_input["patient_id"]]
