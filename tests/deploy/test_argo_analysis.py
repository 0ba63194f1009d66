"""The small Argo Rollouts analysis evaluator (tests/deploy/argo_analysis.py) against the
semantics of Argo's own code: expr conditions on ``result``, the Prometheus provider's vector
results, failureLimit and consecutiveErrorLimit."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.deploy.argo_analysis import (
    ConditionError,
    MetricVerdict,
    Phase,
    VerdictPhase,
    evaluate_condition,
    fill_args,
    measure,
    result_from_prometheus,
    verdict,
)

NAN = math.nan


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        pytest.param("result[0] <= 0.01", [0.0], True, id="a ratio under its threshold passes"),
        pytest.param("result[0] <= 0.01", [0.01], True, id="exactly at the threshold passes"),
        pytest.param("result[0] <= 0.01", [0.0101], False, id="just over the threshold fails"),
        pytest.param("result[0] <= 0.01", [NAN], False, id="NaN compares false, as in Go"),
        pytest.param("result[0] == 0", [0.0], True, id="zero failures pass"),
        pytest.param("result[0] == 0", [1.0], False, id="one failure fails"),
        pytest.param("result[0] != 0", [NAN], True, id="NaN is unequal to everything"),
        pytest.param("result[0] < 1e-3", [5e-4], True, id="exponent numbers"),
        pytest.param("result[1] > 2", [0.0, 3.0], True, id="another series of the vector"),
        pytest.param("isNaN(result[0]) || result[0] <= 5", [NAN], True, id="NaN allowed"),
        pytest.param("isNaN(result[0]) || result[0] <= 5", [4.2], True, id="under the bound"),
        pytest.param("isNaN(result[0]) || result[0] <= 5", [5.5], False, id="over the bound"),
        pytest.param("result[0] >= 1 && result[0] < 2", [1.5], True, id="and: both true"),
        pytest.param("result[0] >= 1 && result[0] < 2", [2.0], False, id="and: one false"),
        pytest.param(
            "result[0] > 1 || result[0] < 0 && result[0] == 7",
            [-1.0],
            False,
            id="and binds tighter than or",
        ),
        pytest.param("result[0] <= 5 || result[9] > 0", [1.0], True, id="or short-circuits"),
    ],
)
def test_conditions_evaluate_as_argo_does(
    condition: str, result: list[float], expected: bool
) -> None:
    assert evaluate_condition(condition, result) is expected


@pytest.mark.parametrize(
    ("condition", "result"),
    [
        pytest.param("result[0] <= 0.01", [], id="an empty vector has no result[0]"),
        pytest.param("len(result) == 0", [], id="a function the evaluator does not know"),
        pytest.param("(result[0] <= 1)", [0.0], id="parentheses"),
        pytest.param("result <= 1", [0.0], id="a vector compared as a number"),
    ],
)
def test_what_cannot_be_evaluated_is_an_error(condition: str, result: list[float]) -> None:
    with pytest.raises(ConditionError):
        evaluate_condition(condition, result)
    assert measure({"successCondition": condition}, result) == "Error"


def test_a_measurement_with_only_a_success_condition_fails_when_it_is_false() -> None:
    metric = {"successCondition": "result[0] <= 0.01"}
    assert measure(metric, [0.0]) == "Successful"
    assert measure(metric, [0.5]) == "Failed"


def test_prometheus_vectors_become_lists_of_floats() -> None:
    answer: dict[str, Any] = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {}, "value": [1700000000.0, "0.25"]},
                {"metric": {"pod": "b"}, "value": [1700000000.0, "NaN"]},
            ],
        },
    }
    result = result_from_prometheus(answer)
    assert result[0] == 0.25
    assert math.isnan(result[1])
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert result_from_prometheus(empty) == []
    scalar = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    with pytest.raises(ConditionError):
        result_from_prometheus(scalar)


def test_arguments_fill_the_query_and_a_missing_one_is_refused() -> None:
    query = 'x{rollouts_pod_template_hash="{{args.canary-hash}}", namespace="{{ args.namespace }}"}'
    filled = fill_args(query, {"canary-hash": "6f7b9c", "namespace": "pharmacy"})
    assert filled == 'x{rollouts_pod_template_hash="6f7b9c", namespace="pharmacy"}'
    with pytest.raises(KeyError, match="canary-hash"):
        fill_args(query, {"namespace": "pharmacy"})


PHASES: dict[str, Phase] = {"S": "Successful", "F": "Failed", "E": "Error"}


@pytest.mark.parametrize(
    ("failure_limit", "measured", "expected", "after"),
    [
        pytest.param(1, "SSSSS", "Successful", 5, id="all pass"),
        pytest.param(1, "SFSSS", "Successful", 5, id="one failure within failureLimit 1 passes"),
        pytest.param(1, "FFS", "Failed", 2, id="failing from the start fails at limit + 1"),
        pytest.param(0, "SF", "Failed", 2, id="failureLimit 0 fails at the first failure"),
        pytest.param(1, "EEEEE", "Error", 5, id="errors fail past consecutiveErrorLimit (4)"),
        pytest.param(1, "EESEE", "Successful", 5, id="a success resets the consecutive errors"),
        pytest.param(1, "SS", "Running", 2, id="fewer measurements than count: running"),
    ],
)
def test_metric_verdicts_follow_failure_and_error_limits(
    failure_limit: int, measured: str, expected: VerdictPhase, after: int
) -> None:
    metric = {"count": 5, "failureLimit": failure_limit}
    assert verdict(metric, [PHASES[m] for m in measured]) == MetricVerdict(expected, after)
