#!/usr/bin/env bash
# The device checks, prepared for a session that is lent a GPU (not yet run on one: no machine
# was lent when it was written). One command, ~8 minutes on an H100/H200:
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=560)
# The device's python3 has a CUDA torch, peft, transformers, torchmetrics and onnxruntime;
# `pip show` below lists what else is there. Whatever it lacks (datasets, safetensors, ...) must
# travel as wheels in a carried folder (see the device tool's README), installed with
# `pip install --no-index --find-links wheels/ ...` before the checks.
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv
  python3 -m pip show torch datasets safetensors huggingface_hub peft accelerate pyarrow \
    pandas filelock transformers torchmetrics onnxruntime 2>&1 | grep -E "^(Name|Version)"
} | tee "$OUT/environment.txt"
# The gpu-marked tests: CUDA against CPU (DreamSim, the audit, the leaderboard, metrics),
# bf16/fp16 training steps and a whole run, the exported model in bf16.
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.txt"
# Training: the ensemble in fp32 against bf16 autocast, triplets/s and peak GPU memory.
timeout 150 python3 benchmarks/bench_train.py --device cuda --variant ensemble --triplets 64 \
  2>&1 | tee "$OUT/bench-train.txt"
# Scoring: images/s of each variant at fp32, bf16 and bf16 + torch.compile, against upstream-style.
timeout 120 python3 benchmarks/bench_dreamsim.py --device cuda --batches 64,256 --images 512 \
  2>&1 | tee "$OUT/bench-dreamsim.txt"
