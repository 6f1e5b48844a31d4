"""Does a scorer pretrained as a classifier know where the object is? (issue 11, item 3)

Trains the micro models' scorer (MobileNetV3-Small from scratch on the 128 px canvas, with its
CAM head) alone, as a classifier of the full Cluttered Fashion-MNIST canvases, with
:func:`dartok.train.scorer_pretrain.pretrain_scorer` (what ``--scorer-pretrain-epochs`` runs),
once with the trunk cut at stride 16 (the micro models' default: an 8×8 score map) and once at
stride 8 (``stage=2``: a 16×16 map, cells of 8 px, the backbone's patch). Before the first epoch
and after each, on the first ``--test-samples`` test images:

* the auxiliary classifier's top-1 (the pooled CAM logits);
* how often the class-activation map's highest cell lies in the object box (chance: the box's
  area share, about 0.05);
* the object mass of that map under ``softmax(γ·z)`` (γ = 1, 2) and under the paper's
  ``sigmoid(z)``, and of the feature norm's softmax (a map no class decides).

    python benchmarks/scorer_pretrain_maps.py [--epochs 4] [--seed 0]

Writes ``benchmarks/results/<name>.{json,md}``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch

from dartok.bench import finish_report, machine_info, script_command
from dartok.localization import object_mass
from dartok.scorer import Scorer, scores_to_pdf
from dartok.train.scorer_pretrain import pretrain_scorer


def _load(split: str, n: int):
    from dartok.data.registry import create_dataset

    ds = create_dataset("cluttered_fmnist", None, split, canvas_size=128, return_box=True)
    items = [ds[i] for i in range(min(n, len(ds)))]
    return (torch.stack([it[0] for it in items]), torch.tensor([it[1]["label"] for it in items]),
            torch.stack([torch.as_tensor(it[1]["box"], dtype=torch.float32) for it in items]))


class ShuffledBatches:
    """Batches of ``(x, y)`` in a fresh order per pass (``generator``), like the training loader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        perm = torch.randperm(len(self.x), generator=self.generator)
        b = self.batch_size
        return iter([(self.x[perm[i:i + b]], self.y[perm[i:i + b]]) for i in range(0, len(self.x), b)])


@torch.no_grad()
def measure(scorer: Scorer, x: torch.Tensor, y: torch.Tensor, boxes: torch.Tensor) -> dict[str, float]:
    """The localisation of ``scorer``'s class-activation map on ``x`` (eval mode)."""
    scorer.eval()
    feats = torch.cat([scorer.features(part) for part in x.split(250)])
    cam = scorer.cam(feats)
    logits = cam.mean((2, 3))
    cam_map = torch.einsum("bkhw,bk->bhw", cam, torch.softmax(logits, 1))
    h, w = cam_map.shape[-2:]
    idx = cam_map.flatten(1).argmax(1)
    cy, cx = (idx // w + 0.5) / h, (idx % w + 0.5) / w
    inside = (cx >= boxes[:, 0]) & (cx <= boxes[:, 2]) & (cy >= boxes[:, 1]) & (cy <= boxes[:, 3])
    out = {"aux_top1": 100 * (logits.argmax(1) == y).float().mean().item(),
           "argmax_in_box": inside.float().mean().item(),
           "mass_sigmoid": object_mass(scores_to_pdf(cam_map, activation="sigmoid"), boxes).mean().item(),
           "mass_feature_norm_softmax": object_mass(scores_to_pdf(feats.norm(dim=1), activation="softmax"),
                                                    boxes).mean().item()}
    for g in (1, 2):
        out[f"mass_softmax_g{g}"] = object_mass(scores_to_pdf(cam_map, scale=g, activation="softmax"),
                                                boxes).mean().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-samples", type=int, default=8000)
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="scorer_pretrain_maps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xtr, ytr, _ = _load("train", args.train_samples)
    xte, yte, bte = _load("test", args.test_samples)
    loader_gen = torch.Generator()
    rows = []
    t0 = time.perf_counter()
    for label, stage in (("stride 16, 8x8 map (default)", None), ("stride 8, 16x16 map (stage=2)", 2)):
        torch.manual_seed(args.seed)
        scorer = Scorer("mobilenetv3_small", input_size=128, stage=stage, in_chans=1, cam_classes=10)
        rows.append({"scorer": label, "epoch": 0, **measure(scorer, xte, yte, bte)})
        loader_gen.manual_seed(args.seed)
        pretrain_scorer(scorer, ShuffledBatches(xtr, ytr, 64, loader_gen), epochs=args.epochs, lr=1e-3, weight_decay=0.05,
                        device=torch.device("cpu"), input_size=(1, 128, 128), unpack=lambda t: t,
                        on_epoch=lambda e, st: rows.append({"scorer": label, "epoch": e + 1, "train_acc": st["acc"],
                                                            **measure(scorer, xte, yte, bte)}))
        for r in rows:
            if r["scorer"] == label:
                print(r, flush=True)
    box_area = ((bte[:, 2] - bte[:, 0]) * (bte[:, 3] - bte[:, 1])).mean().item()
    lines = [f"# A scorer pretrained as a classifier: where its class-activation map looks (seed {args.seed})", "",
             f"Cluttered Fashion-MNIST, 128 px canvas; {args.train_samples} training / {args.test_samples} test "
             f"images; MobileNetV3-Small from scratch with its CAM head, trained alone "
             f"(`dartok.train.scorer_pretrain.pretrain_scorer`, AdamW lr 1e-3, cosine). The object box covers "
             f"{box_area:.3f} of the canvas (chance for the argmax cell).", "",
             "| scorer | epoch | aux top-1 (%) | argmax cell in box | object mass softmax γ=1 | softmax γ=2 "
             "| sigmoid | feature-norm softmax |", "|---|---|---|---|---|---|---|---|",
             *[f"| {r['scorer']} | {r['epoch']} | {r['aux_top1']:.1f} | {r['argmax_in_box']:.3f} | "
               f"{r['mass_softmax_g1']:.3f} | {r['mass_softmax_g2']:.3f} | {r['mass_sigmoid']:.3f} | "
               f"{r['mass_feature_norm_softmax']:.3f} |" for r in rows]]
    result = {"command": script_command(), "machine": machine_info("cpu"), "rows": rows,
              "settings": {**vars(args), "box_area": box_area, "elapsed_min": (time.perf_counter() - t0) / 60}}
    finish_report(result, lines, Path(__file__).resolve().parent / "results", args.name)


if __name__ == "__main__":
    main()
