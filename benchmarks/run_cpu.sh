#!/usr/bin/env bash
# CPU compute benchmarks behind benchmarks/results/{macs,compute_cpu,scaling_cpu}.{json,md}.
# Usage: bash benchmarks/run_cpu.sh [THREADS]   (default: all cores; best on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-$(nproc)}"
DARTOK="${DARTOK:-.venv/bin/dartok}"
# params and GMACs against the paper's Table 1/2 (no timing)
"$DARTOK" bench macs --name macs --models 'deit_tiny_patch16_224,dart_deit_tiny_patch16_224,deit_small_patch16_224,dart_deit_small_patch16_224,dart_deit_small_patch16_224[num_tokens=392],deit_small_patch16_224[img_size=384]'
# DeiT-Ti vs DART-DeiT-Ti (and DART without its scorer, the bound): img/s at batch 64, batch-1 latency, stages
"$DARTOK" bench compute --threads "$THREADS" --batch-size 64 --warmup 2 --repeats 5 --name compute_cpu \
    --models 'deit_tiny_patch16_224,dart_deit_tiny_patch16_224,dart_deit_tiny_patch16_224[scorer=none]'
# DART-DeiT-Ti vs input side (196 tokens) and DART vs fixed grid vs token budget
"$DARTOK" bench scaling --threads "$THREADS" --batch-size 32 --warmup 1 --repeats 5 --name scaling_cpu
