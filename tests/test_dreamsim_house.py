"""dreamsim's part of the house: one download per file across processes, pinned checksums,
a warning when upstream's distribution shares the package, imports that load no torch."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .servers import ReleaseServer

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def _zip_release(tmp_path: Path, variant: str) -> Path:
    from .dreamsim_checkpoints import write_release

    write_release(tmp_path / "files", variant, seed=3)
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "weights.zip", "w") as opened:
        for path in sorted((tmp_path / "files").rglob("*")):
            opened.write(path, path.relative_to(tmp_path / "files"))
    return served


LOAD = """
import dataclasses, sys
from dreamsim import dreamsim
from dreamsim.variants import VARIANTS
VARIANTS["clip_vitb32"] = dataclasses.replace(VARIANTS["clip_vitb32"], url=sys.argv[1])
model, _ = dreamsim(cache_dir=sys.argv[2], dreamsim_type="clip_vitb32", device="cpu",
                    progress=False)
print(model.weights_id)
"""


def test_two_processes_download_the_zip_once_and_both_load_it(tmp_path):
    pytest.importorskip("torch")
    served = _zip_release(tmp_path, "clip_vitb32")
    size = (served / "weights.zip").stat().st_size
    with ReleaseServer(served, rate_limit=size / 1.5) as server:  # ~1.5 s per download
        url, cache = server.url + "weights.zip", str(tmp_path / "cache")
        ranks = [_python(LOAD, url, cache) for _ in range(2)]
        results = [(rank.wait(timeout=300), *rank.communicate()) for rank in ranks]
    for code, _, err in results:
        assert code == 0, err
    assert results[0][1] == results[1][1]  # the same weights
    gets = [r for r in server.log if r.method == "GET"]
    assert len(gets) == 1 and gets[0].body_bytes == size
    assert not list((tmp_path / "cache").glob("*.part"))


def test_a_pinned_sha256_refuses_another_zip(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from dreamsim import CheckpointError, dreamsim
    from dreamsim.variants import VARIANTS

    served = _zip_release(tmp_path, "clip_vitb32")
    digest = hashlib.sha256((served / "weights.zip").read_bytes()).hexdigest()
    with ReleaseServer(served) as server:
        variant = dataclasses.replace(
            VARIANTS["clip_vitb32"], url=server.url + "weights.zip", sha256="0" * 64
        )
        monkeypatch.setitem(VARIANTS, "clip_vitb32", variant)
        cache = tmp_path / "cache"
        with pytest.raises(CheckpointError, match=f"sha256 {digest} is not the published 0000"):
            dreamsim(cache_dir=cache, dreamsim_type="clip_vitb32", device="cpu", progress=False)
        assert not (cache / "dreamsim_clip_vitb32_checkpoint.zip").exists()
        assert not (cache / "clip_vitb32_single_lora").exists()
        monkeypatch.setitem(VARIANTS, "clip_vitb32", dataclasses.replace(variant, sha256=digest))
        dreamsim(cache_dir=cache, dreamsim_type="clip_vitb32", device="cpu", progress=False)


def _fake_distribution(site: Path, name: str, version: str, files: list[str]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


def _import_warnings(site: Path | None) -> str:
    env = {**os.environ, "PYTHONPATH": str(site) if site else ""}
    process = _python("import dreamsim", env=env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return err


def test_upstreams_distribution_beside_ours_gives_one_warning_with_the_fix(tmp_path):
    _fake_distribution(
        tmp_path / "site",
        "dreamsim",
        "0.2.1",
        ["dreamsim/__init__.py", "dreamsim/model.py", "dreamsim/feature_extraction/extractor.py"],
    )
    err = _import_warnings(tmp_path / "site")
    assert err.count("UserWarning") == 1
    assert "`dreamsim 0.2.1`" in err and "`nights " in err and str(tmp_path / "site") in err
    assert "pip uninstall -y dreamsim && pip install --force-reinstall --no-deps nights" in err
    assert "UserWarning" not in _import_warnings(None)


def test_a_dreamsim_distribution_that_owns_no_package_files_is_left_alone(tmp_path):
    _fake_distribution(tmp_path / "site", "dreamsim", "9.9", ["dreamsim_tools/__init__.py"])
    assert "UserWarning" not in _import_warnings(tmp_path / "site")


@pytest.mark.parametrize("statement", ["import dreamsim.errors", "import dreamsim"])
def test_importing_dreamsim_or_its_errors_loads_no_torch(statement):
    heavy = "('torch', 'peft', 'nights')"
    code = f"import sys; {statement}; print([m for m in {heavy} if m in sys.modules])"
    process = _python(code)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.strip() == "[]"
    lazy = _python("import sys; from dreamsim import dreamsim; print('torch' in sys.modules)")
    assert lazy.communicate(timeout=60)[0].strip() == "True"


def test_bad_input_gets_one_line_naming_what_is_wrong(tmp_path, capsys):
    pytest.importorskip("torch")
    from dreamsim import CheckpointError, VariantError, dreamsim, training_model
    from dreamsim.__main__ import main

    with pytest.raises(VariantError) as error:
        training_model("vit_huge", cache_dir=tmp_path)
    assert "'vit_huge'" in str(error.value)
    assert all(name in str(error.value) for name in ("ensemble", "dinov2_vitl14", "test_tiny"))
    with pytest.raises(CheckpointError) as error:
        dreamsim(pretrained=False, cache_dir=tmp_path, dreamsim_type="test_tiny")
    assert f"missing test_tiny_pretrain.pth in {tmp_path}" in str(error.value)
    with pytest.raises(CheckpointError) as error:
        training_model("synclr_vitb16", cache_dir=tmp_path)
    assert f"`python -m dreamsim download synclr_vitb16 --cache-dir {tmp_path}`" in str(error.value)
    assert main(["download", "synclr_vitb16", "--from-hub"]) == 2
    assert main(["download", "test_tiny"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "error: DreamSim synclr_vitb16: synclr_vitb16 is not on the Hugging Face Hub; the "
        "release zip has it: `python -m dreamsim download synclr_vitb16`",
        "error: DreamSim test_tiny: test_tiny is not on the Hugging Face Hub; it has no "
        "release either: write its file into the cache folder",
    ]
