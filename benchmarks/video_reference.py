"""Is the ``cpu-video`` task learnable from its data, and by which kind of model? Two references.

Trains a small network on exactly the clips, frames and input size (the fixed grid's 32×32)
of ``dartok compare --preset cpu-video`` and prints train / test top-1 per epoch:

* ``--net conv3d``: two 3D convolutions whose kernels span 2 frames (sees motion locally).
* ``--net vit``: a plain video transformer with the grid VideoMamba's tokens (8×8 patches of
  every frame, 4×4×T tokens, learned position embeddings, 6 timm ``Block`` s of width 96,
  mean pool): global attention instead of the scan, nothing else of VideoMamba's.

Recipe: ``dartok train``'s own (``dartok.engine.build_optimization`` and
``train_one_epoch`` with the preset's lr, batch and epochs and ``TrainConfig``'s defaults
otherwise: AdamW, weight decay 0.05, one warmup epoch, cosine, label smoothing 0.1), no
augmentation; top-1 by ``dartok.engine.evaluate`` on the whole train and test sets. If the 3D convolution learns the task and the patch-token models do not,
the data carries the label and what is missing is a patch-token model's ability to learn
motion from scratch in the budget (see the README's video results).

    python benchmarks/video_reference.py [--net conv3d|vit] [--epochs N] [--threads 1]

Writes ``benchmarks/results/video_<net>_reference.{json,md}``.
"""
from __future__ import annotations

import argparse
import time

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dartok.bench import finish_report, machine_info, script_command
from dartok.compare import PRESETS
from dartok.engine import TrainConfig, build_optimization, evaluate, prepare_images, train_one_epoch
from dartok.video_data import MovingClutteredFashionMNIST


def conv3d_net(num_classes: int, width: int = 32) -> nn.Module:
    """Two 3D convolutions (2×5×5), ReLU, global average pool, linear head."""
    return nn.Sequential(nn.Conv3d(1, width, (2, 5, 5), padding=(0, 2, 2)), nn.ReLU(),
                         nn.Conv3d(width, width, (2, 5, 5), padding=(0, 2, 2)), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(width, num_classes))


class VideoViT(nn.Module):
    """Tubelet-1 patch embedding (Conv3d 1×P×P), learned position embedding per (frame, cell),
    ``depth`` timm ``Block`` s, LayerNorm, mean pool, linear head. Input ``B×C×T×H×W``."""

    def __init__(self, num_classes: int, frames: int, side: int, patch: int = 8, width: int = 96,
                 depth: int = 6, heads: int = 3, in_chans: int = 1):
        super().__init__()
        self.patch_embed = nn.Conv3d(in_chans, width, (1, patch, patch), (1, patch, patch))
        self.pos_embed = nn.Parameter(torch.zeros(1, frames * (side // patch) ** 2, width))
        trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # frame-major
        return self.head(self.norm(self.blocks(tokens)).mean(1))


def clips(split: str, n: int, train: dict, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = MovingClutteredFashionMNIST(split, canvas_size=train["canvas_size"], num_samples=n,
                                     seed=train.get("data_seed", 0), **train["data_kwargs"])
    x = torch.stack([ds[i][0] for i in range(n)])
    return prepare_images(x, (1, side, side)), torch.as_tensor(ds.targets[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", choices=("conv3d", "vit"), default="conv3d")
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = PRESETS["cpu-video"]["train"]
    epochs = args.epochs or train["epochs"]
    side = 32  # the fixed grid's input: 4×4 patches of 8 px (grid 16 tokens per frame)
    x, y = clips("train", train["train_samples"], train, side)
    xt, yt = clips("test", train["test_samples"], train, side)
    num_classes = int(max(y.max(), yt.max())) + 1
    model = (conv3d_net(num_classes) if args.net == "conv3d"
             else VideoViT(num_classes, x.shape[2], side))
    cfg = TrainConfig(epochs=epochs, lr=train["lr"], batch_size=train["batch_size"], seed=args.seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer, scheduler, loss_fn = build_optimization(model, cfg, len(loader))
    input_size = (1, side, side)

    def top1(a: torch.Tensor, b: torch.Tensor) -> float:
        return evaluate(model, DataLoader(TensorDataset(a, b), batch_size=256), input_size=input_size)["top1"]

    rows, t0, step = [], time.perf_counter(), 0
    for epoch in range(epochs):
        _, step = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, torch.device("cpu"), epoch=epoch,
                                  global_step=step, input_size=input_size, progress=False, num_epochs=epochs)
        rows.append({"epoch": epoch + 1, "train_top1": top1(x, y), "test_top1": top1(xt, yt),
                     "time_s": time.perf_counter() - t0})
        print(f"epoch {epoch + 1}/{epochs}  train {rows[-1]['train_top1']:.2f}  test {rows[-1]['test_top1']:.2f}",
              flush=True)
    title = {"conv3d": "3D-conv", "vit": "video ViT"}[args.net]
    lines = [f"# {title} reference on the cpu-video task", "",
             "| epoch | train top-1 (%) | test top-1 (%) | time (s) |", "|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['train_top1']:.2f} | {r['test_top1']:.2f} | {r['time_s']:.0f} |" for r in rows]
    settings = {"data_kwargs": train["data_kwargs"], "canvas_size": train["canvas_size"],
                "train_samples": train["train_samples"], "test_samples": train["test_samples"],
                "input": side, "net": args.net,
                **{k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs",
                                                "warmup_lr", "min_lr", "label_smoothing", "seed")},
                "params": sum(p.numel() for p in model.parameters())}
    result = {"rows": rows, "settings": settings, "machine": machine_info("cpu"), "command": script_command()}
    finish_report(result, lines, args.out, f"video_{args.net}_reference")


if __name__ == "__main__":
    main()
