"""Issue 11 item 6: which_moves with the motion prior at several shares β, beside the preset's rows.

``dartok compare --preset cpu-video-which --image-first`` trains the image run, the grid, DART
(``motion_prior=1``) and the oracle. This script trains the same DART row at other shares β of the
motion map (``VideoDART(motion_prior=β)``, docs/method.md §6), from the same image run and with the
preset's recipe, then writes one table of every row:

    dartok compare --preset cpu-video-which --image-first --seeds 0 -o runs/which
    python benchmarks/which_moves_motion.py --preset-output runs/which --betas 0 0.5 --seeds 0

``--link NAME=DIR`` adds a finished run from elsewhere under NAME (e.g. a β run trained earlier,
``"dart 16x2 motion1.0=runs/x/dart 16x2 motion1.0"``; its options must be the row's). Writes
``benchmarks/results/<name>.{json,md}`` and ``<name>_localization.png``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.tools.compare import (PRESETS, RunSpec, aggregate_seeds, collect, compare, plot_localization,
                                  publish_results, seed_run_dir, write_tables)
from dartok.train.checkpoint import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset-output", required=True, help="the -o of the cpu-video-which compare run")
    ap.add_argument("--betas", type=float, nargs="*", default=[0.0, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--output", default=None, help="where the β runs train (default: <preset-output>/motion)")
    ap.add_argument("--link", nargs="*", default=[], help="NAME=DIR of finished runs to add as rows")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--name", default="cpu-video-which_motion")
    args = ap.parse_args()
    entry = PRESETS["cpu-video-which"]
    preset_dir = Path(args.preset_output) / "cpu-video-which"
    grid, dart, oracle = entry["specs"]
    base = {k: v for k, v in dart.model_kwargs.items() if k != "motion_prior"}
    specs = [RunSpec(f"{dart.name} motion{b:g}", dart.model, dart.num_tokens, {**base, "motion_prior": b})
             for b in args.betas]
    out = Path(args.output or preset_dir.parent / "motion")
    train = {**entry["train"], "init_from": str(preset_dir / entry["image"]["spec"].name / "checkpoint")}
    if specs:
        compare(None, out, args.name, specs=specs, train=train, jobs=args.jobs, seeds=args.seeds,
                snapshot_epochs=(), count_macs=False, results_dir=None)
    # one folder of every row: links to the preset's runs, the β runs and the --link runs
    table = out / "table"
    table.mkdir(parents=True, exist_ok=True)
    linked = dict(item.partition("=")[::2] for item in args.link)  # NAME -> DIR
    rows_from = {s.name: preset_dir / s.name for s in (grid, dart, oracle)}
    rows_from.update({s.name: out / s.name for s in specs})
    rows_from.update({name: Path(path) for name, path in linked.items()})
    seeds = args.seeds if len(args.seeds) > 1 else None

    def row_spec(name: str) -> RunSpec:  # the preset's or a β run's spec; a linked run's as it trained
        if name not in linked:
            return {s.name: s for s in (grid, *specs, dart, oracle)}[name]
        cfg = load_config(seed_run_dir(table, name, args.seeds[0], seeds) / "checkpoint")
        return RunSpec(name, cfg["model"], dart.num_tokens, dict(cfg["train"].get("model_kwargs") or {}))

    own = (grid.name, dart.name, oracle.name)
    order = [grid.name, *(n for n in rows_from if n not in own), dart.name, oracle.name]  # the β rows, then the preset's
    for name, src in rows_from.items():
        link = table / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(src.resolve(), link)
    seed_rows = collect([row_spec(n) for n in order], table, count_macs=True, seeds=seeds)
    rows = aggregate_seeds(seed_rows)
    md = write_tables(rows, table / args.name, {"preset": "cpu-video-which", "betas": args.betas,
                                                "seeds": args.seeds, "train": train, "rows_from":
                                                {k: str(v) for k, v in rows_from.items()}},
                      seed_rows=seed_rows if seeds else None)
    plot_localization(rows, table / f"{args.name}_localization.png", title=args.name)
    publish_results(table, Path(__file__).resolve().parent / "results", args.name)
    print(md)


if __name__ == "__main__":
    main()
