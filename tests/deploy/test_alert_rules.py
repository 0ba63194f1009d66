"""The alert and recording rules, checked and unit-tested by Prometheus's own tool: the groups the rendered
monitoring component carries, in the rule-file format the Prometheus Operator gives Prometheus,
through ``promtool check rules`` and ``promtool test rules`` with the unit tests in
``k8s/components/monitoring/prometheusrule.test.yaml``. promtool is required (CI installs
Debian's prometheus package): without it these tests fail, they never skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.capacity import concurrency_bound, derivation, llm_connections
from tests.deploy.kustomize import (
    K8S,
    ROOT,
    of_kind,
    promtool,
    rendered,
    rule_file_text,
    rule_groups,
)

UNIT_TESTS = K8S / "components" / "monitoring" / "prometheusrule.test.yaml"
RULES = K8S / "components" / "monitoring" / "prometheusrule.yaml"
RULE_COUNT = 6  # 4 alerts, 2 recording rules
COMPOSE_PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool_run(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def write_rules(directory: Path) -> Path:
    rules = directory / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return rules


def test_promtool_checks_the_rendered_rules(tmp_path: Path) -> None:
    output = promtool_run("check", "rules", str(write_rules(tmp_path)), cwd=tmp_path)
    assert f"SUCCESS: {RULE_COUNT} rules found" in output, output


def test_every_alert_has_promtool_unit_tests() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    assert tests["rule_files"] == ["rules.yaml"]
    tested = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", [])}
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    assert tested == alerts
    for alert in alerts:  # fires (with its labels and annotations) and is quiet, in some test
        cases = [
            c
            for t in tests["tests"]
            for c in t.get("alert_rule_test", [])
            if c["alertname"] == alert
        ]
        assert any(c["exp_alerts"] for c in cases), alert
        assert any(not c["exp_alerts"] for c in cases), alert
        for case in cases:
            for expected in case["exp_alerts"]:
                assert expected["exp_annotations"]["runbook"].endswith("#" + alert.lower())


def recording_rules() -> dict[str, dict[str, Any]]:
    return {r["record"]: r for g in rule_groups() for r in g["rules"] if "record" in r}


def test_recording_rules_are_named_for_what_they_keep_and_have_promtool_unit_tests() -> None:
    """level:metric:operations (Prometheus's naming practice): the level is the labels the
    aggregation keeps; each rule's samples are checked in some promql_expr_test."""
    records = recording_rules()
    assert set(records) == {
        "namespace_pod:pharmacy_http_requests_in_flight:sum",
        "namespace_pod:pharmacy_http_requests_in_flight_per_bound:ratio",
    }
    for name, rule in records.items():
        level, _metric, _operations = name.split(":")
        (kept,) = re.findall(r"\bby \(([^)]*)\)", rule["expr"])
        assert level == "_".join(label.strip() for label in kept.split(",")), name
        assert "for" not in rule, name
        assert "labels" not in rule, name
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    cases = [c for t in tests["tests"] for c in t.get("promql_expr_test", [])]
    for name in records:
        checked = [c for c in cases if c["expr"].split("{")[0] == name]
        assert any(c["exp_samples"] for c in checked), name
        for case in checked:  # the recorded series carry only the labels the rule keeps
            for sample in case["exp_samples"]:
                assert sample["labels"].startswith(name + "{"), sample


def test_saturation_bound_is_recomputed_from_the_configmap() -> None:
    """The saturation rule divides by a constant: what a pod holds before its requests wait,
    from k8s/base's ConfigMap (and prod's, where the rule is deployed); its comment shows the
    arithmetic."""
    rule = recording_rules()["namespace_pod:pharmacy_http_requests_in_flight_per_bound:ratio"]
    (divisor,) = re.findall(r"/ (\d+)\s*$", rule["expr"])
    (base,) = of_kind(rendered("base"), "ConfigMap")
    (prod,) = of_kind(rendered("overlays/prod"), "ConfigMap")
    env = base["data"]
    bound = concurrency_bound(env)
    assert int(divisor) == bound == concurrency_bound(prod["data"]) == 200
    workers, threads, queue = (
        int(env[k]) for k in ("WEB_CONCURRENCY", "PHARMACY_PREDICT_THREADS", "PHARMACY_MAX_QUEUE")
    )
    assert derivation(RULES, "bound") == [workers, threads, queue, llm_connections(env), bound]
    per_pod = recording_rules()["namespace_pod:pharmacy_http_requests_in_flight:sum"]
    assert rule["expr"].split("/")[0].strip() == per_pod["expr"].strip()


def test_alert_unit_tests_pass(tmp_path: Path) -> None:
    write_rules(tmp_path)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    output = promtool_run("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in output, output


def test_the_compose_prometheus_loads_the_same_rules() -> None:
    """deploy/prometheus/rules.yaml (baked into the compose profile's image) is generated from
    the PrometheusRule; regenerate it with `python -m tests.deploy.kustomize`."""
    committed = (COMPOSE_PROMETHEUS / "rules.yaml").read_text()
    assert committed == rule_file_text(), "run: .venv/bin/python -m tests.deploy.kustomize"


def test_promtool_checks_the_compose_prometheus_config() -> None:
    output = promtool_run("check", "config", "prometheus.yml", cwd=COMPOSE_PROMETHEUS)
    assert f"SUCCESS: {RULE_COUNT} rules found" in output, output
