"""``nights train`` (issue 13): the tiny test variant trained on the embedded sample learns the
votes; one process, two under torchrun or accelerate launch, a run killed and resumed and a
run whose batch had to be halved end with the same weights; the run loads through ``dreamsim``
and shares through a merged file and the Hub; bad input is one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

import yaml  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from dreamsim import dreamsim, write_tiny_weights  # noqa: E402
from nights import load_nights  # noqa: E402
from nights.cli import main  # noqa: E402
from nights.errors import ConfigError, TrainError  # noqa: E402
from nights.torch_data import to_torch  # noqa: E402
from nights.train import Rows, TrainConfig, load_config, read_result, train  # noqa: E402
from nights.train.config import parse_overrides  # noqa: E402
from nights.train.data import open_rows  # noqa: E402
from nights.train.engine import TripletDistances  # noqa: E402

from .servers import free_port  # noqa: E402
from .test_split_origin import campaign_split  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_dreamsim.py"
ADAPTER = Path("best") / "test_tiny_single_lora" / "adapter_model.safetensors"
#: 24 training triplets in steps of 8, two epochs; a high lr so that the weights move far.
RECIPE = {
    "variant": "test_tiny",
    "train": {"split": "train", "min_votes": None, "limit": 24},
    "val": None,
    "test": None,
    "epochs": 2,
    "batch_size": 8,
    "lr": 0.01,
    "save_every": 1,
    "num_workers": 0,
}


@pytest.fixture(scope="module")
def homes(sample_home, tmp_path_factory):
    """The environment of the module's runs (private caches, offline) and its files."""
    base = tmp_path_factory.mktemp("train")
    weights = write_tiny_weights(base / "weights")
    config = base / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "root": str(sample_home), "weights": str(weights)}))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "NIGHTS_", "DREAMSIM_", "ACCELERATE_"))
    }
    env.update(
        NIGHTS_HOME=str(base / "nights_home"),
        DREAMSIM_HOME=str(base / "dreamsim_home"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    return {"base": base, "weights": weights, "config": config, "env": env}


def run_script(homes, *args, launcher=(), timeout=300) -> subprocess.CompletedProcess:
    """``scripts/train_dreamsim.py ARGS`` in its own processes, as a user starts it."""
    command = [*launcher, str(SCRIPT)] if launcher else [sys.executable, str(SCRIPT)]
    done = subprocess.run(
        [*command, *map(str, args), "--quiet"],
        env=homes["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def adapter(run: Path) -> dict:
    return load_file(run / ADAPTER)


def assert_same_weights(one: dict, other: dict, atol: float) -> None:
    assert sorted(one) == sorted(other) and one
    for name in one:
        torch.testing.assert_close(one[name], other[name], atol=atol, rtol=0, msg=name)


@pytest.fixture(scope="module")
def reference_run(homes) -> Path:
    """The recipe in one process, uninterrupted."""
    out = homes["base"] / "one"
    run_script(homes, homes["config"], "--out", out)
    return out


@pytest.fixture(scope="module")
def halved_run(homes, sample_home):
    """The recipe in this process (tested on the sample's test split too) on a device that
    holds 2 triplets at most: the trainer halves its micro-batch until they fit."""
    sizes = []
    real_forward = TripletDistances.forward

    def small_device(self, ref, left, right):
        sizes.append(len(ref))
        if len(ref) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, ref, left, right)

    config = load_config(
        homes["config"],
        {"out": str(homes["base"] / "halved"), "test": {"split": "test", "min_votes": None}},
    )
    with pytest.MonkeyPatch.context() as patch:
        for key in ("NIGHTS_HOME", "DREAMSIM_HOME", "HF_HUB_OFFLINE"):
            patch.setenv(key, homes["env"][key])
        patch.setattr(TripletDistances, "forward", small_device)
        result = train(config, progress=False)
    return result, sizes


# -- it learns --


def test_training_learns_the_votes_and_records_the_run(sample_home, tmp_path):
    """The untuned tiny ViT already sits at the sample's vote ceiling (~0.82: the simulated
    people are noisy), so the votes are reversed (people who pick the stronger distortion):
    untuned, the model agrees ~0.23; a rise is learning, against its prior."""
    weights = write_tiny_weights(tmp_path / "weights")

    def reversed_votes(split):
        table = load_nights(split, root=sample_home, min_votes=None, image_size=224)
        return table.map(lambda row: {"right_vote": 1 - row["right_vote"]})

    config = TrainConfig(
        out=str(tmp_path / "run"),
        variant="test_tiny",
        weights=str(weights),
        train=reversed_votes("train"),
        val=reversed_votes("test"),
        test=None,
        epochs=4,
        lr=3e-3,
        num_workers=0,
    )
    result = train(config, progress=False)

    losses = [entry["train_loss"] for entry in result.epochs[1:]]
    untuned, *tuned = result.val_2afc
    assert losses[-1] < losses[0]
    assert untuned < 0.3 and tuned[-1] > untuned + 0.05, result.val_2afc
    assert result.best_epoch == max(range(5), key=lambda epoch: result.val_2afc[epoch])

    steps = pd.read_csv(result.paths["log"])
    assert steps["step"].tolist() == list(range(1, 4 * 5 + 1))  # 72 triplets in steps of 16
    assert set(steps["triplets"]) == {16, 8} and steps["loss"].notna().all()
    epochs = pd.read_csv(result.paths["epochs"])
    assert epochs["val_2afc"].tolist() == pytest.approx(result.val_2afc)
    report = result.paths["report"].read_text()
    assert report.count("data:image/png;base64,") == 2 and "http" not in report
    saved = yaml.safe_load(result.paths["config"].read_text())
    assert (saved["batch_size"], saved["lr"], saved["betas"], saved["lora_r"]) == (
        16,
        3e-3,
        [0.5, 0.999],
        16,
    )
    assert saved["train"]["rows"] == 72
    for epoch in range(5):
        assert (result.run / f"epoch_{epoch}" / "test_tiny_single_lora").is_dir()


def test_upstreams_recipe_is_the_default():
    lora, mlp = TrainConfig().resolved(), TrainConfig(method="mlp").resolved()
    assert (lora.epochs, lora.batch_size, mlp.epochs, mlp.batch_size) == (6, 16, 20, 512)
    assert (lora.lr, lora.betas, lora.weight_decay, lora.margin, lora.seed) == (
        3e-4,
        [0.5, 0.999],
        0.0,
        0.05,
        1234,
    )
    assert (lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.lora_target_modules) == (
        16,
        8.0,
        0.3,
        ["qkv"],
    )
    assert (mlp.hidden_size, lora.labels, lora.train_projection) == (512, "hard", False)


# -- the same weights however it runs --


def _launcher(name: str) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if name == "torchrun":
        return [
            str(bin_dir / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
        ]
    return [
        str(bin_dir / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_give_one_process_weights(homes, reference_run, launcher):
    out = homes["base"] / f"two-{launcher}"
    run_script(homes, homes["config"], "--out", out, launcher=_launcher(launcher))
    assert_same_weights(adapter(out), adapter(reference_run), atol=1e-5)
    steps = pd.read_csv(out / "log.csv")
    assert steps["triplets"].tolist() == [8] * 6  # each step summed over both processes
    one = pd.read_csv(reference_run / "log.csv")
    assert steps["loss"].tolist() == pytest.approx(one["loss"].tolist(), abs=1e-5)


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_equals_uninterrupted(homes, reference_run):
    out = homes["base"] / "killed"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(homes["config"]), "--out", str(out), "--quiet"],
        env=homes["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log = out / "log.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 1 + 2:  # epoch 1, step 2
            break
        time.sleep(0.02)
    assert process.poll() is None, process.stderr.read()[-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    steps_done = len(pd.read_csv(log))
    assert 2 <= steps_done < 6 and not (out / "result.json").exists()

    run_script(homes, "--resume", "--out", out)
    assert_same_weights(adapter(out), adapter(reference_run), atol=1e-6)
    resumed, one = pd.read_csv(log), pd.read_csv(reference_run / "log.csv")
    assert resumed["step"].tolist() == list(range(1, 7))
    assert resumed["loss"].tolist() == pytest.approx(one["loss"].tolist(), abs=1e-6)

    def without_times(run):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in read_result(run).epochs]

    assert without_times(out) == without_times(reference_run)


def test_a_batch_that_does_not_fit_is_halved_and_changes_nothing(halved_run, reference_run):
    result, sizes = halved_run
    assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) == 2
    assert set(pd.read_csv(result.paths["log"])["micro_batch"]) == {2}
    assert_same_weights(adapter(result.run), adapter(reference_run), atol=1e-5)


def test_gradient_accumulation_and_a_toml_config_change_nothing(homes, reference_run, tmp_path):
    """The recipe as a TOML file, each step in 4 micro-batches: the reference's weights."""
    values = yaml.safe_load(homes["config"].read_text())
    lines = [
        f"{key} = {json.dumps(value)}"
        for key, value in values.items()
        if value is not None and not isinstance(value, dict)
    ]
    train_rows = values["train"]
    lines += ["[train]", f'split = "{train_rows["split"]}"', f"limit = {train_rows['limit']}"]
    config_file = tmp_path / "recipe.toml"
    config_file.write_text("\n".join(lines) + "\n")
    config = load_config(
        config_file,
        ["val=null", "test=null", "train.min_votes=null", "gradient_accumulation=4"],
    )
    config.out = str(tmp_path / "run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIGHTS_HOME", homes["env"]["NIGHTS_HOME"])
        result = train(config, progress=False)
    assert set(pd.read_csv(result.paths["log"])["micro_batch"]) == {2}
    assert_same_weights(adapter(result.run), adapter(reference_run), atol=1e-5)


@pytest.mark.gpu
def test_mixed_precision_on_cuda_trains_and_loads(homes, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    results = {}
    for precision in ("no", "bf16", "fp16"):
        config = load_config(homes["config"], {"mixed_precision": precision})
        config.out = str(tmp_path / precision)
        results[precision] = train(config, progress=False)
        steps = pd.read_csv(results[precision].paths["log"])
        assert steps["loss"].notna().all() and len(steps) == 6
        model, _ = dreamsim(
            pretrained=True, cache_dir=results[precision].best, dreamsim_type="test_tiny"
        )
        assert next(model.parameters()).is_cuda
    fp32, bf16 = adapter(results["no"].run), adapter(results["bf16"].run)
    for name in fp32:  # autocast changes the sums, not where the training goes
        assert (
            torch.nn.functional.cosine_similarity(fp32[name].flatten(), bf16[name].flatten(), dim=0)
            > 0.9
            or fp32[name].abs().max() < 1e-6
        )


def test_a_batch_that_never_fits_is_one_line(homes, tmp_path, monkeypatch, capsys):
    def full_device(self, ref, left, right):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TripletDistances, "forward", full_device)
    out = tmp_path / "run"
    assert main(["train", "run", str(homes["config"]), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("nights train: error: ")
    assert "a micro-batch of 1 triplet(s) (batch_size 8 over 1 process(es)) does not fit" in error
    assert "--gradient-accumulation or lower --batch-size" in error


# -- the saved run --


def test_the_saved_run_loads_through_dreamsim_with_the_trainers_distances(
    halved_run, homes, sample_home
):
    """The trained tensors as the trainer held them (its resumable state), in a model built as
    the trainer builds it, give the distances of ``dreamsim(cache_dir=RUN/best)``. As upstream,
    the loss sees uncentred embeddings and validation the centred ones ``dreamsim()`` gives
    (``normalize_embeds``): the comparison is with the latter, the distances it audits."""
    from dreamsim import LoraSettings, trainable_parameters, training_model

    result, _ = halved_run
    trainer = training_model(
        "test_tiny", cache_dir=homes["weights"], lora=LoraSettings(), device="cpu"
    )
    state = torch.load(result.run / "state.pt", weights_only=True)
    with torch.no_grad():
        for name, parameter in trainable_parameters(trainer).items():
            parameter.copy_(state["trainable"][name])
    loaded, _ = dreamsim(
        pretrained=True, cache_dir=result.best, dreamsim_type="test_tiny", device="cpu"
    )
    table = load_nights("test", root=sample_home, min_votes=None, image_size=224)
    ref, left, right, _, _ = next(iter(to_torch(table, batch_size=8)))
    with torch.no_grad():
        trainer.normalize_embeds = True
        d_left, d_right = TripletDistances(trainer.eval())(ref, left, right)
        untuned, _ = dreamsim(
            pretrained=False, cache_dir=homes["weights"], dreamsim_type="test_tiny", device="cpu"
        )
        torch.testing.assert_close(loaded(ref, left), d_left, atol=1e-5, rtol=0)
        torch.testing.assert_close(loaded(ref, right), d_right, atol=1e-5, rtol=0)
        assert (d_left - untuned(ref, left)).abs().max() > 1e-3  # training moved the distances


def test_the_test_2afc_is_what_nights_audit_prints(halved_run, sample_home, monkeypatch, capsys):
    result, _ = halved_run
    monkeypatch.setenv("DREAMSIM_HOME", str(result.best))
    out = result.run.parent / "audited"
    arguments = ["audit", "--root", str(sample_home), "--split", "test", "--min-votes", "0"]
    assert main([*arguments, "--metric", "dreamsim:test_tiny", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["metrics"]["dreamsim:test_tiny"]["overall"]
    assert overall["two_afc"] == pytest.approx(result.test["two_afc"], abs=1e-12)
    assert overall["triplets"] == result.test["triplets"] == 30
    capsys.readouterr()
    assert main(["train", "report", str(result.run)]) == 0
    printed = capsys.readouterr().out
    assert f"test 2AFC {result.test['two_afc']:.3f}" in printed and "best epoch 2" in printed


def test_export_merged_and_push_to_the_hub(halved_run, homes, tmp_path):
    from .fake_hub import FakeHub, hub_env

    result, _ = halved_run
    with FakeHub(tokens={"alice-token": "alice"}) as hub:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "nights.cli", "train", "export", str(result.run)),
                *("--merged", "--push-to-hub", "alice/tiny-dreamsim"),
            ],
            env={**hub_env(hub, tmp_path, token="alice-token"), "HF_HUB_OFFLINE": "0"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        files = hub.files("model", "alice/tiny-dreamsim")
    merged = result.run / "export" / "dreamsim_test_tiny_merged.safetensors"
    assert files[merged.name] == merged.read_bytes()
    card = files["README.md"].decode()
    low, high = result.test["ci95"]
    assert f"**{result.test['two_afc']:.3f} [{low:.3f}, {high:.3f}]**" in card
    assert "lr 0.01, batch 8, 2 epochs" in card and "training_config.yaml" in files
    model, _ = dreamsim(cache_dir=merged, dreamsim_type="test_tiny", device="cpu")
    saved, _ = dreamsim(
        pretrained=True, cache_dir=result.best, dreamsim_type="test_tiny", device="cpu"
    )
    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(images[:2], images[2:]), saved(images[:2], images[2:]))


# -- data --


def test_a_merged_campaign_split_with_few_votes_trains(campaign_split):  # noqa: F811
    out, triplets = campaign_split
    table, where = open_rows("train", Rows("all", root=str(out)), 224, progress=False)
    assert len(table) == triplets and set(table["votes"]) == {4}
    assert "min_votes=origin" in where


# -- bad input, one line --


def one_line_error(capsys, *arguments) -> str:
    assert main(["train", "run", *map(str, arguments), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("nights train: error: "), error
    return error


def test_bad_input_is_one_line(homes, sample_home, tmp_path, capsys):
    out = tmp_path / "run"
    error = one_line_error(capsys, homes["config"], "--variant", "vit_huge", "--out", out)
    assert "'vit_huge'" in error and "test_tiny" in error
    empty = tmp_path / "empty"
    empty.mkdir()
    error = one_line_error(
        capsys, homes["config"], "--variant", "dino_vitb16", "--weights", empty, "--out", out
    )
    assert "python -m dreamsim download dino_vitb16" in error
    error = one_line_error(capsys, homes["config"], "--set", "train.split=everything", "--out", out)
    assert "train.split: 'everything' is not one of" in error
    broken = tmp_path / "broken.yaml"
    broken.write_text("variant: test_tiny\ntrain: {split: [all\n")
    error = one_line_error(capsys, broken, "--out", out)
    assert str(broken) in error and "line 3, column 1" in error
    assert not out.exists()

    run = tmp_path / "done"
    assert main(["train", "run", str(homes["config"]), "--out", str(run), "--set", "epochs=1"]) == 0
    capsys.readouterr()
    error = one_line_error(capsys, homes["config"], "--out", run)
    assert "holds a run" in error and "--resume" in error
    error = one_line_error(
        capsys, homes["config"], "--out", run, "--resume", "--epochs", "1", "--lr", "1"
    )
    assert "differs from this run's config in lr" in error


def test_a_table_without_votes_is_refused(homes, sample_home, tmp_path):
    table = load_nights("train", root=sample_home, min_votes=None, image_size=224)
    config = load_config(homes["config"], {"out": str(tmp_path / "run")})
    config.train = table.remove_columns(["left_vote", "right_vote"])
    with pytest.raises(TrainError, match=r"has no votes \(right_vote, votes\)") as raised:
        train(config, progress=False)
    assert "\n" not in str(raised.value) and "nights annotate aggregate" in str(raised.value)
    config.train = table.filter(lambda row: False)
    with pytest.raises(TrainError, match="has no triplet"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()


# -- the config file is outside input --

KEYS = [*RECIPE, "method", "labels", "lora_dropout", "betas", "mixed_precision", "out", "seed"]
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**2000), max_value=2**2000)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["split", "root", "limit", "min_votes", "x"]), inner)
    ),
    max_leaves=6,
)


def _result_or_config_error(path: Path) -> None:
    try:
        load_config(path).resolved()
    except ConfigError as error:
        assert "\n" not in str(error).strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_any_yaml_config_is_a_config_or_a_config_error(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("yaml") / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    _result_or_config_error(path)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=120), suffix=st.sampled_from([".yaml", ".toml", ".json"]))
def test_any_config_text_is_a_config_or_a_config_error(tmp_path_factory, text, suffix):
    path = tmp_path_factory.mktemp("text") / f"run{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _result_or_config_error(path)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.text(max_size=20), max_size=4))
def test_any_override_is_a_config_or_a_config_error(items):
    with contextlib.suppress(ConfigError):
        load_config(None, parse_overrides(items)).resolved()
