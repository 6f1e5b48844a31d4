"""Probe (issue 11, session 12): at the start of DART training, how much of the score map is the
untrained head's and how much the pretrained CAM's?

    python benchmarks/probes/issue11_s12_head_vs_cam.py SEED EPOCHS LR THREADS [SAVE.pt]

Pretrains the scorer of ``scratch_scorer()`` alone as the recipe does (``pretrain_scorer``, no
augmentation, batch 64, 8 000 images), then on 2 000 test images prints: the per-image std over
cells of the head's scores and of the CAM, their correlation, and the object mass of the pdf built
from head + CAM (what DART starts from), the CAM alone, and the head alone; and how peaked DART's
starting pdf is: quantiles over images of its largest cell mass × 36 (a cell of mass 1/36 is one
token's share at N = 36; the 8 px cell is the backbone's patch), and the oracle's for comparison.
"""
import json
import sys

import dartok  # noqa: F401
import torch

from dartok.localization import object_mass
from dartok.scorer import Scorer
from dartok.tools.compare import scratch_scorer
from dartok.train.scorer_pretrain import pretrain_scorer

sys.path.insert(0, "benchmarks")
from scorer_pretrain_maps import ShuffledBatches, _load  # noqa: E402

seed, epochs, lr, threads = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
xtr, ytr, _ = _load("train", 8000)
xte, yte, bte = _load("test", 2000)
torch.manual_seed(seed)
scorer = Scorer(**scratch_scorer(), in_chans=1)
pretrain_scorer(scorer, ShuffledBatches(xtr, ytr, 64, torch.Generator().manual_seed(seed)), epochs=epochs, lr=lr,
                weight_decay=0.05, device=torch.device("cpu"),
                input_size=(1, 128, 128), unpack=lambda t: t)
scorer.eval()
with torch.no_grad():
    feats = torch.cat([scorer.features(p) for p in xte.split(250)])
    head = scorer.head(feats)
    cam = scorer._cam_map(feats)

    def mass(scores):
        scores = scorer.align(scores) if scorer.align_cells else scores
        return round(object_mass(scorer.pdf_from_scores(scores), bte).mean().item(), 3)

    hs, cs = head.flatten(1).std(1), cam.flatten(1).std(1)
    hc = torch.stack([torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] for a, b in zip(head, cam)])
    print(json.dumps({"seed": seed, "epochs": epochs, "head_std": round(hs.mean().item(), 4),
                      "cam_std": round(cs.mean().item(), 4), "corr": round(hc.nanmean().item(), 3),
                      "scale": float(scorer.score_scale), "mass_head_plus_cam": mass(head + cam),
                      "mass_cam": mass(cam), "mass_head": mass(head)}), flush=True)
    from dartok.localization import box_pdf
    pdf = scorer.pdf_from_scores(scorer.align(head + cam))
    oracle = box_pdf(bte, tuple(pdf.shape[1:]))
    q = torch.tensor([0.1, 0.5, 0.9])
    print(json.dumps({"max_cell_mass_x36_q10_50_90": [round(v, 2) for v in (36 * pdf.flatten(1).amax(1)).quantile(q).tolist()],
                      "oracle_max_cell_mass_x36_q10_50_90": [round(v, 2) for v in (36 * oracle.flatten(1).amax(1)).quantile(q).tolist()],
                      "mass_in_cells_above_1/36": round((pdf * (pdf > 1 / 36)).flatten(1).sum(1).mean().item(), 3)}), flush=True)
if len(sys.argv) > 5:
    torch.save(scorer.state_dict(), sys.argv[5])
