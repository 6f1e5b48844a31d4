"""Does the oracle need the whole object? The oracle with its box scaled about its centre.

The oracle DART (``score_source="oracle"``) takes the true object box as its score map. Here the
box it is given is scaled by ``--scale`` about its centre (0.5: the inner half of each side, the
garment's inside without its outline; 1.0: the oracle itself), on the recipe of
``benchmarks/scorer_remedies.py`` (N = 36, 8 000 train / 2 000 test, 5 epochs). The localisation
metric is still measured against the true box.

    python benchmarks/oracle_box_scale.py --scale 0.5 [--seeds 0 1 2]

Writes ``benchmarks/results/oracle_box_scale_<scale>.{json,md}``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch

from dartok.bench import finish_report, machine_info, script_command
from dartok.tokenizer import DART
from saliency_bound import short_run  # noqa: E402  (benchmarks/, on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--output", default="runs/oracle_box_scale")
    args = ap.parse_args()
    if not 0 < args.scale <= 1:
        raise SystemExit(f"Error: --scale must be in (0, 1], got {args.scale}")
    true_oracle_pdf = DART.oracle_pdf

    def scaled_oracle_pdf(self, boxes: torch.Tensor) -> torch.Tensor:
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        half = (boxes[..., 2:] - boxes[..., :2]) / 2 * args.scale
        return true_oracle_pdf(self, torch.cat([centre - half, centre + half], -1))

    DART.oracle_pdf = scaled_oracle_pdf  # this process only
    t0 = time.perf_counter()
    rows = [short_run(seed, Path(args.output) / f"scale{args.scale}_seed{seed}", {"score_source": "oracle"})
            for seed in args.seeds]
    top = [r["top1"] for r in rows]
    lines = [f"# The oracle with its box scaled by {args.scale} about its centre (N = 36, 8k images, 5 epochs)", "",
             "| seed | top-1 (%) | object mass (true box) | object tokens (true box) |", "|---|---|---|---|",
             *[f"| {r['seed']} | {r['top1']:.2f} | {r['object_mass']:.3f} | {r['object_tokens']:.2f} |" for r in rows],
             f"| mean [min, max] | {statistics.mean(top):.2f} [{min(top):.2f}, {max(top):.2f}] | | |"]
    result = {"command": script_command(), "machine": machine_info("cpu"), "rows": rows,
              "settings": {"scale": args.scale, "num_tokens": 36, "epochs": 5, "train_samples": 8000,
                           "test_samples": 2000, "seeds": " ".join(map(str, args.seeds)),
                           "elapsed_min": round((time.perf_counter() - t0) / 60, 1)}}
    finish_report(result, lines, Path(__file__).resolve().parent / "results", f"oracle_box_scale_{args.scale}")


if __name__ == "__main__":
    main()
