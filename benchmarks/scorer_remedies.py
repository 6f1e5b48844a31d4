"""Which training change makes a from-scratch scorer find the object? (issue 11, item 3)

Trains the demo's recipe in miniature (``dart_vit_micro_patch8`` at N tokens on Cluttered
Fashion-MNIST, 128 px canvas) once per variant of the scorer, beside the fixed grid and the
oracle (the true object box as the score map), with :func:`dartok.tools.compare.compare`: the
same data, recipe, epochs and seeds for every row. Variants (model kwargs of the DART model):

* ``dart (no cam)``: the scorer as it was before issue 11 (``scorer_cam=False``);
* ``dart (cam loss only)``: the auxiliary class-activation head trained jointly, its map not
  fed to the score (``cam_score`` False): only the trunk's extra gradient;
* ``dart (cam)``: the auxiliary head, its map added to the score (the default);
* ``dart (cam, w=0.3)``: the same with the auxiliary loss weighted 0.3;
* ``dart (no cam, softmax)``, ``dart (cam, softmax)``: the softmax score activation;
* ``dart (no cam, saliency prior)``, ``dart (cam, saliency prior)``: the training-free
  saliency prior mixed in, its share annealed from 1 to 0 over ``--prior-epochs``;
* ``dart (cam, saliency prior taught)``, ``... softmax ...``: the prior not mixed in but
  taught to the scorer (``prior_mode="teach"``: ``λ·KL(prior ‖ pdf)`` added to the loss).

    python benchmarks/scorer_remedies.py [--seeds 0 1 2] [--epochs 5] [--train-samples 8000]

Writes ``benchmarks/results/<name>.{json,md}`` (rows: top-1 and object mass per seed,
mean, min, max) and the runs under ``<output>/seed<k>``.

    python benchmarks/scorer_remedies.py --combine benchmarks/results/scorer_remedies_try*.json ...

merges such result files (several variants, several seeds of one variant) into one table,
``benchmarks/results/scorer_remedies.md``, with each row's gain over ``grid`` and its share of
the oracle's gain (seeds present in both rows).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.bench import finish_report, machine_info, script_command
from dartok.tools.compare import ORACLE, RunSpec, compare

MICRO_SCORER = {"trunk": "mobilenetv3_small", "input_size": 128}


def variants(n: int, which: list[str]) -> list[RunSpec]:
    """The runs: grid, oracle and the DART variants named in ``which``."""
    d = "dart_vit_micro_patch8"
    all_specs = {
        "grid": RunSpec("grid", "vit_micro_patch8", n),
        "oracle": RunSpec("oracle", d, n, dict(ORACLE)),
        "nocam": RunSpec("dart (no cam)", d, n, {"scorer": {**MICRO_SCORER}}),
        "camloss": RunSpec("dart (cam loss only)", d, n,
                           {"scorer": {**MICRO_SCORER, "cam_classes": 10, "cam_score": False}}),
        "cam": RunSpec("dart (cam)", d, n, {"scorer": {**MICRO_SCORER, "cam_classes": 10}}),
        "softmax": RunSpec("dart (no cam, softmax)", d, n, {"scorer": {**MICRO_SCORER, "activation": "softmax"}}),
        "camsoftmax": RunSpec("dart (cam, softmax)", d, n,
                              {"scorer": {**MICRO_SCORER, "cam_classes": 10, "activation": "softmax"}}),
        "prior": RunSpec("dart (no cam, saliency prior)", d, n,
                         {"scorer": {**MICRO_SCORER}, "prior": "saliency", "prior_mode": "mix"}),
        "camprior": RunSpec("dart (cam, saliency prior)", d, n,
                            {"scorer": {**MICRO_SCORER, "cam_classes": 10}, "prior": "saliency", "prior_mode": "mix"}),
        "camteach": RunSpec("dart (cam, saliency prior taught)", d, n,
                            {"scorer": {**MICRO_SCORER, "cam_classes": 10}, "prior": "saliency",
                             "prior_mode": "teach"}),
        "camteachsoftmax": RunSpec("dart (cam, softmax, saliency prior taught)", d, n,
                                   {"scorer": {**MICRO_SCORER, "cam_classes": 10, "activation": "softmax"},
                                    "prior": "saliency", "prior_mode": "teach"}),
        "cam64s8": RunSpec("dart (cam, trunk to stride 8 at 64 px)", d, n,
                           {"scorer": {**MICRO_SCORER, "cam_classes": 10, "input_size": 64, "stage": 2}}),
        "camlse": RunSpec("dart (cam, lse pool)", d, n,
                          {"scorer": {**MICRO_SCORER, "cam_classes": 10, "cam_pool": "lse"}}),
        "cammax": RunSpec("dart (cam, max pool)", d, n,
                          {"scorer": {**MICRO_SCORER, "cam_classes": 10, "cam_pool": "max"}}),
        "camlsesoftmax": RunSpec("dart (cam, lse pool, softmax)", d, n,
                                 {"scorer": {**MICRO_SCORER, "cam_classes": 10, "cam_pool": "lse",
                                             "activation": "softmax"}}),
        "cambox": RunSpec("dart (cam, moment box)", d, n,
                          {"scorer": {**MICRO_SCORER, "cam_classes": 10, "activation": "box"}}),
        "camlsebox": RunSpec("dart (cam, lse pool, moment box)", d, n,
                             {"scorer": {**MICRO_SCORER, "cam_classes": 10, "cam_pool": "lse", "activation": "box"}}),
        "camramp": RunSpec("dart (cam, sigmoid to softmax over epochs 1-3)", d, n,
                           {"scorer": {**MICRO_SCORER, "cam_classes": 10, "softmax_ramp": [1, 3]}}),
        "camlr5": RunSpec("dart (cam, scorer lr x5)", d, n,
                          {"scorer": {**MICRO_SCORER, "cam_classes": 10, "lr_scale": 5.0}}),
        "pre4": RunSpec("dart (cam, stride-8 map, softmax, trunk pretrained and frozen)", d, n,
                        {"scorer": {**MICRO_SCORER, "cam_classes": 10, "stage": 2, "activation": "softmax"}}),
        "pre4blur3": RunSpec("dart (cam, stride-8 map, softmax, 3x3 pdf blur, trunk pretrained and frozen)", d, n,
                             {"scorer": {**MICRO_SCORER, "cam_classes": 10, "stage": 2, "activation": "softmax",
                                         "pdf_blur": 3}}),
        "oracle16": RunSpec("oracle (16x16 map)", d, n, {"scorer": {**MICRO_SCORER, "stage": 2}, **ORACLE}),
        "pre4sigmoid": RunSpec("dart (cam, stride-8 map, trunk pretrained and frozen)", d, n,
                               {"scorer": {**MICRO_SCORER, "cam_classes": 10, "stage": 2}}),
        "cam03": RunSpec("dart (cam, w=0.3)", d, n,
                         {"scorer": {**MICRO_SCORER, "cam_classes": 10, "cam_loss_weight": 0.3}}),
    }
    return [all_specs[k] for k in which]


def combine(paths: list[str], name: str) -> None:
    """One table from several result files of this script (rows merged by name, seeds by index)."""
    import json

    runs: dict[str, dict[int, dict]] = {}
    sources = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        seeds = [int(v) for v in str(data["settings"]["seeds"]).split()]
        sources.append(f"`{Path(path).name}` ({data['settings']['epochs']} epochs, "
                       f"{data['settings']['train_samples']} train, seeds {' '.join(map(str, seeds))}, "
                       f"{data['machine'].get('date_utc', '')}, commit {str(data['machine'].get('git_commit', ''))[:7]})")
        for run, r in data["runs"].items():
            for k, seed in enumerate(seeds):
                mass = r["object_mass"][k] if len(r["object_mass"]) > k else None
                runs.setdefault(run, {})[seed] = {"top1": r["top1"][k], "mass": mass}
    grid, oracle = runs.get("grid", {}), runs.get("oracle", {})
    lines = [f"# Scorer remedies (issue 11 item 3), combined", "",
             "Top-1 (%) per seed; gain = run − grid and its share of oracle − grid, over the seeds both have.",
             "", "| run | seeds | top-1 per seed | mean | min | max | − grid (mean) | share of oracle gain | "
             "object mass (last, mean) |", "|---|---|---|---|---|---|---|---|---|"]
    order = sorted(runs, key=lambda n: (n not in ("grid", "oracle"), n != "grid", n))
    for run in order:
        per = runs[run]
        seeds = sorted(per)
        top = [per[s]["top1"] for s in seeds]
        common = [s for s in seeds if s in grid]
        gain = statistics.mean(per[s]["top1"] - grid[s]["top1"] for s in common) if common else None
        both = [s for s in common if s in oracle and oracle[s]["top1"] != grid[s]["top1"]]
        share = (statistics.mean((per[s]["top1"] - grid[s]["top1"]) / (oracle[s]["top1"] - grid[s]["top1"])
                                 for s in both) if both else None)
        masses = [per[s]["mass"] for s in seeds if per[s]["mass"] is not None]
        lines.append(f"| {run} | {' '.join(map(str, seeds))} | {' / '.join(f'{v:.2f}' for v in top)} | "
                     f"{statistics.mean(top):.2f} | {min(top):.2f} | {max(top):.2f} | "
                     f"{'-' if gain is None or run == 'grid' else f'{gain:+.2f}'} | "
                     f"{'-' if share is None or run in ('grid', 'oracle') else f'{share:.2f}'} | "
                     f"{f'{statistics.mean(masses):.3f}' if masses else '-'} |")
    lines += ["", "Sources:", *[f"- {s}" for s in sources]]
    md = "\n".join(lines) + "\n"
    out = Path(__file__).resolve().parent / "results" / f"{name}.md"
    from dartok._io import atomic_write

    atomic_write(out, md)
    print(md)
    print(f"written: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--combine", nargs="+", default=None, help="merge these result files into one table")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--num-tokens", type=int, default=36)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--runs", nargs="+", default=["grid", "oracle", "nocam", "camloss", "cam"])
    ap.add_argument("--prior-epochs", type=float, default=0.0,
                    help="anneal the prior of the *prior runs over this many epochs")
    ap.add_argument("--scorer-pretrain-epochs", type=int, default=0,
                    help="pretrain and freeze the scorer trunk of the DART runs this many epochs first "
                         "(TrainConfig.scorer_pretrain_epochs; grid and oracle runs skip it)")
    ap.add_argument("--scorer-pretrain-lr", type=float, default=None,
                    help="peak learning rate of that pretraining (TrainConfig.scorer_pretrain_lr; default: 1e-3, the lr)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--output", default="runs/scorer_remedies")
    ap.add_argument("--name", default="scorer_remedies")
    args = ap.parse_args()
    if args.combine:
        combine(args.combine, args.name)
        return
    train = dict(canvas_size=128, epochs=args.epochs, train_samples=args.train_samples,
                 test_samples=args.test_samples, batch_size=64, lr=1e-3, warmup_epochs=1,
                 prior_epochs=args.prior_epochs, scorer_pretrain_epochs=args.scorer_pretrain_epochs,
                 scorer_pretrain_lr=args.scorer_pretrain_lr)
    specs = variants(args.num_tokens, args.runs)
    per_seed: dict[str, list[dict]] = {s.name: [] for s in specs}
    t0 = time.perf_counter()
    for seed in args.seeds:
        out = compare(None, Path(args.output) / f"seed{seed}", "results", specs=specs,
                      train={**train, "seed": seed}, jobs=args.jobs, snapshot_epochs=(), count_macs=False)
        for row in out["rows"]:
            per_seed[row["name"]].append(row)
    lines = [f"# Scorer remedies (issue 11 item 3): N={args.num_tokens}, {args.epochs} epochs, "
             f"{args.train_samples} train / {args.test_samples} test, seeds {args.seeds}", "",
             "| run | top-1 per seed | mean | min | max | object mass (last) | object mass by epoch (seed "
             f"{args.seeds[0]}) |", "|---|---|---|---|---|---|---|"]
    summary = {}
    for name, rows in per_seed.items():
        top1 = [r["test_top1"] for r in rows]
        mass = [r["test_object_mass"] for r in rows if "test_object_mass" in r]
        curve = rows[0].get("object_mass_by_epoch", [])
        summary[name] = {"top1": top1, "object_mass": mass, "object_mass_by_epoch": curve,
                         "top1_by_epoch": rows[0].get("top1_by_epoch")}
        lines.append(f"| {name} | {' / '.join(f'{v:.2f}' for v in top1)} | {statistics.mean(top1):.2f} | "
                     f"{min(top1):.2f} | {max(top1):.2f} | "
                     f"{' / '.join(f'{v:.3f}' for v in mass) if mass else '-'} | "
                     f"{' '.join(f'{v:.2f}' for v in curve) if curve else '-'} |")
    result = {"command": script_command(), "machine": machine_info("cpu"),
              "settings": {**train, "num_tokens": args.num_tokens, "seeds": " ".join(map(str, args.seeds)),
                           "elapsed_min": round((time.perf_counter() - t0) / 60, 1)},
              "runs": summary}
    finish_report(result, lines, Path(__file__).resolve().parent / "results", args.name)


if __name__ == "__main__":
    main()
