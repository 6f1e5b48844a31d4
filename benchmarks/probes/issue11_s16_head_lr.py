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
import sys
from pathlib import Path

from issue11_s17_head_lr_presets import head_lr_run  # the same run on any preset (session 17)

lr_scale = float(sys.argv[1])
seeds = [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else [2]
tag = f"cpu-36_full_head_lr{lr_scale:g}".replace(".", "p")  # the file names of the committed output
head_lr_run("cpu-36", "dart@36", lr_scale, seeds, 2, Path("runs/s16/head_lr"), tag)
