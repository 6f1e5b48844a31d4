"""Some rows of ``dartok compare`` presets on a shorter recipe: a first look at a preset's data.

Runs the named rows of each preset (default: grid@36, dart@36, oracle@36) with the preset's
data and recipe but fewer epochs and images (default 5 epochs, 8 000 training images), and
writes ``benchmarks/results/<preset>_short.{json,md}`` (compare's tables, with the localisation
columns and plot). Not the preset's numbers: those need ``dartok compare --preset <preset>``.

    python benchmarks/preset_short.py cpu-small-36 cpu-clutter-36 [--seeds 0] [--epochs 5]

``--dart-kwargs JSON`` adds model kwargs to every DART row (the row's own win; ``{"scorer":
"scratch"}`` stands for :func:`dartok.tools.compare.scratch_scorer` at the preset's canvas size),
``--train JSON`` overrides training options (e.g. ``{"scorer_pretrain_epochs": 4}``), and ``--suffix``
names the result files ``<preset>_short<suffix>``. ``--merge`` trains the named rows of all the given
presets in one comparison (one pool of ``--jobs`` workers, one result file named after the first
preset), which needs the presets to share their training options: e.g. ``cpu cpu-36 --runs dart@16
dart@36 --merge`` keeps both cores busy through 3 seeds.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.tools.compare import PRESETS, compare, scratch_scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--runs", nargs="+", default=["grid@36", "dart@36", "oracle@36"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--output", default="runs/preset_short")
    ap.add_argument("--dart-kwargs", default="{}", help="JSON: model kwargs added to every DART row")
    ap.add_argument("--train", default="{}", help="JSON: training options over the preset's")
    ap.add_argument("--suffix", default="")
    ap.add_argument("--merge", action="store_true", help="one comparison over all the presets' rows")
    args = ap.parse_args()
    groups = []  # (result stem, runs, training options)
    for preset in args.presets:
        if preset not in PRESETS:
            raise SystemExit(f"Error: unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        specs = [s for s in PRESETS[preset]["specs"] if s.name in args.runs]
        if not specs and not args.merge:
            raise SystemExit(f"Error: preset {preset!r} has none of the runs {args.runs}")
        groups.append((preset, specs, PRESETS[preset]["train"]))
    if args.merge:
        if any(g[2] != groups[0][2] for g in groups):
            raise SystemExit(f"Error: --merge needs presets with the same training options; {args.presets} differ")
        groups = [(groups[0][0], [s for g in groups for s in g[1]], groups[0][2])]
        if not groups[0][1]:
            raise SystemExit(f"Error: the presets have none of the runs {args.runs}")
    for preset, specs, preset_train in groups:
        train = {**preset_train, "epochs": args.epochs, "train_samples": args.train_samples,
                 **json.loads(args.train)}
        dart_kwargs = json.loads(args.dart_kwargs)
        if dart_kwargs.get("scorer") == "scratch":
            dart_kwargs["scorer"] = scratch_scorer(int(train.get("canvas_size", 128)))
        out = compare(None, Path(args.output) / f"{preset}{args.suffix}", f"{preset}_short{args.suffix}",
                      specs=specs, train=train, jobs=args.jobs, dart_kwargs=dart_kwargs or None,
                      seeds=args.seeds, snapshot_epochs=(), count_macs=False,
                      results_dir=Path(__file__).resolve().parent / "results")
        print(out["markdown"])


if __name__ == "__main__":
    main()
