"""The collection app and the campaign store under hostile and unlucky use (issue 10): idle
sessions, returned studies, probing participants, broken images, oversized and malformed
requests, damaged campaign files."""

from __future__ import annotations

import json
import select
import shutil
import socket
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from annotation import (  # noqa: E402
    CampaignError,
    ParticipantError,
    read_votes,
    worker_quality,
)
from annotation.campaign import CampaignStore, create_campaign  # noqa: E402
from nights import load_nights  # noqa: E402
from nights.table import table_meta  # noqa: E402

from .annotation_helpers import (  # noqa: E402
    Clock,
    answer_in_store,
    answer_over_http,
    assigned,
    careful_answer,
    running_server,
)
from .conftest import launch_chromium  # noqa: E402

COMPLETION = "https://app.example/complete?cc=ABC"


@pytest.fixture
def table(sample_copy, cache_dir):
    """The sample's triplets, over a private copy of its images that a test may damage."""
    return load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)


def small_campaign(table, path, **settings):
    """Three triplets, three trials each participant, three votes each trial: three
    participants hold every trial."""
    options = dict(
        trials_per_participant=3,
        votes_per_trial=3,
        practice=2,
        sentinel_rate=0.34,
        repeats=1,
        completion_url=COMPLETION,
        seed=2,
    )
    options.update(settings)
    return create_campaign(path, table.select(range(3)), **options)


def admin(settings) -> dict:
    return {"Authorization": f"Bearer {settings['admin_token']}"}


# 1. Campaign starvation and completion codes for no work


def test_idle_sessions_starve_nobody_and_practice_alone_earns_no_code(table, tmp_path):
    path = tmp_path / "c.sqlite"
    settings = small_campaign(table, path)
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        statuses = [
            client.get("/api/session", params={"PROLIFIC_PID": f"idle{n}"}).json()["status"]
            for n in range(10)
        ]
        assert statuses == ["active"] * 3 + ["full"] * 7  # three hold every trial
        state = client.get("/api/session", params={"PROLIFIC_PID": "real"}).json()
        assert state["status"] == "full" and state["trial"] is None
        assert state["completion_url"] is None and "return the study" in state["message"]
        progress = client.get("/api/admin/progress", headers=admin(settings)).json()
        assert progress["participants"] == 3  # those turned away are not registered
        assert progress["assigned_trials"] == {
            "answered": 0,
            "open": 9,
            "expired": 0,
            "released": 0,
        }

        released = client.post(
            "/api/admin/release", json={"worker": "idle1"}, headers=admin(settings)
        )
        assert released.json() == {"worker": "idle1", "freed": 3}
        state = answer_over_http(client, "real")
        assert state["status"] == "finished" and state["completion_url"] == COMPLETION
        assert state["total"] == 2 + 3 + 1 + 1  # practice, trials, a sentinel, a repeat
        progress = client.get("/api/admin/progress", headers=admin(settings)).json()
        assert progress["assigned_trials"] == {
            "answered": 3,
            "open": 6,
            "expired": 0,
            "released": 3,
        }
        assert (progress["active"], progress["finished"], progress["released"]) == (2, 1, 1)
        # The released participant can answer no more; releasing needs the token.
        first = client.get("/api/session", params={"PROLIFIC_PID": "idle1"}).json()
        assert first["status"] == "released" and first["trial"] is None
        late = {"worker": "idle1", "trial": 0, "answer": "left"}
        assert client.post("/api/answer", json=late).status_code == 410
        assert client.post("/api/admin/release", json={"worker": "idle2"}).status_code == 401
        unknown = client.post(
            "/api/admin/release", json={"worker": "nobody"}, headers=admin(settings)
        )
        assert unknown.status_code == 404


def test_held_trials_go_back_to_the_pool_when_the_time_limit_passes(table, tmp_path):
    path = tmp_path / "c.sqlite"
    small_campaign(table, path, time_limit_minutes=30)
    clock = Clock()
    store = CampaignStore(path, clock=clock)
    for n in range(3):
        store.start(f"idle{n}")
    store.answer("idle0", 0, "left", 900)  # a practice answer, then nothing
    assert store.start("late")["status"] == "full"
    clock.now += 29 * 60
    assert store.start("late")["status"] == "full"
    assert store.progress()["assigned_trials"]["open"] == 9
    clock.now += 61
    assert store.start("late")["status"] == "active"
    progress = store.progress()
    assert progress["assigned_trials"] == {"answered": 0, "open": 3, "expired": 9, "released": 0}
    assert (progress["expired"], progress["active"]) == (3, 1)
    expired = store.state("idle0")
    assert expired["status"] == "expired" and expired["completion_url"] is None
    with pytest.raises(ParticipantError, match="time for this study ran out") as refused:
        store.answer("idle0", 1, "left", 900)
    assert refused.value.status == 410
    state = answer_in_store(store, "late", lambda *trial: "left", clock, step_s=1)
    assert state["status"] == "finished" and state["completion_url"] == COMPLETION
    # Every real trial got its votes from participants who answered, never over the target.
    over = store.db.execute("SELECT trial FROM votes GROUP BY trial HAVING COUNT(*) > 3")
    assert over.fetchall() == []


def test_time_limit_is_a_campaign_setting_checked_at_create(table, tmp_path, capsys):
    from nights.cli import main

    settings = small_campaign(table, tmp_path / "a.sqlite", time_limit_minutes=45)
    assert settings["time_limit_minutes"] == 45
    assert CampaignStore(tmp_path / "a.sqlite").settings["time_limit_minutes"] == 45
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(CampaignError, match="time_limit_minutes must be a positive"):
            small_campaign(table, tmp_path / "b.sqlite", time_limit_minutes=bad)
    assert not (tmp_path / "b.sqlite").exists()
    root = table_meta(table)["root"]
    code = main(
        [
            *("annotate", "create", str(tmp_path / "c.sqlite"), "--root", root, "--split", "val"),
            *("--time-limit", "0", "--quiet"),
        ]
    )
    assert code == 2 and not (tmp_path / "c.sqlite").exists()
    assert "time_limit_minutes must be a positive number" in capsys.readouterr().err
    code = main(
        [*("annotate", "create", str(tmp_path / "c.sqlite"), "--root", root, "--split", "val"),
         *("--policy", "majority", "--quiet")]
    )  # fmt: skip
    assert code == 2 and not (tmp_path / "c.sqlite").exists()
    error = capsys.readouterr().err
    assert "policy must be one of target, nights, beta, not 'majority'" in error


def test_release_from_the_command_line(table, tmp_path, capsys):
    from nights.cli import main

    path = tmp_path / "c.sqlite"
    small_campaign(table, path)
    store = CampaignStore(path)
    store.start("returned")
    assert main(["annotate", "release", str(path), "returned"]) == 0
    assert "released returned: 3 unanswered trial(s) back in the pool" in capsys.readouterr().out
    assert main(["annotate", "status", str(path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["released"] == 1 and status["assigned_trials"]["released"] == 3
    assert main(["annotate", "release", str(path), "stranger"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no session for participant 'stranger'" in error


# 3. The image route serves the campaign's images and nothing else


def test_the_image_route_reaches_exactly_the_campaigns_images(table, tmp_path):
    path = tmp_path / "c.sqlite"
    settings = small_campaign(table, path, votes_per_trial=6, trials_per_participant=2)
    root = settings["image_root"]
    for name in ("campaign-copy.sqlite", "campaign-copy.sqlite-wal"):
        shutil.copy(path, f"{root}/{name}")  # before any connection: see _open_campaign
    store = CampaignStore(path)
    expected = {}  # image URL -> the file it must serve
    files = set()
    for ref, first, second in store.db.execute("SELECT ref, first, second FROM trials"):
        files.update(p for p in (ref, first, second) if p)
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        for n in range(6):
            state = client.get("/api/session", params={"worker": f"v{n}"}).json()
            positions = assigned(store, f"v{n}")
            while state["status"] == "active":
                trial = state["trial"]
                row = store.db.execute(
                    "SELECT ref, first, second, swapped FROM trials WHERE id = ?",
                    (positions[trial["trial"]][0],),
                ).fetchone()
                shown = (row[0], row[2], row[1]) if row[3] else row[:3]
                for slot, file in zip(("ref", "left", "right"), shown):
                    if file:
                        expected[trial[slot]] = file
                reply = client.get(trial["ref"]), client.get(trial["left"])
                assert all(r.status_code == 200 for r in reply)
                state = client.post(
                    "/api/answer",
                    json={"worker": f"v{n}", "trial": trial["trial"], "answer": "left"},
                ).json()
        served = set()
        for image_url, file in expected.items():
            response = client.get(image_url)
            assert response.status_code == 200
            assert response.content == (Path(root) / file).read_bytes()
            assert response.headers["content-type"] == "image/png"
            served.add(file)
        assert served == files  # every trial image reachable, through its tokens only
        assert len(expected) == len(set(expected))
        for probe in (
            "/images/campaign-copy.sqlite",
            "/images/campaign-copy.sqlite-wal",
            f"/images/{next(iter(files))}",
            "/images/" + "A" * 22,
            "/images/%00",
            "/images/" + next(iter(expected)).rsplit("/", 1)[1] + "%00",
            "/images/" + next(iter(expected)).rsplit("/", 1)[1] + "/..",
            "/images/",
            "/images/.",
            "/images/c.sqlite",
        ):
            response = client.get(probe)
            assert response.status_code == 404, probe
            assert b"SQLite" not in response.content


def test_create_refuses_tables_whose_images_cannot_be_served(table, tmp_path, capsys):
    from nights.cli import main
    from nights.splits import write_split

    datasets = pytest.importorskip("datasets")
    exported = write_split(table.select(range(4)), tmp_path / "pq", format="parquet")
    parquet = datasets.load_dataset(
        "parquet", data_dir=str(exported), split="train", cache_dir=str(tmp_path / "hf")
    )
    with pytest.raises(CampaignError, match="the table has no image folder"):
        create_campaign(tmp_path / "a.sqlite", parquet)
    root = table_meta(table)["root"]
    create_campaign(tmp_path / "a.sqlite", parquet, image_root=root)  # the images named
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    missing = copy / table[1]["left_path"]
    missing.unlink()
    with pytest.raises(CampaignError, match=rf"\d trial image\(s\) cannot be served, e\.g\. "
                       rf"{missing} \(triplet {table[1]['id']}, first\): missing"):  # fmt: skip
        create_campaign(tmp_path / "b.sqlite", table.select(range(3)), image_root=copy)
    assert not (tmp_path / "b.sqlite").exists()
    capsys.readouterr()
    code = main(
        [
            *("annotate", "create", str(tmp_path / "b.sqlite"), "--root", root, "--split", "all"),
            *("--image-root", str(copy), "--limit", "3", "--quiet"),
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and str(missing) in error


# 4. The body limit stops reading


def test_an_endless_chunked_body_is_not_read(table, tmp_path):
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "c.sqlite"
    small_campaign(table, path)
    planned = 200 << 20
    with running_server(path) as (url, process):
        server = psutil.Process(process.pid)
        before = server.memory_info().rss
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            payload = b"x" * (1 << 20)
            chunk = b"%x\r\n" % len(payload) + payload + b"\r\n"
            sent, reply = 0, b""
            try:
                while sent < planned:
                    if select.select([sock], [], [], 0)[0]:
                        reply = sock.recv(1024)
                        break
                    sock.sendall(chunk)
                    sent += len(payload)
            except OSError:  # the server closed the connection: what we want
                pass
        time.sleep(0.3)
        grown = server.memory_info().rss - before
    assert sent < planned // 4, f"the server read {sent >> 20} MB of a {planned >> 20} MB body"
    assert grown < 50 << 20, f"the server grew by {grown >> 20} MB"
    assert reply == b"" or reply.startswith(b"HTTP/1.1 413")


# 5. Broken images are not voted on


def test_a_trial_whose_images_cannot_be_served_cannot_be_answered(table, tmp_path):
    path = tmp_path / "c.sqlite"
    settings = small_campaign(table, path, practice=0)
    store = CampaignStore(path)
    store.start("p")
    trial = store.db.execute(
        "SELECT t.ref FROM assignments a JOIN trials t ON t.id = a.trial "
        "WHERE a.worker = 'p' AND a.position = 0"
    ).fetchone()[0]
    image = Path(settings["image_root"]) / trial
    hidden = image.rename(image.with_suffix(".gone"))
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        state = client.get("/api/session", params={"worker": "p"}).json()
        assert client.get(state["trial"]["ref"]).status_code == 404
        answer = {"worker": "p", "trial": 0, "answer": "left", "rt_ms": 900}
        refused = client.post("/api/answer", json=answer)
        assert refused.status_code == 409 and "cannot be served" in refused.json()["error"]
        hidden.rename(image)
        assert client.post("/api/answer", json=answer).status_code == 200
    assert len(store.votes()) == 1


def test_symlinked_image_folders_are_served(table, tmp_path):
    root = table_meta(table)["root"]
    linked = tmp_path / "linked"
    linked.mkdir()
    for part in ("ref", "distort"):
        shutil.copytree(f"{root}/{part}", tmp_path / "elsewhere" / part)
        (linked / part).symlink_to(tmp_path / "elsewhere" / part)
    path = tmp_path / "c.sqlite"
    small_campaign(table, path, image_root=linked)
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        state = answer_over_http(client, "p")  # fetches every image: 200 or it fails
    assert state["status"] == "finished"


@pytest.mark.browser
def test_the_page_refuses_a_trial_whose_images_failed_and_reports_it(table, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    path = tmp_path / "c.sqlite"
    settings = small_campaign(table, path, practice=0)
    store = CampaignStore(path)
    root = settings["image_root"]
    with running_server(path) as (url, _), playwright.sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page()
        store.start("b1")
        first = store.db.execute(
            "SELECT t.first FROM assignments a JOIN trials t ON t.id = a.trial "
            "WHERE a.worker = 'b1' AND a.position = 0"
        ).fetchone()[0]
        image = Path(root) / first
        hidden = image.rename(image.with_suffix(".gone"))
        page.goto(f"{url}/?PROLIFIC_PID=b1")
        page.wait_for_selector("#broken:not(.hidden)", timeout=15_000)
        assert page.is_hidden("#twoafc")
        page.keyboard.press("ArrowLeft")  # not answerable
        page.wait_for_timeout(300)
        deadline = time.monotonic() + 10
        while store.progress()["image_failures"]["reports"] < 1:
            assert time.monotonic() < deadline, "the page did not report the failure"
            time.sleep(0.1)
        assert store.progress()["image_failures"] == {"reports": 1, "trials": 1}
        assert store.votes().empty
        hidden.rename(image)
        page.click("#retry")
        page.wait_for_selector("body[data-accepting=true] #twoafc:not(.hidden)", timeout=15_000)
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(
            "document.getElementById('status').textContent.startsWith('Trial 2')", timeout=15_000
        )
        browser.close()
    assert len(store.votes()) == 1


# 8. Quality control that cannot be gamed from the client


def test_nothing_the_client_sees_tells_sentinels_or_repeats(table, tmp_path):
    path = tmp_path / "c.sqlite"
    small_campaign(table, path, sentinel_rate=1.0, repeats=3)
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        seen, urls, headers = [], [], []
        state = client.get("/api/session", params={"worker": "probe"}).json()
        while state["status"] == "active":
            trial = state["trial"]
            seen.append(json.dumps(state))
            for slot in ("ref", "left", "right"):
                urls.append(trial[slot])
                headers.append(client.get(trial[slot]).headers)
            state = client.post(
                "/api/answer",
                json={"worker": "probe", "trial": trial["trial"], "answer": "left"},
            ).json()
    kinds = [kind for _, kind, _, _ in assigned(CampaignStore(path), "probe")]
    assert kinds.count("sentinel") == 3 and kinds.count("repeat") == 3
    for text in seen:
        state = json.loads(text)
        assert set(state["trial"]) == {"trial", "kind", "ref", "left", "right", "feedback"}
        assert state["trial"]["kind"] in ("practice", "2afc")
        assert "sentinel" not in text and "repeat" not in text and "prompt" not in text
    assert [json.loads(text)["trial"]["trial"] for text in seen] == list(range(len(kinds)))
    assert len(set(urls)) == len(urls)  # a sentinel's reference candidate has a URL of its own
    for header in headers:
        assert "etag" not in header and "last-modified" not in header


def test_response_times_must_be_finite_and_at_most_ten_minutes(table, tmp_path):
    path = tmp_path / "c.sqlite"
    small_campaign(table, path)
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        client.get("/api/session", params={"worker": "w"})
        for bad in (
            "NaN",
            "-5",
            "Infinity",
            "-Infinity",
            "1e308",
            "1e400",
            "true",
            '"500"',
            "6e5.1",
            "1" + "0" * 400,
        ):
            body = '{"worker": "w", "trial": 0, "answer": "left", "rt_ms": ' + bad + "}"
            refused = client.post("/api/answer", content=body.encode())
            assert refused.status_code == 422, bad
            assert "rt_ms" in refused.json()["error"] or bad == "6e5.1"
        assert CampaignStore(path).db.execute("SELECT COUNT(*) FROM votes").fetchone() == (0,)
        for number, good in enumerate(("0", "600000", "null", "1234.5")):
            body = f'{{"worker": "w", "trial": {number}, "answer": "left", "rt_ms": {good}}}'
            assert client.post("/api/answer", content=body.encode()).status_code == 200
    stored = CampaignStore(path).db.execute("SELECT rt_ms FROM votes ORDER BY created")
    assert [row[0] for row in stored] == [0, 600000, None, 1234.5]


def test_speeders_are_caught_by_the_servers_clock(table, tmp_path):
    path = tmp_path / "c.sqlite"
    small_campaign(table, path, votes_per_trial=2)
    clock = Clock()
    store = CampaignStore(path, clock=clock)
    bot = answer_in_store(store, "bot", careful_answer, clock, step_s=0.05)
    honest = answer_in_store(store, "honest", careful_answer, clock, step_s=1.5)
    assert bot["status"] == honest["status"] == "finished"
    votes = store.votes()
    assert votes.loc[votes["worker"] == "bot", "server_ms"].tolist() == pytest.approx(
        [50.0] * (votes["worker"] == "bot").sum()
    )
    assert (votes["rt_ms"] == 600).all()  # both claim 600 ms
    quality = worker_quality(votes, min_rt_ms=400)
    assert quality.loc["bot", "reasons"] == "speeder"
    assert not quality.loc["honest", "excluded"]
    assert quality.loc["honest", "median_server_ms"] == pytest.approx(1500)
    exported = tmp_path / "votes.csv"
    votes.to_csv(exported, index=False)
    again = worker_quality(read_votes(exported), min_rt_ms=400)  # an export keeps server_ms
    assert again.loc["bot", "reasons"] == "speeder" and not again.loc["honest", "excluded"]


# 10. Bad requests get a 4xx, ids are matched whole


def test_bad_requests_get_4xx_not_500(table, tmp_path):
    path = tmp_path / "c.sqlite"
    settings = small_campaign(table, path)
    with running_server(path) as (url, _), httpx.Client(base_url=url) as client:
        client.get("/api/session", params={"worker": "w"})
        for header in ("Bearer \u00e9t\u00e9".encode(), b"Bearer \xff\xfe", b"\xe2\x82\xac"):
            response = client.get("/api/admin/progress", headers={"Authorization": header})
            assert response.status_code == 401
        assert client.get("/api/admin/progress", headers=admin(settings)).status_code == 200
        assert client.get("/images/%00").status_code == 404
        assert client.get("/images/x%00y").status_code == 404
        for body in (
            b'{"worker": "w", "trial": 1e400, "answer": "left"}',
            b'{"worker": "w", "trial": 1e30, "answer": "left"}',
            b'{"worker": "w", "trial": 10000000000000000000000000, "answer": "left"}',
            b'{"worker": "w", "trial": true, "answer": "left"}',
            b'{"worker": "w", "trial": -1, "answer": "left"}',
            b'{"worker": "w", "trial": 0, "answer": ["left"]}',
            b'{"worker": "w\\n", "trial": 0, "answer": "left"}',
            b'["worker", "w"]',
            b"[" * 4000,
            b"\xff\xfe",
        ):
            assert client.post("/api/answer", content=body).status_code == 422, body
        for worker in ("w\n", "abc\n", "\nabc", "a" * 65, "a b", ""):
            assert client.get("/api/session", params={"worker": worker}).status_code == 400
        assert (
            client.get("/api/session", params={"worker": "w", "STUDY_ID": "s\n"}).status_code == 400
        )
        registered = CampaignStore(path).db.execute("SELECT worker FROM participants")
        assert [row[0] for row in registered] == ["w"]


# 13. Damaged campaign files and bad vote files: one line naming the file, exit 2


def damaged_campaigns(table, tmp_path):
    path = tmp_path / "good.sqlite"
    small_campaign(table, path, votes_per_trial=30, trials_per_participant=3)
    store = CampaignStore(path)
    for n in range(30):
        answer_in_store(store, f"w{n}", lambda *t: "left")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.db.close()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database\n" * 100)
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    return {
        garbage: "not a readable campaign database \\(file is not a database\\)",
        empty: "an empty file",
        truncated: "damaged|not a readable campaign",
        other: "not a readable campaign database",
    }


def test_damaged_campaign_files_are_named_in_one_line(table, tmp_path, capsys):
    from nights.cli import main

    for path, reason in damaged_campaigns(table, tmp_path).items():
        with pytest.raises(CampaignError, match=reason):
            CampaignStore(path)
        for action in ("status", "serve", "export", "plan"):
            assert main(["annotate", action, str(path)]) == 2
            captured = capsys.readouterr()
            assert captured.err.count("\n") == 1 and str(path) in captured.err, captured.err
            assert captured.err.startswith("nights annotate: error: ")
            assert "serving" not in captured.out
    assert (tmp_path / "empty.sqlite").read_bytes() == b""  # looked at, never changed
