"""Probe (issue 11, session 15): can a box drawn from the learned map itself stand in for the true box?

    python benchmarks/probes/issue11_s15_quantile_box.py DART_CHECKPOINT ORACLE_CHECKPOINT [SAMPLES]

Session 14's swap probe found that half the true box's pdf and half the learned map lifts the DART
backbone by about 2 points with no retraining. A user has no true box; the learned map gives one: the box
between the ``q`` and ``1 − q`` quantiles of its two marginals (the pdf summed over rows, and over
columns), its pdf uniform on that box (``oracle_pdf`` of that box, as the oracle's). Each backbone is
evaluated (``patch_embed.given_pdf``, first SAMPLES = 2 000 test images) with the learned map, with the
true box, with the quantile box for q = 0.05, 0.1, 0.2, and with half the learned map and half each of those.
Also printed: each map's object mass and the quantile boxes' IoU with the true box. One JSON line.
"""
import json
import sys

import dartok  # noqa: F401
import torch

from dartok.localization import object_mass

from _test_items import dart_oracle_pair, top1_with_pdf


def marginal_quantile(p: torch.Tensor, q: float) -> torch.Tensor:
    """``B×n`` masses of ``n`` equal cells on [0, 1] → ``B`` positions in [0, 1] where the cdf reaches ``q``
    (linear inside a cell)."""
    n = p.shape[1]
    cdf = torch.cat([p.new_zeros(p.shape[0], 1), p.cumsum(1)], 1)  # at the n + 1 cell edges
    k = (cdf[:, 1:] < q).sum(1).clamp(max=n - 1)  # the cell where the cdf crosses q
    lo = cdf.gather(1, k[:, None])[:, 0]
    mass = p.gather(1, k[:, None])[:, 0].clamp_min(1e-12)
    return ((k + ((q - lo) / mass).clamp(0, 1)) / n).clamp(0, 1)


def quantile_box(pdf: torch.Tensor, q: float) -> torch.Tensor:
    """``B×h×w`` pdf → ``B×4`` boxes (x0, y0, x1, y1) in [0, 1] between its marginals' q and 1 − q quantiles."""
    px, py = pdf.sum(1), pdf.sum(2)
    return torch.stack([marginal_quantile(px, q), marginal_quantile(py, q),
                        marginal_quantile(px, 1 - q), marginal_quantile(py, 1 - q)], 1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


if __name__ == "__main__":
    dart_ckpt, oracle_ckpt = sys.argv[1], sys.argv[2]
    dart, oracle, x, y, boxes = dart_oracle_pair(sys.argv[1:])
    with torch.no_grad():
        learned = torch.cat([dart.patch_embed.scorer(b) for b in x.split(250)])
        box_of = oracle.patch_embed.oracle_pdf
        maps = {"learned": learned, "box": box_of(boxes).to(learned.dtype)}
        maps["half_box"] = 0.5 * learned + 0.5 * maps["box"]
        ious = {}
        for q in (0.05, 0.1, 0.2):
            qb = quantile_box(learned, q)
            ious[f"q{q}"] = round(iou(qb, boxes).mean().item(), 3)
            maps[f"qbox{q}"] = box_of(qb).to(learned.dtype)
            maps[f"half_qbox{q}"] = 0.5 * learned + 0.5 * maps[f"qbox{q}"]

        out = {"dart_checkpoint": dart_ckpt, "oracle_checkpoint": oracle_ckpt, "samples": len(y),
               "quantile_box_iou": ious,
               "object_mass": {k: round(object_mass(v, boxes).mean().item(), 3) for k, v in maps.items()},
               "dart_backbone": {k: top1_with_pdf(dart, x, y, v) for k, v in maps.items()},
               "oracle_backbone": {k: top1_with_pdf(oracle, x, y, v) for k, v in maps.items()}}
    print(json.dumps(out))
