"""Open Inference Protocol (KServe V2) tensors <-> the model's rows, MLServer-compatible.

No server here: bytes and dicts in, rows and bytes out, so that every rule is testable alone.

Requests use MLServer's pandas content type (``pd``) by default: one input per column, each a
BYTES tensor of shape ``[N]`` or ``[N, 1]`` whose elements are decoded by the input's content
type: ``str`` (the text as is), ``pd_json`` (a JSON document per row: ``["warfarin", "Advil"]``)
or ``np`` (numbers). An input without its own content type takes the one the model's metadata
declares for that column (MLServer ignores the metadata and passes the JSON text through).

Responses use MLServer's pandas encoding of the result: one output per field, shape ``[N, 1]``;
``str`` for a column of strings, INT64/FP64/BOOL for a numeric one (no content type, as
MLServer writes it), compact JSON with ``pd_json`` for anything else (lists, objects, missing
values).

The binary tensor data extension (Triton's, sent by default by ``tritonclient`` and the
``kserve`` client): a JSON header of ``Inference-Header-Content-Length`` bytes, then each binary
input's raw bytes in order; a BYTES element is a 4-byte little-endian length and its bytes.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "RESERVED_PARAMETERS",
    "ColumnSpec",
    "DecodedRequest",
    "EncodedResponse",
    "V2Error",
    "columns_of",
    "decode_request",
    "encode_response",
]

HEADER_LENGTH = "inference-header-content-length"
"""The binary extension's header: the JSON part's length in bytes."""

_NUMERIC = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
}
_STRUCT = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
DATATYPES = frozenset({*_NUMERIC, "BYTES"})
CONTENT_TYPES = frozenset({"str", "pd_json", "np", "base64"})
RESERVED_PARAMETERS = frozenset(
    {
        "content_type",
        "headers",
        "binary_data_output",
        "binary_data_size",
        "priority",
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "timeout",
    }
)
"""Request parameters that are the protocol's or Triton's own, never the model's params (the
request's ``timeout`` is read apart: Triton's clients send microseconds)."""


class V2Error(Exception):
    """A request the protocol refuses: ``status`` and a message naming what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of the model's signature, as the metadata shows it."""

    name: str
    content_type: str
    """``str`` or ``pd_json``."""
    optional: bool = False


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    id: str
    rows: list[dict[str, Any]]
    params: dict[str, Any] | None
    timeout_seconds: float | None
    outputs: list[str] | None
    """The outputs asked for, in order, or ``None`` for all."""
    binary_outputs: frozenset[str] = field(default_factory=frozenset)
    binary_all: bool = False


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    body: bytes
    headers: dict[str, str]
    media_type: str


def decode_request(
    body: bytes, header_length: str | None, columns: Sequence[ColumnSpec]
) -> DecodedRequest:
    """An inference request's rows, params and wanted outputs, or :class:`V2Error`."""
    document, binary = _split(body, header_length)
    if not isinstance(document, dict):
        raise V2Error("The inference request must be a JSON object.")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("'id' must be a string.")
    parameters = _parameters(document.get("parameters"), "parameters")
    content_type = parameters.get("content_type", "pd")
    if content_type != "pd":
        raise V2Error(
            f"parameters.content_type {content_type!r} is not supported: this model takes "
            "a table ('pd'), one input per column."
        )
    if not isinstance(parameters.get("binary_data_output", False), bool):
        raise V2Error("parameters.binary_data_output must be true or false.")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error("'inputs' must be a non-empty list of tensors, one per column.")
    known = {c.name: c for c in columns}
    values: dict[str, list[Any]] = {}
    offset = 0
    for index, tensor in enumerate(inputs):
        name, column, offset = _decode_input(index, tensor, known, binary, offset)
        if name in values:
            raise V2Error(f"input {name!r} is given twice.")
        values[name] = column
    if offset != len(binary):
        raise V2Error(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims "
            "(binary_data_size)."
        )
    missing = [c.name for c in columns if not c.optional and c.name not in values]
    if missing:
        raise V2Error(f"input {missing[0]!r} is required (one input per column).")
    lengths = {name: len(column) for name, column in values.items()}
    if len(set(lengths.values())) != 1:
        raise V2Error(f"every input must have one element per row; got {lengths}.")
    (count,) = set(lengths.values())
    rows = [{name: column[i] for name, column in values.items()} for i in range(count)]
    return DecodedRequest(
        id=request_id or str(uuid.uuid4()),
        rows=rows,
        params=_model_params(parameters),
        timeout_seconds=_timeout(parameters.get("timeout")),
        outputs=_wanted(document.get("outputs")),
        binary_outputs=_binary_outputs(document.get("outputs")),
        binary_all=parameters.get("binary_data_output") is True,
    )


def encode_response(
    rows: list[dict[str, Any]],
    *,
    model_name: str,
    model_version: str | None,
    request: DecodedRequest,
) -> EncodedResponse:
    """The model's rows as MLServer's pandas encoding, filtered and in the order asked for."""
    names = list(rows[0]) if rows else []
    if request.outputs is not None:
        unknown = [n for n in request.outputs if n not in names]
        if unknown and rows:
            raise V2Error(
                f"output {unknown[0]!r} is not one of the model's outputs: {', '.join(names)}."
            )
        names = [n for n in request.outputs if n in names]
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in names:
        output = _encode_column(name, [row.get(name) for row in rows])
        if request.binary_all or name in request.binary_outputs:
            raw = _to_binary(output["datatype"], output.pop("data"))
            output.setdefault("parameters", {})["binary_data_size"] = len(raw)
            chunks.append(raw)
        outputs.append(output)
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    document.update({"id": request.id, "parameters": {"content_type": "pd"}, "outputs": outputs})
    header = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    if not chunks:
        return EncodedResponse(header, {}, "application/json")
    return EncodedResponse(
        header + b"".join(chunks),
        {"Inference-Header-Content-Length": str(len(header))},
        "application/octet-stream",
    )


def columns_of(schema: Any) -> list[ColumnSpec]:
    """MLServer's mapping of an MLflow schema: a string column is ``str``, anything else
    (any, arrays, objects) a JSON document per row (``pd_json``), numbers ``np``."""
    if schema is None or not getattr(schema, "has_input_names", lambda: False)():
        return []
    columns = []
    for spec in schema.inputs:
        kind = getattr(getattr(spec, "type", None), "name", None)
        content_type = "str" if kind == "string" else "np" if kind in _NUMBERS else "pd_json"
        columns.append(ColumnSpec(spec.name, content_type, optional=not spec.required))
    return columns


_NUMBERS = frozenset({"integer", "long", "float", "double", "boolean"})


# -- requests --------------------------------------------------------------------------------


def _split(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    if header_length is None:
        head, binary = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise V2Error(
                f"Inference-Header-Content-Length {header_length!r} must be a whole number of "
                f"bytes, at most the body's {len(body)}."
            )
        head, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        return json.loads(head), binary
    except (ValueError, RecursionError):
        raise V2Error("The inference request is not valid JSON.") from None


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(f"{where} must be an object.")
    return value


def _decode_input(
    index: int, tensor: Any, known: Mapping[str, ColumnSpec], binary: bytes, offset: int
) -> tuple[str, list[Any], int]:
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise V2Error(f"{where} must be an object with name, shape, datatype and data.")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise V2Error(f"{where}.name must be a non-empty string.")
    where = f"input {name!r}"
    if name not in known:
        raise V2Error(f"{where} is not one of the model's inputs: {', '.join(known)}.")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise V2Error(
            f"{where}: datatype {datatype!r} is not one of {', '.join(sorted(DATATYPES))}."
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise V2Error(f"{where}: shape must be a list of sizes (whole numbers), not {shape!r}.")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise V2Error(f"{where}: shape {shape} must be [N] or [N, 1]: one element per row.")
    count = shape[0]
    parameters = _parameters(tensor.get("parameters"), f"{where}.parameters")
    content_type = parameters.get("content_type") or known[name].content_type
    if content_type not in CONTENT_TYPES:
        raise V2Error(f"{where}: content_type {content_type!r} is not one of str, pd_json, np.")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise V2Error(f"{where}: binary_data_size must be a whole number of bytes.")
        if "data" in tensor:
            raise V2Error(f"{where} has both data and binary_data_size.")
        if offset + size > len(binary):
            raise V2Error(
                f"{where}: binary_data_size {size} is past the end of the body's binary data."
            )
        elements = _from_binary(where, datatype, binary[offset : offset + size])
        offset += size
    else:
        if "data" not in tensor:
            raise V2Error(f"{where} has no data.")
        elements = list(_flatten(tensor["data"]))
    if len(elements) != count:
        raise V2Error(
            f"{where}: shape {shape} says {count} elements; the data has {len(elements)}."
        )
    return (
        name,
        [_element(where, i, datatype, content_type, e) for i, e in enumerate(elements)],
        offset,
    )


def _flatten(data: Any) -> Iterable[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _element(where: str, row: int, datatype: str, content_type: str, value: Any) -> Any:
    if datatype != "BYTES":
        if isinstance(value, str) or value is None or isinstance(value, dict | list):
            raise V2Error(f"{where}[{row}] must be a number for datatype {datatype}.")
        return value
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise V2Error(f"{where}[{row}] is not UTF-8 text.") from None
    if not isinstance(value, str):
        raise V2Error(f"{where}[{row}] must be a string for datatype BYTES.")
    if content_type == "pd_json":
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise V2Error(
                f"{where}[{row}] is not JSON (content type pd_json, as the model's metadata "
                "declares): send a JSON list, or set the input's content_type to 'str' for "
                "comma-separated text."
            ) from None
    return value


def _from_binary(where: str, datatype: str, raw: bytes) -> list[Any]:
    if datatype != "BYTES":
        width = _NUMERIC[datatype]
        if len(raw) % width:
            raise V2Error(f"{where}: {len(raw)} bytes is not a whole number of {datatype}.")
        return list(struct.unpack(f"<{len(raw) // width}{_STRUCT[datatype]}", raw))
    elements: list[Any] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise V2Error(f"{where}: binary BYTES data ends inside an element's length.")
        (length,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + length > len(raw):
            raise V2Error(f"{where}: binary BYTES element of {length} bytes runs past its data.")
        elements.append(raw[at : at + length])
        at += length
    return elements


def _model_params(parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    params = {k: v for k, v in parameters.items() if k not in RESERVED_PARAMETERS}
    return params or None


def _timeout(value: Any) -> float | None:
    """Triton's request ``timeout`` is in microseconds (``tritonclient``'s ``infer(timeout=)``);
    0 or absent: the server's own deadline."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise V2Error("parameters.timeout must be a number of microseconds.")
    if value < 0:
        raise V2Error("parameters.timeout must not be negative.")
    return value / 1_000_000 if value else None


def _wanted(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise V2Error("'outputs' must be a list of objects with a name.")
    return [o["name"] for o in outputs]


def _binary_outputs(outputs: Any) -> frozenset[str]:
    if not isinstance(outputs, list):
        return frozenset()
    return frozenset(
        o["name"]
        for o in outputs
        if isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") is True
    )


# -- responses -------------------------------------------------------------------------------


def _encode_column(name: str, values: list[Any]) -> dict[str, Any]:
    shape = [len(values), 1]
    if values and all(isinstance(v, str) for v in values):
        return _output(name, shape, "BYTES", "str", values)
    if values and all(isinstance(v, bool) for v in values):
        return _output(name, shape, "BOOL", None, values)
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return _output(name, shape, "INT64", None, values)
    if values and all(
        isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        return _output(name, shape, "FP64", None, [float(v) for v in values])
    encoded = [json.dumps(v, separators=(",", ":"), ensure_ascii=False) for v in values]
    return _output(name, shape, "BYTES", "pd_json", encoded)


def _output(
    name: str, shape: list[int], datatype: str, content_type: str | None, data: list[Any]
) -> dict[str, Any]:
    """One output tensor. A numeric one carries no content type, as MLServer's pandas codec
    writes it: its datatype says what it is."""
    output: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    if content_type is not None:
        output["parameters"] = {"content_type": content_type}
    output["data"] = data
    return output


def _to_binary(datatype: str, data: list[Any]) -> bytes:
    if datatype != "BYTES":
        return struct.pack(f"<{len(data)}{_STRUCT[datatype]}", *data)
    parts = []
    for value in data:
        raw = value.encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)
