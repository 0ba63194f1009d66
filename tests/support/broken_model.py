"""A pyfunc model with a bug: its predict raises. The server must answer 500, not 400."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel


class BrokenModel(PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return 1 / 0
