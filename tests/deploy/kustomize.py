"""The manifests as the real tools render them, for the deployment tests and the live
Prometheus tests: ``kubectl kustomize`` output, the alert rules in Prometheus's own rule-file
format, and the custom resources' schemas from their CRDs."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CRDS",
    "K8S",
    "ROOT",
    "crd_schema",
    "of_kind",
    "one",
    "prometheus_tool",
    "promtool",
    "rendered",
    "rule_file_text",
    "rule_groups",
    "run",
    "scale_durations",
]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CRDS = Path(__file__).with_name("crds")


def run(*command: str) -> str:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    ).stdout


@cache
def rendered(path: str) -> tuple[dict[str, Any], ...]:
    """Every document ``kubectl kustomize k8s/<path>`` renders."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (kubectl kustomize)"
    docs = yaml.safe_load_all(run(kubectl, "kustomize", str(K8S / path)))
    return tuple(doc for doc in docs if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(path: str, kind: str, name: str = "pharmacy-model") -> dict[str, Any]:
    """The one resource of ``kind`` named ``name`` that ``path`` renders."""
    (found,) = [d for d in of_kind(rendered(path), kind) if d["metadata"]["name"] == name]
    return found


def rule_groups(path: str = "components/monitoring") -> list[dict[str, Any]]:
    """The PrometheusRule's groups: what the Prometheus Operator writes into a rule file."""
    (rule,) = of_kind(rendered(path), "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def _seconds(duration: str) -> float:
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(n) * _UNITS[u] for n, u in parts)


def scale_durations(groups: list[dict[str, Any]], divisor: int) -> list[dict[str, Any]]:
    """The same groups with every rule's ``for:`` divided by ``divisor`` (whole seconds, at
    least 1 s unless it was 0). Expressions, labels and annotations are left as they are."""
    scaled = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            rule = dict(rule)
            if "for" in rule:
                seconds = _seconds(rule["for"])
                rule["for"] = f"{max(1, round(seconds / divisor)) if seconds else 0}s"
            rules.append(rule)
        scaled.append({**group, "rules": rules})
    return scaled


def prometheus_tool(name: str = "promtool") -> str:
    """A binary of Debian's prometheus package (``promtool``, ``prometheus``): the tests fail,
    never skip, without it."""
    found = shutil.which(name)
    assert found, (
        f"{name} is missing: install Debian's prometheus package "
        "(apt-get install -y prometheus), as .ci/run does"
    )
    return found


promtool = prometheus_tool


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD that defines ``kind`` (from the CRDs copied unchanged
    into tests/deploy/crds: Argo Rollouts and the Prometheus Operator, and KEDA's in keda/;
    KServe's, in kserve/, are read by test_kserve.py)."""
    for path in sorted(CRDS.glob("*.yaml")) + sorted(CRDS.glob("keda/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                doc
                and doc["kind"] == "CustomResourceDefinition"
                and doc["spec"]["names"]["kind"] == kind
            ):
                (version,) = [v for v in doc["spec"]["versions"] if v.get("storage")]
                schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
                return schema
    raise AssertionError(f"no CRD for {kind} under {CRDS}")


RULES_HEADER = (
    "# Generated from k8s/components/monitoring/prometheusrule.yaml (its spec.groups, as the\n"
    "# Prometheus Operator gives them to Prometheus) by `python -m tests.deploy.kustomize`;\n"
    "# tests/deploy/test_alert_rules.py fails when it differs. Do not edit by hand.\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, as they are written in k8s/."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_BlockDumper.add_representer(str, _text)


def rule_file_text() -> str:
    """The rule file the compose profile's Prometheus loads: the same rules as Kubernetes."""
    groups = {"groups": rule_groups()}
    text: str = yaml.dump(groups, Dumper=_BlockDumper, sort_keys=False, width=100)
    return RULES_HEADER + text


if __name__ == "__main__":
    (ROOT / "deploy" / "prometheus" / "rules.yaml").write_text(rule_file_text())
