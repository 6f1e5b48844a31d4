"""Elastic token budget: one DART model trained at N = 36, evaluated at other N, beside grids trained at each N.

Issue 14 §2. DART's token count is not tied to the input resolution, so the model trained at one
budget runs at any other after ``model.set_num_tokens(N)`` (``dartok eval --num-tokens N``): the
bands follow N, every token's position embedding is the area average of the same learned map
over its box. This trains ``dart_vit_micro_patch8`` at ``--train-tokens`` (36) and the fixed-grid
``vit_micro_patch8`` at each budget of ``--budgets`` (on the canvas resized to √N·8 px), with the
``cpu`` preset's Cluttered Fashion-MNIST data and recipe, shortened: ``--train-samples`` 4 000,
``--test-samples`` 1 000, ``--epochs`` 5 (the preset: 20 000 / 2 000 / 12), seeds 0 1 2, two jobs
(``dartok compare``'s machinery: :func:`dartok.tools.compare.run_specs`). Then the DART checkpoint
of every seed is evaluated at every budget (:func:`dartok.train.evaluate_checkpoint` with
``num_tokens``), and its GMACs counted there.

    python benchmarks/elastic_budget.py [--seeds 0 1 2] [--budgets 9 16 25 36 49 64 100] [--resume]
    python benchmarks/elastic_budget.py --flexi --grid-from elastic_budget_s10   # + a DART trained at random N

``--flexi`` also trains the same DART model at a budget drawn per batch from ``--budgets``
(``--train-num-tokens``, FlexiViT's random patch size; evaluated and saved at ``--train-tokens``) and
evaluates it at every budget. ``--grid-from STEM`` takes the grid rows from an earlier result file
(``results/STEM.json``, same data and recipe: the grids use no scorer) instead of training them.

About 25 min on two busy cores at the defaults. Writes ``benchmarks/results/elastic_budget.{json,md,png}``
(``--name`` for another stem); runs under ``runs/elastic_budget``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok._io import atomic_path
from dartok.bench import finish_report, machine_info, script_command
from dartok.tools.compare import PRESETS, RunSpec, check_seeds, collect, run_specs, seed_run_dir

RESULTS = Path(__file__).resolve().parent / "results"


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values), "values": values}


def _cell(s: dict | None) -> str:
    if s is None:
        return "-"
    if len(s["values"]) == 1:
        return f"{s['mean']:.2f}"
    return f"{s['mean']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def dart_at_budgets(run_dirs: list[Path], budgets: list[int], input_size,
                    gmacs: dict[int, float] | None = None) -> dict[int, dict]:
    """Top-1 of each seed's DART checkpoint at every budget, and its GMACs there (``gmacs``: already counted
    for this architecture, ``{N: GMACs}``; not counted again)."""
    from dartok.tools.bench import with_frames
    from dartok.tools.flops import count_macs
    from dartok.train import evaluate_checkpoint
    from dartok.train.checkpoint import model_from_checkpoint

    out = {}
    for n in budgets:
        top1 = [evaluate_checkpoint(d / "checkpoint", "test", num_tokens=n)["top1"] for d in run_dirs]
        if gmacs is not None and n in gmacs:
            g = gmacs[n]
        else:
            model, _ = model_from_checkpoint(run_dirs[0] / "checkpoint", num_tokens=n)
            g = count_macs(model.eval(), with_frames(model, input_size)).total / 1e9
        out[n] = {"top1": _stats(top1), "gmacs": g}
        print(f"[elastic] DART evaluated at N={n}: top-1 {_cell(out[n]['top1'])}, {g:.4f} GMACs", flush=True)
    return out


def plot(path: Path, budgets: list[int], dart: dict[int, dict], grid: dict[int, dict], train_n: int,
         flexi: dict[int, dict] | None = None) -> None:
    """Top-1 against N: DART trained at ``train_n`` and run at N, the grid trained at each N (min–max bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    curves = [(f"DART trained at N={train_n}, run at N", dart, "o-", "top1"),
              ("fixed grid trained at N", grid, "s--", "top1")]
    if flexi:
        curves.append(("DART trained at random N per batch, run at N", flexi, "^-", "top1"))
    if grid and all("top1_at_dart_epoch" in g for g in grid.values()):  # DART stopped early: same schedule point
        curves[1] = ("fixed grid trained at N, final epoch", grid, "s:", "top1")
        curves.append(("fixed grid trained at N, at DART's epoch", grid, "s--", "top1_at_dart_epoch"))
    for label, data, style, key in curves:
        data = {n: {"top1": v[key]} for n, v in data.items()}
        ns = [n for n in budgets if n in data]
        mean = [data[n]["top1"]["mean"] for n in ns]
        line, = ax.plot(ns, mean, style, label=label)
        if any(len(data[n]["top1"]["values"]) > 1 for n in ns):
            ax.fill_between(ns, [data[n]["top1"]["min"] for n in ns], [data[n]["top1"]["max"] for n in ns],
                            color=line.get_color(), alpha=0.2)
    ax.axvline(train_n, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(n) for n in budgets])
    ax.set_xlabel("tokens N")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Elastic budget: Cluttered Fashion-MNIST, micro ViT")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-tokens", type=int, default=36, help="the budget the DART model trains at")
    ap.add_argument("--budgets", type=int, nargs="+", default=[9, 16, 25, 36, 49, 64, 100],
                    help="where DART is evaluated and a grid trained (squares: the grid needs √N×√N)")
    ap.add_argument("--grid-budgets", type=int, nargs="+", default=None,
                    help="where a grid is trained (default: --budgets)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-samples", type=int, default=4000)
    ap.add_argument("--test-samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-grid", action="store_true", help="DART only (no grid rows)")
    ap.add_argument("--resume", action="store_true", help="keep finished runs in --output")
    ap.add_argument("--collect-only", action="store_true",
                    help="train nothing: tables and plot from the runs in --output as they are (each at the epoch it "
                         "reached; runs without a checkpoint are left out)")
    ap.add_argument("--flexi", action="store_true",
                    help="also train DART at a budget drawn per batch from --budgets, evaluated at each")
    ap.add_argument("--grid-from", default=None,
                    help="take the grid rows from results/<STEM>.json (an earlier run of this script) instead of training")
    ap.add_argument("--output", default="runs/elastic_budget")
    ap.add_argument("--name", default="elastic_budget")
    args = ap.parse_args()
    try:
        seeds = list(check_seeds(args.seeds))
    except ValueError as e:
        raise SystemExit(f"Error: --seeds: {e}")
    grid_budgets = sorted(set(args.budgets if args.grid_budgets is None else args.grid_budgets))
    bad = [n for n in (*args.budgets, *grid_budgets) if n < 1 or int(n ** 0.5) ** 2 != n]
    if bad or args.train_tokens < 1:
        raise SystemExit(f"Error: --budgets must be perfect squares >= 1 (a grid of √N×√N patches), got {bad}")
    budgets = sorted(set(args.budgets) | {args.train_tokens})
    t0 = time.perf_counter()
    train = {**PRESETS["cpu"]["train"], "train_samples": args.train_samples, "test_samples": args.test_samples,
             "epochs": args.epochs}
    # the cpu preset's DART row (its from-scratch scorer, pretrained by the preset's training options)
    preset_dart = next(sp for sp in PRESETS["cpu"]["specs"] if sp.is_dart and not sp.is_oracle)
    dart_spec = RunSpec(f"dart@{args.train_tokens}", preset_dart.model, args.train_tokens, dict(preset_dart.model_kwargs))
    grid_specs = [] if args.no_grid or args.grid_from else [RunSpec(f"grid@{n}", "vit_micro_patch8", n)
                                                             for n in reversed(grid_budgets)]
    grid_saved = None
    if args.grid_from:
        path = RESULTS / f"{args.grid_from}.json"
        if not path.is_file():
            raise SystemExit(f"Error: --grid-from: no result file {path}")
        grid_saved = {int(n): v for n, v in json.loads(path.read_text())["grid"].items()}
    flexi_spec = RunSpec(f"dart@{args.train_tokens} random N", preset_dart.model, args.train_tokens,
                         dict(preset_dart.model_kwargs)) if args.flexi else None
    specs = [dart_spec, *grid_specs]  # the long DART run first, the grids fill the other job
    output = Path(args.output)
    if args.collect_only:
        specs = [sp for sp in specs if all((seed_run_dir(output, sp.name, s, seeds) / "checkpoint").is_dir()
                                           for s in seeds)]
        if dart_spec not in specs:
            raise SystemExit(f"Error: no checkpoint of {dart_spec.name} for every seed {seeds} in {output}")
        grid_specs = [sp for sp in grid_specs if sp in specs]
    else:
        codes = run_specs(specs, output, train, jobs=args.jobs, seeds=seeds, resume=args.resume)
        if flexi_spec is not None:
            codes.update(run_specs([flexi_spec], output, {**train, "train_num_tokens": budgets}, jobs=args.jobs,
                                   seeds=seeds, resume=args.resume))
        failed = {k: v for k, v in codes.items() if v}
        if failed:
            raise SystemExit(f"Error: runs failed: {failed}")
    rows = collect(specs, output, count_macs=True, seeds=seeds)
    dart_rows = [r for r in rows if r["name"] == dart_spec.name]
    dirs = [seed_run_dir(output, dart_spec.name, s, seeds) for s in seeds]
    dart = dart_at_budgets(dirs, budgets, dart_rows[0]["input_size"])
    flexi = None
    if flexi_spec is not None:
        flexi = dart_at_budgets([seed_run_dir(output, flexi_spec.name, s, seeds) for s in seeds], budgets,
                                dart_rows[0]["input_size"], gmacs={n: v["gmacs"] for n, v in dart.items()})
    trained = _stats([r["test_top1"] for r in dart_rows])
    dart_epochs = sorted({r["epochs"] for r in dart_rows})
    grid = {}
    for spec in grid_specs:
        rs = [r for r in rows if r["name"] == spec.name]
        grid[spec.num_tokens] = {"top1": _stats([r["test_top1"] for r in rs]), "gmacs": rs[0]["gmacs"],
                                 "input": rs[0]["input_size"], "epochs": sorted({r["epochs"] for r in rs})}
        if len(dart_epochs) == 1 and all(len(r["top1_by_epoch"]) >= dart_epochs[0] for r in rs):
            # the same point of the same schedule as the DART checkpoint (a run stopped early)
            grid[spec.num_tokens]["top1_at_dart_epoch"] = _stats([r["top1_by_epoch"][dart_epochs[0] - 1] for r in rs])
    if grid_saved is not None:
        grid = {n: v for n, v in grid_saved.items() if n in grid_budgets}
    png = RESULTS / f"{args.name}.png"
    plot(png, budgets, dart, grid, args.train_tokens, flexi)
    multi = len(seeds) > 1
    lines = [f"# Elastic token budget: DART trained at N = {args.train_tokens}, evaluated at N", "",
             f"`dart_vit_micro_patch8` trained once at N = {args.train_tokens} (its test top-1 there: "
             f"{_cell(trained)}), then `set_num_tokens(N)` (`dartok eval --num-tokens N`); `vit_micro_patch8` "
             f"trained at each N on the canvas resized to √N·8 px. Cluttered Fashion-MNIST (the `cpu` preset's "
             f"data and recipe), {args.train_samples} training / {args.test_samples} test images, {args.epochs} "
             f"epochs, seeds {' '.join(map(str, seeds))}" + (" (top-1: mean [min, max] over the seeds)." if multi
                                                               else "."), "",
             f"Epochs reached: DART {'/'.join(map(str, dart_epochs))} of {args.epochs}"
             + ("" if dart_epochs == [args.epochs] and all(g["epochs"] == [args.epochs] for g in grid.values())
                else " (runs stopped early: see the grid rows' epochs)") + ".", "",
             (f"Grid rows from `{args.grid_from}.json` (the same data and recipe; not retrained)." if args.grid_from
              else ""), "",
             "| N | DART@" + str(args.train_tokens) + " run at N: top-1 (%) | GMACs | "
             + ("DART trained at random N (of the budgets), run at N: top-1 (%) | " if flexi else "")
             + f"grid trained at N: top-1 (%) | grid epochs | grid top-1 after epoch {dart_epochs[-1]} (DART's) | "
             "grid input | grid GMACs |",
             "|---|---|---|" + ("---|" if flexi else "") + "---|---|---|---|---|"]
    for n in budgets:
        g = grid.get(n)
        grid_cells = (f"{_cell(g['top1'])} | {'/'.join(map(str, g['epochs']))} | {_cell(g.get('top1_at_dart_epoch'))} | "
                      f"{'×'.join(map(str, g['input'][1:]))} | {g['gmacs']:.4f}" if g else "- | - | - | - | -")
        flexi_cell = f"{_cell(flexi[n]['top1'])} | " if flexi else ""
        lines.append(f"| {n}{' (trained)' if n == args.train_tokens else ''} | {_cell(dart[n]['top1'])} | "
                     f"{dart[n]['gmacs']:.4f} | {flexi_cell}{grid_cells} |")
    lines += ["", f"![accuracy vs N]({png.name})"]
    result = {"command": script_command(), "machine": machine_info("cpu"),
              "dart": {str(n): v for n, v in dart.items()}, "dart_trained": trained,
              "grid": {str(n): v for n, v in grid.items()}, "rows": rows,
              "flexi": {str(n): v for n, v in flexi.items()} if flexi else None, "grid_from": args.grid_from,
              "settings": {"train_tokens": args.train_tokens, "budgets": " ".join(map(str, budgets)),
                           "grid_budgets": " ".join(map(str, grid_budgets)) if grid_specs or grid_saved else "none",
                           "epochs": args.epochs, "train_samples": args.train_samples,
                           "test_samples": args.test_samples, "seeds": " ".join(map(str, seeds)),
                           "jobs": args.jobs, "collect_only": args.collect_only,
                           "elapsed_min": round((time.perf_counter() - t0) / 60, 1)}}
    finish_report(result, lines, RESULTS, args.name)


if __name__ == "__main__":
    sys.exit(main())
