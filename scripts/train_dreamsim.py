#!/usr/bin/env python
"""Fine-tune DreamSim: the same as `nights train run ...` (see --help).

With no arguments it trains the ensemble with upstream's recipe on the release's train split in
$NIGHTS_HOME (validated on val, tested on test). Runs unchanged under
`torchrun --nproc_per_node N scripts/train_dreamsim.py ...` and
`accelerate launch --multi_gpu --num_processes N scripts/train_dreamsim.py ...`.
"""

import sys

from nights.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "run", *sys.argv[1:]]))
