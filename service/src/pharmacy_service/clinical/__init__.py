"""The clinical domain, with no MLflow and no HTTP: medication strings (:mod:`.medstrings`),
name resolution (:mod:`.resolve`), the knowledge base, its data and schema (:mod:`.knowledge`),
screening (:mod:`.screening`) and counselling notes (:mod:`.notes`)."""

from .knowledge import KnowledgeBase
from .screening import Screener

__all__ = ["KnowledgeBase", "Screener"]
