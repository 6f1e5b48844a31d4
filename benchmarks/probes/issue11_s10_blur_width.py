"""Probe (issue 11, session 10): the from-scratch recipe with a wider pdf blur (5x5, 7x7), seed 0, N = 36, short recipe.

    python benchmarks/probes/issue11_s10_blur_width.py   # writes /tmp/blur/blur.{json,md}
"""
import sys
from pathlib import Path
import dartok  # noqa
from dartok.tools.compare import compare, RunSpec, scratch_scorer, SCRATCH_TRAIN
specs = [RunSpec(f"dart@36 blur{k}", "dart_vit_micro_patch8", 36, {"scorer": {**scratch_scorer(128), "pdf_blur": k}})
         for k in (5, 7)]
train = dict(canvas_size=128, epochs=5, train_samples=8000, test_samples=2000, batch_size=64, lr=1e-3, warmup_epochs=1,
             seed=0, **SCRATCH_TRAIN)
out = compare(None, Path("/tmp/blur/runs"), "blur", specs=specs, train=train, jobs=2, snapshot_epochs=(), count_macs=False,
              results_dir=Path("/tmp/blur"))
print(out["markdown"])
