"""Downloads against real HTTP servers on 127.0.0.1, with injected faults."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import nights.download
import nights.transfer
from nights import DownloadError, IntegrityError, load_nights, make_synthetic_nights
from nights.cli import main
from nights.download import STATE_DIR, check_manifest, download, read_manifest
from nights.remote_zip import RemoteZip, group_members
from nights.transfer import HttpClient, RetryPolicy
from nights.verify import verify_folder

from .servers import Fault, ReleaseServer, make_release_archives


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return make_synthetic_nights(
        tmp_path_factory.mktemp("dl") / "home", n_triplets=40, image_size=32, seed=11
    )


@pytest.fixture(scope="module")
def mirror(sample, tmp_path_factory) -> Path:
    return make_release_archives(sample, tmp_path_factory.mktemp("mirror") / "m")


@pytest.fixture
def server(mirror):
    with ReleaseServer(mirror) as running:
        yield running


def fast_client(attempts: int = 6, read_timeout: float = 5.0, jobs: int = 4) -> HttpClient:
    return HttpClient(
        connections=jobs,
        timeout=(2.0, read_timeout),
        retry=RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.05),
    )


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_chunked_release_is_the_sample_plus_data_csv_from_the_full_zip(server, sample, tmp_path):
    report = download(
        "chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False
    )
    assert tree_digest(tmp_path / "nights") == tree_digest(sample / "nights")
    assert check_manifest(tmp_path) == []
    assert set(read_manifest(tmp_path)) == {f"nights/{p}" for p in tree_digest(sample / "nights")}
    assert report.files_produced == len(tree_digest(sample / "nights"))
    # data.csv came out of nights.zip by ranges: nights.zip itself was never fetched whole.
    full_zip = [r for r in server.log if r.path == "/nights.zip" and r.method == "GET"]
    assert full_zip and all(r.range for r in full_zip)
    assert sum(r.body_bytes for r in full_zip) < (server_root(server) / "nights.zip").stat().st_size
    assert not list((tmp_path / STATE_DIR / "files").glob("*"))  # archives deleted
    table = load_nights("test", root=tmp_path, cache_dir=tmp_path / "tables")
    assert len(table) == len(load_nights("test", root=sample, cache_dir=tmp_path / "t2"))
    again = download("chunked", tmp_path, base_url=server.url, client=fast_client())
    assert again.bytes_to_fetch == 0 and again.files_produced == 0


def server_root(server) -> Path:
    return server._server.root


def test_full_zip64_release(server, sample, tmp_path):
    archive = server_root(server) / "nights.zip"
    assert b"PK\x06\x06" in archive.read_bytes()[-200:]  # a zip64 end of central directory
    download(
        "full",
        tmp_path,
        base_url=server.url,
        client=fast_client(jobs=4),
        jobs=4,
        progress=False,
        keep_archives=True,
    )
    assert tree_digest(tmp_path / "nights") == tree_digest(sample / "nights")
    kept = tmp_path / STATE_DIR / "files" / "nights.zip"
    assert kept.read_bytes() == archive.read_bytes()
    assert check_manifest(tmp_path) == []


def test_large_file_is_fetched_as_parallel_ranges(server, tmp_path):
    archive = server_root(server) / "nights.zip"
    size = archive.stat().st_size
    dest = tmp_path / "nights.zip"
    nights.transfer.FileDownload(
        fast_client(jobs=4),
        server.url + "nights.zip",
        dest,
        "nights.zip",
        segments=4,
        min_segment_bytes=size // 8,
    ).run()
    assert dest.read_bytes() == archive.read_bytes()
    ranged = [r for r in server.log if r.path == "/nights.zip" and r.body_bytes > 1]
    assert len(ranged) == 4 and len({r.range for r in ranged}) == 4


def test_unfiltered_and_jnd_releases(server, sample, tmp_path):
    download("unfiltered", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    download("jnd", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert tree_digest(tmp_path / "nights_unfiltered") == tree_digest(sample / "nights_unfiltered")
    assert (tmp_path / "jnd_votes.csv").read_bytes() == (sample / "jnd_votes.csv").read_bytes()
    table = load_nights(
        "all", root=tmp_path, variant="unfiltered", min_votes=None, cache_dir=tmp_path / "tables"
    )
    assert len(table) == 20


def test_server_that_ignores_range(mirror, sample, tmp_path, caplog):
    with ReleaseServer(mirror, honour_ranges=False) as plain:
        caplog.set_level(logging.WARNING)
        download("full", tmp_path / "a", base_url=plain.url, client=fast_client(), progress=False)
        assert tree_digest(tmp_path / "a" / "nights") == tree_digest(sample / "nights")
        with pytest.raises(DownloadError, match="does not honour Range"):
            download("full", tmp_path / "b", split="test", base_url=plain.url, client=fast_client())


def test_resume_after_a_dropped_connection_uses_range(server, mirror, sample, tmp_path):
    server.faults.append(Fault("drop", path="nights.zip", after=20_000, times=3))
    download("full", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert tree_digest(tmp_path / "nights") == tree_digest(sample / "nights")
    gets = [r for r in server.log if r.path == "/nights.zip" and r.body_bytes > 1]
    assert any(r.range and not r.range.startswith("bytes=0-") for r in gets)
    assert sum(r.body_bytes for r in gets) < 1.2 * (mirror / "nights.zip").stat().st_size


def test_interrupted_transfer_resumes_where_it_stopped(server, mirror, tmp_path):
    server.faults.append(Fault("drop", path="nights.zip", after=50_000, times=1))
    with pytest.raises(DownloadError, match=r"nights.zip: giving up after 1 tries.*Run the same"):
        download(
            "full", tmp_path, base_url=server.url, client=fast_client(attempts=1), progress=False
        )
    part = tmp_path / STATE_DIR / "files" / "nights.zip.part"
    assert part.exists() and not (tmp_path / "nights").exists()
    before = server.body_bytes()
    report = download("full", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    size = (mirror / "nights.zip").stat().st_size
    assert report.planned[0][2] == "resume"
    assert server.body_bytes() - before <= size - 50_000 + 10
    assert check_manifest(tmp_path) == []


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(server, sample, tmp_path, status):
    server.faults.append(Fault("status", status=status, times=4))
    download("chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert tree_digest(tmp_path / "nights") == tree_digest(sample / "nights")
    assert sum(1 for r in server.log if r.status == status) == 4


def test_stall_past_the_read_timeout_is_retried(server, sample, tmp_path):
    server.faults.append(Fault("stall", path="jnd_votes.csv", seconds=1.5, times=1))
    download(
        "jnd", tmp_path, base_url=server.url, client=fast_client(read_timeout=0.5), progress=False
    )
    assert (tmp_path / "jnd_votes.csv").read_bytes() == (sample / "jnd_votes.csv").read_bytes()


def test_wrong_content_length_is_survived_or_reported(server, mirror, sample, tmp_path):
    expected = (sample / "jnd_votes.csv").read_bytes()
    # Announced longer than sent: retried, and the Content-Range total settles the size.
    server.faults.append(Fault("short", path="jnd_votes.csv", after=100, times=1000))
    download("jnd", tmp_path / "a", base_url=server.url, client=fast_client(), progress=False)
    assert (tmp_path / "a" / "jnd_votes.csv").read_bytes() == expected
    # Without ranges the length is all there is: retried, then reported; no file left.
    with ReleaseServer(mirror, honour_ranges=False) as plain:
        plain.faults.append(Fault("short", path="jnd_votes.csv", after=100, times=2))
        download("jnd", tmp_path / "b", base_url=plain.url, client=fast_client(), progress=False)
        assert (tmp_path / "b" / "jnd_votes.csv").read_bytes() == expected
        plain.faults.append(Fault("short", path="jnd_votes.csv", after=100, times=1000))
        with pytest.raises(DownloadError, match=r"jnd_votes\.csv: giving up after 3 tries"):
            download(
                "jnd",
                tmp_path / "c",
                base_url=plain.url,
                client=fast_client(attempts=3),
                progress=False,
            )
    assert not (tmp_path / "c" / "jnd_votes.csv").exists()
    assert not read_manifest(tmp_path / "c")


def test_corrupted_byte_in_a_zip_member_is_caught_and_nothing_is_placed(server, mirror, tmp_path):
    archive = mirror / "nights_chunked" / "distort" / "000.zip"
    server.faults.append(
        Fault("corrupt", path="nights_chunked/distort/000.zip", offset=archive.stat().st_size // 2)
    )
    with pytest.raises(
        IntegrityError,
        match=r"nights_chunked/distort/000.zip: the archive is "
        r"corrupt.*run the same command again",
    ):
        download("chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert not (tmp_path / "nights" / "distort" / "000").exists()
    assert not (tmp_path / STATE_DIR / "files" / "nights_chunked__distort__000.zip").exists()
    assert "nights/distort/000" not in " ".join(read_manifest(tmp_path))
    server.faults.clear()
    download("chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert check_manifest(tmp_path) == []


def test_missing_chunk_names_the_file_and_the_url(server, mirror, sample, tmp_path):
    chunk = mirror / "nights_chunked" / "ref" / "001.zip"
    hidden = chunk.with_suffix(".hidden")
    chunk.rename(hidden)
    try:
        with pytest.raises(DownloadError) as error:
            download("chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False)
        assert "nights_chunked/ref/001.zip: HTTP 404" in str(error.value)
        assert f"{server.url}nights_chunked/ref/001.zip" in str(error.value)
    finally:
        hidden.rename(chunk)
    download("chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert tree_digest(tmp_path / "nights") == tree_digest(sample / "nights")


def test_redirect_to_a_mirror(server, mirror, sample, tmp_path):
    with ReleaseServer(mirror, redirect_to=server.url) as front:
        download("chunked", tmp_path, base_url=front.url, client=fast_client(), progress=False)
        assert any(r.status == 302 for r in front.log)
    assert tree_digest(tmp_path / "nights") == tree_digest(sample / "nights")


def test_a_second_download_on_the_same_folder_is_refused(server, tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from nights.download import _exclusive\n"
            "with _exclusive(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(DownloadError, match=rf"another download is running .*pid {holder.pid}"):
            download("jnd", tmp_path, base_url=server.url, client=fast_client())
    finally:
        holder.communicate("")
    download("jnd", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert (tmp_path / "jnd_votes.csv").is_file()  # the lock went with its holder


def test_free_space_check_gives_the_numbers(server, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 5000))
    with pytest.raises(DownloadError, match=r"not enough free space .* needed .* 5.0 KB free"):
        download("chunked", tmp_path, base_url=server.url, client=fast_client())
    assert not (tmp_path / "nights").exists()


def test_dry_run_fetches_nothing(server, mirror, tmp_path, capsys):
    assert (
        main(
            [
                "download",
                "chunked",
                "--root",
                str(tmp_path),
                "--base-url",
                server.url,
                "--dry-run",
                "--quiet",
            ]
        )
        == 0
    )
    output = capsys.readouterr().out
    assert "nights_chunked/ref/000.zip" in output and "to fetch:" in output
    assert all(r.body_bytes <= 1 for r in server.log)
    assert not (tmp_path / "nights").exists()


def test_split_test_fetches_only_its_images(server, mirror, sample, tmp_path):
    before = server.body_bytes()
    download(
        "full", tmp_path, split="test", base_url=server.url, client=fast_client(), progress=False
    )
    fetched = server.body_bytes() - before
    assert fetched < 0.6 * (mirror / "nights.zip").stat().st_size
    frame = pd.read_csv(sample / "nights" / "data.csv")
    test_rows = frame[frame["split"] == "test"]
    local = pd.read_csv(tmp_path / "nights" / "data.csv")
    assert local["id"].tolist() == test_rows["id"].tolist()
    present = {
        str(p.relative_to(tmp_path / "nights")) for p in (tmp_path / "nights").rglob("*.png")
    }
    wanted = set(test_rows["ref_path"]) | set(test_rows["left_path"]) | set(test_rows["right_path"])
    assert present == wanted
    assert check_manifest(tmp_path) == []
    table = load_nights("test", root=tmp_path, cache_dir=tmp_path / "tables")
    assert table["id"] == test_rows[test_rows["votes"] >= 6]["id"].tolist()
    # A second subset adds to the first; data.csv lists both.
    download(
        "full", tmp_path, split="val", base_url=server.url, client=fast_client(), progress=False
    )
    both = frame[frame["split"].isin(["test", "val"])]
    assert pd.read_csv(tmp_path / "nights" / "data.csv")["id"].tolist() == both["id"].tolist()
    assert check_manifest(tmp_path) == []


def test_ids_file_through_the_cli(server, sample, tmp_path):
    frame = pd.read_csv(sample / "nights" / "data.csv")
    ids = frame["id"].tolist()[:3]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join(map(str, ids)) + "\n")
    root = tmp_path / "root"
    assert (
        main(
            [
                "download",
                "csv",
                "--ids",
                str(id_file),
                "--root",
                str(root),
                "--base-url",
                server.url,
                "--quiet",
            ]
        )
        == 0
    )
    assert pd.read_csv(root / "nights" / "data.csv")["id"].tolist() == ids
    assert len(list((root / "nights").rglob("*.png"))) == 9


def test_remote_info_reads_counts_without_images(server, sample, capsys):
    assert main(["info", "--remote", "--base-url", server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    frame = pd.read_csv(sample / "nights" / "data.csv")
    counts = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[-3:]}
    for split in ("train", "val", "test"):
        rows = frame[frame["split"] == split]
        assert counts[split] == [len(rows), int((rows["votes"] >= 6).sum())]
    assert all(r.range for r in server.log if r.method == "GET")


def test_load_nights_can_download(server, sample, tmp_path):
    table = load_nights(
        "val",
        root=tmp_path / "fresh",
        download=True,
        base_url=server.url,
        cache_dir=tmp_path / "tables",
        progress=False,
    )
    assert table["id"] == load_nights("val", root=sample, cache_dir=tmp_path / "t2")["id"]


def test_verify_checks_the_manifest(server, tmp_path):
    download("chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert verify_folder(tmp_path).ok
    some_image = next((tmp_path / "nights" / "ref").rglob("*.png"))
    data = bytearray(some_image.read_bytes())
    data[-20] ^= 0xFF  # same size, other content (in the PNG trailer: still decodes or not)
    some_image.write_bytes(bytes(data))
    report = verify_folder(tmp_path, decode=False)
    assert not report.ok and any("sha256 differs" in p for p in report.manifest_problems)


def test_member_grouping_merges_neighbours_only():
    import zipfile

    def member(name, offset, size):
        info = zipfile.ZipInfo(name)
        info.header_offset, info.compress_size = offset, size
        return info

    names = ["a", "b", "c", "d"]
    infos = [member(n, o, 1000) for n, o in zip(names, [0, 1100, 500_000, 510_000])]
    groups = group_members(infos, gap=10_000, max_span=1 << 20)
    assert [[m.filename for m in g.members] for g in groups] == [["a", "b"], ["c", "d"]]
    tight = group_members(infos, gap=10_000, max_span=2000)
    assert len(tight) == 4


def test_remote_zip_reads_one_member_with_few_requests(server, sample):
    archive = RemoteZip(fast_client(), server.url + "nights.zip")
    assert archive.read("nights/data.csv") == (sample / "nights" / "data.csv").read_bytes()
    assert len([r for r in server.log if r.method == "GET"]) <= 4
    with pytest.raises(DownloadError, match=r"has no member 'nights/absent\.csv'"):
        archive.read("nights/absent.csv")


@pytest.mark.slow
def test_kill_9_mid_download_then_rerun_gives_identical_files(mirror, tmp_path):
    with ReleaseServer(mirror) as reference_server:
        download(
            "chunked",
            tmp_path / "reference",
            base_url=reference_server.url,
            client=fast_client(),
            progress=False,
        )
    with ReleaseServer(mirror, rate_limit=40_000) as slow:
        command = [
            sys.executable,
            "-m",
            "nights.cli",
            "download",
            "chunked",
            "--root",
            str(tmp_path / "killed"),
            "--base-url",
            slow.url,
            "--quiet",
            "--jobs",
            "4",
        ]
        process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(r.body_bytes > 10_000 for r in slow.log):
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
    interrupted = tmp_path / "killed" / STATE_DIR / "files"
    assert any(interrupted.glob("*.part"))  # it really stopped mid-transfer
    with ReleaseServer(mirror) as fast:
        assert subprocess.run([*command[:-5], "--base-url", fast.url, "--quiet"]).returncode == 0
    assert read_manifest(tmp_path / "killed") == read_manifest(tmp_path / "reference")
    assert tree_digest(tmp_path / "killed" / "nights") == tree_digest(
        tmp_path / "reference" / "nights"
    )
    assert not list((tmp_path / "killed" / STATE_DIR / "files").glob("*"))


# -- full disks and hostile archives --


def _zip(path: Path, members: dict[str, bytes], method=zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MB file system (tmpfs), so that a full disk is a real ENOSPC."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def own_mirror(mirror, tmp_path):
    """A private copy of the mirror whose archives a test may replace."""
    return Path(shutil.copytree(mirror, tmp_path / "own-mirror"))


def _fail_line(command: list[str], capsys) -> str:
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    return error


def test_free_space_counts_what_an_archive_unpacks_to(own_mirror, small_disk, monkeypatch, capsys):
    """64 MB of zeros deflate to 64 KB: the archive fits on a 16 MB disk, its member does not."""
    monkeypatch.setattr(nights.download, "_SPACE_MARGIN", 0)
    _zip(own_mirror / "nights.zip", {"nights/zeros.bin": bytes(64 << 20)}, zipfile.ZIP_DEFLATED)
    assert (own_mirror / "nights.zip").stat().st_size < 100_000
    with ReleaseServer(own_mirror) as server:
        command = ["download", "full", "--root", str(small_disk), "--base-url", server.url]
        error = _fail_line([*command, "--quiet"], capsys)
        assert f"not enough free space in {small_disk} to extract nights.zip: 67.1 MB needed" in (
            error
        )
        assert not (small_disk / "nights").exists()
        assert not list((small_disk / STATE_DIR).glob("extract-*"))
        # An archive large enough has its directory read before it is fetched.
        monkeypatch.setattr(nights.download, "_DIRECTORY_FIRST_BYTES", 0)
        shutil.rmtree(small_disk / STATE_DIR)
        error = _fail_line([*command, "--quiet"], capsys)
        assert f"not enough free space in {small_disk}: 67.2 MB needed" in error
        assert not (small_disk / STATE_DIR / "files" / "nights.zip").exists()


def test_a_disk_that_fills_during_the_transfer_is_one_line_and_the_rerun_resumes(
    own_mirror, small_disk, monkeypatch, capsys
):
    # The disk fills after the free-space check (another program writing): a real ENOSPC.
    monkeypatch.setattr(nights.download, "_check_space", lambda root, needed: None)
    data = os.urandom(24 << 20)
    _zip(own_mirror / "nights.zip", {"nights/noise.bin": data})
    with ReleaseServer(own_mirror) as server:
        command = ["download", "full", "--root", str(small_disk), "--base-url", server.url]
        error = _fail_line([*command, "--quiet"], capsys)
        assert error.startswith(f"nights download: error: the disk of {small_disk} is full")
        assert "this download needs 50.3 MB there" in error
        part = small_disk / STATE_DIR / "files" / "nights.zip.part"
        assert part.stat().st_blocks > 0  # what was fetched is kept for the rerun
        subprocess.run(["mount", "-o", "remount,size=80m", str(small_disk)], check=True)
        assert main([*command, "--quiet"]) == 0
    assert (small_disk / "nights" / "noise.bin").read_bytes() == data


def test_a_disk_that_fills_during_extraction_leaves_no_partial_files(
    own_mirror, small_disk, monkeypatch, capsys
):
    monkeypatch.setattr(nights.download, "_check_space", lambda root, needed: None)
    monkeypatch.setattr(nights.download, "_check_room", lambda root, needed, what: None)
    _zip(own_mirror / "nights.zip", {f"nights/{i}.bin": os.urandom(3 << 20) for i in range(4)})
    with ReleaseServer(own_mirror) as server:
        command = ["download", "full", "--root", str(small_disk), "--base-url", server.url]
        error = _fail_line([*command, "--quiet"], capsys)
    assert f"the disk of {small_disk} is full" in error and "needs 25.2 MB" in error
    assert (small_disk / STATE_DIR / "files" / "nights.zip").is_file()  # kept for the rerun
    assert not (small_disk / "nights").exists()
    assert not list((small_disk / STATE_DIR).glob("extract-*"))


def test_enospc_inside_a_write_call_is_reported_too(server, tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: the error injected at the transfer's write call."""
    real = os.pwrite

    def full(fd, data, offset):
        if offset > 1000:
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(nights.transfer.os, "pwrite", full)
    with pytest.raises(DownloadError, match=f"the disk of {tmp_path} is full"):
        download("full", tmp_path, base_url=server.url, client=fast_client(), progress=False)


def _serve_chunk(own_mirror, members: dict[str, bytes]) -> None:
    _zip(own_mirror / "nights_chunked" / "ref" / "000.zip", members)


@pytest.mark.parametrize(
    ("members", "named", "reason"),
    [
        ({"000/a.png": b"x", "000/a.png/b.png": b"y"}, "000/a.png", "clashes with another"),
        ({"000/a.png": b"x", "../../escape.png": b"y"}, "../../escape.png", "outside the folder"),
    ],
)
def test_hostile_archive_names_archive_url_and_member(
    own_mirror, tmp_path, capsys, members, named, reason
):
    _serve_chunk(own_mirror, members)
    with ReleaseServer(own_mirror) as server:
        command = ["download", "chunked", "--root", str(tmp_path / "r"), "--base-url", server.url]
        error = _fail_line([*command, "--quiet"], capsys)
        url = f"{server.url}nights_chunked/ref/000.zip"
    assert error.startswith("nights download: error: nights_chunked/ref/000.zip: ")
    assert f"member {named!r}" in error and reason in error and f"URL {url}." in error
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "r" / "escape.png").exists()
    assert not (tmp_path / "r" / "nights" / "ref" / "000").exists()


def test_crc_error_names_the_url(server, mirror, tmp_path):
    archive = mirror / "nights_chunked" / "distort" / "000.zip"
    server.faults.append(
        Fault("corrupt", path="nights_chunked/distort/000.zip", offset=archive.stat().st_size // 2)
    )
    with pytest.raises(IntegrityError) as error:
        download("chunked", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert f"URL {server.url}nights_chunked/distort/000.zip." in str(error.value)
    assert "member '000/" in str(error.value)


def test_a_member_that_clashes_with_a_file_on_disk_keeps_the_archive(server, tmp_path):
    (tmp_path / "nights" / "ref").mkdir(parents=True)
    (tmp_path / "nights" / "ref" / "000").write_bytes(b"a file where a folder belongs")
    with pytest.raises(IntegrityError) as error:
        download(
            "chunked",
            tmp_path,
            base_url=server.url,
            client=fast_client(),
            progress=False,
            keep_archives=False,
        )
    message = str(error.value)
    assert message.startswith("nights_chunked/ref/000.zip: cannot be extracted into")
    assert f"clashes with {tmp_path / 'nights' / 'ref' / '000'}" in message
    assert f"URL {server.url}nights_chunked/ref/000.zip." in message
    assert (tmp_path / STATE_DIR / "files" / "nights_chunked__ref__000.zip").is_file()


def test_short_writes_are_completed(server, sample, tmp_path, monkeypatch):
    """A nearly full disk may write part of a block and say so: the rest is written after."""
    real = os.pwrite
    monkeypatch.setattr(
        nights.transfer.os, "pwrite", lambda fd, data, offset: real(fd, data[:1000], offset)
    )
    download("full", tmp_path, base_url=server.url, client=fast_client(), progress=False)
    assert tree_digest(tmp_path / "nights") == tree_digest(sample / "nights")
