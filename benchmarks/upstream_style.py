"""What the benchmarks measure against: upstream's way of reading NIGHTS (imported by them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from dreamsim import preprocess


class TwoAFCDataset(torch.utils.data.Dataset):
    """Upstream's 2AFC dataset: CSV rows, each item's three images opened and resized on read.

    Items: ``(ref, left, right, right_vote, id)``; the first ``limit`` rows when given.
    """

    def __init__(self, root: Path, limit: int | None = None):
        self.frame = pd.read_csv(root / "data.csv").iloc[:limit]
        self.root = root

    def __len__(self):
        return len(self.frame)

    def __getitem__(self, index):
        row = self.frame.iloc[index]
        # dreamsim.preprocess is upstream's Resize((224, 224), BICUBIC) + ToTensor
        load = lambda p: preprocess(Image.open(self.root / p))[0]  # noqa: E731
        return (
            load(row["ref_path"]),
            load(row["left_path"]),
            load(row["right_path"]),
            float(row["right_vote"]),
            int(row["id"]),
        )
