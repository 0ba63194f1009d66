"""The alerts and the canary analysis on a live Prometheus: the real ``prometheus`` binary on
127.0.0.1 (a temporary data directory) with the rendered PrometheusRule's groups, scraping real
gunicorn servers (two workers each) labelled as Kubernetes would label a stable and a canary pod.

- Alerts: a canary started with ``PHARMACY_FAULT_LOOP_ERRORS`` so large that every attempt
  fails ("Event loop is closed" on each of its 3 attempts: two retries, then an unrecovered
  failure and a 500) must take PharmacyModelLoopErrorRetries through pending to firing and
  fire PharmacyModelRetriesNotRecovered; restarted without the fault, both must resolve.
- Analysis: the AnalysisTemplate's queries, arguments filled in as Argo fills them, run against
  this Prometheus, each successCondition evaluated with Argo's semantics
  (tests/deploy/argo_analysis.py): a healthy canary passes every measurement; the faulty one
  fails the loop-error metric within failureLimit + 1 measurements, which aborts the rollout.

Time is scaled, expressions are not: every rule's ``for:``, the analysis interval and the
canary's pause are divided by ``MONITORING_TIME_DIVISOR`` (default 12: ``for: 2m`` -> 10 s,
``interval: 1m`` -> 5 s), and Prometheus scrapes and evaluates every second instead of every
15 s. The range windows inside the expressions ([2m], [5m]) stay as written, so resolving takes
real minutes: about 7 in all. Traffic: two sequential clients, 127.0.0.1 only, stopped at the
end. ``make monitoring`` runs it and writes the timings to bench/results/monitoring.md
(``MONITORING_REPORT``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.argo_analysis import (
    MetricVerdict,
    Phase,
    fill_args,
    measure,
    result_from_prometheus,
    verdict,
)
from tests.deploy.kustomize import one, rule_groups, scale_durations
from tests.monitoring.prometheus import RunningPrometheus, Target, run_prometheus
from tests.support.gunicorn import RunningGunicorn, run_gunicorn

pytestmark = [pytest.mark.monitoring, pytest.mark.timeout(1200)]

TIME_DIVISOR = int(os.environ.get("MONITORING_TIME_DIVISOR", "12"))
INTERVAL = "1s"  # scrape and rule evaluation (the ServiceMonitor scrapes every 15 s)
EVERY_ATTEMPT_FAILS = "1000000"  # more injected loop errors per worker than the run makes
RETRIES = "PharmacyModelLoopErrorRetries"
NOT_RECOVERED = "PharmacyModelRetriesNotRecovered"
BODY = {"patients": [{"patient_id": "p1", "medications": ["Coumadin", "Advil"]}]}

STABLE = ("5d8c7b9f6", "pharmacy-model-5d8c7b9f6-x2k4p")
HEALTHY_CANARY = ("6b7f8d9c5", "pharmacy-model-6b7f8d9c5-q7m2n")
FAULTY_CANARY = ("7c9d4f8b6", "pharmacy-model-7c9d4f8b6-h3v8t")


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def target(server: RunningGunicorn, labels: tuple[str, str]) -> Target:
    return Target(
        server.base_url.removeprefix("http://"), pod=labels[1], pod_template_hash=labels[0]
    )


class Traffic:
    """One sequential client per server, a request every 0.1 s at most, until stopped. Counts
    the answers per server by status, and transport errors by exception name."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.statuses: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(0.1 / max(1, len(self.urls))):
                for url in list(self.urls):
                    try:
                        status = str(client.post(f"{url}/v1/screen", json=BODY).status_code)
                    except httpx.TransportError as exc:
                        status = type(exc).__name__
                    counts = self.statuses.setdefault(url, {})
                    counts[status] = counts.get(status, 0) + 1


@dataclass
class AlertWatch:
    """Polls Prometheus for one pod's alerts and records when each state was first seen."""

    prometheus: RunningPrometheus
    pod: str
    zero: float = field(default_factory=time.monotonic)
    events: dict[str, float] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    other_pods: set[tuple[str, str]] = field(default_factory=set)

    def poll(self) -> None:
        now = time.monotonic() - self.zero
        retries = self.prometheus.value(f'sum(modelhub_executor_retries_total{{pod="{self.pod}"}})')
        if retries:
            self.events.setdefault("first retries scraped", now)
        states = {}
        for alert in self.prometheus.alerts():
            labels = alert["labels"]
            if labels.get("pod") != self.pod:
                self.other_pods.add((labels["alertname"], labels.get("pod", "")))
                continue
            states[labels["alertname"]] = alert["state"]
            self.events.setdefault(f"{labels['alertname']} {alert['state']}", now)
        for name in self.states.keys() - states.keys():
            self.events.setdefault(f"{name} resolved", now)
        self.states = states

    def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if done():
                return
            assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s: {self}"
            time.sleep(0.25)


@dataclass
class Analysis:
    """One analysis step as Argo runs it: every metric measured at once, then every interval,
    until it has its ``count`` or fails. Argo ends the AnalysisRun (and aborts the rollout) at
    the first metric that fails; here every metric is measured on until it has its own
    verdict, so that each signal shows what it alone would decide."""

    results: dict[str, list[tuple[str, Phase]]] = field(default_factory=dict)
    verdicts: dict[str, MetricVerdict] = field(default_factory=dict)
    aborted_at: int | None = None
    """The measurement at which the first metric failed: where Argo aborts the rollout."""
    aborted_after: float | None = None
    """Seconds from the analysis' start to that measurement."""

    @property
    def aborted(self) -> bool:
        return self.aborted_at is not None


def run_analysis(
    prometheus: RunningPrometheus, args: dict[str, str], tick: Callable[[], None]
) -> Analysis:
    template = one("overlays/canary", "AnalysisTemplate", "pharmacy-model-canary")
    metrics = template["spec"]["metrics"]
    (interval,) = {seconds(m["interval"]) / TIME_DIVISOR for m in metrics}
    (count,) = {int(m["count"]) for m in metrics}
    analysis = Analysis({m["name"]: [] for m in metrics})
    started = time.monotonic()
    for n in range(count):
        while time.monotonic() < started + n * interval:
            tick()
            time.sleep(0.25)
        for metric in metrics:
            if analysis.verdicts.get(metric["name"], RUNNING).phase != "Running":
                continue
            query = fill_args(metric["provider"]["prometheus"]["query"], args)
            result = result_from_prometheus(prometheus.query(query))
            measured = analysis.results[metric["name"]]
            measured.append((", ".join(f"{v:.4g}" for v in result), measure(metric, result)))
            decided = verdict(metric, [p for _, p in measured])
            analysis.verdicts[metric["name"]] = decided
            if decided.phase in ("Failed", "Error") and analysis.aborted_at is None:
                analysis.aborted_at = n + 1
                analysis.aborted_after = time.monotonic() - started
    return analysis


RUNNING = MetricVerdict("Running", 0)


def pause(tick: Callable[[], None]) -> None:
    """The canary's pause before its analysis step, scaled."""
    rollout = one("overlays/canary", "Rollout")
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    (duration,) = {s["pause"]["duration"] for s in steps if "pause" in s}
    until = time.monotonic() + seconds(duration) / TIME_DIVISOR
    while time.monotonic() < until:
        tick()
        time.sleep(0.25)


@dataclass
class Scenario:
    healthy: Analysis
    faulty: Analysis
    quiet: AlertWatch
    faulty_started: AlertWatch
    after_fix: AlertWatch
    traffic: dict[str, dict[str, int]]
    roles: dict[str, str]
    """Each server's URL: stable, healthy canary, faulty canary, restarted canary."""
    stable_url: str
    rules: list[dict[str, Any]]


def args_for(prometheus: RunningPrometheus, canary: tuple[str, str]) -> dict[str, str]:
    return {
        "canary-hash": canary[0],
        "namespace": "pharmacy",
        "prometheus-address": prometheus.base_url,
    }


@pytest.fixture(scope="module")
def scenario(built_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    work = tmp_path_factory.mktemp("live-prometheus")
    rules = scale_durations(rule_groups(), TIME_DIVISOR)
    with ExitStack() as stack:
        prometheus = stack.enter_context(
            run_prometheus(work / "prometheus", rules, interval=INTERVAL)
        )
        stable = stack.enter_context(run_gunicorn(built_model, work / "stable.log"))
        traffic = stack.enter_context(Traffic())  # stops before the servers do
        roles = {stable.base_url: "stable"}

        def canary_step(
            canary: RunningGunicorn, labels: tuple[str, str], role: str
        ) -> tuple[AlertWatch, Analysis]:
            """The canary takes traffic, then the Rollout's pause and analysis step."""
            roles[canary.base_url] = role
            prometheus.scrape([target(stable, STABLE), target(canary, labels)])
            traffic.urls = [stable.base_url, canary.base_url]
            watch = AlertWatch(prometheus, labels[1])
            pause(watch.poll)
            return watch, run_analysis(prometheus, args_for(prometheus, labels), watch.poll)

        # 1. A healthy canary: the analysis passes, nothing alerts.
        with run_gunicorn(built_model, work / "canary-healthy.log") as canary:
            quiet, healthy = canary_step(canary, HEALTHY_CANARY, "healthy canary")
            traffic.urls = [stable.base_url]

        # 2. A canary whose every attempt fails with a loop error.
        fault = {"PHARMACY_FAULT_LOOP_ERRORS": EVERY_ATTEMPT_FAILS}
        with run_gunicorn(built_model, work / "canary-faulty.log", env=fault) as canary:
            watch, faulty = canary_step(canary, FAULTY_CANARY, "faulty canary")
            watch.until(
                lambda: watch.states.get(RETRIES) == watch.states.get(NOT_RECOVERED) == "firing",
                120,
                "both alerts firing",
            )
            traffic.urls = [stable.base_url]
        fault_stopped = time.monotonic()

        # 3. The same pod restarted without the fault: both alerts resolve.
        with run_gunicorn(built_model, work / "canary-fixed.log") as canary:
            roles[canary.base_url] = "canary restarted without the fault"
            fixed = AlertWatch(prometheus, FAULTY_CANARY[1], zero=fault_stopped)
            fixed.poll()  # both still firing
            prometheus.scrape([target(stable, STABLE), target(canary, FAULTY_CANARY)])
            traffic.urls = [stable.base_url, canary.base_url]
            fixed.until(lambda: not fixed.states, 480, "both alerts resolved")
            traffic.urls = [stable.base_url]

        scenario = Scenario(
            healthy, faulty, quiet, watch, fixed, traffic.statuses, roles, stable.base_url, rules
        )
    report = os.environ.get("MONITORING_REPORT")
    if report:
        Path(report).write_text(render_report(scenario))
    return scenario


# -- the report (bench/results/monitoring.md) -------------------------------------------------


def render_report(scenario: Scenario) -> str:
    fors = {r["alert"]: r["for"] for g in scenario.rules for r in g["rules"] if "alert" in r}
    faulty, fixed = scenario.faulty_started.events, scenario.after_fix.events
    lines = [
        "# Alerts and canary analysis on a live Prometheus",
        "",
        "Written by `make monitoring` (tests/monitoring/test_live_prometheus.py): Debian's "
        "Prometheus on 127.0.0.1 with the rendered PrometheusRule, scraping real gunicorn "
        "servers (2 workers each) labelled as a stable and a canary pod, "
        f"every {INTERVAL}; each rule's `for:` and the analysis interval divided by "
        f"{TIME_DIVISOR} (`MONITORING_TIME_DIVISOR`); the expressions, with their [2m] and [5m] "
        "windows, unchanged. Faulty canary: `PHARMACY_FAULT_LOOP_ERRORS="
        f"{EVERY_ATTEMPT_FAILS}` (every attempt fails: 2 retries, then a failure and a 500).",
        "",
        "## Alerts on the faulty canary pod",
        "",
        "Seconds after the faulty canary took traffic (first rows), and after it was "
        "restarted without the fault (resolved).",
        "",
        "| alert | `for:` (scaled) | first retries scraped | pending | firing | resolved after the fault stopped |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in (RETRIES, NOT_RECOVERED):
        pending = faulty.get(f"{name} pending")
        lines.append(
            f"| {name} | {fors[name]} | {faulty.get('first retries scraped', 0):.1f} | "
            f"{'-' if pending is None else f'{pending:.1f}'} | "
            f"{faulty[f'{name} firing']:.1f} | {fixed[f'{name} resolved']:.1f} |"
        )
    lines += [
        "",
        "A `for: 0s` alert skips pending. Resolution waits for the fault's samples to leave "
        "the expressions' windows: [2m] for the retry rate, 5 minutes for failures.",
        "",
    ]
    for title, analysis in (
        ("healthy canary", scenario.healthy),
        ("canary injecting loop errors", scenario.faulty),
    ):
        if analysis.aborted:
            outcome = (
                f"the AnalysisRun fails at measurement {analysis.aborted_at}, "
                f"{analysis.aborted_after:.1f} s in: Argo aborts the rollout"
            )
        else:
            outcome = "every metric Successful: the rollout goes on"
        lines += [
            f"## Analysis: {title}",
            "",
            f"Measurements every {seconds('1m') / TIME_DIVISOR:.0f} s (`interval: 1m` scaled); "
            f"{outcome}. Each metric is measured on until its own verdict.",
            "",
            "| metric | measurements (value: phase) | verdict |",
            "|---|---|---|",
        ]
        for name, measured in analysis.results.items():
            cells = "; ".join(f"{value}: {phase}" for value, phase in measured)
            v = analysis.verdicts[name]
            lines.append(f"| {name} | {cells} | {v.phase} after {v.measurements} |")
        lines.append("")
    lines += [
        "## Traffic (answers by HTTP status)",
        "",
        *(
            f"- {scenario.roles[url]}: {', '.join(f'{n} x {k}' for k, n in sorted(c.items()))}"
            for url, c in scenario.traffic.items()
        ),
        "",
        "Without a cluster this is the strongest evidence available: the real Prometheus, the "
        "rendered rules and queries, real servers and real metrics; what it does not run is "
        "Kubernetes service discovery and the Argo Rollouts controller itself.",
        "",
    ]
    return "\n".join(lines)


# -- the tests ----------------------------------------------------------------------------------


def test_a_healthy_canary_passes_every_measurement(scenario: Scenario) -> None:
    analysis = scenario.healthy
    assert not analysis.aborted, analysis
    for name, measured in analysis.results.items():
        assert [phase for _, phase in measured] == ["Successful"] * len(measured), name
        assert scenario.healthy.verdicts[name].phase == "Successful", name
    assert scenario.quiet.events == {}  # no retry scraped, no alert pending or firing
    assert scenario.quiet.other_pods == set()


def test_loop_errors_fail_the_canary_within_failure_limit_plus_one_intervals(
    scenario: Scenario,
) -> None:
    template = one("overlays/canary", "AnalysisTemplate", "pharmacy-model-canary")
    limits = {m["name"]: int(m["failureLimit"]) for m in template["spec"]["metrics"]}
    analysis = scenario.faulty
    assert analysis.aborted_at == 1  # the AnalysisRun failed: Argo aborts the rollout
    name = "loop-error-retries-per-request"
    decided = analysis.verdicts[name]
    assert decided.phase == "Failed", analysis.results[name]
    assert decided.measurements <= limits[name] + 1
    failures = analysis.verdicts["unrecovered-executor-failures"]
    assert (failures.phase, failures.measurements) == ("Failed", 1)


def test_retries_alert_goes_pending_then_fires_after_its_for(scenario: Scenario) -> None:
    events = scenario.faulty_started.events
    scraped, pending, firing = (
        events["first retries scraped"],
        events[f"{RETRIES} pending"],
        events[f"{RETRIES} firing"],
    )
    (rule,) = [r for g in scenario.rules for r in g["rules"] if r.get("alert") == RETRIES]
    assert scraped <= pending < firing
    assert firing - pending >= seconds(rule["for"]) - 1  # polled every 0.25 s


def test_not_recovered_alert_fires_at_once(scenario: Scenario) -> None:
    events = scenario.faulty_started.events
    assert events[f"{NOT_RECOVERED} firing"] < events[f"{RETRIES} firing"]


def test_both_alerts_resolve_after_the_fault_stops(scenario: Scenario) -> None:
    events = scenario.after_fix.events
    assert events[f"{RETRIES} resolved"] <= events[f"{NOT_RECOVERED} resolved"]
    assert scenario.after_fix.states == {}


def test_the_stable_pod_never_alerts(scenario: Scenario) -> None:
    stable_alerts = {
        alert
        for watch in (scenario.quiet, scenario.faulty_started, scenario.after_fix)
        for alert in watch.other_pods
        if alert[1] == STABLE[1]
    }
    assert stable_alerts == set()
    answers = scenario.traffic[scenario.stable_url]
    assert set(answers) == {"200"}, answers
