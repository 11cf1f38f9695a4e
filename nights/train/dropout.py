"""LoRA dropout whose masks are drawn per triplet from the seed, not per process.

PEFT's LoRA layers apply ``nn.Dropout`` to their input: its masks come from each process's
random stream, so two processes that share a batch draw other masks than one process with the
whole batch, and a resumed run other masks than an uninterrupted one. Here every image of a
batch carries a key (seed, epoch, triplet id, role: reference, left or right) and each layer
draws that image's mask from a generator seeded with its key and the layer's salt: the same
triplet gets the same mask whatever the batch it sits in, the process it runs on, the
micro-batch size or a restart (on one kind of device: CPU and CUDA generators differ). Drop
rate and scaling are ``nn.Dropout``'s; the cost is that of ``torch.rand`` (one generator
reseeded per image).

Example::

    >>> import torch
    >>> from nights.train.dropout import image_keys, keep_mask
    >>> keys = image_keys(seed=1234, epoch=0, triplet_ids=[7, 9])
    >>> len(keys)  # reference, left, right of each triplet
    6
    >>> mask = keep_mask(keys, salt=0, shape=(4, 8), keep=0.7, device="cpu")
    >>> torch.equal(mask[1], keep_mask(keys[1:2], 0, (4, 8), 0.7, device="cpu")[0])
    True
"""

from __future__ import annotations

import torch
from torch import nn

_MASK64 = (1 << 64) - 1


def _mix(value: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of ``value``."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def image_keys(seed: int, epoch: int, triplet_ids) -> list[int]:
    """The keys of the images ``cat([refs, lefts, rights])`` of a batch of triplets."""
    base = _mix(_mix(seed) ^ epoch)
    ids = [int(i) for i in triplet_ids]
    return [_mix(base ^ _mix(i) ^ role) for role in (1, 2, 3) for i in ids]


def keep_mask(
    keys: list[int],
    salt: int,
    shape: tuple[int, ...],
    keep: float,
    device: str | torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean masks ``[len(keys), *shape]`` on ``device``: each element kept with probability
    ``keep``, drawn from the image's key and the layer's ``salt``."""
    generator = generator or torch.Generator(device=device)
    draws = torch.empty(len(keys), *shape, device=device)
    for row, key in zip(draws, keys):
        generator.manual_seed(_mix(key ^ _mix(salt)) >> 1)  # seeds are below 2**63
        row.uniform_(generator=generator)
    return draws < keep


class DropoutKeys:
    """The keys of the images in the forward pass under way, shared by every dropout layer."""

    def __init__(self):
        self.current: list[int] | None = None


class TripletDropout(nn.Module):
    """``nn.Dropout(p)`` with masks from :class:`DropoutKeys` (see the module's docstring)."""

    def __init__(self, p: float, salt: int, keys: DropoutKeys):
        super().__init__()
        self.p, self.salt, self.keys = p, salt, keys
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keys = self.keys.current
        if keys is None or len(keys) != len(x):
            raise RuntimeError("TripletDropout needs the keys of the batch's images")
        generator = self._generators.setdefault(x.device, torch.Generator(device=x.device))
        mask = keep_mask(keys, self.salt, tuple(x.shape[1:]), 1 - self.p, x.device, generator)
        return x * mask.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, salt={self.salt}"


def install_triplet_dropout(model: nn.Module) -> DropoutKeys:
    """Replaces the dropout of every PEFT LoRA layer of ``model`` by :class:`TripletDropout`
    (one salt per layer, in module order); returns the keys object to set before a forward."""
    keys = DropoutKeys()
    salt = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            p = dropout.p if isinstance(dropout, nn.Dropout) else 0.0
            dropouts[name] = TripletDropout(p, salt, keys)
            salt += 1
    return keys
