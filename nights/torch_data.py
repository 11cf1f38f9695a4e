"""Batches of decoded triplets for PyTorch: ``(ref, left, right, p, id)``.

``ref``, ``left`` and ``right`` are float tensors ``[B, 3, S, S]`` in [0, 1] (what DreamSim's
model takes), ``p`` is ``right_vote`` (the fraction of people who chose the right image, float32)
and ``id`` the triplet ids (int64). Images already at size ``S`` (a table built with
``image_size=S``) are only decoded; others are resized as DreamSim preprocesses them. A table of
raw pixels (``images="pixels"``) is not decoded at all: a batch is gathered from numpy views of
its memory-mapped Arrow buffers.

Example::

    >>> from nights import load_nights
    >>> from nights.torch_data import to_torch
    >>> loader = to_torch(load_nights("test", root=sample_root, image_size=224), batch_size=8)
    >>> ref, left, right, p, ids = next(iter(loader))
    >>> tuple(ref.shape), ref.dtype, p.dtype, ids.dtype
    ((8, 3, 224, 224), torch.float32, torch.float32, torch.int64)
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from . import pixels
from .images import channels_first, open_rgb, resize_like_dreamsim

_COLUMNS = ("ref", "left", "right", "right_vote", "id")
_IMAGES = ("ref", "left", "right")


def _to_tensor(storage: dict, size: int) -> torch.Tensor:
    image = resize_like_dreamsim(open_rgb(storage["bytes"] or storage["path"]), size)
    return channels_first(image)


def _pixel_tensors(column, name: str, ids: list, size: int) -> list[torch.Tensor]:
    """uint8 ``[3, S, S]`` views of one gathered batch of raw pixels (resized only when the
    table's side is not ``size``)."""
    batch = pixels.to_numpy(column, name, ids)
    if batch.shape[1] != size:
        batch = np.stack([resize_like_dreamsim(Image.fromarray(image), size) for image in batch])
    return list(channels_first(batch))  # one copy, of a view of the memory-mapped file


class TripletDataset(torch.utils.data.Dataset):
    """A map-style torch dataset over a triplet table; fetches whole batches in one Arrow read."""

    def __init__(self, table, image_size: int = 224):
        missing = [name for name in _COLUMNS if name not in table.column_names]
        if missing:
            raise ValueError(f"the table lacks column(s) {', '.join(missing)}")
        self.table = table.select_columns(list(_COLUMNS)).with_format("arrow")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.table)

    def __getitems__(self, indices: list[int]) -> list[tuple]:
        batch = self.table[indices]  # Arrow slices of the memory-mapped table: nothing read yet
        votes, ids = batch.column("right_vote").to_pylist(), batch.column("id").to_pylist()
        images = [
            _pixel_tensors(batch.column(name), name, ids, self.image_size)
            if pixels.is_pixel_column(batch.schema.field(name).type)
            else [_to_tensor(s, self.image_size) for s in batch.column(name).to_pylist()]
            for name in _IMAGES
        ]
        return list(zip(*images, votes, ids))

    def __getitem__(self, index: int) -> tuple:
        return self.__getitems__([index])[0]


def collate_triplets(batch: list[tuple]) -> tuple[torch.Tensor, ...]:
    """Stacks ``(ref, left, right, p, id)`` items, images kept as uint8 ``[B, 3, S, S]``.

    Images cross from DataLoader workers to the main process as uint8: four times fewer bytes
    through shared memory than float; :class:`TripletLoader` converts them where they are used.
    """
    refs, lefts, rights, ps, ids = zip(*batch)
    images = [torch.stack(group) for group in (refs, lefts, rights)]
    return (*images, torch.tensor(ps, dtype=torch.float32), torch.tensor(ids, dtype=torch.int64))


class TripletLoader:
    """Iterates a ``DataLoader`` of uint8 batches and yields float images in [0, 1].

    With ``device`` set, the uint8 batch moves to the device first and is converted there.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, device: str | torch.device | None):
        self.loader = loader
        self.device = torch.device(device) if device is not None else None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for *images, p, ids in self.loader:
            if self.device is not None:
                images = [image.to(self.device, non_blocking=True) for image in images]
            yield (*(image.float().div_(255) for image in images), p, ids)


def to_torch(
    table,
    batch_size: int = 32,
    image_size: int = 224,
    *,
    num_workers: int = 0,
    shuffle: bool = False,
    device: str | torch.device | None = None,
    **loader_kwargs,
) -> TripletLoader:
    """Batches ``(ref, left, right, p, id)`` over a triplet table, images float in [0, 1].

    ``loader_kwargs`` go to ``torch.utils.data.DataLoader`` (``pin_memory``,
    ``persistent_workers``, ``sampler`` ...); ``.loader`` is that DataLoader. With a
    ``batch_sampler`` (lists of row indices), it makes the batches: ``batch_size`` and
    ``shuffle`` are not used.
    """
    batching = (
        {} if "batch_sampler" in loader_kwargs else {"batch_size": batch_size, "shuffle": shuffle}
    )
    loader = torch.utils.data.DataLoader(
        TripletDataset(table, image_size),
        num_workers=num_workers,
        collate_fn=collate_triplets,
        **batching,
        **loader_kwargs,
    )
    return TripletLoader(loader, device)
