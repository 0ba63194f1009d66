"""What one pod of the server holds, from its settings: the number the autoscaling targets
(components/keda, the Serverless InferenceService) and the saturation recording rule
(components/monitoring) derive from, recomputed here so that they cannot drift from the
settings they are written for."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from pharmacy_service.model.llm import LLMSettings
from pharmacy_service.server.settings import Settings

__all__ = [
    "TARGET_SHARE",
    "admission_limit",
    "concurrency_bound",
    "derivation",
    "llm_connections",
]

TARGET_SHARE = 0.7
"""Autoscalers aim at 70% of the bound: room for a burst while new pods start."""


def _per_worker(env: Mapping[str, str]) -> Settings:
    return Settings(
        predict_threads=int(env["PHARMACY_PREDICT_THREADS"]),
        max_queue=int(env["PHARMACY_MAX_QUEUE"]),
    )


def admission_limit(env: Mapping[str, str]) -> int:
    """Requests a pod admits before it sheds: each worker's predict threads + queue."""
    return int(env["WEB_CONCURRENCY"]) * _per_worker(env).capacity


def llm_connections(env: Mapping[str, str]) -> int:
    """Connections each worker may open to the LLM: PHARMACY_LLM_MAX_CONNECTIONS, or the LLM
    settings' default when unset."""
    (default,) = [f.default for f in dataclasses.fields(LLMSettings) if f.name == "max_connections"]
    return int(env.get("PHARMACY_LLM_MAX_CONNECTIONS") or str(default))


def concurrency_bound(env: Mapping[str, str]) -> int:
    """Requests a pod holds before they wait: per worker, the admission limit or the LLM
    connections, whichever is lower."""
    return int(env["WEB_CONCURRENCY"]) * min(_per_worker(env).capacity, llm_connections(env))


def derivation(path: Path, name: str) -> list[int]:
    """The numbers right of the first ``=`` on the comment line ``# <name> = ...`` of ``path``
    (a derivation written next to the value it gives)."""
    (found,) = re.findall(rf"^ *# +{name} = .*$", path.read_text(), flags=re.MULTILINE)
    return [int(n) for n in re.findall(r"\d+", found.split("=", 1)[1])]
