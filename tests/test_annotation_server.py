"""The collection app, served for real by uvicorn on 127.0.0.1."""

from __future__ import annotations

import io
import signal
import threading

import pandas as pd
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from annotation.campaign import CampaignStore, create_campaign  # noqa: E402
from annotation.errors import CampaignError  # noqa: E402
from nights import load_nights  # noqa: E402

from .annotation_helpers import (  # noqa: E402
    Clock,
    answer_in_store,
    answer_over_http,
    assigned,
    careful_answer,
    running_server,
    wait_for_children,
)
from .conftest import ARTIFACTS, launch_chromium  # noqa: E402


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
    with pytest.raises(CampaignError, match="exists: a campaign is never overwritten"):
        create_campaign(tmp_path / "a.sqlite", table)
    with pytest.raises(CampaignError, match=r"no campaign at .*create it first"):
        CampaignStore(tmp_path / "absent.sqlite")


def test_a_session_resumes_and_votes_are_stored_on_the_stored_side(campaign):
    path, settings = campaign
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        state = client.get(
            "/api/session", params={"PROLIFIC_PID": "p1", "STUDY_ID": "s", "SESSION_ID": "x"}
        ).json()
        assert state["status"] == "active" and state["answered"] == 0
        assert state["total"] == 2 + 10 + 1 + 2 and state["trial"]["kind"] == "practice"
        store = CampaignStore(path)
        kinds = [kind for _, kind, _, _ in assigned(store, "p1")]
        assert kinds[:2] == ["practice", "practice"] and kinds.count("sentinel") == 1
        assert kinds.count("repeat") == 2 and "repeat" not in kinds[:3]
        again = client.get("/api/session", params={"PROLIFIC_PID": "p1"}).json()
        assert again == state  # a reload resumes at the same trial, same image URLs
        while state["status"] == "active":
            trial = state["trial"]
            for image in (trial["ref"], trial["left"], trial["right"]):
                if image:
                    assert client.get(image).status_code == 200
            answer = {
                "worker": "p1",
                "trial": trial["trial"],
                "answer": "same" if trial["kind"] == "jnd" else "left",
                "rt_ms": 800,
            }
            reply = client.post("/api/answer", json=answer)
            assert reply.status_code == 200
            # A retried POST is acknowledged again and counted once.
            assert client.post("/api/answer", json=answer).json() == reply.json()
            state = reply.json()
        assert state["status"] == "finished" and state["answered"] == state["total"]
        assert state["completion_url"] == "https://app.example/complete?cc=ABC"
        votes = store.votes()
        assert len(votes) == len([kind for kind in kinds if kind != "practice"])
        swaps = dict(store.db.execute("SELECT id, swapped FROM trials").fetchall())
        for row in votes.itertuples():
            if row.kind == "2afc":
                assert row.label == ("right" if swaps[row.trial] else "left")
        assert votes["server_ms"].notna().all() and (votes["server_ms"] >= 0).all()
        exported = client.get(
            "/api/admin/export", headers={"Authorization": f"Bearer {settings['admin_token']}"}
        )
        assert len(pd.read_csv(io.StringIO(exported.text))) == len(votes)


def test_security_and_validation(campaign, tmp_path):
    path, settings = campaign
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        trial = client.get("/api/session", params={"worker": "w1"}).json()["trial"]
        assert client.get(trial["ref"]).status_code == 200
        stored = CampaignStore(path).db.execute("SELECT ref FROM trials LIMIT 1").fetchone()[0]
        for attempt in (
            f"/images/{stored}",  # an image's own path is no URL: only the tokens are
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
        for number, status in ((10**5, 404), (trial["trial"] + 1, 409)):
            bad_trial = {"worker": "w1", "trial": number, "answer": "left"}
            assert client.post("/api/answer", json=bad_trial).status_code == status
        maybe = {"worker": "w1", "trial": trial["trial"], "answer": "maybe"}
        assert client.post("/api/answer", json=maybe).status_code == 422
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
                state = answer_over_http(
                    client, f"c{number}", lambda t: "different" if t["kind"] == "jnd" else "right"
                )
                assert state["status"] == "finished"
                answered.extend((f"c{number}", trial) for trial in range(state["answered"]))
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
    assert stored == len(answered) == len(set(answered))
    over = store.db.execute("""SELECT a.trial, COUNT(*) FROM assignments a JOIN trials t
        ON t.id = a.trial WHERE t.kind IN ('2afc', 'jnd') GROUP BY a.trial HAVING COUNT(*) > 3
        """).fetchall()
    assert over == []


def test_acknowledged_votes_survive_sigkill(campaign):
    path, _ = campaign
    with running_server(path) as (url, process), httpx.Client(base_url=url) as client:
        state = answer_over_http(client, "k1", limit=6)
        assert state["answered"] == 6
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    acknowledged = [trial for trial, _, _, _ in assigned(CampaignStore(path), "k1")[:6]]
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        state = client.get("/api/session", params={"worker": "k1"}).json()
        assert state["answered"] == 6 and state["trial"]["trial"] == 6
    stored = CampaignStore(path).db.execute("SELECT trial FROM votes WHERE worker = 'k1'")
    assert sorted(row[0] for row in stored) == sorted(acknowledged)


@pytest.mark.browser
def test_a_participant_completes_2afc_and_jnd_in_chromium(campaign):
    playwright = pytest.importorskip("playwright.sync_api")
    path, _ = campaign
    with running_server(path) as (url, _), playwright.sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        page.route("https://app.example/**", lambda route: route.fulfill(body="completed"))
        page.goto(f"{url}/?PROLIFIC_PID=b1&STUDY_ID=s&SESSION_ID=x")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Trial')")
        kinds = [kind for _, kind, _, _ in assigned(CampaignStore(path), "b1")]
        for number, kind in enumerate(kinds):
            if kind == "jnd":
                page.wait_for_selector(
                    "body[data-accepting=true] #question:not(.hidden)", timeout=15_000
                )
                if number % 2:
                    page.keyboard.press("s")
                else:
                    page.click("#different")
            else:
                page.wait_for_selector(
                    "body[data-accepting=true] #twoafc:not(.hidden)", timeout=15_000
                )
                if number == 3:
                    page.screenshot(path=str(ARTIFACTS / "annotation-2afc.png"))
                if number % 2:
                    page.keyboard.press("ArrowLeft")
                else:
                    page.click("#left")
            page.wait_for_function(
                f"document.getElementById('bar').style.width !== '' && "
                f"parseFloat(document.getElementById('bar').style.width) >= "
                f"{100 * (number + 1) / len(kinds) - 0.01} || "
                f"!document.getElementById('done').classList.contains('hidden')",
                timeout=15_000,
            )
        onsets = page.evaluate("window.jndOnsets")
        page.wait_for_url("https://app.example/**", timeout=15_000)
        browser.close()
    # Frame-timed JND: reference 1000 ms, mask 500 ms, distortion 1000 ms, give or take frames.
    assert len(onsets) == kinds.count("jnd")
    for onset in onsets:
        assert abs(onset["mask"] - onset["reference"] - 1000) < 60
        assert abs(onset["distortion"] - onset["mask"] - 500) < 60
        assert abs(onset["question"] - onset["distortion"] - 1000) < 60
    store = CampaignStore(path)
    votes = store.votes()
    swaps = dict(store.db.execute("SELECT id, swapped FROM trials").fetchall())
    assert len(votes) == len([kind for kind in kinds if kind != "practice"])
    for row in votes.itertuples():
        if row.kind == "jnd":
            assert row.label in ("same", "different")
        elif row.kind == "2afc":  # always the image shown on the left
            assert row.label == ("right" if swaps[row.trial] else "left")
        assert row.rt_ms > 0 and row.server_ms >= row.rt_ms - 50  # the server's clock is
        # the longer: it includes the page loading the images


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
    store.start("a")
    disputed = assigned(store, "a")[0][0]
    answer_in_store(store, "a", lambda *trial: "left")
    # b agrees on every trial but one: a disagreement, no more votes wanted there
    answer_in_store(store, "b", lambda trial, *_: "right" if trial == disputed else "left")
    store.start("c")
    third = {trial for trial, _, _, _ in assigned(store, "c")}
    assert disputed not in third and len(third) == 2
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
    answer_in_store(store, "cli", lambda *trial: "left")
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
    clock = Clock()
    store = CampaignStore(campaign, clock=clock)
    answer_in_store(store, "careful", careful_answer, clock, step_s=0.9)
    answer_in_store(store, "rusher", lambda *trial: "left", clock, step_s=0.1)
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
