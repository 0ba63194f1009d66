"""The HPA computation the autoscaling replay uses (bench/autoscaler.py), against the worked
examples of the Kubernetes documentation (Horizontal Pod Autoscaling: "Algorithm details",
"Configurable scaling behavior") and the controller's rounding where the prose differs."""

from __future__ import annotations

import pytest
from bench.autoscaler import Behavior, Policy, Scaler, desired_replicas


@pytest.mark.parametrize(
    ("current", "metric", "target", "expected"),
    [
        (3, 200, 100, 6),  # "200m ... desired 100m: the number of replicas will be doubled"
        (4, 50, 100, 2),  # "50m ... you'll halve the number of replicas"
        (5, 109, 100, 5),  # within the 0.1 tolerance: no change
        (5, 91, 100, 5),
        (5, 111, 100, 6),  # past it: ceil(5 x 1.11)
        (1, 640, 140, 5),  # in-flight at the admission limit against the KEDA target
    ],
)
def test_desired_is_the_ceiling_of_current_times_the_ratio(
    current: int, metric: float, target: float, expected: int
) -> None:
    assert desired_replicas(current, metric, target) == expected


def test_scale_up_defaults_allow_100_percent_or_4_pods_per_15_seconds() -> None:
    scaler = Scaler(replicas=1, min_replicas=1, max_replicas=20)
    assert scaler.sync(0, 10) == 5  # max(1 x 2, 1 + 4)
    assert scaler.sync(5, 10) == 5  # the same 15 s period: nothing more
    assert scaler.sync(15.5, 10) == 10  # next period: max(5 x 2, 5 + 4)


def test_scale_down_takes_the_highest_recommendation_of_its_window() -> None:
    # "stabilizationWindowSeconds: 300 ... the highest recommendation within the window".
    scaler = Scaler(replicas=10, min_replicas=1, max_replicas=20)
    assert scaler.sync(0, 10) == 10
    assert scaler.sync(60, 6) == 10
    assert scaler.sync(120, 8) == 10
    assert scaler.sync(301, 6) == 8  # the 10 left the window; 8 is still in it
    assert scaler.sync(421, 6) == 6


def test_the_documented_scale_down_policies_example() -> None:
    # Pods 4 / 60 s and Percent 10 / 60 s, selectPolicy Max: "80 replicas ... scaled down to
    # 10 ... during the first step 8 replicas will be reduced". In the next period the prose
    # says 8 again (10% of 72 rounded up); the controller rounds the replicas that remain up,
    # ceil(72 x 0.9) = 65, so 7 go: this follows the controller.
    down = Behavior(0, (Policy("Pods", 4, 60), Policy("Percent", 10, 60)))
    scaler = Scaler(replicas=80, min_replicas=1, max_replicas=100, scale_down=down)
    assert scaler.sync(0, 10) == 72
    assert scaler.sync(30, 10) == 72  # within the period: 8 already went
    assert scaler.sync(61, 10) == 65
    for step in range(2, 40):
        scaler.sync(61 * step, 10)
    assert scaler.replicas == 10  # Pods 4 wins below 40 replicas, down to the target


def test_bounds_hold_and_scale_up_is_not_stabilized_by_default() -> None:
    scaler = Scaler(replicas=3, min_replicas=3, max_replicas=12)
    assert scaler.sync(0, 1) == 3  # never below minReplicas
    assert scaler.sync(15, 40) == 7  # 3 + 4 this period
    assert scaler.sync(31, 40) == 12  # 14 by policy, maxReplicas 12


def test_a_pod_count_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        desired_replicas(0, 1.0, 1.0)
