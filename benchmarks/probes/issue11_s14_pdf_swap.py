"""Probe (issue 11, session 14): is the gap to the oracle in the learned map, or in the backbone trained on it?

    python benchmarks/probes/issue11_s14_pdf_swap.py DART_CHECKPOINT ORACLE_CHECKPOINT [SAMPLES]

Two checkpoints of the same preset and seed (``dart@N`` with the learned scorer, ``oracle@N``), on the
first SAMPLES (2 000) test images of their Cluttered Fashion-MNIST: each backbone is evaluated with
each score map (``patch_embed.given_pdf``; the uniform α-mixing is applied after, as in training):

- the DART model with its own map (its test top-1) and with the true object box's pdf;
- the oracle model with the box's pdf (its test top-1) and with the DART scorer's map;
- both with half of each (``0.5·learned + 0.5·box``);
- both with two flatter versions of the learned map that need no box: ``√learned`` renormalised, and
  ``0.5·learned + 0.5·uniform``.

If the DART backbone gains much from the box's pdf, a better map would pay without retraining the
backbone; if the oracle backbone loses little on the learned map, the maps are interchangeable and the
gap is in what each backbone learned from its own maps. Prints one JSON line.
"""
import json
import sys

import dartok  # noqa: F401
import torch

from dartok.localization import object_mass
from dartok.partition import mix_uniform

from _test_items import dart_oracle_pair, top1_with_pdf

dart_ckpt, oracle_ckpt = sys.argv[1], sys.argv[2]
dart, oracle, x, y, boxes = dart_oracle_pair(sys.argv[1:])
grid = tuple(dart.patch_embed.score_grid())
if tuple(oracle.patch_embed.score_grid()) != grid:
    raise SystemExit(f"Error: score grids differ: {grid} vs {tuple(oracle.patch_embed.score_grid())}")
sc = dart.patch_embed.scorer
with torch.no_grad():
    learned = torch.cat([sc(b) for b in x.split(250)])
    truth = oracle.patch_embed.oracle_pdf(boxes).to(learned.dtype)  # the oracle row's own map
    flat = learned.sqrt()
    maps = {"learned": learned, "box": truth, "half": 0.5 * learned + 0.5 * truth,
            "learned_sqrt": flat / flat.sum((1, 2), keepdim=True),  # a flatter map without the box
            "learned_half_uniform": mix_uniform(learned, 0.5)}

    out = {"dart_checkpoint": dart_ckpt, "oracle_checkpoint": oracle_ckpt, "samples": len(y),
           "object_mass": {k: round(object_mass(v, boxes).mean().item(), 3) for k, v in maps.items()},
           "dart_backbone": {k: top1_with_pdf(dart, x, y, v) for k, v in maps.items()},
           "oracle_backbone": {k: top1_with_pdf(oracle, x, y, v) for k, v in maps.items()}}
    own = torch.cat([dart(b).argmax(1) for b in x.split(250)]) == y
    out["dart_own_forward"] = round(100 * own.float().mean().item(), 2)  # must equal dart_backbone.learned
print(json.dumps(out))
