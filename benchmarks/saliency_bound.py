"""What is a training-free score map worth? DART whose score map is the saliency prior, fixed.

The learned scorer's object mass stays near 0.08; the saliency prior (``dartok.scorer.saliency_pdf``)
holds 0.51 on the same data, the oracle 0.66. This trains ``dart_vit_micro_patch8`` with no
scorer and the saliency prior as its whole score map (``prior_mode="mix"`` at share 1 for the
whole run: the training loop's annealing is replaced by a constant here, so evaluation sees it
too) on the recipe of ``benchmarks/scorer_remedies.py`` (N = 36, 8 000 train / 2 000 test,
5 epochs), to set beside that table's grid and oracle rows: if it lands near the oracle, a
scorer that learned the prior would be enough; if not, mass in the box is not all the oracle has.

    python benchmarks/saliency_bound.py [--seeds 0 1 2] [--flat]

``--flat`` uses a flattened saliency map instead: the cells whose saliency is above the
image's mean plus one standard deviation share the mass evenly (the rest gets none; α mixing
still gives it its floor), a box-like map as the oracle's is. Writes
``benchmarks/results/saliency_bound{,_flat}.{json,md}``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import dartok.train.loop as loop
from dartok.bench import finish_report, machine_info, script_command
from dartok.train import TrainConfig, read_metrics, train


def short_run(seed: int, output: str | Path, model_kwargs: dict) -> dict:
    """Train ``dart_vit_micro_patch8`` with ``model_kwargs`` on the recipe of
    ``benchmarks/scorer_remedies.py`` (N = 36, 8 000 / 2 000 images, 5 epochs); its last epoch's
    ``{"seed", "top1", "object_mass", "object_tokens"}``."""
    cfg = TrainConfig(model="dart_vit_micro_patch8", num_tokens=36, canvas_size=128, epochs=5, train_samples=8000,
                      test_samples=2000, batch_size=64, lr=1e-3, warmup_epochs=1, seed=seed, threads=1,
                      progress=False, output=str(output), model_kwargs=model_kwargs)
    train(cfg)
    last = read_metrics(cfg.output)[-1]
    return {"seed": seed, "top1": last["test_top1"], "object_mass": last["test_object_mass"],
            "object_tokens": last["test_object_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--output", default="runs/saliency_bound")
    ap.add_argument("--flat", action="store_true", help="the flattened (thresholded) saliency map")
    args = ap.parse_args()
    prior = "saliency"
    if args.flat:
        import torch

        from dartok.scorer import PRIORS, saliency_pdf

        def flat_saliency(images, size):
            s = saliency_pdf(images, size)
            flat = s.flatten(1)
            keep = (flat > flat.mean(1, keepdim=True) + flat.std(1, keepdim=True)).to(s.dtype)
            keep = torch.where(keep.sum(1, keepdim=True) > 0, keep, torch.ones_like(keep))
            return (keep / keep.sum(1, keepdim=True)).view_as(s)

        PRIORS["saliency_flat"] = flat_saliency  # this process only: an experiment, not a library prior
        prior = "saliency_flat"
    loop.prior_weight = lambda progress, prior_epochs: 1.0  # the prior is the score map, start to end
    t0 = time.perf_counter()
    rows = [short_run(seed, Path(args.output) / f"seed{seed}",
                      {"scorer": None, "prior": prior, "prior_mode": "mix"}) for seed in args.seeds]
    top = [r["top1"] for r in rows]
    lines = [f"# DART with the {'flattened ' if args.flat else ''}saliency prior as its fixed score map "
             "(N = 36, 8k images, 5 epochs)", "",
             "| seed | top-1 (%) | object mass | object tokens |", "|---|---|---|---|",
             *[f"| {r['seed']} | {r['top1']:.2f} | {r['object_mass']:.3f} | {r['object_tokens']:.2f} |" for r in rows],
             f"| mean [min, max] | {statistics.mean(top):.2f} [{min(top):.2f}, {max(top):.2f}] | | |"]
    result = {"command": script_command(), "machine": machine_info("cpu"), "rows": rows,
              "settings": {"prior": prior, "num_tokens": 36, "epochs": 5, "train_samples": 8000, "test_samples": 2000,
                           "seeds": " ".join(map(str, args.seeds)),
                           "elapsed_min": round((time.perf_counter() - t0) / 60, 1)}}
    finish_report(result, lines, Path(__file__).resolve().parent / "results",
                  "saliency_bound_flat" if args.flat else "saliency_bound")


if __name__ == "__main__":
    main()
