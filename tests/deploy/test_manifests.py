"""The deployment files keep their promises: rendered by the real tools (kubectl kustomize,
docker-compose config, hadolint is in `make lint`), validated with kubernetes-validate --strict,
and checked against the code they deploy (routes, ports, timeouts, metric names)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from pharmacy_service import metrics
from pharmacy_service.app import create_app
from pharmacy_service.settings import ServerSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ["dev", "prod"]
BIN = Path(sys.executable).parent


def run(*command: str) -> str:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    ).stdout


@cache
def rendered(path: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (kubectl kustomize)"
    docs = yaml.safe_load_all(run(kubectl, "kustomize", str(K8S / path)))
    return tuple(doc for doc in docs if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def server(overlay: str) -> dict[str, Any]:
    (deployment,) = [
        d
        for d in of_kind(rendered(f"overlays/{overlay}"), "Deployment")
        if d["metadata"]["name"] == "pharmacy-model"
    ]
    return deployment


def container(overlay: str) -> dict[str, Any]:
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
        d for d in rendered(f"overlays/{overlay}") if "monitoring.coreos.com" not in d["apiVersion"]
    ]
    assert {d["kind"] for d in core} >= {
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "HorizontalPodAutoscaler",
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


@pytest.mark.parametrize("path", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_an_hpa_alone_owns_the_replica_count(path: str) -> None:
    """``kubectl apply -k`` would reset a Deployment's ``replicas`` on every deploy, scaling a
    busy service down to the committed count; where an HPA scales the Deployment, only the
    HPA's minReplicas (the floor) and maxReplicas say how many pods run."""
    docs = rendered(path)
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")}
    assert "pharmacy-model" in scaled
    for name in scaled:
        assert "replicas" not in deployments[name]["spec"], name


def test_hpa_bounds_per_overlay() -> None:
    for overlay, floor, ceiling in (("dev", 1, 2), ("prod", 3, 12)):
        (hpa,) = of_kind(rendered(f"overlays/{overlay}"), "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "pharmacy-model",
        }
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (floor, ceiling)


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


# -- the Deployment's promises --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rolling_update_never_drops_capacity(overlay: str) -> None:
    spec = server(overlay)["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
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
    for deployment in of_kind(rendered(f"overlays/{overlay}"), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
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
    (rule,) = of_kind(rendered("components/monitoring"), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_alerts_name_metrics_the_server_exports() -> None:
    exported = exported_metric_names()
    assert "modelhub_executor_retries_total" in exported
    for rule in rules():
        named = set(re.findall(r"\b((?:modelhub|pharmacy)_[a-z_]+)\b", rule["expr"]))
        assert named, rule["alert"]
        assert named <= exported, (rule["alert"], named - exported)


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
