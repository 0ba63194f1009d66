"""Argo Rollouts' analysis semantics, for exactly what ``components/canary`` uses: arguments
filled into a metric as Argo fills them, a Prometheus answer turned into ``result`` as its
Prometheus provider does, a ``successCondition`` evaluated as its ``expr`` evaluator does, and
a metric's verdict from its measurements (``failureLimit``, ``consecutiveErrorLimit``).

Sources: argo-rollouts ``utils/evaluate/evaluate.go`` (a measurement with only a
successCondition is Successful when it is true, Failed when false, Error when it cannot be
evaluated), ``metricproviders/prometheus/prometheus.go`` (a vector answer becomes a list of
floats, one per series, in answer order) and ``analysis/analysis.go`` (a metric fails when its
failed measurements exceed ``failureLimit``; it errors when its consecutive errors exceed
``consecutiveErrorLimit``, 4 by default).

The condition grammar is the subset the template uses, and anything else is refused:
``term (('||' | '&&') term)*`` with ``term`` one of ``result[0] <op> <number>`` or
``isNaN(result[0])``; ``&&`` binds tighter than ``||``, both short-circuit, as in expr.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ConditionError",
    "MetricVerdict",
    "Phase",
    "VerdictPhase",
    "evaluate_condition",
    "fill_args",
    "measure",
    "result_from_prometheus",
    "verdict",
]

Phase = Literal["Successful", "Failed", "Error"]
VerdictPhase = Literal["Successful", "Failed", "Error", "Running"]
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_INDEX = r"result\[(\d+)\]"
_COMPARISON = re.compile(rf"^{_INDEX}\s*(<=|>=|==|!=|<|>)\s*({_NUMBER})$")
_IS_NAN = re.compile(rf"^isNaN\({_INDEX}\)$")
_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


class ConditionError(ValueError):
    """The condition cannot be evaluated: Argo records the measurement as Error."""


def fill_args(text: str, args: dict[str, str]) -> str:
    """``{{args.name}}`` replaced by its value, as Argo resolves a metric's arguments; an
    argument with no value is an error (Argo refuses to start such an AnalysisRun)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in args:
            raise KeyError(f"argument {name!r} has no value")
        return args[name]

    return _ARG.sub(value, text)


def result_from_prometheus(answer: dict[str, Any]) -> list[float]:
    """``result`` for a Prometheus instant-query answer (``/api/v1/query`` JSON): the value of
    each series of a vector, in order. Other result types are an error, as in Argo."""
    assert answer["status"] == "success", answer
    data = answer["data"]
    if data["resultType"] != "vector":
        raise ConditionError(f"Prometheus metric type not supported: {data['resultType']}")
    return [float(sample["value"][1]) for sample in data["result"]]


def _term(term: str, result: Sequence[float]) -> bool:
    term = term.strip()
    if match := _COMPARISON.match(term):
        index, op, number = match.groups()
        return _COMPARE[op](_at(result, int(index)), float(number))
    if match := _IS_NAN.match(term):
        return math.isnan(_at(result, int(match.group(1))))
    raise ConditionError(f"unsupported condition term: {term!r}")


def _at(result: Sequence[float], index: int) -> float:
    if index >= len(result):
        raise ConditionError(f"index out of range: result[{index}] of {len(result)} values")
    return result[index]


def evaluate_condition(condition: str, result: Sequence[float]) -> bool:
    """The condition's value for ``result``; ConditionError where expr would fail."""
    if "(" in condition.replace("isNaN(", ""):
        raise ConditionError(f"parentheses are not supported: {condition!r}")
    return any(
        all(_term(term, result) for term in alternative.split("&&"))
        for alternative in condition.split("||")
    )


def measure(metric: dict[str, Any], result: Sequence[float]) -> Phase:
    """One measurement's phase for a metric that has a successCondition only."""
    assert "failureCondition" not in metric, "only successCondition is supported"
    try:
        return "Successful" if evaluate_condition(metric["successCondition"], result) else "Failed"
    except ConditionError:
        return "Error"


@dataclass(frozen=True)
class MetricVerdict:
    phase: VerdictPhase
    measurements: int
    """How many measurements it took to reach the phase (all of them while Running)."""


def verdict(metric: dict[str, Any], phases: Iterable[Phase]) -> MetricVerdict:
    """The metric's phase after these measurements, decided as early as Argo decides it:
    Failed once failed measurements exceed failureLimit, Error once consecutive errors exceed
    consecutiveErrorLimit, Successful after ``count`` measurements otherwise."""
    failure_limit = int(metric.get("failureLimit", 0))
    error_limit = int(metric.get("consecutiveErrorLimit", DEFAULT_CONSECUTIVE_ERROR_LIMIT))
    count = metric.get("count")
    failed = consecutive_errors = taken = 0
    for phase in phases:
        taken += 1
        failed += phase == "Failed"
        consecutive_errors = consecutive_errors + 1 if phase == "Error" else 0
        if failed > failure_limit:
            return MetricVerdict("Failed", taken)
        if consecutive_errors > error_limit:
            return MetricVerdict("Error", taken)
        if count is not None and taken >= int(count):
            return MetricVerdict("Successful", taken)
    return MetricVerdict("Running", taken)
