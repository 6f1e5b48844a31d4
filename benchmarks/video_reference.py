"""Is the ``cpu-video`` task learnable from its data, and by which kind of model? Two references.

Trains a small network on exactly the clips, frames and input size (the fixed grid's 32×32)
of ``dartok compare --preset cpu-video`` and prints train / test top-1 per epoch:

* ``--net conv3d``: two 3D convolutions whose kernels span 2 frames (sees motion locally).
* ``--net vit``: a plain video transformer with the grid VideoMamba's tokens (8×8 patches of
  every frame, 4×4×T tokens, learned position embeddings, 6 timm ``Block`` s of width 96,
  mean pool): global attention instead of the scan, nothing else of VideoMamba's.

Recipe as ``dartok train``'s defaults: AdamW (lr from the preset, weight decay 0.05), one
warmup epoch then cosine to 1e-5 (timm ``CosineLRScheduler``, per step), label smoothing 0.1,
no augmentation. If the 3D convolution learns the task and the patch-token models do not,
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
from timm.scheduler import CosineLRScheduler
from torch import nn

from dartok.bench import finish_report, machine_info, script_command
from dartok.compare import PRESETS
from dartok.engine import prepare_images
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
    opt = torch.optim.AdamW(model.parameters(), train["lr"], weight_decay=0.05)
    bs = train["batch_size"]
    steps = -(-len(x) // bs)
    sched = CosineLRScheduler(opt, t_initial=epochs * steps, lr_min=1e-5, warmup_t=steps, warmup_lr_init=1e-6,
                              t_in_epochs=False)
    step = 0

    def accuracy(a: torch.Tensor, b: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            return 100.0 * sum((model(a[k:k + 256]).argmax(1) == b[k:k + 256]).sum().item()
                               for k in range(0, len(a), 256)) / len(a)

    rows, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x))
        for k in range(0, len(x), bs):
            idx = perm[k:k + bs]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            sched.step_update(step)
        rows.append({"epoch": epoch, "train_top1": accuracy(x, y), "test_top1": accuracy(xt, yt),
                     "time_s": time.perf_counter() - t0})
        print(f"epoch {epoch}/{epochs}  train {rows[-1]['train_top1']:.2f}  test {rows[-1]['test_top1']:.2f}",
              flush=True)
    title = {"conv3d": "3D-conv", "vit": "video ViT"}[args.net]
    lines = [f"# {title} reference on the cpu-video task", "",
             "| epoch | train top-1 (%) | test top-1 (%) | time (s) |", "|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['train_top1']:.2f} | {r['test_top1']:.2f} | {r['time_s']:.0f} |" for r in rows]
    settings = {"data_kwargs": train["data_kwargs"], "canvas_size": train["canvas_size"],
                "train_samples": train["train_samples"], "test_samples": train["test_samples"],
                "batch_size": bs, "lr": train["lr"], "epochs": epochs, "input": side, "seed": args.seed, "net": args.net,
                "weight_decay": 0.05, "warmup_epochs": 1, "min_lr": 1e-5, "label_smoothing": 0.1,
                "params": sum(p.numel() for p in model.parameters())}
    result = {"rows": rows, "settings": settings, "machine": machine_info("cpu"), "command": script_command()}
    finish_report(result, lines, args.out, f"video_{args.net}_reference")


if __name__ == "__main__":
    main()
