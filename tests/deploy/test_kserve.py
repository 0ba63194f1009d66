"""The KServe manifests (k8s/kserve) keep their promises, offline: rendered by kubectl kustomize,
every custom resource valid against KServe's own CRD schema (tests/deploy/crds/kserve, closed to
unknown fields as test_manifests.py does), and the rules KServe's webhooks and controller and
Knative's webhook apply, checked on the container KServe would build from the runtime and each
InferenceService (read from their sources at kserve/kserve aaac4e29 and knative/serving main of
the same week; cited at each check). What needs a cluster is listed in k8s/README.md."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pharmacy_service.server.app import create_app
from pharmacy_service.server.settings import ServerSettings, Settings
from tests.deploy.capacity import (
    TARGET_SHARE,
    admission_limit,
    concurrency_bound,
    derivation,
    llm_connections,
)
from tests.deploy.kustomize import CRDS, K8S, ROOT, of_kind, one, rendered, run
from tests.deploy.test_manifests import dockerfile_expose, strict

PATH = "kserve"
BIN = Path(sys.executable).parent
KSERVE_CRDS = CRDS / "kserve"
STANDARD, KNATIVE = "Standard", "Knative"
MODEL_MOUNT = "/mnt/models"  # KServe's DefaultModelLocalMountPath: where storageUri lands
CONTAINER = "kserve-container"  # KServe's InferenceServiceContainerName
MLSERVER_MLFLOW_PRIORITY = 1  # kserve/kserve config/runtimes/kserve-mlserver.yaml, mlflow 1 and 2
# An InferenceService's predictor is a PodSpec plus these fields, which KServe consumes itself
# (ComponentExtensionSpec and PredictorSpec in pkg/apis/serving/v1beta1).
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
    "autoScaling", "containerConcurrency", "timeout", "canaryTrafficPercent", "logger",
    "batcher", "labels", "annotations", "deploymentStrategy", "name", "model", "storageUris",
    "storageContainerName", "workerSpec",
}  # fmt: skip
# The model's fields that are not a Container's (ModelSpec, PredictorExtensionSpec).
KSERVE_MODEL_FIELDS = {
    "modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion", "storage",
    "confidential",
}  # fmt: skip
# The runtime's fields KServe copies into the pod (utils.MergePodSpec).
RUNTIME_POD_FIELDS = {"nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets",
                      "schedulerName", "resourceClaims"}  # fmt: skip
# Knative Serving's webhook (pkg/apis/serving/k8s_validation.go, fieldmask.go), with its
# feature flags at their defaults.
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
KNATIVE_PORT_NAMES = {"", "http1", "h2c"}
KNATIVE_POD_FIELDS = {"serviceAccountName", "containers", "volumes", "imagePullSecrets",
                      "enableServiceLinks", "automountServiceAccountToken"}  # fmt: skip


# -- what the tools render, and what KServe builds from it ------------------------------------


def runtime() -> dict[str, Any]:
    return one(PATH, "ClusterServingRuntime")


def runtime_container() -> dict[str, Any]:
    main: dict[str, Any]
    (main,) = runtime()["spec"]["containers"]
    return main


def inference_services() -> dict[str, dict[str, Any]]:
    """The InferenceServices by deployment mode."""
    return {
        isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]: isvc
        for isvc in of_kind(rendered(PATH), "InferenceService")
    }


def _merge(base: Any, overlay: Any, keys: dict[str, str]) -> Any:
    """A strategic merge patch as Kubernetes does it for the fields used here: maps merged key
    by key, the lists ``keys`` names merged by their key field, other values replaced."""
    if not (isinstance(base, dict) and isinstance(overlay, dict)):
        return copy.deepcopy(overlay)
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if key in keys and key in merged:
            by_key = {item[keys[key]]: item for item in merged[key]}
            for item in value:
                by_key[item[keys[key]]] = _merge(by_key.get(item[keys[key]], {}), item, keys)
            merged[key] = list(by_key.values())
        else:
            merged[key] = _merge(merged.get(key), value, keys)
    return merged


def predictor_container(isvc: dict[str, Any]) -> dict[str, Any]:
    """The serving container KServe builds: the runtime's kserve-container merged with the
    InferenceService's ``model`` (utils.MergeRuntimeContainers: a strategic merge, args
    appended), then {{.Name}}-style placeholders filled from the InferenceService's metadata
    (utils.ReplacePlaceholders, a Go template over the container's JSON)."""
    model = dict(isvc["spec"]["predictor"]["model"])
    for field in KSERVE_MODEL_FIELDS:
        model.pop(field, None)
    keys = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}
    container = _merge(runtime_container(), model, keys)
    container["args"] = runtime_container().get("args", []) + model.get("args", [])
    if not container["args"]:
        del container["args"]
    text = json.dumps(container)
    for field in ("Name", "Namespace"):
        text = text.replace("{{." + field + "}}", isvc["metadata"].get(field.lower(), "NS"))
    assert "{{" not in text, f"a placeholder KServe would not fill in: {text}"
    filled: dict[str, Any] = json.loads(text)
    return filled


def predictor_env(isvc: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in predictor_container(isvc)["env"]}


def predictor_pod(isvc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec KServe builds: the runtime's pod fields (volumes...) merged with the
    predictor's PodSpec fields (utils.MergePodSpec), and the one serving container. KServe's
    webhook then adds the storage initializer (an init container and /mnt/models)."""
    from_runtime = {k: v for k, v in runtime()["spec"].items() if k in RUNTIME_POD_FIELDS}
    predictor = isvc["spec"]["predictor"]
    from_predictor = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
    pod: dict[str, Any] = _merge(from_runtime, from_predictor, {"volumes": "name"})
    pod["containers"] = [predictor_container(isvc)]
    return pod


def app_paths() -> set[str]:
    return set(create_app(Settings()).app.openapi()["paths"])


def scraped_path() -> str:
    """The metrics path the project's ServiceMonitor scrapes (k8s/components/monitoring)."""
    (monitor,) = of_kind(rendered("components/monitoring"), "ServiceMonitor")
    path: str = monitor["spec"]["endpoints"][0]["path"]
    return path


# -- rendering and schemas --------------------------------------------------------------------


@cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the InferenceService CRD is 2 MB
    for path in sorted(KSERVE_CRDS.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            if doc and doc["spec"]["names"]["kind"] == kind:
                (version,) = [v for v in doc["spec"]["versions"] if v.get("storage")]
                return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    raise AssertionError(f"no CRD for {kind} under {KSERVE_CRDS}")


def crd_errors(doc: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator(doc["kind"]).iter_errors(doc)
    ]


def test_renders_the_runtime_and_an_inference_service_per_mode() -> None:
    docs = rendered(PATH)
    assert sorted(d["kind"] for d in docs) == [
        "ClusterServingRuntime",
        "InferenceService",
        "InferenceService",
    ]
    assert set(inference_services()) == {STANDARD, KNATIVE}
    for isvc in inference_services().values():  # KServe's IsvcNameFmt
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])


@pytest.mark.parametrize("kind", ["ClusterServingRuntime", "InferenceService"])
def test_custom_resources_validate_against_kserve_crds(kind: str) -> None:
    for doc in of_kind(rendered(PATH), kind):
        assert crd_errors(doc) == [], doc["metadata"]["name"]


def test_crd_validation_refuses_a_misspelt_field_a_wrong_type_and_a_probe_without_port() -> None:
    isvc = copy.deepcopy(inference_services()[KNATIVE])
    isvc["spec"]["predictor"]["canaryTraficPercent"] = 10
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    errors = crd_errors(isvc)
    assert any("canaryTraficPercent" in e for e in errors), errors
    assert any(e.startswith("spec/predictor/minReplicas") for e in errors), errors
    # KServe's runtime CRD requires a probe's port (the InferenceService's leaves it out for
    # Knative): a runtime probe without one is refused by the API server.
    csr = copy.deepcopy(runtime())
    del csr["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"]
    assert any("'port' is a required property" in e for e in crd_errors(csr)), crd_errors(csr)


@pytest.mark.parametrize("mode", [STANDARD, KNATIVE])
def test_the_pod_kserve_builds_is_valid_kubernetes(mode: str, tmp_path: Path) -> None:
    """The merged pod as a Deployment, through kubernetes-validate --strict: the fields the
    InferenceService CRD lets through (a probe without a port...) must still make a pod."""
    isvc = inference_services()[mode]
    labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{isvc['metadata']['name']}-predictor"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": predictor_pod(isvc)},
        },
    }
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    try:
        run(str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(manifest))
    except subprocess.CalledProcessError as exc:
        pytest.fail(exc.stdout + exc.stderr)


# -- the runtime --------------------------------------------------------------------------------


def test_runtime_serves_mlflow_over_v2_and_wins_auto_selection() -> None:
    spec = runtime()["spec"]
    assert spec["protocolVersions"] == ["v2"]
    assert not spec.get("disabled", False)
    assert not spec.get("multiModel", False)
    formats = spec["supportedModelFormats"]
    assert {f["name"] for f in formats} == {"mlflow"}
    # autoSelect, above MLServer's mlflow priority; KServe's webhook refuses a runtime whose
    # entries for one format differ in priority, or equal another runtime's for the same
    # format and version (servingruntime_webhook.go).
    assert all(f["autoSelect"] is True for f in formats)
    assert len({f["priority"] for f in formats}) == 1
    assert formats[0]["priority"] > MLSERVER_MLFLOW_PRIORITY


def test_runtime_has_one_container_with_one_port_named_http1() -> None:
    main = runtime_container()
    assert main["name"] == CONTAINER
    assert main["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert dockerfile_expose() == 8080


def test_probes_use_the_server_routes_on_its_port() -> None:
    main = runtime_container()
    port = main["ports"][0]["containerPort"]
    base = one("base", "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # the base's liveness route: it also checks the executor's loop answers
    assert main["livenessProbe"]["httpGet"]["path"] == base["livenessProbe"]["httpGet"]["path"]
    paths = app_paths()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"]["path"] in paths, probe
        # by number: Knative renames the port (user-port), so a name would not resolve in the
        # startupProbe, which it leaves as it is; the CRD requires a port
        assert main[probe]["httpGet"]["port"] == port, probe
    assert runtime()["spec"]["annotations"] == {
        "prometheus.kserve.io/port": str(port),
        "prometheus.kserve.io/path": scraped_path(),
    }


def test_runtime_runs_the_base_image_settings_and_hardening() -> None:
    """What k8s/base gives the server, the runtime gives it too: image, settings (its
    ConfigMap's literals), resources, the container's securityContext and the pod's user."""
    main = runtime_container()
    deployment = one("base", "Deployment")
    base = deployment["spec"]["template"]["spec"]["containers"][0]
    pod_ctx = deployment["spec"]["template"]["spec"]["securityContext"]
    assert main["image"] == base["image"] == "pharmacy-model:0.1.0"
    (config,) = of_kind(rendered("base"), "ConfigMap")
    env = {e["name"]: e["value"] for e in main["env"]}
    assert config["data"].items() <= env.items()
    base_env = {e["name"]: e["value"] for e in base["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] == base_env["PROMETHEUS_MULTIPROC_DIR"]
    assert main["resources"] == base["resources"]
    assert base["securityContext"].items() <= main["securityContext"].items()
    for key in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile"):
        assert main["securityContext"][key] == pod_ctx[key], key
    volumes = {v["name"]: v for v in runtime()["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]):  # writable under a read-only root
        assert "emptyDir" in volumes[mounts[path]], path


def test_an_image_set_with_kustomize_reaches_the_runtime(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / PATH, overlay)],
                "images": [{"name": "pharmacy-model", "newName": "r.example/pm", "newTag": "9"}],
            }
        )
    )
    out = run("kubectl", "kustomize", str(overlay))
    (csr,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "ClusterServingRuntime"]
    assert csr["spec"]["containers"][0]["image"] == "r.example/pm:9"


# -- the InferenceServices ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [STANDARD, KNATIVE])
def test_inference_service_runs_mlflow_v2_on_the_runtime(mode: str) -> None:
    isvc = inference_services()[mode]
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "mlflow"}
    assert model["protocolVersion"] == "v2"
    assert model["runtime"] == runtime()["metadata"]["name"]
    assert model["protocolVersion"] in runtime()["spec"]["protocolVersions"]
    # RuntimeSupportsModel: a format without a version matches the runtime's by name
    assert model["modelFormat"]["name"] in {
        f["name"] for f in runtime()["spec"]["supportedModelFormats"]
    }
    # a placeholder in a bucket named for this project, never a real host we do not own
    assert model["storageUri"].startswith("s3://models/pharmacy-interaction-screener/")
    assert model["resources"]["requests"]
    assert model["resources"]["limits"]
    assert isvc["spec"]["predictor"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("mode", [STANDARD, KNATIVE])
def test_the_server_gets_the_model_kserve_downloads_under_the_name_its_ingress_routes(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KServe's storage initializer puts storageUri in /mnt/models; clients call
    /v2/models/<InferenceService name>/infer on its host. The server's own settings classes
    read the environment KServe builds, so a misspelt variable or a bad value fails here."""
    isvc = inference_services()[mode]
    monkeypatch.delenv("PORT", raising=False)  # Knative sets it; the image's ENV has it
    for name, value in predictor_env(isvc).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.model_uri == MODEL_MOUNT
    assert settings.model_name == isvc["metadata"]["name"]
    port = runtime_container()["ports"][0]["containerPort"]
    assert ServerSettings().port == port
    assert re.findall(r"\bPORT=(\d+)", (ROOT / "Dockerfile").read_text()) == [str(port)]


@pytest.mark.parametrize("mode", [STANDARD, KNATIVE])
def test_knative_would_accept_the_serving_container(mode: str) -> None:
    """The runtime serves both modes, so its container must pass Knative's webhook (defaults
    of its feature flags): one port named http1/h2c and not reserved, no reserved variable
    (PORT included: Knative sets it), no lifecycle, probes on the serving port, emptyDir
    volumes with memory or default medium."""
    main = predictor_container(inference_services()[mode])
    (port,) = main["ports"]
    assert port.get("name", "") in KNATIVE_PORT_NAMES
    assert port["containerPort"] not in KNATIVE_RESERVED_PORTS
    assert not {e["name"] for e in main["env"]} & KNATIVE_RESERVED_ENV
    if mode == KNATIVE:
        assert "lifecycle" not in main
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        target = main[probe]["httpGet"]["port"]
        assert target in (port["containerPort"], port["name"]), probe
    for volume in runtime()["spec"]["volumes"]:
        assert set(volume) == {"name", "emptyDir"}
        assert volume["emptyDir"].get("medium", "") in ("", "Memory")


def test_knative_mode_sets_no_pod_field_knative_refuses() -> None:
    pod = predictor_pod(inference_services()[KNATIVE])
    assert set(pod) <= KNATIVE_POD_FIELDS, set(pod) - KNATIVE_POD_FIELDS


def test_standard_mode_scales_with_an_hpa_as_the_base_does() -> None:
    isvc = inference_services()[STANDARD]
    annotations = isvc["metadata"]["annotations"]
    predictor = isvc["spec"]["predictor"]
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    # KServe reads the HPA's metric and target from these fields, no longer from annotations
    assert not {"serving.kserve.io/metrics", "serving.kserve.io/targetUtilizationPercentage"} & (
        annotations.keys()
    )
    hpa = one("base", "HorizontalPodAutoscaler")["spec"]
    (metric,) = hpa["metrics"]
    assert predictor["scaleMetric"] == metric["resource"]["name"] == "cpu"
    assert predictor["scaleTarget"] == metric["resource"]["target"]["averageUtilization"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    assert predictor["deploymentStrategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_standard_mode_drains_within_its_grace_period() -> None:
    isvc = inference_services()[STANDARD]
    pre_stop = predictor_container(isvc)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful = int(predictor_env(isvc)["GRACEFUL_TIMEOUT"])
    assert graceful == ServerSettings().graceful_timeout
    grace = isvc["spec"]["predictor"]["terminationGracePeriodSeconds"]
    assert grace > int(pre_stop[1]) + Settings().drain_delay + graceful


def test_standard_mode_is_scraped_on_the_server_port() -> None:
    """KServe's scrape annotations name queue-proxy's port, which Standard mode does not run:
    they are off, and the pod's prometheus.io annotations name the server's port."""
    isvc = inference_services()[STANDARD]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == (
        "false"
    )
    pod_annotations = isvc["spec"]["predictor"]["annotations"]
    assert pod_annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(runtime_container()["ports"][0]["containerPort"]),
        "prometheus.io/path": scraped_path(),
    }


def test_serverless_mode_runs_a_canary_and_aggregates_metrics() -> None:
    isvc = inference_services()[KNATIVE]
    predictor = isvc["spec"]["predictor"]
    assert 0 < predictor["canaryTrafficPercent"] < 100
    assert predictor["minReplicas"] >= 1  # no cold start behind a patient's request
    assert predictor["maxReplicas"] >= predictor["minReplicas"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"
    for field in ("scaleMetric", "scaleTarget"):  # they would overwrite the annotations
        assert field not in predictor


def test_concurrency_target_is_what_the_comment_derives_from_the_settings() -> None:
    """Knative aims at target x utilization per pod: the KEDA component's in-flight target,
    both 70% of what a pod holds before its requests wait (tests/deploy/capacity.py)."""
    isvc = inference_services()[KNATIVE]
    env = predictor_env(isvc)
    limit, bound = admission_limit(env), concurrency_bound(env)
    annotations = isvc["metadata"]["annotations"]
    target = int(annotations["autoscaling.knative.dev/target"])
    utilization = int(annotations["autoscaling.knative.dev/target-utilization-percentage"])
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    assert target == bound
    assert utilization == round(TARGET_SHARE * 100)
    aimed = target * utilization // 100
    keda = one("overlays/prod", "ScaledObject")["spec"]["triggers"]
    (in_flight,) = [t for t in keda if t["name"] == "in-flight"]
    assert aimed == int(in_flight["metadata"]["threshold"]) == 140
    # the comment's arithmetic, with the values the pods really get
    source = K8S / PATH / "inferenceservice-serverless.yaml"
    workers, threads, queue = (
        int(env[k]) for k in ("WEB_CONCURRENCY", "PHARMACY_PREDICT_THREADS", "PHARMACY_MAX_QUEUE")
    )
    assert derivation(source, "admission limit") == [workers, threads, queue, limit]
    connections = llm_connections(env)
    assert derivation(source, "bound") == [workers, threads, queue, connections, bound]
    assert derivation(source, "target") == [target, utilization, aimed]
    assert aimed < bound < limit


def test_labels_keep_the_base_network_policy_off_the_predictor_pods() -> None:
    """InferenceService labels reach the pods; k8s/base's NetworkPolicy admits only its own
    namespace and monitoring, which would shut out KServe's ingress gateway and Knative's
    activator if it selected these pods (in the same namespace)."""
    (policy,) = of_kind(rendered("base"), "NetworkPolicy")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for isvc in inference_services().values():
        assert not selector.items() <= isvc["metadata"]["labels"].items()
