"""Property-based tests of every reader of outside input in ``annotation``: for any generated
vote file the importers give a vote table or a VoteImportError naming the file; for any
generated request the collection app answers 2xx or 4xx with a JSON error, never a 5xx."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis")
httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from annotation import VOTE_COLUMNS, VoteImportError, read_votes  # noqa: E402
from annotation.campaign import create_campaign  # noqa: E402
from nights import load_nights  # noqa: E402

from .annotation_helpers import running_server  # noqa: E402

FAST = settings(
    max_examples=int(os.environ.get("NIGHTS_HYPOTHESIS_EXAMPLES", 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TRICKY = [
    "left", "right", "LEFT ", "0", "1", "a", "b", "true", "false", "yes", "", " ", "nan", "NaN",
    "inf", "-inf", "Infinity", "1e30", "1e400", "-5", "1.5", "9" * 30, "\x00", "é", "\n",
]  # fmt: skip
cells = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=12),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(str),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(TRICKY),
    st.text(max_size=8),
)
KEYS = [
    "data", "annotations", "result", "value", "selected", "completed_by", "lead_time",
    "was_cancelled", "type", "swapped", "triplet_id", "id", "email", "choice",
]  # fmt: skip
keys = st.sampled_from(KEYS) | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def csv_text(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


@st.composite
def vote_csvs(draw, required=(), names=()):
    """CSV bytes: a header of known and odd column names, ragged rows of tricky cells; now
    and then plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    columns = list(required) + draw(
        st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=6, unique=True)
    )
    rows = draw(
        st.lists(
            st.lists(cells, min_size=max(0, len(columns) - 1), max_size=len(columns) + 1),
            max_size=6,
        )
    )
    return csv_text(columns, rows).encode("utf-8", errors="surrogatepass")


PLAIN_COLUMNS = [
    "task", "triplet_id", "id", "worker", "worker_id", "WorkerId", "label", "choice", "answer",
    "rt_ms", "swapped", "kind", "expected", "server_ms",
]  # fmt: skip
MTURK_COLUMNS = [
    "HITId", "AssignmentId", "WorkTimeInSeconds", "Input.triplet_id", "Input.id", "Input.task",
    "Input.swapped", "Answer.choice", "Answer.label", "Answer.answer", "Answer.taskAnswers",
]  # fmt: skip

pairwise_results = st.fixed_dictionaries(
    {
        "type": st.just("pairwise") | json_scalars,
        "value": st.fixed_dictionaries({"selected": st.sampled_from(TRICKY) | json_values})
        | json_values,
    }
)
annotations = st.fixed_dictionaries(
    {
        "completed_by": json_values,
        "lead_time": json_scalars,
        "result": st.lists(pairwise_results | json_values, max_size=2),
    },
    optional={"was_cancelled": json_scalars},
)
label_studio_tasks = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries(
            {"triplet_id": st.integers(-5, 2**70) | json_scalars}, optional={"swapped": cells}
        )
        | json_values,
        "annotations": st.lists(annotations | json_values, max_size=3) | json_values,
    }
)
label_studio_exports = st.one_of(
    st.lists(label_studio_tasks | json_values, max_size=4).map(json.dumps).map(str.encode),
    json_values.map(json.dumps).map(str.encode),
    st.binary(max_size=200),
)


def check_vote_table(path, format):
    """The reader's answer is a well-formed vote table or its own error naming the file."""
    try:
        votes = read_votes(path, format)
    except VoteImportError as error:
        assert str(error).startswith(f"{path}: "), str(error)
        assert "\n" not in str(error)
        return
    assert list(votes.columns[: len(VOTE_COLUMNS)]) == list(VOTE_COLUMNS)
    assert votes["task"].dtype == "int64" and (votes["task"] >= 0).all()
    assert set(votes["label"]) <= {"left", "right"}
    assert all(math.isnan(rt) or (math.isfinite(rt) and rt >= 0) for rt in votes["rt_ms"])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("vote_files")


@FAST
@given(content=vote_csvs(names=PLAIN_COLUMNS))
def test_plain_csv_reader_gives_votes_or_its_own_error(scratch, content):
    path = scratch / "votes.csv"
    path.write_bytes(content)
    check_vote_table(path, "csv")


@FAST
@given(content=vote_csvs(required=("WorkerId", "AssignmentStatus"), names=MTURK_COLUMNS))
def test_mturk_reader_gives_votes_or_its_own_error(scratch, content):
    path = scratch / "Batch_1_batch_results.csv"
    path.write_bytes(content)
    check_vote_table(path, None)


@FAST
@given(answers=st.lists(json_values.map(json.dumps) | st.text(max_size=20), max_size=4))
def test_mturk_task_answers_json_gives_votes_or_its_own_error(scratch, answers):
    path = scratch / "Batch_2_batch_results.csv"
    rows = [["W", "Approved", "7", answer] for answer in answers]
    path.write_text(
        csv_text(["WorkerId", "AssignmentStatus", "Input.id", "Answer.taskAnswers"], rows),
        encoding="utf-8",
        errors="surrogatepass",
    )
    check_vote_table(path, "mturk")


@FAST
@given(content=label_studio_exports)
def test_label_studio_reader_gives_votes_or_its_own_error(scratch, content):
    path = scratch / "export.json"
    path.write_bytes(content)
    check_vote_table(path, None)


# The collection app: one server for all examples.


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_home):
    scratch = tmp_path_factory.mktemp("app")
    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=scratch / "tables")
    path = scratch / "c.sqlite"
    settings_ = create_campaign(
        path, table.select(range(20)), trials_per_participant=4, votes_per_trial=50, seed=1
    )
    with running_server(path) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        for n in range(3):
            client.get("/api/session", params={"worker": f"p{n}"}).raise_for_status()
        yield client, settings_["admin_token"]


def check_answer(response) -> dict:
    """A 2xx or 4xx JSON answer, never a 5xx."""
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"} and isinstance(body["error"], str)
    return body


ids = st.sampled_from(["p0", "p1", "p2", "new", ""]) | st.text(max_size=70)
query_keys = st.sampled_from(["PROLIFIC_PID", "worker", "STUDY_ID", "SESSION_ID"]) | st.text(
    max_size=6
)


@FAST
@given(query=st.dictionaries(query_keys, ids, max_size=4))
def test_session_route_answers_2xx_or_4xx(server, query):
    client, _ = server
    body = check_answer(client.get("/api/session", params=query))
    if "status" in body:
        assert body["status"] in ("active", "finished", "expired", "released", "full")


answer_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "worker": ids | json_values,
            "trial": st.integers(-3, 30) | json_values,
            "answer": st.sampled_from(["left", "right", "same", "different"]) | json_values,
            "rt_ms": st.floats() | st.integers(-(10**400), 10**400) | json_values,
            "detail": json_values,
        },
    ).map(lambda body: json.dumps(body).encode()),
    json_values.map(json.dumps).map(str.encode),
    st.binary(max_size=300),
    st.sampled_from([b"[" * 5000, b'{"trial": 1e400}', b"x" * 5000, b'{"rt_ms": NaN}']),
)


@FAST
@given(body=answer_bodies, route=st.sampled_from(["/api/answer", "/api/image-error"]))
def test_answer_routes_answer_2xx_or_4xx(server, body, route):
    client, _ = server
    check_answer(client.post(route, content=body))


@FAST
@given(name=st.text(min_size=1, max_size=40))
def test_image_route_serves_no_guessed_name(server, name):
    client, _ = server
    response = client.get("/images/" + quote(name, safe=""), follow_redirects=True)
    assert response.status_code == 404  # a trailing slash is first redirected away


def valid_header_value(value: bytes) -> bool:
    """What an HTTP client can send at all: no control bytes, no space at either end."""
    return value.strip() == value and all(byte >= 0x20 and byte != 0x7F for byte in value)


@FAST
@given(header=st.binary(min_size=1, max_size=60).filter(valid_header_value))
def test_admin_routes_refuse_any_other_token(server, header):
    client, token = server
    response = client.get("/api/admin/progress", headers={"Authorization": b"Bearer " + header})
    if header.strip() == token.encode():
        assert response.status_code == 200
    else:
        assert response.status_code == 401 and check_answer(response)
