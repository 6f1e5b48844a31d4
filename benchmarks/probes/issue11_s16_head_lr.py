"""Probe (issue 11, session 16): does the learned map drift because the scorer's head keeps learning?

    python benchmarks/probes/issue11_s16_head_lr.py 0.1 0,2
    # DART@36 on the cpu-36 preset's full recipe, the scorer (head, contrast, CAM head: the trunk
    # is frozen after its pretraining) at 0.1x the model's learning rate; seeds 0 and 2.
    # Runs in runs/s16/head_lr/, tables in runs/s16/head_lr/ (not benchmarks/results: a probe).

In the committed ``cpu-36_full_3seeds`` run (session 15) seed 2's object mass fell from 0.65 after
epoch 1 to 0.44 at epoch 3 and ended at 0.54, while seeds 0 and 1 held 0.72 / 0.75 throughout.
The trunk is frozen by then, so what moved is the head on top of it. If a slower head keeps the
map where pretraining left it, the drift is the head's learning rate; if top-1 also holds, a
smaller ``lr_scale`` is a candidate default (to be run at 3 seeds on every preset before adopting).

Result (2026-12-03, the 2-core Intel Xeon VM, two jobs, library code of 701e987): at 0.1x the map stays where
pretraining left it (object mass 0.671 -> 0.678 at seed 0, 0.631 -> 0.631 at seed 2, no fall) and
top-1 ends at 69.00 / 69.05 (the default: 68.55 / 68.25, mass 0.72 / 0.54). The drift is the head's
learning rate; what it costs in top-1 is within the seed spread. Output: ``issue11_s16_head_lr_output.md``.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

import dartok  # noqa: F401
from dartok.tools.compare import PRESETS, compare

lr_scale = float(sys.argv[1])
seeds = [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else [2]
tag = f"cpu-36_full_head_lr{lr_scale:g}".replace(".", "p")  # no dot: it would read as a suffix
out_dir = Path("runs/s16/head_lr")
base = next(s for s in PRESETS["cpu-36"]["specs"] if s.name == "dart@36")  # the preset's own DART row
spec = replace(base, name=f"dart@36 lr_scale={lr_scale:g}",
               model_kwargs={**base.model_kwargs, "scorer": {**base.model_kwargs["scorer"], "lr_scale": lr_scale}})
out = compare("cpu-36", out_dir, tag, specs=[spec], jobs=2, seeds=seeds, count_macs=False)  # writes out_dir/<tag>.*
print(out["markdown"])
for row in out["seed_rows"]:
    print(json.dumps({k: row.get(k) for k in ("name", "seed", "test_top1", "top1_by_epoch")}
                     | {"object_mass_by_epoch": [round(m, 3) for m in row.get("object_mass_by_epoch") or []]}))
