"""The pharmacy medication-interaction screener as an MLflow pyfunc model: the async pipeline
(:mod:`.pipeline`), the pyfunc (:mod:`.pyfunc`), its build (:mod:`.build`), LLM notes
(:mod:`.llm`) and tracing (:mod:`.tracing`); the clinical code it runs is in
:mod:`pharmacy_service.clinical`.

Importing this package is cheap; MLflow is imported only by :mod:`.pyfunc` and :mod:`.build`.
"""

from .errors import InvalidInputError, LLMUnavailableError, ScreeningError
from .pipeline import Pipeline, parse_rows

__all__ = [
    "InvalidInputError",
    "LLMUnavailableError",
    "Pipeline",
    "ScreeningError",
    "parse_rows",
]
