"""Probe (issue 11, session 19): under clutter, does the map miss the object because the auxiliary
classifier picks the wrong class, or because the trunk does not see the object?

    python benchmarks/probes/issue11_s19_cam_weighting.py CHECKPOINT_DIR [SAMPLES] [ORACLE_CHECKPOINT_DIR]

A learned scorer with a CAM head (docs/method.md §10) scores ``head(f) + Σ_k s_k·A_k`` with
``s = softmax(ā)``, the auxiliary classifier's own prediction. On the first SAMPLES (2 000) test images
of a trained image DART checkpoint on Cluttered Fashion-MNIST this prints:

- the cross-table of "map misses the object" (object mass < 0.6) against "the auxiliary classifier's
  top-1 class is wrong", with the model's top-1 in each cell;
- object mass and the model's top-1 (its tokenizer cutting the given pdf, no retraining) when the CAM
  is weighted otherwise: ``s`` one-hot on the true label (what the trunk sees when told the class:
  a diagnostic, it uses the label), the auxiliary softmax at temperature 0.5 and 2, even weights on
  its top-2 classes, ``s`` uniform over the classes (a class-agnostic map), and the head's scores
  alone (no CAM).

With ORACLE_CHECKPOINT_DIR (the oracle row of the same preset), the cross-table also gives the oracle
model's top-1 (its own box pdf) on the same images: whether the images DART gets wrong are hard for
a tokenizer that knows the object box too; and, where the auxiliary classifier is wrong, how often each
model names the same wrong class. The CAM weighted by the predicted class shapes the partition, and the
backbone sees the partition (each token's box and position embedding): a DART model that follows the
auxiliary classifier's mistakes more often than the oracle does reads its prediction from the layout.
The layout test cuts each image with the map of another test image of a different class (its own pdf,
and for the oracle that image's box): how often each model names the image's class and how often the
other image's.

Everything else (alignment to the cells' centres, contrast, activation, blur) is the scorer's own.
"""
import json
import sys

import dartok  # noqa: F401
import torch

from dartok.localization import box_pdf, object_mass
from dartok.train.checkpoint import model_from_checkpoint

from _test_items import dart_oracle_pair, predict_with_pdf, test_items

ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
oracle = None
if len(sys.argv) > 3:  # both models, checked to share their data
    model, oracle, x, y, boxes = dart_oracle_pair([ckpt, sys.argv[3], str(n)])
else:
    torch.set_num_threads(1)
    model, cfg = model_from_checkpoint(ckpt)  # eval mode
    x, y, boxes = test_items(cfg["data"], n)
sc = model.patch_embed.scorer
if sc is None or sc.cam is None:
    raise SystemExit("Error: this probe needs a learned scorer with a CAM head (cam_classes > 0)")
weight, bias = sc.cam.weight.flatten(1), sc.cam.bias  # K×C, K
K = weight.shape[0]


def pdf_with(feats: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
    """The scorer's pdf with the CAM weighted by ``s`` (B×K), or without the CAM (``s=None``)."""
    scores = sc.head(feats)
    if s is not None:
        cam = torch.einsum("bchw,bc->bhw", feats, s @ weight)
        if bias is not None:
            cam = cam + (s @ bias)[:, None, None]
        scores = scores + cam
    if sc.align_cells:
        scores = sc.align(scores)
    return sc.pdf_from_scores(scores)


with torch.no_grad():
    feats = torch.cat([sc.features(b) for b in x.split(250)])
    aux = sc.cam_logits(feats)
    own = torch.cat([sc.pdf_from_features(f) for f in feats.split(250)])
    variants = {
        "own (softmax of the auxiliary logits)": torch.softmax(aux, 1),
        "true label (diagnostic)": torch.nn.functional.one_hot(y, K).to(aux.dtype),
        "own at temperature 0.5": torch.softmax(aux / 0.5, 1),
        "own at temperature 2": torch.softmax(aux / 2, 1),
        "own, top-2 classes even": torch.zeros_like(aux).scatter_(1, aux.topk(2, 1).indices, 0.5),
        "uniform over the classes": torch.full_like(aux, 1.0 / K),
        "head only (no CAM)": None,
    }
    rows = []
    for name, s in variants.items():
        pdf = torch.cat([pdf_with(f, None if s is None else sb) for f, sb in
                         zip(feats.split(250), (s if s is not None else aux).split(250))])
        vpred = predict_with_pdf(model, x, pdf)
        if name.startswith("own (softmax"):
            assert torch.allclose(pdf, own, atol=1e-5), "re-statement of the scorer differs from the scorer"
            pred = vpred  # the model's own predictions: its tokenizer cuts this pdf
        mass = object_mass(pdf, boxes)
        rows.append({"cam weighting": name, "object mass": round(mass.mean().item(), 3),
                     "share < 0.6": round((mass < 0.6).float().mean().item(), 3),
                     "top-1": round(100 * (vpred == y).float().mean().item(), 2)})
    mass = object_mass(own, boxes)
right = pred == y
oracle_right = oracle_pred = None
if oracle is not None:
    opdf = box_pdf(boxes, tuple(oracle.patch_embed.score_grid()))
    oracle_pred = predict_with_pdf(oracle, x, opdf)
    oracle_right = oracle_pred == y
# The layout test: each image cut by another image's map (a different label). A model that reads the
# image names the image's own class; one that reads the layout names the other image's.
g = torch.Generator().manual_seed(0)
perm = torch.randperm(len(y), generator=g)
keep = y[perm] != y
layout = {}
for who, m, p in (("dart", model, own), ("oracle", oracle, opdf if oracle is not None else None)):
    if m is None:
        continue
    sp = predict_with_pdf(m, x, p[perm])[keep]
    layout[who] = {"names the image's class": round((sp == y[keep]).float().mean().item(), 3),
                   "names the map's image's class": round((sp == y[perm][keep]).float().mean().item(), 3)}
aux_pred = aux.argmax(1)
aux_right = aux_pred == y
wrong = ~aux_right  # where the auxiliary classifier is wrong: how often a model names the same wrong class
follows = {}
for part, m in (("all", wrong), ("mass < 0.6", wrong & (mass < 0.6)), ("mass >= 0.6", wrong & (mass >= 0.6))):
    follows[part] = {"dart names the auxiliary's wrong class": round((pred[m] == aux_pred[m]).float().mean().item(), 3)}
    if oracle_pred is not None:
        follows[part]["oracle names it"] = round((oracle_pred[m] == aux_pred[m]).float().mean().item(), 3)
cross = []
for miss in (True, False):
    for ar in (True, False):
        m = ((mass < 0.6) == miss) & (aux_right == ar)
        cross.append({"mass < 0.6": miss, "auxiliary right": ar, "share": round(m.float().mean().item(), 3),
                      "top-1": round(100 * right[m].float().mean().item(), 2) if m.any() else None})
        if oracle_right is not None:
            cross[-1]["oracle top-1"] = round(100 * oracle_right[m].float().mean().item(), 2) if m.any() else None
print(json.dumps({"checkpoint": ckpt, "samples": len(y), "top1": round(100 * right.float().mean().item(), 2),
                  "auxiliary top1": round(100 * aux_right.float().mean().item(), 2),
                  "cross": cross, "follows": follows,
                  "layout swap": layout, "variants": rows}))
