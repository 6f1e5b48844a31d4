"""Probe (issue 11, session 12): is learned DART's gap to the oracle made of images its map misses?

    python benchmarks/probes/issue11_s12_mass_bins.py CHECKPOINT_DIR [SAMPLES] [PDF_BLUR]

For a trained image DART checkpoint on Cluttered Fashion-MNIST, on the first SAMPLES (2 000) test
images: each image's object mass (its pdf's share inside the object box, before mixing) and whether
the model classifies it right; printed as the share of images and the top-1 in object-mass bins,
and the top-1 by object size (the box's side, in quartiles). PDF_BLUR (session 13) evaluates a
learned scorer with another ``pdf_blur`` than it was trained with (no retraining).
"""
import json
import sys

import dartok  # noqa: F401
import torch

from dartok.localization import box_pdf, object_mass
from dartok.train.checkpoint import model_from_checkpoint

from _test_items import predict_with_pdf, test_items

ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
torch.set_num_threads(1)
model, cfg = model_from_checkpoint(ckpt)  # in eval mode
pe = model.patch_embed
if len(sys.argv) > 3:
    pe.scorer.pdf_blur = int(sys.argv[3])
data = cfg["data"]
x, y, boxes = test_items(data, n)
with torch.no_grad():
    if pe.scorer is not None:
        right = torch.cat([model(b).argmax(1) for b in x.split(250)]) == y
        pdf = torch.cat([pe.scorer.pdf_from_features(pe.scorer.features(b)) for b in x.split(250)])
    else:  # the oracle: its pdf is the object box on the scorer's grid
        pdf = box_pdf(boxes, tuple(pe.score_grid()))
        right = predict_with_pdf(model, x, pdf) == y
    mass = object_mass(pdf, boxes)
side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt() * data["canvas_size"]
out = {"checkpoint": ckpt, "pdf_blur": getattr(pe.scorer, "pdf_blur", None), "top1": round(100 * right.float().mean().item(), 2), "mass_bins": [], "size_quartiles": []}
for lo, hi in ((0, 0.3), (0.3, 0.6), (0.6, 0.8), (0.8, 1.01)):
    m = (mass >= lo) & (mass < hi)
    if m.any():
        out["mass_bins"].append({"mass": [lo, hi], "share": round(m.float().mean().item(), 3),
                                 "top1": round(100 * right[m].float().mean().item(), 2)})
q = side.quantile(torch.tensor([0.25, 0.5, 0.75]))
edges = [0, *q.tolist(), 1e9]
for a, b in zip(edges[:-1], edges[1:]):
    m = (side >= a) & (side < b)
    out["size_quartiles"].append({"side_px": [round(a, 1), round(min(b, 999), 1)], "top1": round(100 * right[m].float().mean().item(), 2),
                                  "mass": round(mass[m].mean().item(), 3)})
print(json.dumps(out))
