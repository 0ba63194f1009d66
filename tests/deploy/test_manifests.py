"""The deployment files keep their promises: rendered by the real tools (kubectl kustomize,
docker-compose config, hadolint is in `make lint`), validated with kubernetes-validate --strict
(core resources) and against their CRDs' own schemas (Argo Rollouts, Prometheus Operator), and
checked against the code they deploy (routes, ports, timeouts, metric names)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pharmacy_service.server import metrics
from pharmacy_service.server.app import create_app
from pharmacy_service.server.middleware import KNOWN_ROUTES
from pharmacy_service.server.settings import ServerSettings, Settings
from tests.deploy.argo_analysis import fill_args
from tests.deploy.kustomize import (
    K8S,
    ROOT,
    crd_schema,
    of_kind,
    one,
    promtool,
    rendered,
    rule_groups,
    run,
)

OVERLAYS = ["dev", "prod", "canary"]
BIN = Path(sys.executable).parent
CUSTOM_GROUPS = ("monitoring.coreos.com", "argoproj.io", "keda.sh")
AUTOSCALERS = ("HorizontalPodAutoscaler", "ScaledObject")


def server(overlay: str) -> dict[str, Any]:
    """The pharmacy-model workload: a Deployment, or in the canary overlay an Argo Rollout."""
    kind = "Rollout" if overlay == "canary" else "Deployment"
    return one(f"overlays/{overlay}", kind)


def container(overlay: str) -> dict[str, Any]:
    main: dict[str, Any]
    (main,) = server(overlay)["spec"]["template"]["spec"]["containers"]
    return main


def config_map(overlay: str) -> dict[str, str]:
    (cm,) = of_kind(rendered(f"overlays/{overlay}"), "ConfigMap")
    data: dict[str, str] = cm["data"]
    return data


def dockerfile_expose() -> int:
    """The port the model server's stage (runtime-base, which the default target is) exposes."""
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    (server,) = [stage for stage in stages if stage.split("\n", 1)[0].endswith("AS runtime-base")]
    (port,) = re.findall(r"^EXPOSE (\d+)$", server, flags=re.MULTILINE)
    return int(port)


# -- rendering and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_core_resources_validate_strictly(overlay: str, tmp_path: Path) -> None:
    core = [
        d
        for d in rendered(f"overlays/{overlay}")
        if not d["apiVersion"].startswith(CUSTOM_GROUPS)  # validated against their CRDs below
    ]
    assert {d["kind"] for d in core} >= {
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def autoscalers(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The HPAs and KEDA ScaledObjects: each names its workload in spec.scaleTargetRef."""
    return [d for d in docs if d["kind"] in AUTOSCALERS]


@pytest.mark.parametrize("path", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_one_autoscaler_alone_owns_the_replica_count(path: str) -> None:
    """``kubectl apply -k`` would reset a workload's ``replicas`` on every deploy, scaling a
    busy service down to the committed count; where an HPA or a ScaledObject scales a
    Deployment or a Rollout, only its floor and ceiling say how many pods run. Exactly one of
    them per workload: KEDA builds an HPA of its own from a ScaledObject, and two HPAs on one
    workload fight over its replica count."""
    docs = rendered(path)
    workloads = {
        (d["apiVersion"], d["kind"], d["metadata"]["name"]): d
        for d in of_kind(docs, "Deployment") + of_kind(docs, "Rollout")
    }
    targets = [tuple(a["spec"]["scaleTargetRef"].values()) for a in autoscalers(docs)]
    for a in autoscalers(docs):
        assert list(a["spec"]["scaleTargetRef"]) == ["apiVersion", "kind", "name"], a["kind"]
    server_ = [key for key in workloads if key[2] == "pharmacy-model"]
    assert len(server_) == 1
    assert targets.count(server_[0]) == 1, targets
    assert len(set(targets)) == len(targets), targets
    for target in targets:
        assert "replicas" not in workloads[target]["spec"], target


@pytest.mark.parametrize(
    ("overlay", "autoscaler", "kind", "floor", "ceiling"),
    [
        ("dev", "HorizontalPodAutoscaler", "Deployment", 1, 2),
        ("prod", "ScaledObject", "Deployment", 3, 12),
        ("canary", "ScaledObject", "Rollout", 3, 12),
    ],
)
def test_autoscaler_targets_the_workload_with_its_bounds(
    overlay: str, autoscaler: str, kind: str, floor: int, ceiling: int
) -> None:
    (found,) = autoscalers(rendered(f"overlays/{overlay}"))
    assert found["kind"] == autoscaler
    workload = server(overlay)
    assert workload["kind"] == kind
    assert found["spec"]["scaleTargetRef"] == {
        "apiVersion": workload["apiVersion"],
        "kind": kind,
        "name": "pharmacy-model",
    }
    spec = found["spec"]
    if autoscaler == "HorizontalPodAutoscaler":
        assert found["apiVersion"] == "autoscaling/v2"
        assert (spec["minReplicas"], spec["maxReplicas"]) == (floor, ceiling)
    else:
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (floor, ceiling)


def test_dev_points_the_gemini_backend_at_the_stub_deployed_alongside() -> None:
    data = config_map("dev")
    assert data["PHARMACY_LLM_BACKEND"] == "gemini"
    services = {s["metadata"]["name"]: s for s in of_kind(rendered("overlays/dev"), "Service")}
    port = services["gemini-stub"]["spec"]["ports"][0]["port"]
    assert data["GEMINI_BASE_URL"] == f"http://gemini-stub:{port}"


def test_prod_reads_the_api_key_from_a_secret_and_commits_no_secret() -> None:
    env = {e["name"]: e for e in container("prod")["env"]}
    key = env["GEMINI_API_KEY"]
    assert "value" not in key
    assert key["valueFrom"]["secretKeyRef"]["name"] == "pharmacy-gemini"
    for overlay in OVERLAYS:
        assert not of_kind(rendered(f"overlays/{overlay}"), "Secret")
        assert not [k for k in config_map(overlay) if re.search("KEY|TOKEN|SECRET|PASSWORD", k)]


@pytest.mark.parametrize("overlay", ["prod", "canary"])
def test_traces_go_to_the_tracking_server_the_network_policy_lets_them_reach(
    overlay: str,
) -> None:
    """The tracing component: the tracking URI's host and port are an egress the pods have
    (a NetworkPolicy that forgot it would leave tracing off, with a warning every 30 s)."""
    from urllib.parse import urlsplit

    from pharmacy_service.model.tracing import wanted

    data = config_map(overlay)
    assert wanted(data)  # on, by MLFLOW_TRACKING_URI
    assert 0 < float(data["MLFLOW_TRACE_SAMPLING_RATIO"]) <= 1
    url = urlsplit(data["MLFLOW_TRACKING_URI"])
    namespace = (url.hostname or "").split(".")[1]  # <service>.<namespace>.svc...
    (policy,) = of_kind(rendered(f"overlays/{overlay}"), "NetworkPolicy")
    allowed = [
        rule
        for rule in policy["spec"]["egress"]
        if {"port": url.port, "protocol": "TCP"} in rule.get("ports", [])
        and any(
            peer.get("namespaceSelector", {}).get("matchLabels", {})
            == {"kubernetes.io/metadata.name": namespace}
            for peer in rule.get("to", [])
        )
    ]
    assert allowed, f"no egress to {namespace}:{url.port} for {data['MLFLOW_TRACKING_URI']}"
    assert "MLFLOW_TRACKING_URI" not in config_map("dev")  # dev has no tracking server


# -- the Deployment's promises --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rolling_update_never_drops_capacity(overlay: str) -> None:
    spec = server(overlay)["spec"]
    strategy = spec["strategy"].get("rollingUpdate") or spec["strategy"]["canary"]  # Argo
    assert {k: strategy[k] for k in ("maxUnavailable", "maxSurge")} == {
        "maxUnavailable": 0,
        "maxSurge": 1,
    }
    assert spec["minReadySeconds"] > 0
    assert spec["progressDeadlineSeconds"] > spec["minReadySeconds"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_point_to_routes_the_server_has(overlay: str) -> None:
    routes = set(create_app(Settings()).app.openapi()["paths"])
    main = container(overlay)
    assert main["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert main["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert main["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    port_names = {p["name"] for p in main["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"]["path"] in routes
        assert main[probe]["httpGet"]["port"] in port_names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_match_the_image(overlay: str) -> None:
    main = container(overlay)
    (http,) = main["ports"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert http["containerPort"] == dockerfile_expose() == int(env["PORT"]) == 8080
    services = of_kind(rendered(f"overlays/{overlay}"), "Service")
    (service,) = [s for s in services if s["metadata"]["name"] == "pharmacy-model"]
    assert service["spec"]["ports"][0]["targetPort"] == http["name"]
    labels = server(overlay)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_context_is_complete(overlay: str) -> None:
    docs = rendered(f"overlays/{overlay}")
    for workload in of_kind(docs, "Deployment") + of_kind(docs, "Rollout"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for main in pod["containers"]:
            ctx = main["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert main["resources"]["requests"]
            assert main["resources"]["limits"]
            mounts = {m["mountPath"] for m in main["volumeMounts"]}
            assert "/tmp" in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_writable_metrics_directory_is_mounted(overlay: str) -> None:
    main = container(overlay)
    env = {e["name"]: e.get("value") for e in main["env"]}
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_the_pre_stop_pause_and_gunicorn_drain(overlay: str) -> None:
    pod = server(overlay)["spec"]["template"]["spec"]
    pre_stop = container(overlay)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful = int(config_map(overlay)["GRACEFUL_TIMEOUT"])
    assert graceful == ServerSettings().graceful_timeout  # the same default the server uses
    drain_delay = Settings().drain_delay  # SIGTERM -> stop accepting, then uvicorn drains
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain_delay + graceful


# -- monitoring -----------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Sample names the server's /metrics can expose (counters end in _total, and so on)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = set()
    for collector in list(metrics.REGISTRY._collector_to_names):
        for family in collector.collect():
            for suffix in suffixes.get(family.type, [""]):
                names.add(family.name + suffix)
    return names


def rules() -> list[dict[str, Any]]:
    """The alerting rules (the recording rules are tested in test_alert_rules.py)."""
    return [r for group in rule_groups() for r in group["rules"] if "alert" in r]


def metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\b((?:modelhub|pharmacy)_[a-z_]+)\b", promql))


def test_alerts_name_metrics_the_server_exports() -> None:
    exported = exported_metric_names()
    assert "modelhub_executor_retries_total" in exported
    for rule in [r for group in rule_groups() for r in group["rules"]]:  # records too
        name = rule.get("alert") or rule["record"]
        named = metric_names(rule["expr"])
        assert named, name
        assert named <= exported, (name, named - exported)


def test_alerts_cover_the_loop_errors_with_summaries_and_runbooks() -> None:
    readme = (K8S / "README.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^### (.+)$", readme, flags=re.MULTILINE)}
    by_name = {rule["alert"]: rule for rule in rules()}
    assert by_name["PharmacyModelLoopErrorRetries"]["labels"]["severity"] == "warning"
    assert by_name["PharmacyModelRetriesNotRecovered"]["labels"]["severity"] == "critical"
    assert {"PharmacyModelExecutorTimeouts", "PharmacyModelLoopLag"} <= by_name.keys()
    for name, rule in by_name.items():
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+m", rule["for"]), name
        assert rule["annotations"]["runbook"].split("#")[1] in anchors, name


def test_service_monitor_scrapes_the_metrics_route() -> None:
    (monitor,) = of_kind(rendered("overlays/prod"), "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    services = of_kind(rendered("overlays/prod"), "Service")
    (service,) = [s for s in services if s["metadata"]["name"] == "pharmacy-model"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_service_monitor_carries_the_pod_template_hashes() -> None:
    """Pod labels reach Prometheus only through relabelling: the canary analysis selects the
    canary's pods by rollouts_pod_template_hash (Argo), a Deployment's by pod_template_hash."""
    (monitor,) = of_kind(rendered("overlays/canary"), "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    relabel = {
        r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"] if "targetLabel" in r
    }
    assert relabel["rollouts_pod_template_hash"] == [
        "__meta_kubernetes_pod_label_rollouts_pod_template_hash"
    ]
    assert relabel["pod_template_hash"] == ["__meta_kubernetes_pod_label_pod_template_hash"]
    for r in endpoint["relabelings"]:
        assert r.get("action", "replace") == "replace"


# -- custom resources against their CRDs ------------------------------------------------------


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused wherever it lists its fields and does not say
    x-kubernetes-preserve-unknown-fields: the API server would silently prune a misspelt
    field; here it fails."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(strict(crd_schema(doc["kind"])))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


@pytest.mark.parametrize(
    ("overlay", "kind"),
    [
        ("canary", "Rollout"),
        ("canary", "AnalysisTemplate"),
        ("canary", "ServiceMonitor"),
        ("canary", "PrometheusRule"),
        ("canary", "ScaledObject"),
        ("prod", "ServiceMonitor"),
        ("prod", "PrometheusRule"),
        ("prod", "ScaledObject"),
    ],
)
def test_custom_resources_validate_against_their_crds(overlay: str, kind: str) -> None:
    (doc,) = of_kind(rendered(f"overlays/{overlay}"), kind)
    assert crd_errors(doc) == []


def test_crd_validation_refuses_a_misspelt_field_and_a_wrong_type() -> None:
    rollout = copy.deepcopy(server("canary"))
    rollout["spec"]["strategy"]["canary"]["steps"][1]["pause"]["durration"] = "2m"
    rollout["spec"]["minReadySeconds"] = "fifteen"
    errors = crd_errors(rollout)
    assert any("durration" in e for e in errors), errors
    assert any(e.startswith("spec/minReadySeconds") for e in errors), errors
    scaled = copy.deepcopy(one("overlays/prod", "ScaledObject"))
    scaled["spec"]["pollingIntervall"] = 15
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"][
        "stabilisationWindowSeconds"
    ] = 0
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 140  # KEDA's metadata: strings
    errors = crd_errors(scaled)
    assert any("pollingIntervall" in e for e in errors), errors
    assert any("stabilisationWindowSeconds" in e for e in errors), errors
    assert any(e.startswith("spec/triggers/0/metadata/threshold") for e in errors), errors


# -- the canary (Argo Rollouts) ---------------------------------------------------------------


def analysis_template() -> dict[str, Any]:
    return one("overlays/canary", "AnalysisTemplate", "pharmacy-model-canary")


def analysis_metrics() -> list[dict[str, Any]]:
    metrics_: list[dict[str, Any]] = analysis_template()["spec"]["metrics"]
    return metrics_


def test_canary_overlay_replaces_the_deployment_with_a_rollout() -> None:
    docs = rendered("overlays/canary")
    assert not of_kind(docs, "Deployment")
    rollout, deployment = server("canary"), server("prod")
    # everything but the kind and the strategy is the production Deployment's
    for key in ("template", "selector", "minReadySeconds", "progressDeadlineSeconds"):
        assert rollout["spec"][key] == deployment["spec"][key], key
    assert "replicas" not in rollout["spec"]  # the HPA owns it


def test_canary_steps_gate_each_weight_with_the_analysis() -> None:
    steps = server("canary")["spec"]["strategy"]["canary"]["steps"]
    kinds = [next(iter(step)) for step in steps]
    assert kinds == ["setWeight", "pause", "analysis", "setWeight", "pause", "analysis"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [10, 50]
    template = analysis_template()
    declared = {a["name"]: a for a in template["spec"]["args"]}
    for step in steps:
        if "analysis" in step:
            (ref,) = step["analysis"]["templates"]
            assert ref["templateName"] == template["metadata"]["name"]
            passed = {a["name"]: a for a in step["analysis"]["args"]}
            assert passed["canary-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
            assert passed["namespace"]["valueFrom"] == {
                "fieldRef": {"fieldPath": "metadata.namespace"}
            }
            # every argument without a default is passed, and nothing undeclared
            assert {n for n, a in declared.items() if "value" not in a} <= passed.keys()
            assert passed.keys() <= declared.keys()


def test_analysis_has_one_metric_per_signal_with_a_cadence() -> None:
    by_name = {m["name"]: m for m in analysis_metrics()}
    assert set(by_name) == {
        "loop-error-retries-per-request",
        "unrecovered-executor-failures",
        "http-5xx-ratio",
        "p99-latency-seconds",
    }
    assert by_name["unrecovered-executor-failures"]["failureLimit"] == 0  # any failure aborts
    for metric in by_name.values():
        assert re.fullmatch(r"\d+m", metric["interval"]), metric["name"]
        assert metric["count"] >= 3, metric["name"]
        assert 0 <= metric["failureLimit"] < metric["count"], metric["name"]
        assert "failureCondition" not in metric  # the evaluator in argo_analysis.py: success only
        assert metric["provider"]["prometheus"]["address"] == "{{args.prometheus-address}}"


def test_analysis_queries_select_the_canary_and_name_exported_metrics() -> None:
    exported = exported_metric_names()
    declared = {a["name"] for a in analysis_template()["spec"]["args"]}
    for metric in analysis_metrics():
        query = metric["provider"]["prometheus"]["query"]
        named = metric_names(query)
        assert named, metric["name"]
        assert named <= exported, (metric["name"], named - exported)
        assert set(re.findall(r"\{\{args\.([\w-]+)\}\}", query)) <= declared
        filled = fill_args(query, {"canary-hash": "CANARY", "namespace": "NS"})
        selectors = re.findall(r"\b(?:modelhub|pharmacy)_[a-z_]+\{([^}]*)\}", filled)
        assert len(selectors) == len(re.findall(r"\b(?:modelhub|pharmacy)_[a-z_]+", filled))
        for selector in selectors:  # every series read is the canary's, in its namespace
            assert 'rollouts_pod_template_hash="CANARY"' in selector, metric["name"]
            assert 'namespace="NS"' in selector, metric["name"]
            for routes in re.findall(r'route=~"([^"]+)"', selector):
                assert set(routes.split("|")) <= KNOWN_ROUTES, routes


def test_analysis_queries_parse_as_promql(tmp_path: Path) -> None:
    """Filled in as Argo fills them, each query is a valid PromQL expression (promtool parses
    it as a recording rule)."""
    args = {"canary-hash": "6f7b9c8d4", "namespace": "pharmacy", "prometheus-address": "x"}
    recording = [
        {"record": f"canary:{m['name'].replace('-', '_')}", "expr": fill_args(q, args)}
        for m in analysis_metrics()
        for q in [m["provider"]["prometheus"]["query"]]
    ]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "canary", "rules": recording}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- docker compose -------------------------------------------------------------------------


def compose_config() -> dict[str, Any]:
    out = run(str(BIN / "docker-compose"), "config", "--format", "json")
    config: dict[str, Any] = json.loads(out)
    return config


def test_compose_serves_on_loopback_with_the_stub_and_hardening() -> None:
    services = compose_config()["services"]
    model, stub = services["pharmacy-model"], services["gemini-stub"]
    assert model["environment"]["PHARMACY_LLM_BACKEND"] == "gemini"
    assert model["environment"]["GEMINI_BASE_URL"] == "http://gemini-stub:8090"
    # the key only ever comes from the environment compose runs in, never from the file
    assert model["environment"]["GEMINI_API_KEY"] == os.environ.get("GEMINI_API_KEY", "")
    assert stub["command"] == ["pharmacy-gemini-stub"]
    for service in (model, stub):
        assert service["read_only"] is True
        assert service["init"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["healthcheck"]["test"][0] == "CMD"
        assert all(p["host_ip"] == "127.0.0.1" for p in service["ports"])
    assert model["healthcheck"]["test"] == ["CMD", "pharmacy-healthcheck"]  # /health/ready
    assert model["depends_on"]["gemini-stub"]["condition"] == "service_healthy"
    grace = float(model["stop_grace_period"].rstrip("s"))
    assert grace > Settings().drain_delay + ServerSettings().graceful_timeout


def test_compose_monitoring_profile_runs_prometheus_built_here_on_loopback() -> None:
    out = run(str(BIN / "docker-compose"), "--profile", "monitoring", "config", "--format", "json")
    prometheus = json.loads(out)["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    context = Path(prometheus["build"]["context"])
    assert context == ROOT / "deploy" / "prometheus"
    # built from the project's base image with Debian's package: nothing pulled
    dockerfile = (context / "Dockerfile").read_text()
    assert re.findall(r"^FROM (.+)$", dockerfile, flags=re.MULTILINE) == ["${PYTHON_IMAGE}"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert "apt-get install -y --no-install-recommends prometheus" in dockerfile
    assert all(p["host_ip"] == "127.0.0.1" for p in prometheus["ports"])
    assert prometheus["read_only"] is True
    assert prometheus["cap_drop"] == ["ALL"]
    assert prometheus["depends_on"]["pharmacy-model"]["condition"] == "service_healthy"
    # it scrapes the composed server's port, with the labels the alerts group by
    config = yaml.safe_load((context / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    assert static["targets"] == [f"pharmacy-model:{dockerfile_expose()}"]
    assert {"namespace", "pod"} <= static["labels"].keys()
    assert job["metrics_path"] == "/metrics"
