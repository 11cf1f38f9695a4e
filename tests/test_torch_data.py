"""Batches of (ref, left, right, p, id) for PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from nights import load_nights  # noqa: E402
from nights.torch_data import TripletDataset, to_torch  # noqa: E402


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_are_model_ready(sample_home, cache_dir, num_workers):
    table = load_nights("test", root=sample_home, cache_dir=cache_dir)
    loader = to_torch(table, batch_size=8, image_size=24, num_workers=num_workers)
    batches = list(loader)
    ref, left, right, p, ids = batches[0]
    assert ref.shape == left.shape == right.shape == (8, 3, 24, 24)
    assert ref.dtype == torch.float32 and ref.min() >= 0.0 and ref.max() <= 1.0
    assert p.dtype == torch.float32 and ids.dtype == torch.int64
    assert torch.cat([b[4] for b in batches]).tolist() == table["id"]
    assert torch.cat([b[3] for b in batches]).tolist() == table["right_vote"]
    expected = Image.open(sample_home / "nights" / table[0]["right_path"]).convert("RGB")
    expected = np.asarray(expected.resize((24, 24), Image.Resampling.BICUBIC))
    assert np.array_equal((right[0] * 255).round().byte().permute(1, 2, 0).numpy(), expected)


def test_pre_resized_table_is_only_decoded(sample_home, cache_dir):
    table = load_nights("val", root=sample_home, image_size=16, images="bytes", cache_dir=cache_dir)
    ref, *_ = next(iter(to_torch(table, batch_size=4, image_size=16)))
    stored = np.asarray(table[0]["ref"])
    assert np.array_equal((ref[0] * 255).round().byte().permute(1, 2, 0).numpy(), stored)


def test_table_without_votes_is_refused(sample_home, cache_dir):
    table = load_nights("val", root=sample_home, cache_dir=cache_dir).remove_columns("right_vote")
    with pytest.raises(ValueError, match="lacks column"):
        TripletDataset(table)
