"""The Open Inference Protocol codecs alone (no server): requests to rows, rows to responses."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from pharmacy_service.server.protocols.v2.codecs import (
    ColumnSpec,
    DecodedRequest,
    V2Error,
    decode_request,
    encode_response,
)

COLUMNS = [
    ColumnSpec("patient_id", "str"),
    ColumnSpec("medications", "pd_json"),
    ColumnSpec("question", "str", optional=True),
]


def _tensor(name: str, data: list[Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": [len(data)], "datatype": "BYTES", "data": data, **extra}


def _decode(document: dict[str, Any]) -> DecodedRequest:
    return decode_request(json.dumps(document).encode(), None, COLUMNS)


def test_an_input_without_a_content_type_takes_the_metadata_s() -> None:
    request = _decode(
        {
            "inputs": [
                _tensor("patient_id", ["p1", "p2"]),
                _tensor("medications", ['["warfarin", "Advil"]', '["sertraline"]']),
            ]
        }
    )
    assert request.rows == [
        {"patient_id": "p1", "medications": ["warfarin", "Advil"]},
        {"patient_id": "p2", "medications": ["sertraline"]},
    ]
    assert request.id  # one is generated


def test_an_input_s_own_content_type_wins() -> None:
    request = _decode(
        {
            "id": "r1",
            "inputs": [
                _tensor("patient_id", ["p1"]),
                _tensor("medications", ["warfarin, Advil"], parameters={"content_type": "str"}),
            ],
        }
    )
    assert request.rows == [{"patient_id": "p1", "medications": "warfarin, Advil"}]
    assert request.id == "r1"


def test_an_n_by_1_shape_and_nested_data_are_one_element_per_row() -> None:
    medications = {
        "name": "medications",
        "shape": [2, 1],
        "datatype": "BYTES",
        "data": [['["a"]'], ['["b"]']],
    }
    request = _decode({"inputs": [_tensor("patient_id", ["p1", "p2"]), medications]})
    assert [row["medications"] for row in request.rows] == [["a"], ["b"]]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"datatype": "STRING"}, "datatype 'STRING'"),
        ({"shape": [3]}, "shape [3] says 3 elements; the data has 1"),
        ({"shape": [1, 2]}, "must be [N] or [N, 1]"),
        ({"data": ["warfarin, Advil"]}, "is not JSON"),
        ({"name": "dose"}, "not one of the model's inputs"),
    ],
)
def test_bad_inputs_are_400_naming_the_input(change: dict[str, Any], words: str) -> None:
    medications = {**_tensor("medications", ['["a"]']), **change}
    with pytest.raises(V2Error, match="input") as raised:
        _decode({"inputs": [_tensor("patient_id", ["p1"]), medications]})
    assert raised.value.status == 400
    assert words in str(raised.value)


def test_binary_data_output_must_be_a_boolean() -> None:
    # It was read with `is True`, so "yes" passed as false: schemathesis's schema says boolean.
    inputs = [_tensor("patient_id", ["p1"]), _tensor("medications", ['["a"]'])]
    with pytest.raises(V2Error, match="binary_data_output must be true or false"):
        _decode({"inputs": inputs, "parameters": {"binary_data_output": "yes"}})


def test_a_missing_column_and_unequal_lengths_are_refused() -> None:
    with pytest.raises(V2Error, match="'medications' is required"):
        _decode({"inputs": [_tensor("patient_id", ["p1"])]})
    with pytest.raises(V2Error, match="one element per row"):
        _decode(
            {"inputs": [_tensor("patient_id", ["p1", "p2"]), _tensor("medications", ['["a"]'])]}
        )


def test_parameters_become_params_except_the_protocol_s_own() -> None:
    request = _decode(
        {
            "parameters": {"timeout": 2_500_000, "binary_data_output": False, "priority": 1},
            "inputs": [_tensor("patient_id", ["p1"]), _tensor("medications", ['["a"]'])],
        }
    )
    assert request.params is None
    assert request.timeout_seconds == 2.5  # Triton's microseconds


def _binary_bytes(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def test_binary_tensors_are_read_after_the_json_header() -> None:
    ids, meds = _binary_bytes(["p1", "p2"]), _binary_bytes(['["warfarin"]', '["Advil"]'])
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "patient_id",
                    "shape": [2, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(ids)},
                },
                {
                    "name": "medications",
                    "shape": [2, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(meds)},
                },
            ]
        }
    ).encode()
    request = decode_request(header + ids + meds, str(len(header)), COLUMNS)
    assert request.rows == [
        {"patient_id": "p1", "medications": ["warfarin"]},
        {"patient_id": "p2", "medications": ["Advil"]},
    ]
    with pytest.raises(V2Error, match="past the end"):
        decode_request(header + ids, str(len(header)), COLUMNS)
    with pytest.raises(V2Error, match="no input claims"):
        decode_request(header + ids + meds + b"x", str(len(header)), COLUMNS)


ROWS = [
    {"patient_id": "p1", "interactions": [{"a": 1}], "interactions_omitted": 0, "note": "x"},
    {"patient_id": "p2", "interactions": [], "interactions_omitted": 3, "note": "y"},
]


def test_the_response_is_mlserver_s_pandas_encoding() -> None:
    request = _decode(
        {"id": "r9", "inputs": [_tensor("patient_id", ["p"]), _tensor("medications", ["[]"])]}
    )
    response = encode_response(ROWS, model_name="m", model_version=None, request=request)
    document = json.loads(response.body)
    assert "model_version" not in document
    assert (document["id"], document["parameters"]) == ("r9", {"content_type": "pd"})
    outputs = {o["name"]: o for o in document["outputs"]}
    assert outputs["patient_id"]["datatype"] == "BYTES"
    assert outputs["patient_id"]["parameters"] == {"content_type": "str"}
    assert outputs["patient_id"]["shape"] == [2, 1]
    assert outputs["interactions"]["parameters"] == {"content_type": "pd_json"}
    assert outputs["interactions"]["data"] == ['[{"a":1}]', "[]"]
    assert (
        outputs["interactions_omitted"]["datatype"],
        outputs["interactions_omitted"]["data"],
    ) == (
        "INT64",
        [0, 3],
    )
    assert "parameters" not in outputs["interactions_omitted"]  # as MLServer's pandas codec


def test_the_outputs_filter_and_binary_outputs() -> None:
    document = {
        "inputs": [_tensor("patient_id", ["p"]), _tensor("medications", ["[]"])],
        "outputs": [{"name": "note", "parameters": {"binary_data": True}}, {"name": "patient_id"}],
    }
    request = _decode(document)
    response = encode_response(ROWS, model_name="m", model_version="3", request=request)
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.body[:length])
    assert [o["name"] for o in header["outputs"]] == ["note", "patient_id"]
    assert header["model_version"] == "3"
    note = header["outputs"][0]
    assert "data" not in note
    assert response.body[length:] == _binary_bytes(["x", "y"])
    assert note["parameters"]["binary_data_size"] == len(_binary_bytes(["x", "y"]))
    numbers = {
        **document,
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "interactions_omitted"}],
    }
    binary = encode_response(ROWS, model_name="m", model_version=None, request=_decode(numbers))
    length = int(binary.headers["Inference-Header-Content-Length"])
    (count,) = json.loads(binary.body[:length])["outputs"]
    assert count["parameters"] == {"binary_data_size": 16}  # two little-endian INT64s
    assert binary.body[length:] == struct.pack("<2q", 0, 3)
    with pytest.raises(V2Error, match="not one of the model's outputs"):
        encode_response(
            ROWS,
            model_name="m",
            model_version=None,
            request=_decode({**document, "outputs": [{"name": "nope"}]}),
        )
