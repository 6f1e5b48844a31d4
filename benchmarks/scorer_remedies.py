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

Writes ``benchmarks/results/scorer_remedies.{json,md}`` (rows: top-1 and object mass per seed,
mean, min, max) and the runs under ``runs/scorer_remedies/seed<k>``.
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
        "cam03": RunSpec("dart (cam, w=0.3)", d, n,
                         {"scorer": {**MICRO_SCORER, "cam_classes": 10, "cam_loss_weight": 0.3}}),
    }
    return [all_specs[k] for k in which]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--num-tokens", type=int, default=36)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--runs", nargs="+", default=["grid", "oracle", "nocam", "camloss", "cam"])
    ap.add_argument("--prior-epochs", type=float, default=0.0,
                    help="anneal the prior of the *prior runs over this many epochs")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--output", default="runs/scorer_remedies")
    ap.add_argument("--name", default="scorer_remedies")
    args = ap.parse_args()
    train = dict(canvas_size=128, epochs=args.epochs, train_samples=args.train_samples,
                 test_samples=args.test_samples, batch_size=64, lr=1e-3, warmup_epochs=1,
                 prior_epochs=args.prior_epochs)
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
