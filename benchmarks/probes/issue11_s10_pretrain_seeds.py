"""Probe (issue 11, session 10): does the from-scratch scorer's pretraining localise at every seed?

    python benchmarks/probes/issue11_s10_pretrain_seeds.py SEED EPOCHS LR THREADS [JSON]

Builds the scorer of ``dartok.tools.compare.scratch_scorer()`` (JSON: extra Scorer kwargs),
pretrains it alone with ``pretrain_scorer`` (no augmentation, no mixup, batch 64, 8 000 images),
and prints per epoch: the auxiliary classifier's test top-1, how often the CAM's best cell is in the
object box, and the object mass of the scorer's own pdf (head + CAM + contrast + blur, eval mode)
on 2 000 test images: the map DART training starts from.
"""
import json
import sys
import time

import dartok  # noqa: F401
import torch

from dartok.localization import object_mass
from dartok.scorer import Scorer
from dartok.tools.compare import scratch_scorer
from dartok.train.scorer_pretrain import pretrain_scorer

sys.path.insert(0, "benchmarks")
from scorer_pretrain_maps import _load  # noqa: E402

seed, epochs, lr, threads = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
torch.set_num_threads(threads)
xtr, ytr, _ = _load("train", 8000)
xte, yte, bte = _load("test", 2000)


@torch.no_grad()
def measure(scorer):
    scorer.eval()
    feats = torch.cat([scorer.features(p) for p in xte.split(250)])
    logits = scorer.cam_logits(feats)
    cam = torch.einsum("bchw,bc->bhw", feats, torch.softmax(logits, 1) @ scorer.cam.weight.flatten(1))
    h, w = cam.shape[-2:]
    idx = cam.flatten(1).argmax(1)
    cy, cx = (idx // w + 0.5) / h, (idx % w + 0.5) / w
    inside = (cx >= bte[:, 0]) & (cx <= bte[:, 2]) & (cy >= bte[:, 1]) & (cy <= bte[:, 3])
    pdf = torch.cat([scorer.pdf_from_features(f) for f in feats.split(250)])
    return {"aux_top1": round(100 * (logits.argmax(1) == yte).float().mean().item(), 2),
            "argmax_in_box": round(inside.float().mean().item(), 3),
            "mass": round(object_mass(pdf, bte).mean().item(), 3)}


torch.manual_seed(seed)
scorer = Scorer(**{**scratch_scorer(), **extra}, in_chans=1)
gen = torch.Generator().manual_seed(seed)


class Loader:
    def __len__(self):
        return -(-len(xtr) // 64)

    def __iter__(self):
        perm = torch.randperm(len(xtr), generator=gen)
        return iter([(xtr[perm[i:i + 64]], ytr[perm[i:i + 64]]) for i in range(0, len(xtr), 64)])


t0 = time.perf_counter()
print(json.dumps({"seed": seed, "epochs": epochs, "lr": lr, "extra": extra, "epoch": 0, **measure(scorer)}), flush=True)
pretrain_scorer(scorer, Loader(), epochs=epochs, lr=lr, weight_decay=0.05, device=torch.device("cpu"),
                input_size=(1, 128, 128), unpack=lambda t: t,
                on_epoch=lambda e, st: print(json.dumps({"seed": seed, "epochs": epochs, "lr": lr, "extra": extra,
                                                         "epoch": e + 1, "train_acc": round(st["acc"], 2),
                                                         **measure(scorer), "t": round(time.perf_counter() - t0)}),
                                             flush=True))
