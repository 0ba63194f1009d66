"""The alert rules, checked and unit-tested by Prometheus's own tool: the groups the rendered
monitoring component carries, in the rule-file format the Prometheus Operator gives Prometheus,
through ``promtool check rules`` and ``promtool test rules`` with the unit tests in
``k8s/components/monitoring/prometheusrule.test.yaml``. promtool is required (CI installs
Debian's prometheus package): without it these tests fail, they never skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.deploy.kustomize import K8S, ROOT, promtool, rule_file_text, rule_groups

UNIT_TESTS = K8S / "components" / "monitoring" / "prometheusrule.test.yaml"
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
    assert "SUCCESS: 4 rules found" in output, output


def test_every_alert_has_promtool_unit_tests() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    assert tests["rule_files"] == ["rules.yaml"]
    tested = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", [])}
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"]}
    assert tested == alerts
    for alert in alerts:  # fires (with its labels and annotations) and is quiet, in some test
        cases = [c for t in tests["tests"] for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in cases), alert
        assert any(not c["exp_alerts"] for c in cases), alert
        for case in cases:
            for expected in case["exp_alerts"]:
                assert expected["exp_annotations"]["runbook"].endswith("#" + alert.lower())


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
    assert "SUCCESS: 4 rules found" in output, output
