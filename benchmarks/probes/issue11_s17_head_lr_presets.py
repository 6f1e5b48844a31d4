"""Probe (issue 11, session 17): the scorer head's learning rate (``lr_scale``) on any preset, at 3 seeds.

    python benchmarks/probes/issue11_s17_head_lr_presets.py cpu dart@16 0.1 0,1,2
    python benchmarks/probes/issue11_s17_head_lr_presets.py cpu-clutter dart@16 0.1 0,1,2
    python benchmarks/probes/issue11_s17_head_lr_presets.py cpu-36 dart@36 0.1 1
    python benchmarks/probes/issue11_s17_head_lr_presets.py cpu dart@16 3 0,1,2 3
    # <preset> <its DART row> <lr_scale> <seeds> [<jobs>, default 2]: the preset's own DART row (full recipe) with the
    # scorer (head, contrast, CAM head; the trunk is frozen after pretraining) at lr_scale x the
    # model's learning rate. Runs and tables in runs/s17/head_lr/<preset>/ (a probe: not
    # benchmarks/results). The grid and oracle rows it is read against are the committed
    # ``<preset>_full_3seeds`` runs at the same seeds (same recipe; the oracle has no learned head).

Session 16 (``issue11_s16_head_lr.py``) found on cpu-36 at seeds 0 and 2 that 0.1x keeps the map
where pretraining left it (no drift) at level top-1. Before it becomes the default it must hold at
3 seeds on ``cpu``, ``cpu-clutter`` and ``cpu-36``.

Result (2026-12-03, the 2-core Intel Xeon VM, library code of 91ceee0; output
``issue11_s17_head_lr_presets_output.md``): at 0.1 ``cpu`` loses 2.2 points on the mean (65.80 against
67.98: the learning head carries the map further onto the object, the slow one holds it), ``cpu-clutter``
and ``cpu-36`` are level; not adopted. At 3 on ``cpu``: 68.60 (+0.6, within the seed spread).
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

import dartok  # noqa: F401
from dartok.tools.compare import PRESETS, compare, select_runs


def head_lr_run(preset: str, row: str, lr_scale: float, seeds: list[int], jobs: int, out_dir: Path, tag: str) -> dict:
    """Train ``preset``'s own DART row ``row`` with its scorer at ``lr_scale``; print and return compare's output."""
    base = select_runs(PRESETS[preset]["specs"], [row])[0]  # the preset's own DART row (a clear error if unknown)
    spec = replace(base, name=f"{row} lr_scale={lr_scale:g}",
                   model_kwargs={**base.model_kwargs, "scorer": {**base.model_kwargs["scorer"], "lr_scale": lr_scale}})
    out = compare(preset, out_dir, tag, specs=[spec], jobs=jobs, seeds=seeds, count_macs=False)  # out_dir/<tag>.*
    print(out["markdown"])
    for r in out["seed_rows"]:
        print(json.dumps({k: r.get(k) for k in ("name", "seed", "test_top1", "top1_by_epoch")}
                         | {"object_mass_by_epoch": [round(m, 3) for m in r.get("object_mass_by_epoch") or []]}))
    return out


if __name__ == "__main__":
    preset, row, lr_scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
    seeds = [int(v) for v in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1, 2]
    jobs = int(sys.argv[5]) if len(sys.argv) > 5 else 2  # runs at once, one thread each (the numbers do not depend on it)
    # the file names of the committed output: dotless ("lr0p1"), as session 16's
    tag = f"{preset}_full_head_lr{lr_scale:g}_seeds{''.join(map(str, seeds))}".replace(".", "p")
    head_lr_run(preset, row, lr_scale, seeds, jobs, Path("runs/s17/head_lr") / preset, tag)
