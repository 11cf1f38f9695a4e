"""What a training run does: :class:`TrainConfig`, read from YAML or TOML plus overrides.

The defaults are upstream's recipe (``configs/train_ensemble_model_lora.yaml`` and
``train_single_model_mlp.yaml``): hinge loss with margin 0.05 on ``d(ref, left) - d(ref,
right)`` against the rounded vote share, Adam with betas (0.5, 0.999), lr 3e-4, no weight
decay, seed 1234; LoRA r=16, alpha=8, dropout 0.3 on ``qkv`` with batch 16 for 6 epochs, or an
MLP head (hidden 512) on the frozen backbones with batch 512 for 20 epochs. ``epochs`` and
``batch_size`` left empty take the method's values; :meth:`TrainConfig.resolved` fills them in,
and the run saves that resolved config as ``config.yaml``.

A config file holds the same keys, the three row selections as sections::

    variant: dino_vitb16
    method: lora
    root: ~/data/nights            # the data of every section without a root of its own
    train: {root: ./new-campaign, split: all}
    val: {split: val}              # NIGHTS val (min_votes: origin, i.e. 6 for the release)
    lr: 3.0e-4

Example::

    >>> from nights.train import TrainConfig, load_config
    >>> path = scratch / "run.yaml"
    >>> _ = path.write_text("variant: test_tiny\\ntrain: {split: all, limit: 32}\\n")
    >>> config = load_config(path, ["epochs=2", "val.split=test"]).resolved()
    >>> config.variant, config.epochs, config.batch_size, config.train.split, config.val.split
    ('test_tiny', 2, 16, 'all', 'test')
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..schema import BY_ORIGIN, SPLITS

METHODS = ("lora", "mlp")
LABELS = ("hard", "soft")
MIXED_PRECISION = ("no", "bf16", "fp16")
#: What each method trains for, and on how many triplets per optimizer step (upstream's).
RECIPES = {"lora": {"epochs": 6, "batch_size": 16}, "mlp": {"epochs": 20, "batch_size": 512}}
ROW_SECTIONS = ("train", "val", "test")


@dataclass
class Rows:
    """Which triplets a section of the run uses.

    Attributes:
        split: ``train``, ``val``, ``test``, ``test_imagenet``, ``test_no_imagenet`` or ``all``.
        root: a NIGHTS folder, a split written by ``write_split`` / ``nights annotate
            aggregate --out`` (either format) or a Hub dataset id; None: the config's ``root``.
        min_votes: as :func:`nights.load_nights` (default ``origin``: upstream's 6 for the
            release, the recorded policy for a split written by nights).
        limit: the first ``limit`` triplets only (quick runs).
    """

    split: str
    root: str | None = None
    min_votes: int | str | None = BY_ORIGIN
    limit: int | None = None


@dataclass
class TrainConfig:
    """A training run (see the module's docstring for the recipe behind the defaults).

    Attributes:
        out: the run folder (checkpoints, logs, report).
        root: the data of every section that names no root of its own (default: the release
            in ``NIGHTS_HOME``, else the embedded synthetic sample).
        train / val / test: the rows trained on, validated on after every epoch (None: no
            validation; the last epoch is the best) and tested on at the end (None: no test).
            Each may also be a triplet table (``datasets.Dataset``) in code.
        variant / use_patch_model: the DreamSim variant (``dreamsim.VARIANTS``).
        method: ``lora`` (LoRA on every ``attn.qkv``) or ``mlp`` (an MLP head on the frozen
            backbones).
        weights: where the variant's files are (default ``$DREAMSIM_HOME``); untuned backbones
            missing there come from the Hugging Face Hub.
        pretrained: continue from the tuned weights in ``weights`` instead of the untuned
            backbones.
        lora_r / lora_alpha / lora_dropout / lora_target_modules: a fresh adapter's settings.
        hidden_size: a fresh MLP head's hidden width.
        train_projection: train the CLIP / OpenCLIP projection too (upstream does not).
        epochs / batch_size: None takes the method's recipe (:data:`RECIPES`); ``batch_size``
            counts the triplets of one optimizer step over all processes together.
        lr / betas / weight_decay: Adam's.
        margin: the hinge loss's margin.
        labels: ``hard`` (upstream: the vote share rounded to 0 or 1) or ``soft`` (the vote
            share itself: the target is ``2p - 1``, so a 50/50 triplet pulls nowhere and a
            7/3 one less than a unanimous one).
        seed: the model's initialisation, the order of the triplets, the dropout masks.
        mixed_precision: ``no``, ``bf16`` or ``fp16`` autocast (accelerate's).
        gradient_accumulation: micro-batches per optimizer step in each process (memory);
            the result does not depend on it.
        num_workers: DataLoader processes decoding images.
        save_every: optimizer steps between two resumable states (also at every epoch's end).
        device: ``cpu`` to train on the CPU where a GPU is present (default: accelerate's
            choice, the process's GPU when there is one).
        eval_batch_size: images per batch when validating (default: by the device).
    """

    out: str = "nights-train/run"
    root: str | None = None
    train: Rows | typing.Any = field(default_factory=lambda: Rows("train"))
    val: Rows | typing.Any | None = field(default_factory=lambda: Rows("val"))
    test: Rows | typing.Any | None = field(default_factory=lambda: Rows("test"))
    variant: str = "ensemble"
    use_patch_model: bool = False
    method: str = "lora"
    weights: str | None = None
    pretrained: bool = False
    lora_r: int = 16
    lora_alpha: float = 8.0
    lora_dropout: float = 0.3
    lora_target_modules: list[str] = field(default_factory=lambda: ["qkv"])
    hidden_size: int = 512
    train_projection: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    margin: float = 0.05
    labels: str = "hard"
    seed: int = 1234
    mixed_precision: str = "no"
    gradient_accumulation: int = 1
    num_workers: int = 2
    save_every: int = 100
    device: str | None = None
    eval_batch_size: int | None = None

    def resolved(self) -> TrainConfig:
        """A checked copy with the method's recipe filled in and each section's root.

        Raises:
            ConfigError: a value out of its range, named with the key.
        """
        config = dataclasses.replace(self)
        if config.method not in METHODS:
            raise ConfigError(f"method: {config.method!r} is not one of {', '.join(METHODS)}")
        recipe = RECIPES[config.method]
        config.epochs = recipe["epochs"] if config.epochs is None else config.epochs
        config.batch_size = recipe["batch_size"] if config.batch_size is None else config.batch_size
        for name in ROW_SECTIONS:
            rows = getattr(config, name)
            if isinstance(rows, dict):  # a run's record of a table given in code
                raise ConfigError(
                    f"{name}: {rows!r} records a table given in code, which a file cannot "
                    "hold; give split and root (or pass the table to train())"
                )
            if isinstance(rows, Rows):
                rows = dataclasses.replace(rows, root=rows.root or config.root)
                _check_rows(name, rows)
                setattr(config, name, rows)
        _check(config)
        return config

    def to_dict(self) -> dict:
        """The config as plain values (what ``config.yaml`` holds); a section given as a
        table is described by its provenance and row count."""
        values = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Rows):
                value = dataclasses.asdict(value)
            elif item.name in ROW_SECTIONS and value is not None:
                from ..table import table_meta

                value = {"table": table_meta(value), "rows": len(value)}
            values[item.name] = list(value) if isinstance(value, tuple) else value
        return values


def _check_rows(name: str, rows: Rows) -> None:
    if rows.split not in SPLITS:
        raise ConfigError(f"{name}.split: {rows.split!r} is not one of {', '.join(SPLITS)}")
    if isinstance(rows.min_votes, str) and rows.min_votes != BY_ORIGIN:
        raise ConfigError(f"{name}.min_votes: {rows.min_votes!r} is not a number or 'origin'")
    if rows.limit is not None and rows.limit < 1:
        raise ConfigError(f"{name}.limit: {rows.limit} is not a positive number of triplets")


def _check(config: TrainConfig) -> None:
    checks = {
        "labels": (config.labels in LABELS, f"one of {', '.join(LABELS)}"),
        "mixed_precision": (
            config.mixed_precision in MIXED_PRECISION,
            f"one of {', '.join(MIXED_PRECISION)}",
        ),
        "epochs": (config.epochs >= 1, "at least 1"),
        "batch_size": (config.batch_size >= 1, "at least 1"),
        "gradient_accumulation": (config.gradient_accumulation >= 1, "at least 1"),
        "save_every": (config.save_every >= 1, "at least 1"),
        "num_workers": (config.num_workers >= 0, "0 or more"),
        "lr": (config.lr > 0, "positive"),
        "weight_decay": (config.weight_decay >= 0, "0 or more"),
        "margin": (config.margin >= 0, "0 or more"),
        "lora_r": (config.lora_r >= 1, "at least 1"),
        "lora_dropout": (0 <= config.lora_dropout < 1, "from 0 up to (not including) 1"),
        "hidden_size": (config.hidden_size >= 1, "at least 1"),
        "betas": (
            len(config.betas) == 2 and all(0 <= b < 1 for b in config.betas),
            "two numbers from 0 up to (not including) 1",
        ),
        "eval_batch_size": (
            config.eval_batch_size is None or config.eval_batch_size >= 1,
            "at least 1",
        ),
    }
    for key, (fits, expected) in checks.items():
        if not fits:
            raise ConfigError(f"{key}: {getattr(config, key)!r} must be {expected}")


# -- reading --


def _field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _convert(where: str, value, kind):
    """``value`` as the type ``kind`` of a config field, or a ConfigError naming ``where``."""
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, _UnionType) else ()
    if options:
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(where, value, option)
            except ConfigError:
                continue
        names = ", ".join(_type_name(o) for o in options)
        raise ConfigError(f"{where}: {value!r} is not {names}")
    if kind is typing.Any:
        return value
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {value!r} is not a list")
        (item,) = typing.get_args(kind)
        return [_convert(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**1000:  # float() overflows; no setting is that large
            raise ConfigError(f"{where}: {value} is too large")
        return float(value)
    if kind is float and isinstance(value, str) and _is_number(value):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as text
    if kind in (int, float, str, bool) and type(value) is kind:
        return value
    raise ConfigError(f"{where}: {value!r} is not {_type_name(kind)}")


_UnionType = type(int | None)


def _type_name(kind) -> str:
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false"}.get(
        kind, "None" if kind is type(None) else getattr(kind, "__name__", str(kind))
    )


def _build(cls, values: dict, where: str, base):
    types = _field_types(cls)
    changes = {}
    for key, value in values.items():
        if key not in types:
            known = ", ".join(types)
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
        changes[key] = _convert(f"{where}.{key}", value, types[key])
    return dataclasses.replace(base, **changes)


def config_from_dict(values: dict, where: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from plain values (a parsed file); unknown keys and values of
    the wrong type are a ConfigError naming ``where`` and the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: not a mapping of keys to values")
    types = _field_types(TrainConfig)
    config = TrainConfig()
    for key, value in values.items():
        if key not in types:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(types)})")
        if key == "train" and value is None:
            raise ConfigError(f"{where}: train: the rows to train on cannot be null")
        if key in ROW_SECTIONS and isinstance(value, dict) and "table" in value:
            pass  # a table given in code, as to_dict() describes it: kept as that record
        elif key in ROW_SECTIONS and value is not None:
            base = getattr(config, key) or Rows(key)
            value = _build(Rows, _mapping(f"{where}: {key}", value), f"{where}: {key}", base)
        else:
            value = _convert(f"{where}: {key}", value, types[key])
        setattr(config, key, value)
    return config


def _mapping(where: str, value) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {value!r} is not a section (split, root, min_votes, limit)")
    return value


def read_config_file(path: str | os.PathLike) -> dict:
    """The values of a YAML (``.yaml``, ``.yml``) or TOML (``.toml``) file.

    Raises:
        ConfigError: another suffix, a file that cannot be read or parsed (line and column
            named where the parser gives them), or a top level that is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            reason = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"{path}: {place}not YAML ({reason})") from None
    elif path.suffix == ".toml":
        values = _read_toml(path, text)
    else:
        raise ConfigError(f"{path}: a config is a .yaml, .yml or .toml file")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level is not a mapping of keys to values")
    return values


def _read_toml(path: Path, text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not TOML ({error})") from None


def parse_overrides(overrides: list[str]) -> dict:
    """``KEY=VALUE`` items (``lr=1e-4``, ``train.split=all``, ``val=null``) as nested values;
    each VALUE is read as YAML (numbers, true/false, null, lists)."""
    import yaml

    values: dict = {}
    for item in overrides:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"override {item!r}: write it as KEY=VALUE (e.g. lr=1e-4)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        *sections, name = key.strip().split(".")
        target = values
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {section} is not a section")
        target[name] = value
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def merge_values(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied, sections merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | dict | None = None
) -> TrainConfig:
    """The config of ``path`` (YAML or TOML; None: the defaults) with ``overrides`` applied
    (``KEY=VALUE`` items, see :func:`parse_overrides`, or a dict of values).

    Raises:
        ConfigError: the file or an override is unusable; the message names the file or the
            override, the key and the value.
    """
    values = read_config_file(path) if path is not None else {}
    changes = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
    where = str(path) if path is not None else "config"
    return config_from_dict(merge_values(values, changes), where)
