"""MLServer as the differential reference for the Open Inference Protocol: the saved model loads
under MLServer + mlserver-mlflow (in a venv of its own, scripts/extra_venv.sh mlserver: its pins
conflict with ours), and the same V2 requests sent to both servers decode to the same outputs.
On errors both answer the same class of status, except where this server is stricter: those
cases are listed in ``STRICTER`` with what each answers (README, "Open Inference Protocol")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.harness import extra_venv, free_port, launched, mlserver_command

from tests.service.test_v2_protocol import decoded
from tests.support.gunicorn import RunningGunicorn

pytestmark = pytest.mark.slow

MODEL = "pharmacy-interaction-screener"
ROWS = [
    {"patient_id": "p1", "medications": ["Coumadin 5 mg", "Advil 400 mg"], "question": "Advil?"},
    {
        "patient_id": "00123",
        "medications": ["Zoloft", "tramadol", "xyzzy", "etodolac"],
        "question": "",
    },
    {
        "patient_id": "p3",
        "medications": ["Tylenol Cold", "phenelzine", "Mucinex D"],
        "question": "Is my cold medicine safe?",
    },
    {"patient_id": "p4", "medications": ["Zocor 40 mg", "Biaxin"], "question": "ça va?"},
]


def tensor(name: str, values: list[str], content_type: str, shape: list[int]) -> dict[str, Any]:
    # MLServer does not read the content types the model's metadata declares: every input
    # names its own here, so that both servers decode the same table.
    return {
        "name": name,
        "datatype": "BYTES",
        "shape": shape,
        "data": values,
        "parameters": {"content_type": content_type},
    }


def infer_request(rows: list[dict[str, Any]], *, as_text: bool = False, flat: bool = False) -> Any:
    shape = [len(rows)] if flat else [len(rows), 1]
    medications = (
        tensor("medications", [", ".join(r["medications"]) for r in rows], "str", shape)
        if as_text
        else tensor("medications", [json.dumps(r["medications"]) for r in rows], "pd_json", shape)
    )
    return {
        "id": "differential-1",
        "parameters": {"content_type": "pd"},
        "inputs": [
            tensor("patient_id", [r["patient_id"] for r in rows], "str", shape),
            medications,
            tensor("question", [r["question"] for r in rows], "str", shape),
        ],
    }


VALID = {
    "JSON lists (pd_json), [N, 1]": infer_request(ROWS),
    "comma-separated text (str), [N, 1]": infer_request(ROWS, as_text=True),
    "one row, 1-D shapes": infer_request(ROWS[:1], flat=True),
    "outputs filter": {
        **infer_request(ROWS[:2]),
        "outputs": [{"name": "highest_severity"}, {"name": "interactions"}],
    },
}

# Requests both servers refuse with the same class of status (4xx).
BOTH_REFUSE = {
    "unknown model": ("/v2/models/no-such-model/infer", infer_request(ROWS[:1])),
    "unknown version": (f"/v2/models/{MODEL}/versions/7/infer", infer_request(ROWS[:1])),
    "malformed JSON": (f"/v2/models/{MODEL}/infer", '{"inputs": ['),
    "unknown datatype": (
        f"/v2/models/{MODEL}/infer",
        {"inputs": [{"name": "patient_id", "datatype": "STRING", "shape": [1], "data": ["p"]}]},
    ),
    "inputs not a list": (f"/v2/models/{MODEL}/infer", {"inputs": {"name": "patient_id"}}),
}

# Where this server is stricter: (what we answer, what MLServer 1.7.1 answers).
STRICTER: dict[str, tuple[Any, int, int]] = {
    # The model's own validation error: MLServer answers it as a server fault.
    "a required input missing": (
        {"inputs": [tensor("patient_id", ["p1"], "str", [1, 1])]},
        400,
        500,
    ),
    "a medication that is not a string": (
        {
            "inputs": [
                tensor("patient_id", ["p1"], "str", [1, 1]),
                tensor("medications", ["[1, 2]"], "pd_json", [1, 1]),
            ]
        },
        400,
        500,
    ),
    # MLServer does not compare the shape with the data: it scores the one row there is.
    "a shape that disagrees with its data": (
        {
            "inputs": [
                tensor("patient_id", ["p1"], "str", [3, 1]),
                tensor("medications", ['["warfarin"]'], "pd_json", [3, 1]),
            ]
        },
        400,
        200,
    ),
}


@pytest.fixture(scope="module")
def mlserver_bin() -> Path:
    return extra_venv("mlserver").with_name("mlserver")


@pytest.fixture(scope="module")
def mlserver(
    mlserver_bin: Path, built_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("mlserver")
    port = free_port()
    command = mlserver_command(mlserver_bin, built_model, work / "settings", MODEL, port)
    base = f"http://127.0.0.1:{port}"
    env = {"PATH": str(mlserver_bin.parent), "MLFLOW_DISABLE_TELEMETRY": "true"}
    ready = f"{base}/v2/models/{MODEL}/ready"
    with launched(command, env, work / "mlserver.log", ready, "mlserver", seconds=180):
        yield base


def post(base: str, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(
        base + path, content=content, headers={"content-type": "application/json"}, timeout=60
    )


def metadata_outputs(base: str) -> list[str]:
    metadata = httpx.get(f"{base}/v2/models/{MODEL}", timeout=10).json()
    return [tensor["name"] for tensor in metadata["outputs"]]


def test_the_saved_model_loads_under_mlserver_with_its_signature(mlserver: str) -> None:
    metadata = httpx.get(f"{mlserver}/v2/models/{MODEL}", timeout=10).json()
    assert [tensor["name"] for tensor in metadata["outputs"]][:2] == [
        "patient_id",
        "medications_normalized",
    ]
    assert {tensor["name"] for tensor in metadata["inputs"]} == {
        "patient_id",
        "medications",
        "question",
    }


def test_our_metadata_describes_the_model_as_mlserver_does(
    mlserver: str, server: RunningGunicorn
) -> None:
    theirs = httpx.get(f"{mlserver}/v2/models/{MODEL}", timeout=10).json()
    mine = httpx.get(f"{server.base_url}/v2/models/{MODEL}", timeout=10).json()
    for key in ("name", "inputs", "outputs"):
        assert mine[key] == theirs[key], key
    assert mine["parameters"]["content_type"] == "pd"


@pytest.mark.parametrize("case", list(VALID))
def test_the_same_request_decodes_to_the_same_outputs(
    case: str, mlserver: str, server: RunningGunicorn
) -> None:
    path = f"/v2/models/{MODEL}/infer"
    theirs, mine = post(mlserver, path, VALID[case]), post(server.base_url, path, VALID[case])
    assert theirs.status_code == 200, theirs.text[-2000:]
    assert mine.status_code == 200, mine.text[-2000:]
    their_answer, my_answer = theirs.json(), mine.json()
    requested = [output["name"] for output in VALID[case].get("outputs", [])]
    if requested:  # MLServer ignores the filter and answers every output: we honour it
        assert len(their_answer["outputs"]) == len(mine_all := metadata_outputs(server.base_url))
        their_answer["outputs"] = [o for o in their_answer["outputs"] if o["name"] in requested]
        assert [o["name"] for o in my_answer["outputs"]] == requested
        assert set(mine_all) > set(requested)
    assert decoded(my_answer) == decoded(their_answer)
    for key in ("model_name", "id"):
        assert my_answer[key] == their_answer[key], key
    assert my_answer["parameters"]["content_type"] == "pd"

    # The encoding itself, output by output: datatype, shape and content type.
    def encoding(answer: dict[str, Any]) -> dict[str, Any]:
        return {
            o["name"]: (o["datatype"], o["shape"], o.get("parameters", {}).get("content_type"))
            for o in answer["outputs"]
        }

    assert encoding(my_answer) == encoding(their_answer)


@pytest.mark.parametrize("case", list(BOTH_REFUSE))
def test_both_refuse_the_same_bad_requests_as_client_errors(
    case: str, mlserver: str, server: RunningGunicorn
) -> None:
    path, body = BOTH_REFUSE[case]
    theirs, mine = post(mlserver, path, body), post(server.base_url, path, body)
    assert 400 <= theirs.status_code < 500, (theirs.status_code, theirs.text[-500:])
    assert 400 <= mine.status_code < 500, (mine.status_code, mine.text)
    if theirs.status_code == 404:
        assert mine.status_code == 404
    assert set(mine.json()) == {"error"}


@pytest.mark.parametrize("case", list(STRICTER))
def test_where_we_are_stricter_than_mlserver(
    case: str, mlserver: str, server: RunningGunicorn
) -> None:
    body, ours_status, theirs_status = STRICTER[case]
    path = f"/v2/models/{MODEL}/infer"
    theirs, mine = post(mlserver, path, body), post(server.base_url, path, body)
    assert theirs.status_code == theirs_status, theirs.text[-500:]
    assert mine.status_code == ours_status, mine.text
    assert set(mine.json()) == {"error"}
