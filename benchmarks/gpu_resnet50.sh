#!/usr/bin/env bash
# ResNet50 (random weights: timing only) on a CUDA GPU, batches 32 and 64, Opti-CAM against the floor L,
# with the engineering variants. Writes benchmarks/results/bench-resnet50-gpu.json (its H100 run is in
# docs/speed.md, section 5). PYTHON picks the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-.venv/bin/python}" -m opticam bench --model resnet50 --random-weights --random-images --device cuda \
    --batches 32 64 --iterations 100 --repeats 3 \
    --variants default channels_last bfloat16 float16 compile \
    --json benchmarks/results/bench-resnet50-gpu.json
