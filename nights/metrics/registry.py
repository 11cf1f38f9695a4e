"""Metrics by name: the ``--metric`` spec, the built-in names and the plugins.

A spec is one of:

* ``psnr``, ``ssim``, ``ms_ssim``;
* ``dreamsim[:VARIANT]`` (default ``ensemble``) and ``baseline:VARIANT`` (the untuned backbone);
* ``hf:MODEL_ID_OR_FOLDER[:pooled|cls|mean]`` (see :mod:`nights.metrics.huggingface`);
* ``NAME[:ARGUMENT]``, a plugin: an entry point ``NAME`` of the ``nights.metrics`` group,
  declared by an installed distribution in its ``pyproject.toml``::

      [project.entry-points."nights.metrics"]
      lpips = "my_package.metrics:lpips"

  The entry point names a metric (a :class:`~nights.metrics.PairMetric` or
  :class:`~nights.metrics.EmbeddingMetric`, e.g. made by :func:`~nights.metrics.pair_metric`),
  or a function called as ``factory(argument, device=device)`` (``argument``: what follows the
  first ``:`` in the spec, else None) that returns one. Built-in names come first.

Every failure (an unknown name, a plugin that does not import or returns something else, a
model that cannot be loaded) is one :class:`~nights.errors.MetricError` line naming the spec,
and for a plugin the distribution that registered it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from ..errors import MetricError
from .base import EmbeddingMetric, Metric, PairMetric, check_declared
from .builtin import PAIR_METRICS, ImageQualityMetric, load_dreamsim
from .huggingface import POOLINGS, load_hf_metric

ENTRY_POINTS = "nights.metrics"
BUILT_IN = (*PAIR_METRICS, "dreamsim", "baseline", "hf")
SPEC_FORMS = (
    f"{', '.join(PAIR_METRICS)}, dreamsim[:VARIANT], baseline:VARIANT, "
    f"hf:MODEL_ID_OR_FOLDER[:{'|'.join(POOLINGS)}] or an installed plugin"
)


@dataclass(frozen=True)
class MetricSpec:
    """A parsed ``--metric`` value.

    Attributes:
        family: ``psnr``, ``ssim``, ``ms_ssim``, ``dreamsim``, ``baseline``, ``hf`` or a
            plugin's entry-point name.
        argument: the DreamSim variant, the Hugging Face model, the plugin's argument (None
            when absent).
        pooling: for ``hf``: ``pooled``, ``cls`` or ``mean``.
    """

    family: str
    argument: str | None = None
    pooling: str | None = None

    @property
    def is_plugin(self) -> bool:
        return self.family not in BUILT_IN


def _dreamsim_variants() -> tuple[str, ...]:
    from dreamsim.variants import VARIANTS

    return tuple(VARIANTS)


def parse_metric_spec(text: str) -> MetricSpec:
    """The parts of a ``--metric`` value, checked as far as can be without loading anything.

    Raises:
        MetricError: an empty spec, control characters, a built-in name with a wrong
            argument (a DreamSim variant that does not exist, an ``hf:`` spec without a
            model), in one line.

    Example::

        >>> from nights.metrics import parse_metric_spec
        >>> parse_metric_spec("hf:facebook/dinov2-small:cls")
        MetricSpec(family='hf', argument='facebook/dinov2-small', pooling='cls')
        >>> parse_metric_spec("dreamsim")
        MetricSpec(family='dreamsim', argument='ensemble', pooling=None)
    """
    if not isinstance(text, str) or not text.strip():
        raise MetricError(f"a metric spec must name a metric ({SPEC_FORMS}), not {text!r}")
    if not text.isprintable() or text != text.strip():
        raise MetricError(f"metric {text!r}: no spaces around it, no control characters")
    family, colon, argument = text.partition(":")
    if family in PAIR_METRICS:
        if colon:
            raise MetricError(f"metric {text!r}: {family} takes no argument")
        return MetricSpec(family)
    if family in ("dreamsim", "baseline"):
        if family == "baseline" and not argument:
            raise MetricError(f"metric {text!r}: name the backbone, baseline:VARIANT")
        variant = argument or "ensemble"
        if variant not in _dreamsim_variants():
            raise MetricError(
                f"metric {text!r}: unknown DreamSim variant {variant!r} (one of "
                f"{', '.join(_dreamsim_variants())})"
            )
        return MetricSpec(family, variant)
    if family == "hf":
        model, _, pooling = argument.rpartition(":")
        if pooling not in POOLINGS:
            model, pooling = argument, "pooled"
        if not model:
            raise MetricError(f"metric {text!r}: name the model, hf:MODEL_ID_OR_FOLDER")
        return MetricSpec("hf", model, pooling)
    if not family:
        raise MetricError(f"metric {text!r}: the name before ':' is empty")
    return MetricSpec(family, argument if colon else None)


def metric_plugins() -> dict[str, list[EntryPoint]]:
    """The installed plugins: entry points of the ``nights.metrics`` group, by name."""
    plugins: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=ENTRY_POINTS):
        plugins.setdefault(entry.name, []).append(entry)
    return plugins


def _registered_by(entry: EntryPoint) -> str:
    dist = entry.dist
    where = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"registered by {where} as {entry.value}"


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:400]


def _load_plugin(spec: MetricSpec, text: str, device) -> Metric:
    plugins = metric_plugins()
    if spec.family not in plugins:
        installed = ", ".join(sorted(plugins)) or "none installed"
        raise MetricError(
            f"unknown metric {text!r}: use one of {SPEC_FORMS} (plugins: {installed})"
        )
    entries = plugins[spec.family]
    if len(entries) > 1:
        raise MetricError(
            f"metric {spec.family!r} is registered twice ("
            + "; ".join(_registered_by(entry) for entry in entries)
            + "): uninstall one"
        )
    entry = entries[0]
    try:
        target = entry.load()
        metric = target if _is_metric(target) else target(spec.argument, device=device)
    except MetricError:
        raise
    except Exception as error:  # a plugin's code can raise anything: each is one line here
        raise MetricError(
            f"metric plugin {spec.family!r} ({_registered_by(entry)}) failed: "
            f"{_one_line(error)}; reinstall or uninstall it"
        ) from None
    if _is_metric(target) and spec.argument is not None:
        raise MetricError(f"metric {text!r}: plugin {spec.family!r} takes no argument")
    if not _is_metric(metric):
        raise MetricError(
            f"metric plugin {spec.family!r} ({_registered_by(entry)}) gave "
            f"{type(metric).__name__}, not a nights metric (PairMetric or EmbeddingMetric)"
        )
    return metric


def _is_metric(value) -> bool:
    return isinstance(value, (PairMetric, EmbeddingMetric))


def get_metric(
    name: str,
    device: str | None = None,
    dtype=None,
    cache_dir: str | None = None,
    precision: str | None = None,
    backend: str = "torch",
) -> Metric:
    """The metric a spec names (see :mod:`nights.metrics.registry` for the forms).

    Args:
        name: the spec, as given to ``--metric``.
        device: where a model runs (default: the best there is).
        dtype: autocast dtype for DreamSim, on CPU or GPU (None: float32).
        cache_dir: where DreamSim's weights are (default ``$DREAMSIM_HOME``).
        precision: DreamSim's precision, ``fp32`` (default), ``bf16``, ``fp16`` or ``int8``
            (see :func:`~nights.metrics.builtin.load_dreamsim`); other metrics ignore it.
        backend: DreamSim's, ``torch`` (default) or ``onnxruntime``.

    Raises:
        MetricError: the spec names nothing, or what it names fails to load (one line).
        ValueError: an unknown precision or backend.
    """
    spec = parse_metric_spec(name)
    if spec.family in PAIR_METRICS:
        return ImageQualityMetric(spec.family)
    if spec.family == "hf":
        return load_hf_metric(spec.argument, spec.pooling, device=device)
    if spec.is_plugin:
        return _load_plugin(spec, name, device)
    from dreamsim.errors import DreamSimError

    try:
        return load_dreamsim(
            spec.family, spec.argument, device, dtype, cache_dir, precision, backend
        )
    except DreamSimError as error:
        raise MetricError(f"metric {name!r}: {' '.join(str(error).split())}") from None


def as_metric(
    metric, device: str | None = None, dtype=None, precision: str | None = None, backend="torch"
) -> Metric:
    """``metric`` itself when it is a metric; the metric it names when it is a spec (the
    other arguments: see :func:`get_metric`).

    Raises:
        MetricError: a spec that names nothing, a bare function (wrap it with
            :func:`~nights.metrics.pair_metric` or :func:`~nights.metrics.embedding_metric`:
            it needs a name and an input size), anything else.
    """
    if isinstance(metric, str):
        metric = get_metric(
            metric, device=device, dtype=dtype, precision=precision, backend=backend
        )
    if _is_metric(metric):
        check_declared(
            getattr(metric, "name", None),
            getattr(metric, "input_size", None),
            getattr(metric, "cache_id", ""),
        )
        return metric
    if callable(metric):
        raise MetricError(
            f"{getattr(metric, '__name__', type(metric).__name__)} is a function: wrap it "
            "with nights.metrics.pair_metric(f, name=..., input_size=...) for f(a, b) -> [B] "
            "or nights.metrics.embedding_metric(g, name=..., input_size=...) for g(x) -> [B, D]"
        )
    raise MetricError(
        f"{type(metric).__name__} is not a metric: give a name ({SPEC_FORMS}), a PairMetric "
        "or an EmbeddingMetric"
    )
