"""``dartok demo``'s recipe at several seeds, for chosen rows (issue 11: 3 seeds per row).

Runs :func:`dartok.tools.compare.compare` on :func:`dartok.tools.compare.demo_preset` (the
demo's models, budget and training options) at ``--seeds``, optionally only some of its rows
(``--rows dart``: e.g. to re-measure the learned DART row after a scorer change while the grid
and oracle rows, whose code did not change, keep their earlier results), and writes
``benchmarks/results/<name>.{json,md}`` with compare's mean [min, max] table.

    python benchmarks/demo_seeds.py --seeds 0 1 2 --rows dart --jobs 3 --name demo_cam_dart
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.tools.compare import compare, demo_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=["grid", "dart", "oracle"])
    ap.add_argument("--num-tokens", type=int, default=36)
    ap.add_argument("--dart-kwargs", default="{}", help="JSON model kwargs for the DART rows")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--output", default="runs/demo_seeds")
    ap.add_argument("--name", default="demo_seeds")
    args = ap.parse_args()
    preset = demo_preset(args.num_tokens, json.loads(args.dart_kwargs))
    specs = [s for s in preset["specs"] if s.name in args.rows]
    if not specs:
        raise SystemExit(f"Error: --rows must name some of {[s.name for s in preset['specs']]}")
    out = compare(None, args.output, args.name, specs=specs, train=preset["train"], jobs=args.jobs,
                  snapshot_epochs=(), count_macs=False, seeds=args.seeds,
                  results_dir=Path(__file__).resolve().parent / "results")
    print(out["markdown"])
    for row in out["seed_rows"]:
        print(row["name"], row.get("seed"), f"top-1 {row['test_top1']:.2f}",
              f"object mass {row.get('test_object_mass', float('nan')):.3f}")


if __name__ == "__main__":
    main()
