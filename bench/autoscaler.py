"""The Horizontal Pod Autoscaler's replica computation, as Kubernetes documents it, for replaying
measured metrics through it (bench/autoscaling.py). KEDA scales through an HPA it creates, so the
same computation serves both: only the metrics and targets differ.

- desired = ceil(current x metric / target); no change while the ratio is within the tolerance
  (0.1) of 1; with several metrics, the largest desired count wins.
- behavior: a scale-up takes the lowest recommendation of its stabilization window, a
  scale-down the highest of its own; then the policies bound the change per period (with
  ``selectPolicy: Max``, the policy that allows the larger change), then min/max replicas.

Sources: kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ ("Algorithm
details", "Configurable scaling behavior") and the controller's
normalizeDesiredReplicasWithBehaviors, which the stabilization and rate limits follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Behavior", "Policy", "Scaler", "desired_replicas"]

TOLERANCE = 0.1


def desired_replicas(
    current: int, metric: float, target: float, tolerance: float = TOLERANCE
) -> int:
    """One metric's recommendation: ``metric`` is the per-pod average (the total divided by
    ``current`` for an AverageValue target)."""
    if current <= 0:
        raise ValueError("current replicas must be at least 1")
    ratio = metric / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period_seconds: int


@dataclass(frozen=True)
class Behavior:
    """One direction's behavior. The defaults are Kubernetes' for scaling up."""

    stabilization_seconds: int = 0
    policies: tuple[Policy, ...] = (Policy("Percent", 100, 15), Policy("Pods", 4, 15))


DEFAULT_SCALE_DOWN = Behavior(300, (Policy("Percent", 100, 15),))


@dataclass
class Scaler:
    """An HPA's state between syncs: the replica count, past recommendations and changes."""

    replicas: int
    min_replicas: int
    max_replicas: int
    scale_up: Behavior = field(default_factory=Behavior)
    scale_down: Behavior = DEFAULT_SCALE_DOWN
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, replicas added)

    def sync(self, now: float, desired: int) -> int:
        """Apply one sync's raw recommendation at time ``now`` (seconds); returns the count."""
        desired = self._stabilized(now, desired)
        if desired > self.replicas:
            desired = min(desired, self._up_limit(now))
        elif desired < self.replicas:
            desired = max(desired, self._down_limit(now))
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        if desired != self.replicas:
            self.events.append((now, desired - self.replicas))
            self.replicas = desired
        return self.replicas

    def _stabilized(self, now: float, desired: int) -> int:
        self.recommendations.append((now, desired))
        horizon = max(self.scale_up.stabilization_seconds, self.scale_down.stabilization_seconds)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - horizon - 1]
        up = min(
            (r for t, r in self.recommendations if t > now - self.scale_up.stabilization_seconds),
            default=desired,
        )
        down = max(
            (r for t, r in self.recommendations if t > now - self.scale_down.stabilization_seconds),
            default=desired,
        )
        recommendation = self.replicas
        if recommendation < up:
            recommendation = up
        if recommendation > down:
            recommendation = down
        return recommendation

    def _changed_within(self, now: float, seconds: int, sign: int) -> int:
        return sum(change for t, change in self.events if t > now - seconds and change * sign > 0)

    def _up_limit(self, now: float) -> int:
        limits = []
        for policy in self.scale_up.policies:
            start = self.replicas - self._changed_within(now, policy.period_seconds, +1)
            if policy.kind == "Pods":
                limits.append(start + policy.value)
            else:
                limits.append(math.ceil(start * (1 + policy.value / 100)))
        return max(limits)

    def _down_limit(self, now: float) -> int:
        limits = []
        for policy in self.scale_down.policies:
            start = self.replicas - self._changed_within(now, policy.period_seconds, -1)
            if policy.kind == "Pods":
                limits.append(start - policy.value)
            else:
                limits.append(math.ceil(start * (1 - policy.value / 100)))
        return min(limits)
