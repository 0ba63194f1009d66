"""Drive a V2 server with the real clients users script against: ``tritonclient[http]`` and the
``kserve`` SDK. Runs in its own venv (their pins conflict with the project's:
requirements/kserve-client.txt, hashed), started by tests/service/test_v2_clients.py, which compares what
this prints (one JSON document) with the server's own ``/invocations`` answer.

    python tests/support/v2_clients.py <base url> <model name> <rows as JSON>
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    ids = np.array([[r["patient_id"].encode()] for r in rows], dtype=np.object_)
    meds = np.array([[json.dumps(r["medications"]).encode()] for r in rows], dtype=np.object_)
    return {"patient_id": ids, "medications": meds}


def _decode(name: str, array: np.ndarray, content_types: dict[str, str]) -> list[Any]:
    values = []
    for item in array.reshape(-1).tolist():
        if isinstance(item, bytes):
            item = item.decode()
        values.append(json.loads(item) if content_types.get(name) == "pd_json" else item)
    return values


def triton(base: str, model: str, rows: list[dict[str, Any]], binary: bool) -> dict[str, Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(base.removeprefix("http://"))
    health = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
    }
    metadata = client.get_model_metadata(model)
    content_types = {o["name"]: o["parameters"]["content_type"] for o in metadata["outputs"]}
    inputs = []
    for name, array in _columns(rows).items():
        tensor = httpclient.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    names = [o["name"] for o in metadata["outputs"]]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = client.infer(model, inputs, outputs=outputs, request_id="triton-1")
    response = result.get_response()
    columns = {n: _decode(n, result.as_numpy(n), content_types) for n in names}
    client.close()
    return {
        "health": health,
        "id": response.get("id"),
        "rows": [{n: columns[n][i] for n in names} for i in range(len(rows))],
    }


async def kserve_client(base: str, model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        ready = await client.is_server_ready(base)
        live = await client.is_server_live(base)
        model_ready = await client.is_model_ready(base, model)
        inputs = []
        for name, array in _columns(rows).items():
            tensor = InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array, binary_data=True)  # the client's default
            inputs.append(tensor)
        request = InferRequest(model_name=model, infer_inputs=inputs, request_id="kserve-1")
        response = await client.infer(base, request, model_name=model)
    finally:
        await client.close()
    columns = {}
    for output in response.outputs:
        content_type = (output.parameters or {}).get("content_type")
        columns[output.name] = _decode(output.name, output.as_numpy(), {output.name: content_type})
    return {
        "health": {"live": live, "ready": ready, "model_ready": model_ready},
        "id": response.id,
        "rows": [{n: c[i] for n, c in columns.items()} for i in range(len(rows))],
    }


def main() -> None:
    base, model, rows_json = sys.argv[1:4]
    rows = json.loads(rows_json)
    report = {
        "tritonclient binary": triton(base, model, rows, binary=True),
        "tritonclient json": triton(base, model, rows, binary=False),
        "kserve": asyncio.run(kserve_client(base, model, rows)),
    }
    sys.stdout.write(json.dumps(report, default=str) + "\n")


if __name__ == "__main__":
    main()
