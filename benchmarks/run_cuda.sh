#!/usr/bin/env bash
# GPU version (bf16 autocast, torch.compile): results in benchmarks/results/{compute,scaling}_cuda.*
# Not run yet: no GPU was available when these scripts were written.
set -euo pipefail
cd "$(dirname "$0")/.."
DARTOK="${DARTOK:-.venv/bin/dartok}"
"$DARTOK" bench compute --device cuda --compile --batch-size 256 --warmup 5 --repeats 20 --name compute_cuda
"$DARTOK" bench scaling --device cuda --compile --batch-size 256 --warmup 5 --repeats 10 --name scaling_cuda
