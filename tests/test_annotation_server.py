"""The collection app, served for real by uvicorn on 127.0.0.1."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from annotation.campaign import CampaignStore, create_campaign  # noqa: E402
from nights import load_nights  # noqa: E402
from nights.testing import free_port, wait_for_port  # noqa: E402

from .conftest import ARTIFACTS, launch_chromium  # noqa: E402


@contextlib.contextmanager
def running_server(campaign: Path, workers: int = 1):
    """``nights annotate serve`` in a process of its own; yields its base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "nights.cli",
        "annotate",
        "serve",
        str(campaign),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process, "the annotation server")
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def wait_for_children(pid: int, count: int, timeout: float = 60) -> None:
    """Waits until the server process has ``count`` worker processes of its own."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while len(psutil.Process(pid).children()) < count:
        assert time.monotonic() < deadline, f"the server did not start {count} workers"
        time.sleep(0.2)


@pytest.fixture
def campaign(sample_home, cache_dir, tmp_path):
    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    path = tmp_path / "campaign.sqlite"
    settings = create_campaign(
        path,
        table,
        trials_per_participant=10,
        votes_per_trial=3,
        sentinel_rate=0.1,
        practice=2,
        jnd=True,
        seed=5,
        completion_url="https://app.example/complete?cc=ABC",
    )
    return path, settings


def test_campaign_trials_are_reproducible(sample_home, cache_dir, tmp_path):
    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    create_campaign(tmp_path / "a.sqlite", table, seed=3, jnd=True)
    create_campaign(tmp_path / "b.sqlite", table, seed=3, jnd=True)
    read = [
        CampaignStore(tmp_path / name)
        .db.execute("SELECT kind, triplet_id, first, second, swapped, expected FROM trials")
        .fetchall()
        for name in ("a.sqlite", "b.sqlite")
    ]
    assert read[0] == read[1]
    kinds = pd.Series([row[0] for row in read[0]]).value_counts().to_dict()
    assert kinds["2afc"] == len(table) and kinds["jnd"] == 2 * len(table)
    assert kinds["sentinel"] == round(0.1 * len(table)) and kinds["practice"] == 2
    assert kinds["repeat"] == kinds["2afc"]  # every 2AFC trial has a twin, sides reversed
    swapped = [row[4] for row in read[0] if row[0] == "2afc"]
    assert 0 < sum(swapped) < len(swapped)
    with pytest.raises(FileExistsError):
        create_campaign(tmp_path / "a.sqlite", table)


def test_a_session_resumes_and_votes_are_stored_on_the_stored_side(campaign):
    path, settings = campaign
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        state = client.get(
            "/api/session", params={"PROLIFIC_PID": "p1", "STUDY_ID": "s", "SESSION_ID": "x"}
        ).json()
        assert state["total"] == 2 + 10 + 1 + 2 and state["answered"] == 0
        kinds = [t["kind"] for t in state["trials"]]
        assert kinds[-2:] == ["repeat", "repeat"] and kinds.count("sentinel") == 1
        assert [t["kind"] for t in state["trials"][:2]] == ["practice", "practice"]
        again = client.get("/api/session", params={"PROLIFIC_PID": "p1"}).json()
        assert [t["trial"] for t in again["trials"]] == [t["trial"] for t in state["trials"]]
        store = CampaignStore(path)
        for trial in state["trials"]:
            answer = "same" if trial["kind"] == "jnd" else "left"
            reply = client.post(
                "/api/answer",
                json={"worker": "p1", "trial": trial["trial"], "answer": answer, "rt_ms": 800},
            )
            assert reply.status_code == 200
            # A retried POST is acknowledged again and counted once.
            client.post(
                "/api/answer",
                json={"worker": "p1", "trial": trial["trial"], "answer": answer, "rt_ms": 800},
            )
        assert reply.json()["finished"] is True
        assert reply.json()["completion_url"] == "https://app.example/complete?cc=ABC"
        votes = store.votes()
        assert len(votes) == len([t for t in state["trials"] if t["kind"] != "practice"])
        swaps = dict(store.db.execute("SELECT id, swapped FROM trials").fetchall())
        for row in votes.itertuples():
            if row.kind == "2afc":
                assert row.label == ("right" if swaps[row.trial] else "left")
        exported = client.get(
            "/api/admin/export", headers={"Authorization": f"Bearer {settings['admin_token']}"}
        )
        assert len(pd.read_csv(io.StringIO(exported.text))) == len(votes)


def test_security_and_validation(campaign, tmp_path):
    path, settings = campaign
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        trial = client.get("/api/session", params={"worker": "w1"}).json()["trials"][0]
        assert client.get(f"/images/{trial['ref']}").status_code == 200
        for attempt in (
            "/images/../../secret.txt",
            "/images/%2e%2e/%2e%2e/secret.txt",
            "/images/..%2f..%2fsecret.txt",
            f"/images/{secret}",
        ):
            response = client.get(attempt)
            assert response.status_code == 404 and b"do not serve" not in response.content
        for admin in ("/api/admin/progress", "/api/admin/workers", "/api/admin/export"):
            assert client.get(admin).status_code == 401
            assert client.get(admin, headers={"Authorization": "Bearer nope"}).status_code == 401
        good = {"Authorization": f"Bearer {settings['admin_token']}"}
        assert client.get("/api/admin/progress", headers=good).json()["participants"] == 1
        assert client.post("/api/answer", content=b"x" * 10_000).status_code == 413
        assert client.post("/api/answer", content=b"{not json").status_code == 422
        assert client.post("/api/answer", json={"worker": "w1"}).status_code == 422
        assert (
            client.post(
                "/api/answer", json={"worker": "w1", "trial": 10**6, "answer": "left"}
            ).status_code
            == 404
        )
        assert (
            client.post(
                "/api/answer", json={"worker": "w1", "trial": trial["trial"], "answer": "maybe"}
            ).status_code
            == 422
        )
        assert client.get("/api/session", params={"worker": "<script>"}).status_code == 400
        page = client.get("/").text
        assert "innerHTML" not in page and "textContent" in page


@pytest.mark.parametrize("workers", [1, 3])  # 3: processes that share only the SQLite file
def test_fifty_concurrent_participants_lose_nothing(campaign, workers):
    path, _ = campaign
    errors, answered = [], []

    def participant(number: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                state = client.get("/api/session", params={"worker": f"c{number}"}).json()
                for trial in state["trials"]:
                    answer = "different" if trial["kind"] == "jnd" else "right"
                    reply = client.post(
                        "/api/answer",
                        json={
                            "worker": f"c{number}",
                            "trial": trial["trial"],
                            "answer": answer,
                            "rt_ms": 500,
                        },
                    )
                    reply.raise_for_status()
                    answered.append((f"c{number}", trial["trial"], trial["kind"]))
        except Exception as error:  # collected and reported below
            errors.append(repr(error))

    with running_server(path, workers) as (url, server):
        if workers > 1:
            wait_for_children(server.pid, workers)
        threads = [threading.Thread(target=participant, args=(n,)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors
    store = CampaignStore(path)
    stored = store.db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
    assert stored == len(answered) == len(set((w, t) for w, t, _ in answered))
    over = store.db.execute("""SELECT a.trial, COUNT(*) FROM assignments a JOIN trials t
        ON t.id = a.trial WHERE t.kind IN ('2afc', 'jnd') GROUP BY a.trial HAVING COUNT(*) > 3
        """).fetchall()
    assert over == []


def test_acknowledged_votes_survive_sigkill(campaign):
    path, _ = campaign
    acknowledged = []
    with running_server(path) as (url, process), httpx.Client(base_url=url) as client:
        state = client.get("/api/session", params={"worker": "k1"}).json()
        for trial in state["trials"][:6]:
            answer = "same" if trial["kind"] == "jnd" else "left"
            reply = client.post(
                "/api/answer",
                json={"worker": "k1", "trial": trial["trial"], "answer": answer, "rt_ms": 700},
            )
            assert reply.status_code == 200
            acknowledged.append(trial["trial"])
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        state = client.get("/api/session", params={"worker": "k1"}).json()
        answered = [t["trial"] for t in state["trials"] if t["answered"]]
        assert answered == acknowledged and state["answered"] == 6


@pytest.mark.browser
def test_a_participant_completes_2afc_and_jnd_in_chromium(campaign):
    playwright = pytest.importorskip("playwright.sync_api")
    path, _ = campaign
    with running_server(path) as (url, _), playwright.sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.route("https://app.example/**", lambda route: route.fulfill(body="completed"))
        page.goto(f"{url}/?PROLIFIC_PID=b1&STUDY_ID=s&SESSION_ID=x")
        state = json.loads(httpx.get(f"{url}/api/session", params={"worker": "b1"}).text)
        for number, trial in enumerate(state["trials"]):
            if trial["kind"] == "jnd":
                page.wait_for_selector("#question:not(.hidden)", timeout=15_000)
                if number % 2:
                    page.keyboard.press("s")
                else:
                    page.click("#different")
            else:
                page.wait_for_selector("#twoafc:not(.hidden)", timeout=15_000)
                page.wait_for_function("document.getElementById('left').complete", timeout=15_000)
                page.wait_for_timeout(100)
                if number == 3:
                    page.screenshot(path=str(ARTIFACTS / "annotation-2afc.png"))
                if number % 2:
                    page.keyboard.press("ArrowLeft")
                else:
                    page.click("#left")
            page.wait_for_function(
                f"document.getElementById('bar').style.width !== '' && "
                f"parseFloat(document.getElementById('bar').style.width) >= "
                f"{100 * (number + 1) / len(state['trials']) - 0.01} || "
                f"!document.getElementById('done').classList.contains('hidden')",
                timeout=15_000,
            )
        onsets = page.evaluate("window.jndOnsets")
        page.wait_for_url("https://app.example/**", timeout=15_000)
        browser.close()
    # Frame-timed JND: reference 1000 ms, mask 500 ms, distortion 1000 ms, give or take frames.
    assert len(onsets) == len([t for t in state["trials"] if t["kind"] == "jnd"])
    for onset in onsets:
        assert abs(onset["mask"] - onset["reference"] - 1000) < 60
        assert abs(onset["distortion"] - onset["mask"] - 500) < 60
        assert abs(onset["question"] - onset["distortion"] - 1000) < 60
    store = CampaignStore(path)
    votes = store.votes()
    swaps = dict(store.db.execute("SELECT id, swapped FROM trials").fetchall())
    expected_count = len([t for t in state["trials"] if t["kind"] != "practice"])
    assert len(votes) == expected_count
    for row in votes.itertuples():
        if row.kind == "jnd":
            assert row.label in ("same", "different")
        elif row.kind == "2afc":  # always the image shown on the left
            assert row.label == ("right" if swaps[row.trial] else "left")
        assert row.rt_ms > 0


def test_the_nights_policy_stops_asking_after_a_disagreement(sample_home, cache_dir, tmp_path):
    from annotation.campaign import plan_campaign

    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    table = table.select(range(3))
    path = tmp_path / "c.sqlite"
    create_campaign(
        path,
        table,
        trials_per_participant=3,
        votes_per_trial=6,
        sentinel_rate=0,
        practice=0,
        repeats=0,
        policy="nights",
        seed=1,
    )
    store = CampaignStore(path)
    first, second = (store.start(worker)["trials"] for worker in ("a", "b"))
    assert len(first) == len(second) == 3
    disputed = first[0]["trial"]
    store.answer("a", disputed, "left", 500)
    store.answer("b", disputed, "right", 500)  # a disagreement: no more votes wanted
    unanimous = first[1]["trial"]
    store.answer("a", unanimous, "left", 500)
    third = {t["trial"] for t in store.start("c")["trials"]}
    assert disputed not in third and unanimous in third
    planned = plan_campaign(store)
    triplet = store.db.execute(
        "SELECT triplet_id FROM trials WHERE id = ?", (disputed,)
    ).fetchone()[0]
    assert not planned.loc[triplet, "needs_more"]
    assert planned["needs_more"].sum() == 2


def test_cli_create_status_plan_export_import_aggregate(sample_home, tmp_path, capsys):
    from nights.cli import main

    campaign = tmp_path / "c.sqlite"
    assert (
        main(
            [
                "annotate",
                "create",
                str(campaign),
                "--root",
                str(sample_home),
                "--split",
                "val",
                "--trials-per-participant",
                "4",
                "--policy",
                "nights",
                "--quiet",
            ]
        )
        == 0
    )
    assert "admin token" in capsys.readouterr().out
    store = CampaignStore(campaign)
    state = store.start("cli")
    for trial in state["trials"]:
        store.answer("cli", trial["trial"], "left", 600)
    assert main(["annotate", "status", str(campaign)]) == 0
    assert '"participants": 1' in capsys.readouterr().out
    assert main(["annotate", "plan", str(campaign), "--out", str(tmp_path / "plan.csv")]) == 0
    assert "need more votes (nights policy)" in capsys.readouterr().err
    assert main(["annotate", "export", str(campaign), "--out", str(tmp_path / "v.csv")]) == 0
    exported = pd.read_csv(tmp_path / "v.csv")
    votes_file = tmp_path / "plain.csv"
    exported[exported["kind"] == "2afc"][["task", "worker", "label", "rt_ms"]].to_csv(
        votes_file, index=False
    )
    assert (
        main(
            ["annotate", "import", "--votes", str(votes_file), "--out", str(tmp_path / "table.csv")]
        )
        == 0
    )
    assert len(pd.read_csv(tmp_path / "table.csv")) == (exported["kind"] == "2afc").sum()
    split = tmp_path / "new_split"
    assert (
        main(
            [
                "annotate",
                "aggregate",
                "--votes",
                str(votes_file),
                "--root",
                str(sample_home),
                "--out",
                str(split),
                "--quiet",
            ]
        )
        == 0
    )
    merged = load_nights("all", root=split, min_votes=None, cache_dir=tmp_path / "t")
    assert set(merged["id"]) == set(exported[exported["kind"] == "2afc"]["task"])
    assert main(["annotate", "aggregate", "--votes", str(tmp_path / "absent.csv")]) == 2
    assert "absent.csv: no such file" in capsys.readouterr().err


def test_aggregate_excludes_workers_failing_quality(sample_home, tmp_path, capsys):
    from nights.cli import main

    campaign = tmp_path / "c.sqlite"
    assert (
        main(
            [
                "annotate",
                "create",
                str(campaign),
                "--root",
                str(sample_home),
                "--split",
                "val",
                "--trials-per-participant",
                "6",
                "--votes-per-trial",
                "4",
                "--sentinel-rate",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    store = CampaignStore(campaign)
    truth = {
        trial: (swapped, expected)
        for trial, swapped, expected in store.db.execute("SELECT id, swapped, expected FROM trials")
    }
    for trial in store.start("careful")["trials"]:
        swapped, expected = truth[trial["trial"]]
        # Sentinels right, and always the stored left image: consistent across repeats.
        answer = expected if expected else ("right" if swapped else "left")
        store.answer("careful", trial["trial"], answer, 900)
    for trial in store.start("rusher")["trials"]:
        store.answer("rusher", trial["trial"], "left", 100)
    assert main(["annotate", "export", str(campaign), "--out", str(tmp_path / "v.csv")]) == 0
    capsys.readouterr()
    assert (
        main(["annotate", "aggregate", "--votes", str(tmp_path / "v.csv"), "--min-rt-ms", "300"])
        == 0
    )
    captured = capsys.readouterr()
    assert "excluded 1 worker(s)" in captured.err and "rusher (" in captured.err
    assert "speeder" in captured.err and "careful" not in captured.err
    per_triplet = pd.read_csv(io.StringIO(captured.out))
    assert (per_triplet["votes"] == 1).all()  # the careful worker's 2AFC answers only
    careful = store.votes().query("worker == 'careful' and kind == '2afc'")
    assert sorted(per_triplet["task"]) == sorted(careful["task"])


def test_serve_refuses_bad_worker_counts_and_missing_campaigns(tmp_path, capsys):
    from nights.cli import main

    with pytest.raises(SystemExit) as done:
        main(["annotate", "serve", str(tmp_path / "c.sqlite"), "--workers", "0"])
    assert done.value.code == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    missing = tmp_path / "none.sqlite"
    for action in (["serve", str(missing), "--workers", "2"], ["status", str(missing)]):
        assert main(["annotate", *action]) == 2
        captured = capsys.readouterr()
        assert "no campaign at" in captured.err and "serving" not in captured.out
