#!/usr/bin/env bash
# CPU compute benchmarks behind benchmarks/results/{macs,compute_cpu,scaling_cpu}.{json,md}.
# Usage: bash benchmarks/run_cpu.sh [THREADS]   (default: all cores; best on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-$(nproc)}"
DARTOK="${DARTOK:-.venv/bin/dartok}"
# glibc malloc serves blocks > 32 MB with fresh mmap'd pages, so every forward pass page-faults its large
# activations again (tens of ms per call on a small VM, and varying from process to process). Keep freed
# memory in the heap instead, as jemalloc/tcmalloc would: faster for every model, and repeatable.
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_-0}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_-100000000000}"
# params and GMACs against the paper's Table 1/2 (no timing)
"$DARTOK" bench macs --name macs --models 'deit_tiny_patch16_224,dart_deit_tiny_patch16_224,deit_small_patch16_224,dart_deit_small_patch16_224,dart_deit_small_patch16_224[num_tokens=392],deit_small_patch16_224[img_size=384]'
# DeiT-Ti vs DART-DeiT-Ti (and DART without its scorer, the bound): img/s at batch 64, batch-1 latency, stages
"$DARTOK" bench compute --threads "$THREADS" --batch-size 64 --warmup 2 --repeats 10 --name compute_cpu \
    --models 'deit_tiny_patch16_224,dart_deit_tiny_patch16_224,dart_deit_tiny_patch16_224[scorer=none]'
# DART-DeiT-Ti vs input side (196 tokens) and DART vs fixed grid vs token budget
"$DARTOK" bench scaling --threads "$THREADS" --batch-size 32 --warmup 1 --repeats 7 --name scaling_cpu
# the resolution sweep again with glibc's default allocator (page faults on every large activation)
env -u MALLOC_MMAP_MAX_ -u MALLOC_TRIM_THRESHOLD_ "$DARTOK" bench scaling --threads "$THREADS" --batch-size 32 \
    --warmup 1 --repeats 7 --resolutions 448,896 --budgets "" --name scaling_cpu_default_malloc
# the DART / DeiT-Ti ratio over 5 fresh processes, with this allocator and with glibc's default
"${PYTHON:-.venv/bin/python}" benchmarks/ratio_runs.py --processes 5 --threads "$THREADS" --name ratio_cpu
env -u MALLOC_MMAP_MAX_ -u MALLOC_TRIM_THRESHOLD_ "${PYTHON:-.venv/bin/python}" benchmarks/ratio_runs.py --processes 5 \
    --threads "$THREADS" --name ratio_cpu_default_malloc
