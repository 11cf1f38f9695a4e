"""The nights command, run as a user runs it."""

from __future__ import annotations

import json
import os
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
    "publish",
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
    with pytest.raises(SystemExit) as done:
        main(["filter", "--root", str(tmp_path), "--min-votes", "8"])
    assert done.value.code == 2
    assert "nights filter: error: --out is required (or --dry-run)" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "nights"
    result = subprocess.run([str(script), "verify", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--no-decode" in result.stdout


PLUGIN = """
from nights.cli import options
from nights.errors import NightsError


def add_commands(commands):
    parser = options.command(commands, "greet", run, "say hello", "Say hello to someone.")
    parser.add_argument("--name", default="world")
    options.add_quiet(parser)


def run(args):
    if args.name == "nobody":
        raise NightsError("nobody to greet")
    print(f"hello {args.name}")
    return 0
"""


def test_a_command_group_plugs_in_through_the_entry_point_group(tmp_path):
    (tmp_path / "greeting.py").write_text(PLUGIN)
    metadata = tmp_path / "greeting-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n")
    (metadata / "entry_points.txt").write_text(
        "[nights.commands]\ngreet = greeting:add_commands\nbroken = absent_module:add_commands\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def nights(*arguments):
        return subprocess.run(
            [sys.executable, "-m", "nights.cli", *arguments],
            env=env,
            capture_output=True,
            text=True,
        )

    listed = nights("--help")
    assert "greet" in listed.stdout and all(command in listed.stdout for command in COMMANDS)
    assert "commands 'broken' left out: No module named 'absent_module'" in listed.stderr
    greeted = nights("greet", "--name", "NIGHTS", "--quiet")
    assert (greeted.returncode, greeted.stdout) == (0, "hello NIGHTS\n")
    refused = nights("greet", "--name", "nobody")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == "nights greet: error: nobody to greet"


def test_annotate_actions_take_only_their_own_options(capsys):
    parser = build_parser()
    for action in ("create", "serve", "status", "plan", "export", "release", "import", "aggregate"):
        with pytest.raises(SystemExit) as done:
            parser.parse_args(["annotate", action, "--help"])
        assert done.value.code == 0
    serve_help = capsys.readouterr().out.split("usage: nights annotate serve")[1]
    serve_help = serve_help.split("usage: nights annotate status")[0]
    assert "--workers" in serve_help and "--policy" not in serve_help
    assert "--votes" not in serve_help
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["annotate", "status", "c.sqlite", "--votes", "v.csv"])
    assert done.value.code == 2
    assert "unrecognized arguments: --votes v.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["annotate", "import"])
    assert "the following arguments are required: --votes" in capsys.readouterr().err


def test_a_reader_that_leaves_early_gets_no_traceback(sample_home):
    nights = Path(sys.executable).parent / "nights"
    result = subprocess.run(
        f"'{nights}' info --root '{sample_home}' --quiet | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert result.stdout.startswith("NIGHTS_HOME:") and "Traceback" not in result.stderr
