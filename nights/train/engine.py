"""The training loop: :func:`train`, on one process or many (``accelerate``).

Each optimizer step embeds the reference, left and right images of its triplets in one forward
pass (three embeddings per triplet, not four), computes the hinge loss of
``d(ref, left) - d(ref, right)`` against the votes and adds up the gradients of its
micro-batches; each process computes a share of the step, with its loss scaled so that the
averaged gradient is the sum over the step's triplets divided by their number, whatever the
number of processes and micro-batches. LoRA dropout masks are drawn per triplet
(:mod:`nights.train.dropout`). So one process, several (``torchrun``, ``accelerate launch``),
several micro-batches or a run resumed after a kill give the same weights (up to the order of
floating-point sums).

After every epoch the weights are saved in the release layout (``RUN/epoch_N``) and the
validation 2AFC is computed by the audit's own code on that saved checkpoint, loaded as
``nights audit`` loads it (:func:`nights.metrics.get_metric`): the number is the one
``nights audit`` prints for it. The best epoch is saved again as ``RUN/best``; at the end the
test split is audited with it. ``RUN/state.pt`` holds what a resumed run needs (trained
weights, optimizer, position in the epoch) and is written every ``save_every`` steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .._files import atomic_path, write_atomic
from .._progress import progress_bar
from ..errors import TrainError
from .config import TrainConfig, config_from_dict
from .data import LocalShares, epoch_steps, open_rows
from .records import StepLog, write_epochs, write_report

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.pt"
RESULT_FILE = "result.json"


@dataclass
class TrainResult:
    """What :func:`train` made.

    Attributes:
        run: the run folder.
        best: the best epoch's checkpoint (``RUN/best``, release layout): load it with
            ``dreamsim(pretrained=True, cache_dir=best, dreamsim_type=...)``.
        best_epoch: its epoch (0: the starting model was never beaten on validation).
        epochs: one entry per epoch, 0 (the starting model) first when there is validation:
            ``epoch``, ``train_loss``, ``train_2afc`` (running, on the training batches),
            ``val`` (``two_afc``, ``ci95``, ``triplets``, or None), ``seconds``.
        test: the test audit of the best checkpoint (``two_afc``, ``ci95``, ``triplets``), or
            None without a test section.
        config: the resolved config the run used.
        paths: the files written (``config``, ``log``, ``epochs``, ``report``, ``result``).
    """

    run: Path
    best: Path
    best_epoch: int
    epochs: list[dict]
    test: dict | None
    config: TrainConfig
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def val_2afc(self) -> list[float | None]:
        """The validation 2AFC of each entry of :attr:`epochs`."""
        return [(entry.get("val") or {}).get("two_afc") for entry in self.epochs]


def train(config: TrainConfig, *, resume: bool = False, progress: bool | None = None):
    """Fine-tunes DreamSim as ``config`` says; writes the run folder ``config.out``.

    Args:
        config: the run (see :class:`~nights.train.TrainConfig`); resolved here.
        resume: continue the run in ``config.out`` where it stopped (its saved config must
            equal ``config``); without it, a folder holding a run is refused.
        progress: progress bars (default: when stderr is a terminal; on the main process).

    Returns:
        The :class:`TrainResult` (on every process of a distributed run).

    Raises:
        ConfigError / TrainError: a config value, the data, the run folder or a batch that
            does not fit, in one line; dreamsim's errors for an unknown variant or missing
            weights (with the command that fetches them).

    Example (the tiny test variant on the sample, one epoch)::

        >>> from dreamsim import write_tiny_weights
        >>> from nights.train import Rows, TrainConfig, train
        >>> config = TrainConfig(
        ...     out=str(scratch / "run"), root=str(sample_root), variant="test_tiny",
        ...     weights=str(write_tiny_weights(scratch / "w")), epochs=1, num_workers=0,
        ...     train=Rows("train", limit=32), test=None)
        >>> result = train(config, progress=False)
        >>> sorted(path.name for path in result.best.iterdir())
        ['dreamsim_manifest.json', 'test_tiny_pretrain.pth', 'test_tiny_single_lora']
        >>> [entry["epoch"] for entry in result.epochs], 0 <= result.val_2afc[-1] <= 1
        ([0, 1], True)
    """
    from accelerate import Accelerator

    config = config.resolved()
    cpu = config.device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu)
    try:
        return _Run(config, accelerator, resume, progress).run()
    finally:
        if accelerator.num_processes == 1:  # the next run in this process starts afresh
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)


def hinge_loss(d_left, d_right, p_right, margin: float, labels: str):
    """Upstream's loss per triplet: ``max(0, margin - (d_left - d_right) * y)`` with ``y`` the
    right image's vote share rounded to 0 or 1 (``hard``; or itself, ``soft``) mapped to
    [-1, 1] (``2 * share - 1``)."""
    share = torch.round(p_right) if labels == "hard" else p_right
    return torch.clamp(margin - (d_left - d_right) * (2 * share - 1), min=0)


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "out of memory" in str(error)


class TripletDistances(nn.Module):
    """``(ref, left, right) -> (d(ref, left), d(ref, right))`` with one embedding per image:
    the module each process runs (and DDP wraps)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ref, left, right):
        embeddings = self.model.embed(torch.cat([ref, left, right]))
        e_ref, e_left, e_right = embeddings.split(len(ref))
        distance = self.model.distance_from_embeddings
        return distance(e_ref, e_left), distance(e_ref, e_right)


class _Run:
    def __init__(self, config: TrainConfig, accelerator, resume: bool, progress):
        self.config, self.accelerator, self.resume = config, accelerator, resume
        self.main = accelerator.is_main_process
        self.progress = progress if self.main else False
        self.folder = Path(config.out)
        self.world, self.rank = accelerator.num_processes, accelerator.process_index

    # -- set-up --

    def run(self) -> TrainResult:
        self._check_folder()
        finished = self.folder / RESULT_FILE
        if self.resume and finished.is_file():
            return self._read_result()
        self._build()
        state = self._read_state()
        self._open_data()
        self.accelerator.wait_for_everyone()
        if self.main:
            write_atomic(self.folder / CONFIG_FILE, _yaml(self.config.to_dict()))
        self.history: list[dict] = state.get("history", [])
        self.best_epoch: int | None = state.get("best_epoch")
        self.global_step = state.get("global_step", 0)
        self.micro_batch = state.get("micro_batch")
        self.log = (
            StepLog(self.folder / "log.csv", state.get("global_step", 0)) if self.main else None
        )
        try:
            if not state and self.val is not None:
                self._finish_epoch(0, {"epoch": 0}, state)
            self._train(state)
            result = self._test() if self.main else None
        finally:
            if self.log:
                self.log.close()
        self.accelerator.wait_for_everyone()
        return result or self._read_result()

    def _check_folder(self) -> None:
        saved = self.folder / CONFIG_FILE
        if not self.resume and saved.exists():
            raise TrainError(
                f"{self.folder} holds a run ({saved.name}): pass --resume (resume=True) to "
                "continue it, or choose another --out"
            )
        if self.resume and saved.is_file():
            import yaml

            recorded = yaml.safe_load(saved.read_text(encoding="utf-8"))
            wanted = self.config.to_dict()
            differ = sorted(k for k in {*recorded, *wanted} if recorded.get(k) != wanted.get(k))
            if differ:
                raise TrainError(
                    f"{saved} differs from this run's config in {', '.join(differ)}: resume "
                    "with the run's own config (`nights train run --resume --out "
                    f"{self.folder}`), or start another run"
                )

    def _build(self) -> None:
        from accelerate.utils import set_seed

        from dreamsim import LoraSettings, trainable_parameters, training_model

        from .dropout import install_triplet_dropout

        config = self.config
        set_seed(config.seed)  # PEFT draws lora_A from the global generator
        model = training_model(
            config.variant,
            method=config.method,
            use_patch_model=config.use_patch_model,
            cache_dir=config.weights,
            pretrained=config.pretrained,
            lora=LoraSettings(
                config.lora_r,
                config.lora_alpha,
                config.lora_dropout,
                tuple(config.lora_target_modules),
            ),
            hidden_size=config.hidden_size,
            train_projection=config.train_projection,
            device="cpu",
            progress=self.progress,
        )
        self.dropout_keys = install_triplet_dropout(model)
        self.dreamsim = model
        self.trainable = trainable_parameters(model)
        optimizer = torch.optim.Adam(
            self.trainable.values(),
            lr=config.lr,
            betas=tuple(config.betas),
            weight_decay=config.weight_decay,
        )
        self.model, self.optimizer = self.accelerator.prepare(TripletDistances(model), optimizer)
        self.metric_name = f"dreamsim:{model.variant.name}"

    def _read_state(self) -> dict:

        path = self.folder / STATE_FILE
        if not (self.resume and path.is_file()):
            return {}
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file: pickle, zip or torch errors alike
            raise TrainError(
                f"{path}: unreadable ({type(error).__name__}); the epoch checkpoints are "
                "intact: start a new run from one (pretrained: true, weights: RUN/epoch_N)"
            ) from None
        missing = sorted(set(self.trainable) - set(state["trainable"]))
        if missing:
            raise TrainError(f"{path}: no saved value for {missing[0]}: not this run's state")
        with torch.no_grad():
            for name, parameter in self.trainable.items():
                parameter.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        return state

    def _open_data(self) -> None:
        size = self.dreamsim.input_size[-1]
        config = self.config
        self.train_table, train_where = open_rows("train", config.train, size, self.progress)
        self.data = {"train": f"{len(self.train_table)} triplets, {train_where}"}
        self.val = self.test = None
        for section in ("val", "test"):
            rows = getattr(config, section)
            if rows is not None:
                table, where = open_rows(section, rows, size, self.progress)
                setattr(self, section, table)
                self.data[section] = f"{len(table)} triplets, {where}"

    # -- training --

    def _train(self, state: dict) -> None:
        config = self.config
        first_epoch, first_step = state.get("epoch", 0), state.get("step", 0)
        for epoch in range(first_epoch, config.epochs):
            steps = epoch_steps(
                len(self.train_table), config.batch_size, self.world, config.seed, epoch
            )
            if not steps:
                raise TrainError(
                    f"train: {len(self.train_table)} triplet(s) make no step for "
                    f"{self.world} processes"
                )
            start = first_step if epoch == first_epoch else 0
            sums = state.get("sums", [0.0, 0.0, 0]) if epoch == first_epoch else [0.0, 0.0, 0]
            started = time.monotonic() - (state.get("seconds", 0.0) if epoch == first_epoch else 0)
            self._epoch(epoch, steps, start, sums, started)
            summary = {
                "epoch": epoch + 1,
                "train_loss": sums[0] / max(sums[2], 1),
                "train_2afc": sums[1] / max(sums[2], 1),
                "steps": len(steps),
            }
            self._finish_epoch(epoch + 1, summary, {}, time.monotonic() - started)

    def _epoch(self, epoch: int, steps, start: int, sums: list, started: float) -> None:
        from ..torch_data import to_torch

        config = self.config
        loader = to_torch(
            self.train_table,
            image_size=self.dreamsim.input_size[-1],
            num_workers=config.num_workers,
            device=self.accelerator.device,
            batch_sampler=LocalShares(steps, start, self.rank, self.world),
        )
        with progress_bar(
            total=len(steps),
            initial=start,
            progress=self.progress,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="step",
        ) as bar:
            for index, (ref, left, right, p, ids) in enumerate(loader, start):
                loss, agreement, count = self._step(
                    epoch, ref, left, right, p, ids, len(steps[index])
                )
                self.global_step += 1
                sums[0], sums[1], sums[2] = sums[0] + loss, sums[1] + agreement, sums[2] + count
                if self.main:
                    self.log.write(
                        {
                            "epoch": epoch + 1,
                            "step": self.global_step,
                            "epoch_step": index + 1,
                            "triplets": count,
                            "loss": loss / count,
                            "two_afc": agreement / count,
                            "lr": config.lr,
                            "micro_batch": self.micro_batch,
                            "seconds": round(time.monotonic() - started, 3),
                        }
                    )
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", two_afc=f"{sums[1] / sums[2]:.3f}")
                bar.update(1)
                if self.global_step % config.save_every == 0 and index + 1 < len(steps):
                    self._save_state(
                        epoch, index + 1, sums=sums, seconds=time.monotonic() - started
                    )

    def _step(self, epoch, ref, left, right, p, ids, step_size: int) -> tuple[float, float, int]:
        """One optimizer step over this process's share; returns the step's summed loss, 2AFC
        and triplet count over every process. Out of device memory, a single process halves
        its micro-batch and does the step again (the result does not change)."""

        while True:
            if self.micro_batch is None:
                self.micro_batch = max(1, math.ceil(len(ref) / self.config.gradient_accumulation))
            try:
                totals = self._micro_batches(epoch, ref, left, right, p, ids, step_size)
                break
            except RuntimeError as error:
                if not _out_of_memory(error):
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.world > 1 or self.micro_batch <= 1:
                    raise TrainError(
                        f"a micro-batch of {self.micro_batch} triplet(s) (batch_size "
                        f"{self.config.batch_size} over {self.world} process(es)) does not fit "
                        f"in the memory of {self.accelerator.device}: raise "
                        "--gradient-accumulation or lower --batch-size"
                    ) from None
                logger.warning(
                    "out of device memory at %d triplets per micro-batch; going on with %d "
                    "(the result does not change)",
                    self.micro_batch,
                    self.micro_batch // 2,
                )
                self.micro_batch //= 2
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals = self.accelerator.reduce(totals, reduction="sum")
        loss, agreement, count = totals.tolist()
        return loss, agreement, int(count)

    def _micro_batches(self, epoch, ref, left, right, p, ids, step_size: int):

        from ..audit.stats import two_afc
        from .dropout import image_keys

        config = self.config
        starts = range(0, len(ref), self.micro_batch)
        totals = torch.zeros(3, dtype=torch.float64, device=self.accelerator.device)
        for number, begin in enumerate(starts):
            part = slice(begin, begin + self.micro_batch)
            self.dropout_keys.current = image_keys(config.seed, epoch, ids[part].tolist())
            syncing = number == len(starts) - 1
            with contextlib.nullcontext() if syncing else self.accelerator.no_sync(self.model):
                d_left, d_right = self.model(ref[part], left[part], right[part])
                votes = p[part].to(d_left.device)
                losses = hinge_loss(d_left, d_right, votes, config.margin, config.labels)
                # DDP averages over processes: scaled so the gradient is the step's mean.
                self.accelerator.backward(losses.sum() * self.world / step_size)
            agreement = two_afc(
                d_left.detach().double().cpu().numpy(),
                d_right.detach().double().cpu().numpy(),
                votes.double().cpu().numpy(),
            )
            totals += torch.tensor(
                [float(losses.detach().sum()), float(agreement.sum()), len(losses)],
                dtype=torch.float64,
                device=totals.device,
            )
        return totals

    # -- checkpoints and evaluation --

    def _save_state(self, epoch: int, step: int, sums=None, seconds: float = 0.0) -> None:
        if not self.main:
            return

        state = {
            "epoch": epoch,
            "step": step,
            "global_step": self.global_step,
            "micro_batch": self.micro_batch,
            "sums": list(sums or [0.0, 0.0, 0]),
            "seconds": seconds,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "trainable": {k: v.detach().cpu().clone() for k, v in self.trainable.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler else None,
        }
        with atomic_path(self.folder / STATE_FILE) as temporary:
            torch.save(state, temporary)

    def _finish_epoch(self, epoch: int, summary: dict, state: dict, seconds: float = 0.0):
        """Saves ``RUN/epoch_N``, validates it, keeps the best, writes the records and the
        state that resumes after this epoch."""
        from dreamsim import save_pretrained

        self.accelerator.wait_for_everyone()
        if self.main:
            checkpoint = save_pretrained(self.dreamsim, self.folder / f"epoch_{epoch}")
            summary["val"] = (
                self._evaluate(self.val, checkpoint, f"epoch_{epoch}-val")
                if self.val is not None
                else None
            )
            summary["seconds"] = round(seconds, 3)
            self.history.append(summary)
            if self._is_best(summary):
                self.best_epoch = epoch
                save_pretrained(self.dreamsim, self.folder / "best")
            write_epochs(self.folder / "epochs.csv", self.history)
            self._write_report(None)
            self._save_state(epoch, 0)
        self.accelerator.wait_for_everyone()

    def _is_best(self, summary: dict) -> bool:
        if summary["val"] is None:
            return True  # no validation: the last epoch
        best = next((e for e in self.history if e["epoch"] == self.best_epoch), None)
        return best is None or summary["val"]["two_afc"] > best["val"]["two_afc"]

    def _evaluate(self, table, checkpoint: Path, name: str) -> dict:
        """The audit of ``table`` with the checkpoint, as ``nights audit`` computes it."""
        from ..audit import audit_frame, score_table, summarize, write_outputs
        from ..metrics import get_metric
        from ..score_cache import ScoreCache

        metric = get_metric(
            self.metric_name, device=str(self.accelerator.device), cache_dir=str(checkpoint)
        )
        cache_path = self.folder / f".scores-{name}.sqlite"
        cache = ScoreCache(cache_path)
        try:
            scores = score_table(
                table,
                [metric],
                cache=cache,
                batch_size=self.config.eval_batch_size,
                num_workers=self.config.num_workers,
                progress=self.progress,
            )
        finally:
            cache.close()
        audit = audit_frame(scores, table)
        summary = summarize(audit)
        summary["metrics"][metric.name]["checkpoint"] = str(checkpoint)
        write_outputs(self.folder / "audits" / name, audit, summary, table, report=False)
        for leftover in self.folder.glob(f".scores-{name}.sqlite*"):
            leftover.unlink()
        overall = summary["metrics"][metric.name]["overall"]
        return {k: overall[k] for k in ("two_afc", "ci95", "triplets")}

    def _test(self) -> TrainResult:
        test = None
        if self.test is not None:
            test = self._evaluate(self.test, self.folder / "best", "test")
        result = TrainResult(
            self.folder,
            self.folder / "best",
            self.best_epoch,
            self.history,
            test,
            self.config,
            self._paths(),
        )
        self._write_report(test)
        write_atomic(
            result.paths["result"],
            json.dumps(
                {
                    "best_epoch": result.best_epoch,
                    "epochs": result.epochs,
                    "test": test,
                    "data": self.data,
                },
                indent=2,
            ),
        )
        return result

    def _write_report(self, test: dict | None) -> None:
        write_report(
            self.folder / "report.html",
            self.config.to_dict(),
            self.history,
            self.folder / "log.csv",
            self.data,
            test,
            self.best_epoch,
        )

    def _paths(self) -> dict[str, Path]:
        return run_paths(self.folder)

    def _read_result(self) -> TrainResult:
        return read_result(self.folder, self.config)


def read_result(folder: str | Path, config: TrainConfig | None = None) -> TrainResult:
    """The :class:`TrainResult` of a finished run folder.

    Raises:
        TrainError: the folder holds no finished run.
    """
    import yaml

    folder = Path(folder)
    try:
        result = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
        if config is None:
            recorded = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            config = config_from_dict(recorded, str(folder / CONFIG_FILE))
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise TrainError(
            f"{folder}: no finished run ({type(error).__name__}: {error}); run "
            f"`nights train run --resume --out {folder}` to finish it"
        ) from None
    return TrainResult(
        folder,
        folder / "best",
        result["best_epoch"],
        result["epochs"],
        result["test"],
        config,
        run_paths(folder),
    )


def run_paths(folder: Path) -> dict[str, Path]:
    """The files a run writes, by kind."""
    names = {
        "config": CONFIG_FILE,
        "log": "log.csv",
        "epochs": "epochs.csv",
        "report": "report.html",
        "result": RESULT_FILE,
    }
    return {kind: folder / name for kind, name in names.items()}


def _yaml(values: dict) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
