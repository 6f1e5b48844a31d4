"""Probe (issue 11, session 11): the from-scratch recipe with one scorer option changed, N = 36, short recipe.

    python benchmarks/probes/issue11_s11_scorer_variants.py align '{"align": {"align_cells": true}}' 0,1
    # writes /tmp/s11/<tag>/<tag>.{json,md}

Pretraining as in session 10 (4 epochs at 3e-3), so that the rows compare with the table's
4-epoch rows at the same seeds. Results (2026-12-02, 2-core VM, two jobs):
- ``align_cells=True``: 57.75 / 57.75 % at seeds 0 / 1 (object mass 0.69 / 0.71), against 55.15 /
  55.55 (0.65 / 0.67) without.
- ``align_cells=True`` and the pdf replaced by the uniform density on the box of the cells
  >= 0.2 x max connected to the peak (an option ``pdf_box`` that was then removed): 52.80 / 51.10
  (object mass 0.70 / 0.71).
- ``activation="box"`` (the moment box): 37.65 at epoch 2 (the default: 45.70), object mass 0.52; stopped.
Output: ``issue11_s11_scorer_variants_output.md``.
"""
import sys, json
from pathlib import Path
import dartok  # noqa
from dartok.tools.compare import compare, RunSpec, scratch_scorer, SCRATCH_TRAIN
tag = sys.argv[1]
variants = json.loads(sys.argv[2])  # name -> scorer overrides
seeds = [int(v) for v in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 36
data = sys.argv[5] if len(sys.argv) > 5 else "{}"
specs = [RunSpec(f"dart@{n} {k}", "dart_vit_micro_patch8", n, {"scorer": {**scratch_scorer(128), "align_cells": False, **v}})
         for k, v in variants.items()]
train = dict(canvas_size=128, epochs=5, train_samples=8000, test_samples=2000, batch_size=64, lr=1e-3, warmup_epochs=1,
             **{**SCRATCH_TRAIN, "scorer_pretrain_epochs": 4}, **json.loads(data))
out = compare(None, Path(f"/tmp/s11/{tag}/runs"), tag, specs=specs, train=train, jobs=2, seeds=seeds, snapshot_epochs=(), count_macs=False,
              results_dir=Path(f"/tmp/s11/{tag}"))
print(out["markdown"])
