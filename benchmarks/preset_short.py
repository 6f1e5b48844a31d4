"""Some rows of ``dartok compare`` presets on a shorter recipe: a first look at a preset's data.

Runs the named rows of each preset (default: grid@36, dart@36, oracle@36) with the preset's
data and recipe but fewer epochs and images (default 5 epochs, 8 000 training images), and
writes ``benchmarks/results/<preset>_short.{json,md}`` (compare's tables, with the localisation
columns and plot). Not the preset's numbers: those need ``dartok compare --preset <preset>``.

    python benchmarks/preset_short.py cpu-small-36 cpu-clutter-36 [--seeds 0] [--epochs 5]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.tools.compare import PRESETS, compare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--runs", nargs="+", default=["grid@36", "dart@36", "oracle@36"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--output", default="runs/preset_short")
    args = ap.parse_args()
    for preset in args.presets:
        if preset not in PRESETS:
            raise SystemExit(f"Error: unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        specs = [s for s in PRESETS[preset]["specs"] if s.name in args.runs]
        if not specs:
            raise SystemExit(f"Error: preset {preset!r} has none of the runs {args.runs}")
        train = {**PRESETS[preset]["train"], "epochs": args.epochs, "train_samples": args.train_samples}
        out = compare(None, Path(args.output) / preset, f"{preset}_short", specs=specs, train=train, jobs=args.jobs,
                      seeds=args.seeds, snapshot_epochs=(), count_macs=False,
                      results_dir=Path(__file__).resolve().parent / "results")
        print(out["markdown"])


if __name__ == "__main__":
    main()
