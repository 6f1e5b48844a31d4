"""Probe (issue 11 item 6, session 12): which score maps put the mass on the item that moves?

    python benchmarks/probes/issue11_s12_video_motion_maps.py CHECKPOINT_DIR [SAMPLES]

For a trained DART VideoMamba checkpoint on ``moving_fmnist`` ``which_moves``, on the first SAMPLES
(500) test clips: the object mass on the moving item (its box in every frame, the stacked clip's pdf,
before mixing) of
- the model's own pdf (learned head v2 over the trunk's features plus their frame difference);
- training-free maps, each normalised over the clip as the model's is (standardised, softmax at γ = 1):
  the trunk's feature-difference magnitude Σ_c |f_t − f_{t−1}|_c, the trunk's feature sum Σ_c f_c
  (objectness, both items), and the pixel difference |x_t − x_{t−1}| averaged over each 8 px cell
  (also as a plain normalised density);
- the oracle's box pdf (the bound on the metric itself: its cell rounding).
"""
import json
import sys

import dartok  # noqa: F401
import torch
import torch.nn.functional as F

from dartok.data.video import MovingClutteredFashionMNIST
from dartok.localization import box_pdf, object_mass
from dartok.scorer import scores_to_pdf
from dartok.train.checkpoint import model_from_checkpoint
from dartok.video_tokenizer import temporal_difference

ckpt, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500
torch.set_num_threads(1)
model, cfg = model_from_checkpoint(ckpt)  # in eval mode
pe = model.patch_embed
data = cfg["data"]
ds = MovingClutteredFashionMNIST("test", canvas_size=data["canvas_size"], num_samples=n, return_box=True,
                                 **data.get("kwargs", {}))
items = [ds[i] for i in range(n)]
x = torch.stack([it[0] for it in items])  # B×C×T×S×S
boxes = pe.object_boxes(torch.stack([torch.as_tensor(it[1]["box"]) for it in items]).float())
b, t = x.shape[0], x.shape[2]
h, w = pe.scorer.grid_size


def stack(m):  # B×T×h×w -> B×(T·h)×w
    return m.reshape(b, t * m.shape[-2], m.shape[-1])


def aligned(m):  # B×T×h×w trunk-grid maps read at the cells' centres, as the scorer reads its scores
    return torch.stack([pe.scorer.align(m[:, k]) for k in range(t)], 1) if pe.scorer.align_cells else m


with torch.no_grad():
    feats = pe.frame_features(x)  # B×T×C×h×w
    diff = temporal_difference(feats, "abs")
    pix = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(1)  # B×(T-1)×S×S
    pix = torch.cat([pix[:, :1], pix], 1)
    pix_cells = F.adaptive_avg_pool2d(pix, (h, w))
    maps = {
        "model's pdf (learned)": pe.score(x),
        "softmax z(Σ|Δf|)": scores_to_pdf(stack(aligned(diff.sum(2))), activation="softmax"),
        "softmax z(Σ f) (objectness)": scores_to_pdf(stack(aligned(feats.sum(2))), activation="softmax"),
        "softmax z(pixel |Δx|)": scores_to_pdf(stack(pix_cells), activation="softmax"),
        "pixel |Δx| normalised": stack(pix_cells) / stack(pix_cells).flatten(1).sum(1)[:, None, None].clamp_min(1e-12),
        "oracle box pdf": box_pdf(boxes, (t * h, w)),
    }
    out = {"checkpoint": ckpt, "clips": n, "grid": [t * h, w]}
    for k, v in maps.items():
        out[k] = round(object_mass(v, boxes).mean().item(), 3)
print(json.dumps(out, indent=1, ensure_ascii=False))
