"""The Open Inference Protocol (KServe V2) on the real server (gunicorn, one uvicorn worker):
health, metadata, inference in JSON, errors, every answer validated against the protocol's
OpenAPI document (tests/service/specs/open_inference_rest.yaml), and the same predictions as
``/invocations``. The real clients (tritonclient, kserve) are in test_v2_clients.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from tests.support.gunicorn import RunningGunicorn

pytestmark = pytest.mark.slow

MODEL = "pharmacy-interaction-screener"
SPEC = yaml.safe_load((Path(__file__).parent / "specs" / "open_inference_rest.yaml").read_text())
ROWS = [
    {"patient_id": "p1", "medications": ["Coumadin 5 mg", "Advil 400 mg"]},
    {"patient_id": "p2", "medications": ["Zoloft", "tramadol", "xyzzy"], "question": "Safe?"},
]


def conforms(document: Any, schema: str) -> None:
    """``document`` is valid against the specification's component ``schema``."""
    jsonschema.validate(document, {**SPEC, "$ref": f"#/components/schemas/{schema}"})


def v2_request(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The MLServer pandas request: one BYTES input per column; medications as JSON."""
    inputs = [
        {
            "name": "patient_id",
            "shape": [len(rows), 1],
            "datatype": "BYTES",
            "data": [r["patient_id"] for r in rows],
        },
        {
            "name": "medications",
            "shape": [len(rows), 1],
            "datatype": "BYTES",
            "data": [json.dumps(r["medications"]) for r in rows],
        },
    ]
    if any("question" in r for r in rows):
        inputs.append(
            {
                "name": "question",
                "shape": [len(rows)],
                "datatype": "BYTES",
                "parameters": {"content_type": "str"},
                "data": [r.get("question") or "" for r in rows],
            }
        )
    return {"inputs": inputs, **extra}


def decoded(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a V2 pandas response, each output decoded by its content type."""
    columns = {}
    for output in response["outputs"]:
        kind = output.get("parameters", {}).get("content_type")  # none on a numeric output
        values = output["data"]
        columns[output["name"]] = [json.loads(v) for v in values] if kind == "pd_json" else values
    count = len(next(iter(columns.values())))
    return [{name: column[i] for name, column in columns.items()} for i in range(count)]


@pytest.fixture(scope="module")
def client(server: RunningGunicorn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield http


def test_server_metadata_and_health(client: httpx.Client) -> None:
    metadata = client.get("/v2")
    assert metadata.status_code == 200
    conforms(metadata.json(), "metadata_server_response")
    assert "binary_tensor_data" in metadata.json()["extensions"]
    # 200 with a body: tritonclient reads the status, the kserve client parses the body.
    assert (client.get("/v2/health/live").status_code, client.get("/v2/health/live").json()) == (
        200,
        {"live": True},
    )
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}


def test_model_metadata_follows_mlserver_s_mapping(client: httpx.Client) -> None:
    response = client.get(f"/v2/models/{MODEL}")
    assert response.status_code == 200
    metadata = response.json()
    conforms(metadata, "metadata_model_response")
    assert "versions" not in metadata  # a local model directory has no registry version
    assert metadata["parameters"] == {"content_type": "pd"}
    inputs = {i["name"]: i for i in metadata["inputs"]}
    assert inputs["patient_id"] == {
        "name": "patient_id",
        "datatype": "BYTES",
        "shape": [-1, 1],
        "parameters": {"content_type": "str"},
    }
    assert inputs["medications"]["parameters"] == {"content_type": "pd_json"}
    outputs = {o["name"]: o for o in metadata["outputs"]}
    assert outputs["counseling_note"]["parameters"] == {"content_type": "str"}
    assert outputs["interactions"]["parameters"] == {"content_type": "pd_json"}
    assert outputs["interactions_omitted"]["datatype"] == "INT64"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/another-model",
        "/v2/models/another-model/ready",
        f"/v2/models/{MODEL}/versions/7",
    ],
)
def test_an_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    conforms(response.json(), "metadata_model_error_response")
    response = client.post(path.removesuffix("/ready") + "/infer", json=v2_request(ROWS))
    assert response.status_code == 404
    assert "error" in response.json()


def test_inference_gives_the_same_predictions_as_invocations(client: httpx.Client) -> None:
    response = client.post(f"/v2/models/{MODEL}/infer", json=v2_request(ROWS, id="req-1"))
    assert response.status_code == 200, response.text
    document = response.json()
    conforms(document, "inference_response")
    assert (document["model_name"], document["id"]) == (MODEL, "req-1")
    assert "model_version" not in document
    assert document["parameters"] == {"content_type": "pd"}
    mlflow = client.post("/invocations", json={"dataframe_records": ROWS}).json()["predictions"]
    assert decoded(document) == mlflow
    assert decoded(document)[0]["highest_severity"] == "major"  # warfarin + ibuprofen


def test_the_outputs_filter_and_a_generated_id(client: httpx.Client) -> None:
    request = v2_request(ROWS, outputs=[{"name": "highest_severity"}, {"name": "patient_id"}])
    document = client.post(f"/v2/models/{MODEL}/infer", json=request).json()
    conforms(document, "inference_response")
    assert [o["name"] for o in document["outputs"]] == ["highest_severity", "patient_id"]
    assert document["outputs"][0]["data"] == ["major", "major"]  # sertraline + tramadol
    assert document["id"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"inputs": [', "not valid JSON"),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "patient_id", "shape": [1], "datatype": "TEXT", "data": ["a"]}
                    ]
                }
            ).encode(),
            "datatype 'TEXT'",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "patient_id", "shape": [2], "datatype": "BYTES", "data": ["a"]},
                        {"name": "medications", "shape": [2], "datatype": "BYTES", "data": ["[]"]},
                    ]
                }
            ).encode(),
            "shape [2] says 2 elements",
        ),
        (
            json.dumps(v2_request([{"patient_id": " ", "medications": ["aspirin"]}])).encode(),
            "rows[0].patient_id",
        ),
    ],
    ids=["malformed JSON", "unknown datatype", "shape disagrees with data", "a bad row"],
)
def test_errors_are_400_with_an_error_naming_what_is_wrong(
    client: httpx.Client, body: bytes, words: str
) -> None:
    response = client.post(
        f"/v2/models/{MODEL}/infer", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    conforms(response.json(), "inference_error_response")
    assert words in response.json()["error"]


def test_a_timeout_parameter_in_microseconds_bounds_the_request(client: httpx.Client) -> None:
    request = v2_request(ROWS, parameters={"timeout": 1})  # 1 microsecond
    response = client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert response.status_code == 504
    assert "error" in response.json()


def test_v2_inference_is_counted_under_one_route_label(client: httpx.Client) -> None:
    client.post(f"/v2/models/{MODEL}/infer", json=v2_request(ROWS)).raise_for_status()
    metrics = client.get("/metrics").text
    assert 'route="/v2/models/{name}/infer"' in metrics
