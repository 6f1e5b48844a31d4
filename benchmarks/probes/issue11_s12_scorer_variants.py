"""Probe (issue 11, session 12): the from-scratch recipe with one scorer option changed, N = 36, short recipe.

    python benchmarks/probes/issue11_s12_scorer_variants.py peak '{"peak": {"activation": "peak"}}' 0,1
    # writes /tmp/s12/<tag>/<tag>.{json,md}

The session-11 recipe (``scratch_scorer()`` with ``align_cells``, 8 pretraining epochs), ``cpu-36``'s
training options shortened as ``benchmarks/preset_short.py`` does (5 epochs, 8 000 images), so the
rows compare with the session-11 table's DART rows at the same seeds (58.10 / 55.90 at seeds 0 / 1).
Results (2026-12-02, 2-core VM, two jobs beside two video runs):
- ``activation="peak"`` (``pdf ∝ sigmoid(20·(u − ½))`` on the peak-relative score
  ``u = (z − min z)/(max z − min z)``: about uniform on the cells above half the peak; code in
  ``benchmarks/patches/issue11_s12_peak_activation.patch``, removed from the library; ``git apply`` it to re-run): 56.50 / 57.60
  (object mass 0.65 / 0.66). Level with the softmax (mean 57.05 against 57.00).
Output: ``issue11_s12_scorer_variants_output.md``.
"""
import sys, json
from pathlib import Path
import dartok  # noqa
from dartok.tools.compare import PRESETS, compare, RunSpec, scratch_scorer
tag = sys.argv[1]
variants = json.loads(sys.argv[2])  # name -> scorer overrides
seeds = [int(v) for v in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 36
data = sys.argv[5] if len(sys.argv) > 5 else "{}"
specs = [RunSpec(f"dart@{n} {k}", "dart_vit_micro_patch8", n, {"scorer": {**scratch_scorer(128), **v}})
         for k, v in variants.items()]
train = {**PRESETS["cpu-36"]["train"], "epochs": 5, "train_samples": 8000, **json.loads(data)}  # preset_short's
out = compare(None, Path(f"/tmp/s12/{tag}/runs"), tag, specs=specs, train=train, jobs=2, seeds=seeds, snapshot_epochs=(), count_macs=False,
              results_dir=Path(f"/tmp/s12/{tag}"))
print(out["markdown"])
