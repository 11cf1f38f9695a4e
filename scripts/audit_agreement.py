#!/usr/bin/env python
"""Score NIGHTS triplets and report agreement with the humans: `nights audit` (see --help).

With no arguments it audits the test split of the release in $NIGHTS_HOME, or the embedded
synthetic sample when there is none, with DreamSim when its weights are present, else with
PSNR and SSIM. Works under `torchrun --nproc_per_node N scripts/audit_agreement.py ...` and
`accelerate launch --multi_gpu --num_processes N scripts/audit_agreement.py ...`.
"""

import sys

from nights.cli import main

if __name__ == "__main__":
    sys.exit(main(["audit", *sys.argv[1:]]))
