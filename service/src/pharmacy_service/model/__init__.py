"""The pharmacy medication-interaction screener: an MLflow pyfunc model with async LLM notes.

Importing this package is cheap; MLflow is imported only by :mod:`.pyfunc` and :mod:`.build`.
"""

from .errors import InvalidInputError, LLMUnavailableError, ScreeningError
from .knowledge import KnowledgeBase
from .pipeline import Pipeline, parse_rows
from .screening import Screener

__all__ = [
    "InvalidInputError",
    "KnowledgeBase",
    "LLMUnavailableError",
    "Pipeline",
    "Screener",
    "ScreeningError",
    "parse_rows",
]
