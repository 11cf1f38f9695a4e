"""The nights command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nights.cli import build_parser, main

COMMANDS = [
    "sample",
    "info",
    "stats",
    "build",
    "filter",
    "download",
    "audit",
    "app",
    "export-fiftyone",
    "verify",
]


def test_every_command_has_complete_help():
    result = subprocess.run(
        [sys.executable, "-m", "nights.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in COMMANDS:
        assert command in result.stdout
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([command, "--help"])
        assert done.value.code == 0


def test_sample_info_filter_verify(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["sample", str(home), "--triplets", "30", "--image-size", "16"]) == 0
    assert main(["info", "--root", str(home), "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "votes>=6" in output and "test" in output and "unfiltered:" in output
    assert main(["stats", "--root", str(home), "--by", "votes", "--quiet"]) == 0
    assert "votes_mean" in capsys.readouterr().out

    out = tmp_path / "strict"
    assert (
        main(["filter", "--root", str(home), "--min-votes", "8", "--out", str(out), "--quiet"]) == 0
    )
    frame = pd.read_csv(home / "nights" / "data.csv")
    assert pd.read_csv(out / "data.csv")["id"].tolist() == frame[frame.votes >= 8]["id"].tolist()
    assert main(["filter", "--root", str(home), "--min-votes", "8", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err

    report = tmp_path / "report.json"
    assert main(["verify", "--root", str(out), "--report", str(report), "--quiet"]) == 0
    assert json.loads(report.read_text())["ok"] is True


def test_verify_finds_damage_and_exits_1(sample_copy, tmp_path, capsys):
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    damaged = sample_copy / "nights" / frame["left_path"][2]
    damaged.write_bytes(damaged.read_bytes()[:-100])
    (sample_copy / "nights" / frame["ref_path"][4]).unlink()
    report = tmp_path / "r.json"
    assert main(["verify", "--root", str(sample_copy), "--report", str(report), "--quiet"]) == 1
    output = capsys.readouterr().out
    assert "2 bad image reference(s)" in output and "PROBLEMS FOUND" in output
    problems = json.loads(report.read_text())["problems"]
    assert {(p["id"], p["column"]) for p in problems} == {
        (int(frame["id"][2]), "left"),
        (int(frame["id"][4]), "ref"),
    }
    # Headers only: a file cut short is still found (its PNG end is missing).
    assert main(["verify", "--root", str(sample_copy), "--no-decode", "--quiet"]) == 1
    assert "2 bad image reference(s)" in capsys.readouterr().out


def test_errors_are_one_clear_line_and_exit_2(tmp_path, capsys):
    assert main(["stats", "--root", str(tmp_path)]) == 2
    assert "No NIGHTS nights data found" in capsys.readouterr().err
    (tmp_path / "data.csv").write_text("id;votes\n1;2\n")
    assert main(["verify", "--root", str(tmp_path)]) == 1
    assert "semicolon-separated" in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "nights"
    result = subprocess.run([str(script), "verify", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--no-decode" in result.stdout
