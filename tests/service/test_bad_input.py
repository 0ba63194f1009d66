"""Bad input against the real server (gunicorn, one uvicorn worker): a hand-written corpus for
/invocations and generated bodies (hypothesis) for /v1/screen. Every answer is a 4xx with a
JSON body naming the problem (or a 200 for input that is odd but valid), never a 5xx, and the
server stays healthy. With BAD_INPUT_REPORT=path the counts are written there (the
bad-input scenario of `python -m bench.reliability` uses it).
"""

from __future__ import annotations

import json
import os
import random
import string
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gunicorn import RunningGunicorn

pytestmark = pytest.mark.slow

JSON = "application/json"
ROW = {"patient_id": "b1", "medications": ["Coumadin", "Advil"]}
LIMIT = 1_048_576  # PHARMACY_MAX_BODY_BYTES default
TRIED: Counter[str] = Counter()
BAD = {400, 422}  # malformed (400) or well-formed but wrong (422); MLflow's parser decides some


def records(rows: Any) -> bytes:
    return json.dumps({"dataframe_records": rows}).encode()


# (name, body, content type or None, allowed statuses)
CORPUS: list[tuple[str, bytes, str | None, set[int]]] = [
    ("invalid JSON", b'{"dataframe_split": ', JSON, BAD),
    ("empty body", b"", JSON, BAD),
    ("JSON number", b"42", JSON, BAD),
    ("JSON string", b'"hello"', JSON, BAD),
    ("JSON null", b"null", JSON, BAD),
    ("JSON list", b"[1, 2]", JSON, BAD),
    ("no format key", b"{}", JSON, BAD),
    ("unknown key", b'{"rows": [1]}', JSON, BAD),
    (
        "two format keys",
        json.dumps({"dataframe_records": [ROW], "instances": [ROW]}).encode(),
        JSON,
        BAD,
    ),
    ("split: columns not a list", b'{"dataframe_split": {"columns": 5, "data": []}}', JSON, BAD),
    (
        "split: data not a list",
        b'{"dataframe_split": {"columns": ["patient_id"], "data": 5}}',
        JSON,
        BAD,
    ),
    ("split: not an object", b'{"dataframe_split": [1, 2]}', JSON, BAD),
    (
        "split: a column named null (schemathesis: MLflow's parser dropped it, 200 before)",
        b'{"dataframe_split": {"columns": ["patient_id", "medications", null], '
        b'"data": [["0", "x", ""]]}}',
        JSON,
        {422},
    ),
    (
        "split: a column named by an object (schemathesis found it: 500 before)",
        b'{"dataframe_split": {"columns": [{}], "data": [], "index": []}, "params": {}}',
        JSON,
        BAD,
    ),
    (
        "split: missing medications column",
        b'{"dataframe_split": {"columns": ["patient_id"], "data": [["p1"]]}}',
        JSON,
        BAD,
    ),
    (
        "split: row longer than columns",
        b'{"dataframe_split": {"columns": ["patient_id", "medications"], "data": [["p1", "x", "y"]]}}',
        JSON,
        BAD,
    ),
    ("records: empty list", records([]), JSON, BAD),
    ("records: empty row", records([{}]), JSON, BAD),
    ("records: numbers", records([1, 2]), JSON, BAD),
    ("records: not a list", b'{"dataframe_records": "x"}', JSON, BAD),
    ("records: medications a number", records([{"patient_id": "p", "medications": 7}]), JSON, BAD),
    (
        "records: medications an object",
        records([{"patient_id": "p", "medications": {"a": 1}}]),
        JSON,
        BAD,
    ),
    ("records: medications null", records([{"patient_id": "p", "medications": None}]), JSON, BAD),
    (
        "records: patient_id an object",
        records([{"patient_id": {"x": 1}, "medications": ["a"]}]),
        JSON,
        BAD,
    ),
    ("records: question a list", records([{**ROW, "question": ["a"]}]), JSON, BAD),
    (
        "records: medication a number",
        records([{"patient_id": "p", "medications": [1, 2]}]),
        JSON,
        BAD,
    ),
    (
        "records: 10,000 medications",
        records([{"patient_id": "p", "medications": ["aspirin"] * 10_000}]),
        JSON,
        {413},
    ),
    ("records: 1,001 rows", records([ROW] * 1001), JSON, {413}),
    ("records: 51 medications", records([{**ROW, "medications": ["aspirin"] * 51}]), JSON, {413}),
    ("records: 300 KB patient_id", records([{**ROW, "patient_id": "p" * 300_000}]), JSON, BAD),
    ("records: 5 MB string", records([{**ROW, "question": "q" * 5_000_000}]), JSON, {413}),
    (
        "records: NaN patient_id",
        b'{"dataframe_records": [{"patient_id": NaN, "medications": ["a"]}]}',
        JSON,
        BAD,
    ),
    ("instances: a string", b'{"instances": "x"}', JSON, BAD),
    ("instances: nested lists", b'{"instances": [[1, 2]]}', JSON, BAD),
    ("inputs: a number", b'{"inputs": 5}', JSON, BAD),
    (
        "inputs: medications a number",
        b'{"inputs": {"patient_id": ["p"], "medications": [5]}}',
        JSON,
        BAD,
    ),
    (
        "params: not an object",
        json.dumps({"dataframe_records": [ROW], "params": 5}).encode(),
        JSON,
        BAD,
    ),
    (
        "params: timeout a word",
        json.dumps({"dataframe_records": [ROW], "params": {"timeout": "soon"}}).encode(),
        JSON,
        BAD,
    ),
    (
        "params: timeout negative",
        json.dumps({"dataframe_records": [ROW], "params": {"timeout": -1}}).encode(),
        JSON,
        BAD,
    ),
    (
        "params: unknown",
        json.dumps({"dataframe_records": [ROW], "params": {"color": "red"}}).encode(),
        JSON,
        {200, 400, 422},
    ),
    (
        "non-UTF-8 bytes",
        b'{"dataframe_records": [{"patient_id": "\xff\xfe", "medications": ["a"]}]}',
        JSON,
        BAD,
    ),
    ("UTF-16 body", json.dumps({"dataframe_records": [ROW]}).encode("utf-16"), JSON, BAD),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, JSON, BAD),
    ("duplicate keys", b'{"dataframe_records": [], "dataframe_records": 5}', JSON, BAD),
    ("CSV: bad quoting", b'patient_id,medications\n"p1,"warfarin\n', "text/csv", BAD),
    ("CSV: header only", b"patient_id,medications\n", "text/csv", BAD),
    ("CSV: empty", b"", "text/csv", BAD),
    ("CSV: binary", bytes(range(256)) * 4, "text/csv", BAD),
    ("CSV: missing column", b"patient_id\np1\n", "text/csv", BAD),
    ("content type: text/plain", records([ROW]), "text/plain", {415}),
    ("content type: XML", b"<rows/>", "application/xml", {415}),
    ("content type: form", b"a=1", "application/x-www-form-urlencoded", {415}),
    ("content type: none", records([ROW]), None, {415}),
    ("body over the limit", b"x" * (LIMIT + 1), JSON, {413}),
    (
        "odd but valid: emoji medication",
        records([{"patient_id": "p", "medications": ["💊", "warfarin"]}]),
        JSON,
        {200},
    ),
    (
        "odd but valid: empty medication list",
        records([{"patient_id": "p", "medications": []}]),
        JSON,
        {200},
    ),
]


@pytest.fixture(scope="module", autouse=True)
def tried_report() -> Iterator[None]:
    """What the module tried, by kind, for the reliability report (BAD_INPUT_REPORT)."""
    yield
    if report := os.environ.get("BAD_INPUT_REPORT"):
        Path(report).write_text(json.dumps(dict(TRIED)))


@pytest.fixture(scope="module")
def client(server: RunningGunicorn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield http


def check_answer(response: httpx.Response, allowed: set[int], what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    assert response.status_code in allowed, (what, response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()  # always JSON
        assert body["error_code"], (what, body)
        assert len(body["message"]) > 10, (what, body)
        assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("name", "body", "content_type", "allowed"), CORPUS, ids=[c[0] for c in CORPUS]
)
def test_invocations_corpus(
    client: httpx.Client, name: str, body: bytes, content_type: str | None, allowed: set[int]
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/invocations", content=body, headers=headers)
    TRIED["invocations corpus"] += 1
    check_answer(response, allowed, name)


def test_body_over_the_limit_without_content_length(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MiB, chunked: no Content-Length to refuse early

    response = client.post("/invocations", content=chunks(), headers={"Content-Type": JSON})
    TRIED["invocations corpus"] += 1
    check_answer(response, {413}, "chunked body over the limit")


def test_csv_values_stay_strings(client: httpx.Client) -> None:
    """Patient ids such as 00123, 007 or NA are strings: pandas would read them as numbers or
    as missing. An empty cell is still missing, and named."""
    csv = 'patient_id,medications\n00123,"Coumadin, Advil"\n007,warfarin\nNA,"Zocor, Biaxin"\n'
    response = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    TRIED["invocations corpus"] += 1
    check_answer(response, {200}, "CSV: ids that look like numbers or NA")
    predictions = response.json()["predictions"]
    assert [p["patient_id"] for p in predictions] == ["00123", "007", "NA"]
    assert [p["highest_severity"] for p in predictions] == ["major", "none", "contraindicated"]
    for csv, field in [
        ('patient_id,medications\n,"Coumadin, Advil"\n', "rows[0].patient_id"),
        ("patient_id,medications\n00123,\n", "rows[0].medications"),
    ]:
        response = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
        check_answer(response, {422}, f"CSV: empty {field}")
        assert response.json()["field"] == field


CSV_BODY = b'patient_id,medications\nc1,"Zocor, Biaxin"\n'
SCREEN_BODY = json.dumps({"patients": [ROW]}).encode()


@pytest.mark.parametrize(
    ("path", "content_type", "body", "status"),
    [
        pytest.param(
            "/invocations", 'application/json; charset="utf-8"', records([ROW]), 200, id="quoted"
        ),
        pytest.param(
            "/invocations",
            'APPLICATION/JSON ; CHARSET="UTF-8"',
            records([ROW]),
            200,
            id="upper case, quoted",
        ),
        pytest.param("/invocations", 'text/csv; charset="utf-8"', CSV_BODY, 200, id="CSV, quoted"),
        pytest.param(
            "/invocations",
            'application/json; charset="latin-1"',
            records([ROW]),
            415,
            id="quoted, not UTF-8",
        ),
        pytest.param(
            "/invocations",
            "application/json; charset",
            records([ROW]),
            415,
            id="a parameter without a value",
        ),
        pytest.param(
            "/v1/screen", 'application/json; charset="utf-8"', SCREEN_BODY, 200, id="screen: quoted"
        ),
        pytest.param(
            "/v1/screen",
            "Application/JSON; Charset=UTF-8",
            SCREEN_BODY,
            200,
            id="screen: mixed case",
        ),
        pytest.param(
            "/v1/screen",
            'application/json; charset="latin-1"',
            SCREEN_BODY,
            415,
            id="screen: quoted, not UTF-8",
        ),
        pytest.param(
            "/v1/screen",
            "application/json; charset=latin-1",
            SCREEN_BODY,
            415,
            id="screen: not UTF-8",
        ),
        pytest.param("/v1/screen", "application", SCREEN_BODY, 415, id="screen: malformed"),
    ],
)
def test_content_type_parameters_are_parsed_as_http_says(
    client: httpx.Client, path: str, content_type: str, body: bytes, status: int
) -> None:
    """RFC 9110: a parameter's value may be quoted, its name and the charset are case-blind."""
    response = client.post(path, content=body, headers={"Content-Type": content_type})
    TRIED["content types"] += 1
    check_answer(response, {status}, f"{path} with {content_type}")
    if status == 415:
        assert response.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_a_maximum_size_junk_body_is_answered_and_costs_the_others_little(
    client: httpx.Client,
) -> None:
    """1,000 rows of 50 random 9-14 letter strings (797 KiB, as large as the limits allow):
    answered 200 with every string reported, inside the deadline, by the request's budget
    (before: 504 at the 30 s deadline); a one-drug request right after is served. How long the
    others wait meanwhile is measured in bench/results/fairness.md."""
    rng = random.Random(7)
    rows = [
        {
            "patient_id": f"j{i}",
            "medications": [
                "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(9, 14)))
                for _ in range(50)
            ],
        }
        for i in range(1000)
    ]
    response = client.post("/invocations", content=records(rows), headers={"Content-Type": JSON})
    TRIED["junk bodies"] += 1
    check_answer(response, {200}, "maximum-size junk body")  # inside the 30 s deadline
    predictions = response.json()["predictions"]
    assert sum(len(p["unrecognized"]) for p in predictions) == 50_000
    after = client.post("/invocations", content=records([ROW]), headers={"Content-Type": JSON})
    check_answer(after, {200}, "after the junk")


def refused_status(server: RunningGunicorn, path: str, headers: dict[str, str]) -> int | None:
    """The status of a POST, or None when the server closed the connection instead."""
    try:
        response = httpx.post(
            f"{server.base_url}{path}",
            content=records([ROW]),
            headers={"Content-Type": JSON, **headers},
            timeout=30,
        )
    except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
        return None  # closed while the client was still sending: refused all the same
    if response.status_code >= 400:
        body = response.json()
        assert body["error_code"] in ("HEADERS_TOO_LARGE", "REQUEST_LINE_TOO_LONG"), body
    return response.status_code


@pytest.mark.parametrize(
    ("path", "headers", "allowed"),
    [
        pytest.param("/invocations", {"X-Padding": "a" * 16_000}, {431}, id="a 16 kB header field"),
        pytest.param(
            "/invocations",
            {"X-Padding": "a" * 100_000},
            {431, None},
            id="a 100 kB header field",
        ),
        pytest.param(
            "/invocations",
            {f"X-Field-{n}": "a" for n in range(150)},
            {431},
            id="150 header fields",
        ),
        pytest.param(
            "/invocations",
            {f"X-Field-{n}": "a" * 8000 for n in range(10)},
            {431, None},
            id="80 kB of headers in fields under the field limit",
        ),
        pytest.param("/invocations?" + "q" * 9000, {}, {414}, id="a 9 kB request line"),
    ],
)
def test_a_head_over_the_limits_is_refused(
    server: RunningGunicorn, path: str, headers: dict[str, str], allowed: set[int | None]
) -> None:
    TRIED["headers"] += 1
    assert refused_status(server, path, headers) in allowed
    assert httpx.get(f"{server.base_url}/health/ready", timeout=10).status_code == 200


def test_a_head_just_under_the_limits_is_served(server: RunningGunicorn) -> None:
    headers = {"X-Padding": "a" * 8000, **{f"X-Field-{n}": "a" for n in range(90)}}
    TRIED["headers"] += 1
    assert refused_status(server, "/invocations?" + "q" * 8000, headers) == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
patient = st.fixed_dictionaries(
    {"patient_id": st.text(max_size=30) | json_values},
    optional={
        "medications": st.lists(st.text(max_size=40), max_size=6)
        | st.text(max_size=80)
        | json_values,
        "question": st.none() | st.text(max_size=80) | json_values,
    },
)
screen_bodies = (
    json_values
    | st.fixed_dictionaries({"patients": st.lists(patient, max_size=4) | json_values})
    | st.fixed_dictionaries(
        {"patients": st.lists(patient, min_size=1, max_size=3)}, optional={"extra": json_values}
    )
)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=screen_bodies)
def test_screen_generated_bodies(client: httpx.Client, body: Any) -> None:
    response = client.post("/v1/screen", content=json.dumps(body), headers={"Content-Type": JSON})
    TRIED["screen generated"] += 1
    check_answer(response, {200, 400, 413, 422}, json.dumps(body)[:300])
    if response.status_code == 200:
        assert len(response.json()["results"]) == len(body["patients"])


def test_server_is_healthy_afterwards(server: RunningGunicorn, client: httpx.Client) -> None:
    assert client.get("/health/ready").status_code == 200
    assert client.get("/health/live").status_code == 200
    response = client.post("/invocations", content=records([ROW]), headers={"Content-Type": JSON})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["interactions"]
    assert len(server.worker_pids()) == 1
    errors = [line for line in server.log_lines() if '"level": "ERROR"' in line]
    assert not errors, errors[:3]
