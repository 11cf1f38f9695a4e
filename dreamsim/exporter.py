"""DreamSim outside eager torch: an ONNX graph for ONNX Runtime, or one merged weights file.

Both hold the LoRA adapter merged into the qkv weights (``W += scaling * B @ A``), so neither
needs PEFT nor the release's several files.

The ONNX graph (``format="onnx"``):

* input ``images``: float32 ``[B, 3, 224, 224]`` in [0, 1] (``preprocess`` gives them), B
  dynamic; each backbone's mean/std normalisation is inside the graph;
* output ``embedding``: ``[B, D]`` (``[B, T, D]`` tokens for the patch variants), centred and
  L2-normalised when the model normalises embeddings (``normalize_embeds=True``, the default);
* the distance is ``1 - cosine(e_a, e_b)``; for the patch variants each side is first the
  concatenation of the CLS token and the mean of the patch tokens (:func:`embedding_distance`);
* ``metadata_props`` name the variant, ``normalize_embeds``, the weights and the precision
  (``dreamsim_*``), which :class:`OnnxDreamSim` reads back.

``precision="int8"`` quantizes the graph's MatMul/Gemm weights with ONNX Runtime's dynamic
quantization (int8 per channel, activations quantized per batch).

The merged weights (``format="safetensors"``): the model's whole state dict in one file with
``dreamsim_*`` metadata; ``dreamsim.load_merged(path)`` (or
``dreamsim(cache_dir="file.safetensors")``) builds the same model from it, same distances.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, DreamSimError
from .model import MERGED_FORMAT, DreamSim, embedding_distance
from .precision import resolve_precision
from .variants import VARIANTS
from .weights import default_cache_dir

FORMATS = ("onnx", "safetensors")
# Bumped when the graph written for the same weights changes (a new exporter setting, op):
# ONNX Runtime caches key on it.
GRAPH_VERSION = "1"
_INSTALL = "install them with: pip install 'nights[onnx]'"


def _require(module: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DreamSimError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed; {_INSTALL}"
        ) from None


def _merged_fp32(model: nn.Module) -> DreamSim:
    """A plain fp32 :class:`DreamSim` with the LoRA merged: PEFT layers merged on a copy,
    compiled backbones unwrapped."""
    if hasattr(model, "merge_and_unload"):  # PEFT layers (dreamsim(merge=False))
        model = copy.deepcopy(model).merge_and_unload()
    if not isinstance(model, DreamSim):
        raise DreamSimError(f"export takes a DreamSim model, not a {type(model).__name__}")
    if model.precision != "fp32":
        raise DreamSimError(
            f"export writes fp32 weights, and this model runs at {model.precision}: export the "
            f"fp32 model (precision='int8' quantizes the ONNX graph)"
        )
    compiled = [b for b in model.extractor_list if hasattr(b.model, "_orig_mod")]
    if compiled:
        model = copy.copy(model)
        model.extractor_list = nn.ModuleList(copy.copy(b) for b in model.extractor_list)
        for branch in model.extractor_list:
            branch.model = getattr(branch.model, "_orig_mod", branch.model)
    return model


def _metadata(model: DreamSim, precision: str) -> dict[str, str]:
    return {
        "dreamsim_variant": model.variant.name,
        "dreamsim_normalize_embeds": str(bool(model.normalize_embeds)).lower(),
        "dreamsim_weights_id": model.weights_id,
        "dreamsim_precision": precision,
    }


@contextlib.contextmanager
def _atomic_target(path: Path):
    """A temporary path beside ``path``, renamed onto it when the block succeeds; the file gets
    the permissions of a file created plainly (mkstemp's are the owner's alone)."""
    if not path.name or path.is_dir():
        raise DreamSimError(f"cannot write {path}: it is a folder; name the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
    except OSError as error:
        raise DreamSimError(
            f"cannot write {path} ({error.strerror or error}); choose a writable folder"
        ) from None
    try:
        yield Path(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except DreamSimError:
        raise
    except OSError as error:  # a full disk, a folder created at path meanwhile
        raise DreamSimError(f"cannot write {path} ({error.strerror or error})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


class _EmbeddingGraph(nn.Module):
    def __init__(self, model: DreamSim):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


@contextlib.contextmanager
def _quiet_exporter():
    """torch's exporter logs the torchvision ops it cannot register (we use none) and
    forwards internal deprecation warnings; neither concerns the user."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        registration.setLevel(level)


def _write_onnx(model: DreamSim, target: Path, precision: str, opset: int | None) -> None:
    _require("onnxscript", "ONNX export")
    batch = torch.export.Dim("batch", min=1)
    example = torch.rand(2, *model.input_size, device=model.device)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                _EmbeddingGraph(model).eval(),
                (example,),
                None,
                input_names=["images"],
                output_names=["embedding"],
                dynamic_shapes={"images": {0: batch}},
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    except Exception as error:  # the exporter raises its own kinds, with long reports
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise DreamSimError(f"ONNX export of {model.variant.name} failed: {reason}") from None
    program.model.metadata_props.update(_metadata(model, precision))
    if precision == "fp32":
        program.save(target, external_data=False)
        return
    quantization = _require("onnxruntime.quantization", "int8 ONNX graphs")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fp32, prepared = Path(scratch) / "fp32.onnx", Path(scratch) / "prepared.onnx"
        program.save(fp32, external_data=False)
        # the recommended preparation (shape inference); it also spares ORT's warning about it
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantization.quantize_dynamic(
            prepared,
            target,
            weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
        )


def _write_safetensors(model: DreamSim, target: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"dreamsim_format": MERGED_FORMAT, **_metadata(model, "fp32")}
    save_file(state, str(target), metadata=metadata)


def export(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "onnx",
    *,
    precision: str = "fp32",
    opset: int | None = None,
) -> Path:
    """Writes ``model`` with its LoRA merged as an ONNX graph or one safetensors file.

    Args:
        model: a fp32 :class:`~dreamsim.DreamSim` (LoRA merged or PEFT layers; compiled or not).
        path: the file to write (its folder is created); replaced atomically when complete.
        format: ``onnx`` (needs ``onnx``, ``onnxscript``; ``nights[onnx]``) or ``safetensors``.
        precision: ``fp32``, or ``int8`` for an ONNX graph whose linear layers ONNX Runtime
            quantizes (needs ``onnxruntime``).
        opset: the ONNX opset (default: the exporter's).

    Returns:
        ``path``.

    Example::

        >>> model, _ = dreamsim(dreamsim_type="dino_vitb16", device="cpu")  # doctest: +SKIP
        >>> export(model, "dino.onnx")                                   # doctest: +SKIP
        >>> OnnxDreamSim("dino.onnx").embed(images)                      # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    precision = resolve_precision(precision=precision)
    if precision not in ("fp32", "int8") or (precision == "int8" and format != "onnx"):
        raise ValueError(
            f"export writes fp32 weights, or int8 ONNX graphs; not {precision} {format}"
        )
    if format == "onnx":
        _require("onnx", "ONNX export")
    path = Path(path)
    plain = _merged_fp32(model)
    with _atomic_target(path) as target:
        if format == "onnx":
            _write_onnx(plain, target, precision, opset)
        else:
            _write_safetensors(plain, target)
    return path


class OnnxDreamSim:
    """DreamSim on ONNX Runtime (CPU), with :class:`~dreamsim.DreamSim`'s interface:
    ``embed(images)``, ``model(a, b)``, ``distance_from_embeddings``, ``precision``,
    ``weights_id``, ``normalize_embeds``, ``is_patch``, ``variant`` and ``device``.

    Inputs are ``[B, 3, 224, 224]`` float images in [0, 1] (torch tensors on any device, or
    numpy arrays); embeddings and distances come back as float32 CPU tensors.

    Args:
        path: a graph written by :func:`export`.
        threads: ONNX Runtime's intra-op threads (default: its own choice, one per core).

    Example::

        >>> runtime = OnnxDreamSim(export(model, "dino.onnx"))           # doctest: +SKIP
        >>> runtime(preprocess(img_a), preprocess(img_b))                # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        ort = _require("onnxruntime", "the ONNX Runtime backend")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such file; write it with dreamsim.export")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ORT's own Fail / InvalidProtobuf / InvalidGraph
            reason = str(error).strip().splitlines()[0]
            raise CheckpointError(f"{self.path}: not a readable ONNX graph ({reason})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if metadata.get("dreamsim_variant") not in VARIANTS:
            raise CheckpointError(
                f"{self.path}: not a DreamSim graph (no known dreamsim_variant in its "
                f"metadata); write one with dreamsim.export(model, path)"
            )
        self.variant = VARIANTS[metadata["dreamsim_variant"]]
        self.is_patch = self.variant.is_patch
        self.normalize_embeds = metadata.get("dreamsim_normalize_embeds") == "true"
        self.precision = metadata.get("dreamsim_precision", "fp32")
        suffix = "" if self.precision == "fp32" else f"-{self.precision}"
        self.weights_id = f"{metadata.get('dreamsim_weights_id', '')}-onnxruntime{suffix}"
        self.device = torch.device("cpu")

    def embed(self, images) -> torch.Tensor:
        """``[B, D]`` embeddings (``[B, T, D]`` tokens for the patch variants)."""
        if isinstance(images, torch.Tensor):
            images = images.detach().float().cpu().numpy()
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or tuple(images.shape[1:]) != self.variant.input_size:
            raise ValueError(
                f"images must be [B, {', '.join(map(str, self.variant.input_size))}], "
                f"not {list(images.shape)}"
            )
        output = self.session.run(["embedding"], {"images": images.astype("float32")})[0]
        return torch.from_numpy(output)

    def distance_from_embeddings(
        self, embed_a: torch.Tensor, embed_b: torch.Tensor
    ) -> torch.Tensor:
        """``1 - cos`` of two embeddings (patch variants: concat of CLS and mean patch)."""
        return embedding_distance(embed_a, embed_b, self.is_patch)

    def __call__(self, images_a, images_b) -> torch.Tensor:
        return self.distance_from_embeddings(self.embed(images_a), self.embed(images_b))

    def __repr__(self) -> str:
        return f"OnnxDreamSim({self.variant.name}, {self.precision}, {self.path})"


def onnxruntime_model(
    model: DreamSim,
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    *,
    threads: int | None = None,
) -> OnnxDreamSim:
    """``model`` on ONNX Runtime, its graph exported once and cached by weights and precision.

    Args:
        model: a fp32 DreamSim (as :func:`~dreamsim.dreamsim` builds it: its ``weights_id``,
            the sha256 of its files, keys the cache).
        precision: ``fp32`` or ``int8``.
        cache_dir: where graphs are kept (default ``$DREAMSIM_HOME/onnx``).
        threads: ONNX Runtime's intra-op threads.

    Returns:
        An :class:`OnnxDreamSim`.

    Example::

        >>> model, _ = dreamsim(device="cpu")                           # doctest: +SKIP
        >>> fast = onnxruntime_model(model, "int8")                     # doctest: +SKIP
    """
    plain = _merged_fp32(model)
    if not plain.weights_id:
        raise DreamSimError(
            "the model has no weights_id to key the cache (build it with dreamsim()); or "
            "call export() and OnnxDreamSim() yourself"
        )
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "onnx"
    name = (
        f"{plain.variant.name}-{plain.weights_id}-norm{int(plain.normalize_embeds)}"
        f"-{precision}-g{GRAPH_VERSION}.onnx"
    )
    path = folder / name
    if not path.is_file():
        export(plain, path, precision=precision)
    return OnnxDreamSim(path, threads=threads)
