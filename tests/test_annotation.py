"""Importing votes, policies, aggregation and merging into a split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("crowdkit")

from annotation import (
    POLICIES,
    AnnotationError,
    BetaBinomialStop,
    NightsScheme,
    VoteImportError,
    aggregate,
    krippendorff_alpha,
    make_policy,
    merge_into_split,
    plan,
    read_votes,
    worker_quality,
)
from nights import load_nights


def test_plain_csv_undoes_display_swaps(tmp_path):
    path = tmp_path / "votes.csv"
    path.write_text(
        "triplet_id,worker,label,swapped,rt_ms\n"
        "5,w1,left,false,900\n5,w2,left,true,1200\n7,w1,1,0,\n"
    )
    votes = read_votes(path)
    assert votes[["task", "worker", "label"]].values.tolist() == [
        [5, "w1", "left"],
        [5, "w2", "right"],
        [7, "w1", "right"],
    ]
    assert votes["rt_ms"].tolist()[:2] == [900, 1200] and np.isnan(votes["rt_ms"].iloc[2])
    assert set(votes["source"]) == {"votes.csv"}


def test_mturk_batch_results_both_answer_styles(tmp_path):
    path = tmp_path / "Batch_1_batch_results.csv"
    rows = [
        {
            "HITId": "h1",
            "AssignmentId": "a1",
            "WorkerId": "W1",
            "AssignmentStatus": "Approved",
            "WorkTimeInSeconds": "3",
            "Input.triplet_id": "11",
            "Input.swapped": "False",
            "Answer.taskAnswers": json.dumps([{"choice": {"left": True, "right": False}}]),
        },
        {
            "HITId": "h1",
            "AssignmentId": "a2",
            "WorkerId": "W2",
            "AssignmentStatus": "Submitted",
            "WorkTimeInSeconds": "2",
            "Input.triplet_id": "11",
            "Input.swapped": "True",
            "Answer.taskAnswers": json.dumps([{"choice": "left"}]),
        },
        {
            "HITId": "h2",
            "AssignmentId": "a3",
            "WorkerId": "W3",
            "AssignmentStatus": "Rejected",
            "WorkTimeInSeconds": "1",
            "Input.triplet_id": "12",
            "Input.swapped": "False",
            "Answer.taskAnswers": json.dumps([{"choice": "left"}]),
        },
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    votes = read_votes(path)
    assert votes[["task", "worker", "label"]].values.tolist() == [
        [11, "W1", "left"],
        [11, "W2", "right"],
    ]
    assert votes["rt_ms"].tolist() == [3000.0, 2000.0]
    legacy = tmp_path / "legacy.csv"
    pd.DataFrame(
        [
            {
                "WorkerId": "W9",
                "AssignmentStatus": "Approved",
                "Input.id": "4",
                "Answer.choice": "right",
            }
        ]
    ).to_csv(legacy, index=False)
    assert read_votes(legacy)["label"].tolist() == ["right"]


def test_label_studio_pairwise_export(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "data": {"triplet_id": 21, "swapped": True},
                    "annotations": [
                        {
                            "completed_by": 3,
                            "lead_time": 1.5,
                            "result": [{"type": "pairwise", "value": {"selected": "left"}}],
                        },
                        {
                            "completed_by": {"id": 4, "email": "b@x"},
                            "lead_time": 2.0,
                            "was_cancelled": True,
                            "result": [],
                        },
                    ],
                },
                {
                    "id": 2,
                    "data": {"id": 22},
                    "annotations": [
                        {
                            "completed_by": {"id": 4, "email": "b@x"},
                            "lead_time": 0.5,
                            "result": [{"type": "pairwise", "value": {"selected": "right"}}],
                        }
                    ],
                },
            ]
        )
    )
    votes = read_votes(path)
    assert votes[["task", "worker", "label"]].values.tolist() == [
        [21, "3", "right"],
        [22, "b@x", "right"],
    ]
    assert votes["rt_ms"].tolist() == [1500.0, 500.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task,worker,label\n1,w,left\n2,w,maybe\n", r"line 3: answer 'maybe' is not left/right"),
        ("task,worker,label\n1,w,left\nx,w,left\n", r"line 3: triplet id 'x' is not a number"),
        ("task,rater\n1,w\n", r"line 1: no worker or label column"),
        ("task,worker,label\n1,w,\n", r"line 2: needs task, worker and label"),
    ],
)
def test_bad_csv_rows_are_named_and_nothing_is_imported(tmp_path, text, message):
    path = tmp_path / "votes.csv"
    path.write_text(text)
    with pytest.raises(VoteImportError, match=message):
        read_votes(path)


def test_bad_label_studio_and_mturk_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"data": {"triplet_id": 1}, "annotations": [{"result": []}]}]')
    with pytest.raises(VoteImportError, match="task 0, annotation 0: expected one pairwise"):
        read_votes(broken)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VoteImportError, match="not JSON"):
        read_votes(tmp_path / "bad.json")
    mturk = tmp_path / "m.csv"
    pd.DataFrame(
        [
            {
                "WorkerId": "W",
                "AssignmentStatus": "Approved",
                "Input.id": "1",
                "Answer.taskAnswers": "[{",
            }
        ]
    ).to_csv(mturk, index=False)
    with pytest.raises(VoteImportError, match=r"line 2: Answer\.taskAnswers is not JSON"):
        read_votes(mturk)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("v.csv", b"task,worker,label\n1,w,left\ninf,w,left\n", r"line 3: triplet id 'inf' is not"),
        ("v.csv", b"task,worker,label\n1e30,w,left\n", r"line 2: triplet id '1e30' is not a whole"),
        ("v.csv", b"task,worker,label,rt_ms\n1,w,left,-5\n", r"line 2: rt_ms '-5' is negative"),
        ("v.csv", b"task,worker,label,swapped\n1,w,left,maybe\n", r"line 2: swapped 'maybe'"),
        ("v.csv", b"", r"v\.csv: empty file"),
        # A header that names no vote column, with or without rows: not 0 votes and exit 0
        (
            "v.csv",
            b"foo,bar\n",
            r"line 1: no task or worker or label column \(columns found: 'foo'",
        ),
        ("v.csv", b"hello\n", r"line 1: no task or worker or label column"),
        ("v.csv", b"task,who,label\n", r"line 1: no worker column"),
        ("v.csv", "task,worker,label\n1,w\u00e9,left\n".encode("latin-1"), r"v\.csv: not UTF-8"),
        (
            "ls.json",
            b'[{"data": {"id": 1}, "annotations": [1]}]',
            r"task 0, annotation 0: an "
            r"annotation must be an object, not 1",
        ),
        (
            "ls.json",
            b'[{"data": {"id": 1}, "annotations": [{"result": [{"type": "pairwise", '
            b'"value": "left"}]}]}]',
            r"annotation 0: the pairwise value must be an object",
        ),
        ("ls.json", b'[{"data": {"id": 1e30}, "annotations": []}]', r"task 0: triplet id 1e\+30"),
        (
            "ls.json",
            b'[{"data": {"id": 1}, "annotations": [{"completed_by": null, "result": '
            b'[{"type": "pairwise", "value": {"selected": "left"}}]}]}]',
            r"completed_by None",
        ),
        ("ls.json", b"\xff[]", r"ls\.json: not UTF-8"),
        ("ls.json", b"[" * 5000, r"ls\.json: not JSON"),
        (
            "b.csv",
            b"WorkerId,AssignmentStatus,Input.id,Answer.taskAnswers\nW,Approved,1,"
            + b"[" * 5000
            + b"\n",
            r"line 2: Answer\.taskAnswers is not JSON",
        ),
        (
            "b.csv",
            b"WorkerId,AssignmentStatus,Input.id,Answer.choice,WorkTimeInSeconds\n"
            b"W,Approved,nan,left,3\n",
            r"line 2: no Input\.triplet_id",
        ),
        (
            "b.csv",
            b"WorkerId,AssignmentStatus,Input.id,Answer.choice,WorkTimeInSeconds\n"
            b"W,Approved,1,left,Infinity\n",
            r"line 2: WorkTimeInSeconds 'Infinity' is not a finite",
        ),
    ],
)
def test_bad_vote_files_are_named_with_line_and_value(tmp_path, capsys, name, content, message):
    from nights.cli import main

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VoteImportError, match=message) as raised:
        read_votes(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert main(["annotate", "import", "--votes", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(path) in error


def test_policies_are_named_in_one_registry():
    for name, policy in POLICIES.items():
        built = make_policy(name, max_votes=4)
        assert type(built) is policy and built.max_votes == 4
        assert not built.needs_more(4, 0) and built.needs_more(0, 0)
    assert make_policy("target", 3).needs_more(1, 1) and not make_policy("target", 3).needs_more(
        2, 1
    )
    with pytest.raises(
        AnnotationError, match="policy must be one of target, nights, beta, not 'x'"
    ):
        make_policy("x", 3)


def test_policies():
    nights = NightsScheme(max_votes=5)
    assert nights.needs_more(0, 0) and nights.needs_more(4, 0)
    assert not nights.needs_more(5, 0) and not nights.needs_more(2, 1)
    stop = BetaBinomialStop(confidence=0.95, max_votes=20, min_votes=3)
    assert stop.needs_more(1, 0)  # too few
    assert not stop.needs_more(0, 6)  # P(right > 1/2) = 1 - 0.5**7 > 0.95
    assert stop.posterior_right(0, 6) == pytest.approx(1 - 0.5**7)
    assert stop.needs_more(4, 4) and not stop.needs_more(10, 10)
    votes = pd.DataFrame(
        {"task": [1, 1, 2], "worker": ["a", "b", "a"], "label": ["left", "right", "left"]}
    )
    planned = plan(votes, [1, 2, 3], nights)
    assert planned["needs_more"].tolist() == [False, True, True]
    assert planned.loc[3, ["left", "right"]].tolist() == [0, 0]


def _simulated_votes(seed=0, tasks=40, good=6, bad=2):
    """Good workers answer the truth 90% of the time, bad ones at random."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(["left", "right"], tasks)
    rows = []
    for worker in range(good + bad):
        accuracy = 0.9 if worker < good else 0.5
        for task in range(tasks):
            correct = rng.random() < accuracy
            label = truth[task] if correct else ("right" if truth[task] == "left" else "left")
            rows.append(
                {
                    "task": task,
                    "worker": f"w{worker}",
                    "label": label,
                    "rt_ms": 1500.0 if worker < good else 300.0,
                }
            )
    return pd.DataFrame(rows), truth


@pytest.mark.parametrize(
    ("method", "at_least"), [("majority", 0.8), ("dawid_skene", 0.9), ("glad", 0.9)]
)
def test_aggregation_recovers_the_truth(method, at_least):
    votes, truth = _simulated_votes()
    result = aggregate(votes, method=method)
    assert (result["label"].to_numpy() == truth).mean() >= at_least
    assert (result["votes"] == 8).all()
    lefts = (
        votes[votes["label"] == "left"].groupby("task").size().reindex(result.index, fill_value=0)
    )
    assert result["left_vote"].tolist() == pytest.approx((lefts / 8).tolist())
    with pytest.raises(AnnotationError, match="method must be one of"):
        aggregate(votes, method="vote")


def test_worker_quality_flags_speeders_bad_sentinels_and_inconsistency():
    votes, truth = _simulated_votes(tasks=30)
    sentinels = {task: truth[task] for task in range(10)}
    repeat = votes[(votes["worker"] == "w0") & (votes["task"] < 5)].copy()
    repeat["label"] = np.where(repeat["label"] == "left", "right", "left")
    votes = pd.concat([votes, repeat], ignore_index=True)
    quality = worker_quality(votes, sentinels=sentinels, min_rt_ms=800)
    assert quality.loc["w7", "excluded"] and "speeder" in quality.loc["w7", "reasons"]
    assert (
        quality.loc["w0", "consistency"] == 0.0 and "inconsistent" in quality.loc["w0", "reasons"]
    )
    assert quality.loc["w1", "sentinel_accuracy"] > 0.7 and not quality.loc["w1", "excluded"]


def test_krippendorff_alpha_by_hand():
    unanimous = pd.DataFrame(
        {"task": [1, 1, 2, 2], "worker": list("abab"), "label": ["left", "left", "right", "right"]}
    )
    assert krippendorff_alpha(unanimous) == pytest.approx(1.0)
    split = pd.DataFrame(
        {
            "task": [1, 1, 2, 2, 3, 3],
            "worker": list("ababab"),
            "label": ["left", "left", "right", "right", "left", "right"],
        }
    )
    # coincidences [[2, 1], [1, 2]], n = 6: Do = 2/6, De = 2*3*3/(6*5) = 0.6, alpha = 1 - Do/De
    assert krippendorff_alpha(split) == pytest.approx(1 - (2 / 6) / 0.6)


def test_merge_into_a_split_that_load_nights_reads(sample_home, cache_dir, tmp_path):
    import json as json_module

    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    ids = table["id"][:4]
    votes = pd.DataFrame(
        {
            "task": [ids[0]] * 3 + [ids[1]] * 2 + [ids[2], ids[3]],
            "worker": ["a", "b", "c", "a", "b", "a", "a"],
            "label": ["left", "left", "right", "right", "right", "left", "left"],
            "rt_ms": 1000.0,
        }
    )
    per_triplet = aggregate(votes)
    out = merge_into_split(table, per_triplet, tmp_path / "extra", note="round 2")
    merged = load_nights("all", root=out, min_votes=None, cache_dir=cache_dir)
    assert merged["id"] == ids
    assert merged["votes"] == [3, 2, 1, 1]
    assert merged["left_vote"] == pytest.approx([2 / 3, 0.0, 1.0, 1.0])
    assert merged["ref_path"] == table["ref_path"][:4]
    provenance = json_module.loads((out / "provenance.json").read_text())
    assert provenance["note"] == "round 2" and provenance["filters"][-1]["votes"] == 7
    stray = per_triplet.rename(index={ids[0]: 10**9})
    with pytest.raises(AnnotationError, match="not in the table"):
        merge_into_split(table, stray, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_failed_csv_write_keeps_the_file_that_was_there(tmp_path):
    from annotation.cli import _csv

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot print")

    out = tmp_path / "votes.csv"
    out.write_text("task,worker,label\n1,w,left\n")
    frame = pd.DataFrame({"task": [1, 2], "worker": ["a", Unprintable()]})
    with pytest.raises(RuntimeError, match="cannot print"):
        _csv(frame, out, index=False)
    assert out.read_text() == "task,worker,label\n1,w,left\n"
    assert [path.name for path in tmp_path.iterdir()] == ["votes.csv"]  # no temporary left
    _csv(frame.iloc[:1], out, index=False)
    assert out.read_text() == "task,worker\n1,a\n"
