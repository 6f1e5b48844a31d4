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
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.tools.compare import PRESETS, RunSpec, compare, seed_run_dir
from merge_seed_runs import merged_table


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
    # one table of every row (merge_seed_runs: recipes checked per row, linked, collected)
    linked = dict(item.partition("=")[::2] for item in args.link)  # NAME -> DIR
    seeds = args.seeds if len(args.seeds) > 1 else None
    rows_from = {s.name: preset_dir for s in (grid, dart, oracle)}
    rows_from.update({s.name: out for s in specs})
    own = (grid.name, dart.name, oracle.name)
    order = [grid.name, *(n for n in (*rows_from, *linked) if n not in own), dart.name, oracle.name]  # β rows, then the preset's
    rows = {}
    for name in dict.fromkeys(order):
        if name in linked:  # a finished run from elsewhere, laid out as a comparison of these seeds
            rows[name] = {k: seed_run_dir(Path(linked[name]).parent, Path(linked[name]).name, k, seeds)
                          for k in args.seeds}
        else:
            rows[name] = {k: seed_run_dir(rows_from[name], name, k, seeds) for k in args.seeds}
    print(merged_table(rows, out / "table", args.name, {"preset": "cpu-video-which", "betas": args.betas,
                                                      "seeds": args.seeds, "train": train}))


if __name__ == "__main__":
    main()
