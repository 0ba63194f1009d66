"""The KEDA component (k8s/components/keda) keeps its promises, offline: it replaces the HPA in
either order with the canary component, its targets are what the server's settings give
(tests/deploy/capacity.py), its behaviour is the one k8s/README.md describes, and its
Prometheus queries read this workload's series only, as promtool evaluates them. The
ScaledObject's validation against KEDA's CRD is in test_manifests.py, with the other custom
resources."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.capacity import (
    TARGET_SHARE,
    admission_limit,
    concurrency_bound,
    derivation,
    llm_connections,
)
from tests.deploy.kustomize import K8S, of_kind, one, promtool, rendered, run
from tests.deploy.test_manifests import config_map, exported_metric_names, metric_names

COMPONENT = K8S / "components" / "keda"
SCALED_OBJECT = COMPONENT / "scaledobject" / "scaledobject.yaml"


def scaled_object(overlay: str = "prod") -> dict[str, Any]:
    return one(f"overlays/{overlay}", "ScaledObject")


def triggers(overlay: str = "prod") -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in scaled_object(overlay)["spec"]["triggers"]}


def base_hpa() -> dict[str, Any]:
    spec: dict[str, Any] = one("base", "HorizontalPodAutoscaler")["spec"]
    return spec


def base_env() -> dict[str, str]:
    (cm,) = of_kind(rendered("base"), "ConfigMap")
    data: dict[str, str] = cm["data"]
    return data


def build(tmp_path: Path, components: list[str]) -> tuple[dict[str, Any], ...]:
    """kubectl kustomize of the base with ``components`` in this order and a name prefix."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "base", overlay)],
                "components": [
                    os.path.relpath(K8S / "components" / c, overlay) for c in components
                ],
                "namePrefix": "x-",
            }
        )
    )
    return tuple(d for d in yaml.safe_load_all(run("kubectl", "kustomize", str(overlay))) if d)


# -- composition ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("components", "kind"),
    [
        (["keda"], "Deployment"),
        (["keda", "canary"], "Rollout"),
        (["canary", "keda"], "Rollout"),
    ],
)
def test_the_scaled_object_replaces_the_hpa_in_either_order_with_the_canary(
    components: list[str], kind: str, tmp_path: Path
) -> None:
    """One object owns the replica count: the ScaledObject, with the HPA's target and
    bounds, and no HPA; a name prefix reaches its target as it reaches the workload."""
    docs = build(tmp_path, components)
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    (workload,) = of_kind(docs, kind)
    (scaled,) = of_kind(docs, "ScaledObject")
    assert workload["metadata"]["name"] == "x-pharmacy-model"
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": workload["apiVersion"],
        "kind": kind,
        "name": "x-pharmacy-model",
    }
    hpa = base_hpa()
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )


def test_prod_and_canary_scale_with_keda_and_dev_keeps_the_cpu_hpa() -> None:
    for overlay in ("prod", "canary"):
        docs = rendered(f"overlays/{overlay}")
        assert not of_kind(docs, "HorizontalPodAutoscaler"), overlay
        assert of_kind(docs, "ScaledObject"), overlay
    assert not of_kind(rendered("overlays/dev"), "ScaledObject")
    assert not of_kind(rendered("base"), "ScaledObject")


# -- targets and behaviour --------------------------------------------------------------------


def test_in_flight_target_is_derived_from_the_configmap() -> None:
    """70% of what a pod holds before its requests wait, from the base ConfigMap's settings;
    prod's ConfigMap gives the same bound (a change there needs its own target)."""
    env = base_env()
    bound = concurrency_bound(env)
    assert bound == concurrency_bound(config_map("prod")) == concurrency_bound(config_map("canary"))
    target = round(TARGET_SHARE * bound)
    assert bound == 200
    assert target == 140
    assert bound < admission_limit(env)  # a pod saturates before it sheds
    for overlay in ("prod", "canary"):
        in_flight = triggers(overlay)["in-flight"]
        assert in_flight["type"] == "prometheus"
        assert in_flight["metricType"] == "AverageValue"  # the sum, divided by the replicas
        assert float(in_flight["metadata"]["threshold"]) == target
    # the comment's arithmetic, with the ConfigMap's values
    workers, threads, queue = (
        int(env[k]) for k in ("WEB_CONCURRENCY", "PHARMACY_PREDICT_THREADS", "PHARMACY_MAX_QUEUE")
    )
    connections = llm_connections(env)
    assert derivation(SCALED_OBJECT, "bound") == [workers, threads, queue, connections, bound]
    assert derivation(SCALED_OBJECT, "target") == [round(TARGET_SHARE * 100), target]


def test_shed_and_cpu_triggers() -> None:
    """Shedding asks for one pod more than there are (its value is pods + 1, or 0, against a
    target of 1 per pod); CPU as the base's HPA, so a CPU-bound load still scales (the HPA
    takes the highest count)."""
    by_name = triggers()
    assert set(by_name) == {"in-flight", "shed", "cpu"}
    shed = by_name["shed"]
    assert (shed["type"], shed["metricType"]) == ("prometheus", "AverageValue")
    assert float(shed["metadata"]["threshold"]) == 1
    assert "> bool" in shed["metadata"]["query"]
    assert "count(pharmacy_http_requests_in_flight" in shed["metadata"]["query"]
    cpu = by_name["cpu"]
    (metric,) = base_hpa()["metrics"]
    assert (cpu["type"], cpu["metricType"]) == (metric["resource"]["name"], "Utilization")
    assert int(cpu["metadata"]["value"]) == metric["resource"]["target"]["averageUtilization"]


def test_behaviour_scales_up_at_once_and_down_as_the_base_hpa() -> None:
    spec = scaled_object()["spec"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"] == base_hpa()["behavior"]["scaleDown"]
    # the Kubernetes defaults for scaling up, written out
    assert behavior["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    }
    assert spec["pollingInterval"] == 15
    assert spec["cooldownPeriod"] == behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert spec["minReplicaCount"] >= 1  # never to zero: cooldownPeriod does not apply
    assert "idleReplicaCount" not in spec


# -- the Prometheus queries ---------------------------------------------------------------------


def prometheus_triggers() -> list[dict[str, Any]]:
    return [t for t in triggers().values() if t["type"] == "prometheus"]


def readme_namespace() -> str:
    """The namespace k8s/README.md deploys prod into."""
    readme = (K8S / "README.md").read_text()
    found: set[str] = set(re.findall(r"kubectl apply -k k8s/overlays/prod -n (\S+)", readme))
    (namespace,) = found
    return namespace


def test_queries_read_this_workloads_series_from_the_clusters_prometheus() -> None:
    """Each selector names the namespace the README deploys to and the Service the
    ServiceMonitor scrapes through (its series carry both); an empty answer is an error, not
    0; Prometheus is the one the canary analysis queries."""
    exported = exported_metric_names()
    (service,) = [
        s["metadata"]["name"]
        for s in of_kind(rendered("overlays/prod"), "Service")
        if s["metadata"]["name"] == "pharmacy-model"
    ]
    analysis = one("overlays/canary", "AnalysisTemplate", "pharmacy-model-canary")
    (address,) = [a["value"] for a in analysis["spec"]["args"] if a["name"] == "prometheus-address"]
    for trigger in prometheus_triggers():
        meta = trigger["metadata"]
        named = metric_names(meta["query"])
        assert named, trigger["name"]
        assert named <= exported, (trigger["name"], named - exported)
        selectors = re.findall(r"\b(?:pharmacy|modelhub)_[a-z_]+\{([^}]*)\}", meta["query"])
        assert len(selectors) == len(named), meta["query"]
        for selector in selectors:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', selector))
            assert labels == {"namespace": readme_namespace(), "service": service}
        assert meta["query"].startswith(("sum(", "(count("))  # one number: KEDA refuses several
        assert meta["ignoreNullValues"] == "false"
        assert meta["serverAddress"] == address


def test_promtool_evaluates_the_queries_on_this_workloads_series_only(tmp_path: Path) -> None:
    """The queries as recording rules, evaluated by promtool on series as the ServiceMonitor
    labels them: two pods of this workload, one of the same Service in another namespace and
    one of another Service in this namespace, which must not count."""
    namespace = readme_namespace()
    by_name = {t["name"]: t["metadata"]["query"] for t in prometheus_triggers()}
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "keda",
                        "rules": [
                            {"record": f"keda:{name.replace('-', '_')}", "expr": query}
                            for name, query in by_name.items()
                        ],
                    }
                ]
            }
        )
    )

    def series(metric: str, ns: str, service: str, pod: str) -> str:
        return (
            f'{metric}{{namespace="{ns}",service="{service}",job="{service}",pod="{pod}",'
            f'endpoint="http",container="server"}}'
        )

    in_flight, shed = "pharmacy_http_requests_in_flight", "pharmacy_http_requests_shed_total"
    others = [(namespace + "-dev", "pharmacy-model"), (namespace, "gemini-stub")]
    inputs = [
        {"series": series(in_flight, namespace, "pharmacy-model", "a"), "values": "100x8"},
        {"series": series(in_flight, namespace, "pharmacy-model", "b"), "values": "180x8"},
        # a: 2 sheds per 15 s scrape, b: none
        {"series": series(shed, namespace, "pharmacy-model", "a"), "values": "0+2x8"},
        {"series": series(shed, namespace, "pharmacy-model", "b"), "values": "0x8"},
    ] + [
        {"series": series(metric, ns, service, "z"), "values": "1000+1000x8"}
        for ns, service in others
        for metric in (in_flight, shed)
    ]
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": "keda:in_flight",
                        "eval_time": "1m",
                        # 280 over 2 pods: 140 each, the target (the HPA asks for 2)
                        "exp_samples": [{"labels": "keda:in_flight", "value": 280}],
                    },
                    {
                        "expr": "keda:shed",
                        "eval_time": "2m",
                        # 2 per 15 s (0.133/s > 0.1) in pod a: one pod more than the 2 there are
                        "exp_samples": [{"labels": "keda:shed", "value": 3}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
