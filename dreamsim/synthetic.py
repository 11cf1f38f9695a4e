"""Random untuned weights of the ``test_tiny`` variant, for examples, demos and fast tests.

``test_tiny`` is a ViT of width 64, depth 2, two heads, patch 16 at 224 px: it builds in
milliseconds and trains on a CPU. Nothing in these weights was learned.
"""

from __future__ import annotations

import os
from pathlib import Path

WIDTH, DEPTH, HEADS, PATCH, IMAGE_SIZE = 64, 2, 2, 16, 224


def write_tiny_weights(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Writes ``test_tiny_pretrain.pth`` (a plain state dict, as the release stores DINOv2)
    into ``folder``; the same seed gives the same weights.

    Args:
        folder: where to write (created if needed).
        seed: the random generator's seed.

    Returns:
        ``folder``, ready for ``dreamsim(pretrained=False, cache_dir=folder,
        dreamsim_type="test_tiny")`` or :func:`dreamsim.training_model`.

    Example::

        >>> import tempfile, torch
        >>> from dreamsim import dreamsim, write_tiny_weights
        >>> folder = write_tiny_weights(tempfile.mkdtemp())
        >>> model, preprocess = dreamsim(pretrained=False, cache_dir=folder,
        ...                              dreamsim_type="test_tiny", device="cpu")
        >>> model.embed(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 64])
    """
    import torch
    from torch import nn

    from .backbones import VisionTransformer
    from .variants import VARIANTS
    from .weights import atomic_write

    vit = VisionTransformer(
        dim=WIDTH,
        depth=DEPTH,
        heads=HEADS,
        patch=PATCH,
        grid=IMAGE_SIZE // PATCH,
        hidden=4 * WIDTH,
        eps=1e-6,
        act=nn.GELU,
        layer_scale=False,
        pre_norm=False,
        bias=True,
    )
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in vit.state_dict().items():
        noise = torch.randn(tensor.shape, generator=generator)
        if "norm" in name and name.endswith(".weight"):
            state[name] = 1 + 0.1 * noise
        else:
            state[name] = noise * (0.5 if name in ("cls_token", "pos_embed") else 0.05)
    folder = Path(folder)
    target = folder / VARIANTS["test_tiny"].backbones[0].checkpoint
    atomic_write(target, lambda path: torch.save(state, path))
    return folder
