"""Figure of the regular-grid warp (paper App. C, Fig. 10): bands vs regular grid, and the warped image.

For a few Cluttered Fashion-MNIST test canvases (128 px), one row each: the canvas resized to the
warp's size (what the plain CNN sees), the paper's irregular partition (bands) and the regular grid
of the oracle score map (the true object box, α = 0.1) at the same N, the oracle's warped image,
and, given a trained warp checkpoint (``dartok compare --preset cpu-warp``), its learned score map,
grid and warped image.

    python benchmarks/warp_figure.py [--checkpoint runs/compare/cpu-warp/warp@64px/checkpoint]

Writes ``benchmarks/results/cpu-warp_figure.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch
import torch.nn.functional as F

from dartok.data import create_dataset
from dartok.partition import band_layout, partition_pdf
from dartok.tools.viz import plot_partition, save_png
from dartok.warp import WarpDART


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="a trained dart_warp_* checkpoint (its learned scorer)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--warp-size", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cpu-warp_figure.png"))
    args = ap.parse_args()
    import matplotlib.pyplot as plt

    side = args.warp_size // args.patch_size
    data = create_dataset("cluttered_fmnist", None, "test", canvas_size=128, num_samples=args.images, return_box=True)
    oracle = WarpDART(grid=(side, side), patch_size=args.patch_size, in_chans=1, score_source="oracle",
                      oracle_grid=(8, 8), antialias=True).eval()
    learned = None
    if args.checkpoint:
        from dartok.train.checkpoint import model_from_checkpoint

        learned, _ = model_from_checkpoint(args.checkpoint)
        learned.eval()
    cols = 4 + (2 if learned is not None else 0)
    fig, axes = plt.subplots(args.images, cols, figsize=(2.2 * cols, 2.3 * args.images), squeeze=False)
    with torch.no_grad():
        for row, (x, target) in enumerate(data):
            x, box = x[None], target["box"][None]
            out = oracle(x, pdf=oracle.oracle_pdf(box))
            bands = partition_pdf(out.pdf, band_layout(side * side))
            resized = F.interpolate(x, size=(args.warp_size,) * 2, mode="bilinear", antialias=True,
                                    align_corners=False)
            ax = axes[row]
            plot_partition(ax[0], resized[0], None, title="resized (plain CNN)" if row == 0 else None)
            plot_partition(ax[1], x[0], bands[0], out.pdf[0], title=f"bands, oracle (N={side * side})"
                           if row == 0 else None)
            plot_partition(ax[2], x[0], out.boxes[0], out.pdf[0], title="regular grid, oracle" if row == 0 else None)
            plot_partition(ax[3], out.image[0], None, title="warped, oracle" if row == 0 else None)
            if learned is not None:
                o = learned.tokenize(x)
                plot_partition(ax[4], x[0], o.boxes[0], o.pdf[0], title="regular grid, learned" if row == 0 else None)
                plot_partition(ax[5], o.image[0], None, title="warped, learned" if row == 0 else None)
    fig.tight_layout()
    path = save_png(fig, args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
