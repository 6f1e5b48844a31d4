"""Is the ``cpu-video`` task learnable from its data? A small 3D-conv net as a reference.

Trains a two-layer 3D convolution network (kernels span 2 frames, so it sees motion
locally) on exactly the clips, frames and input size (the fixed grid's 32×32) of
``dartok compare --preset cpu-video``, with AdamW and no augmentation, and prints train /
test top-1 per epoch. If this network learns the task and VideoMamba does not, the data
carries the label and what is missing is the backbone's ability to learn motion from
scratch in the budget (see the README's video results).

    python benchmarks/video_conv3d_reference.py [--epochs 8] [--threads 1]

Writes ``benchmarks/results/video_conv3d_reference.{json,md}``.
"""
from __future__ import annotations

import argparse
import time

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch
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


def clips(split: str, n: int, train: dict, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = MovingClutteredFashionMNIST(split, canvas_size=train["canvas_size"], num_samples=n,
                                     seed=train.get("data_seed", 0), **train["data_kwargs"])
    x = torch.stack([ds[i][0] for i in range(n)])
    return prepare_images(x, (1, side, side)), torch.as_tensor(ds.targets[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    model = conv3d_net(int(max(y.max(), yt.max())) + 1)
    opt = torch.optim.AdamW(model.parameters(), train["lr"], weight_decay=0.0)
    bs = train["batch_size"]

    def accuracy(a: torch.Tensor, b: torch.Tensor) -> float:
        with torch.no_grad():
            return 100.0 * sum((model(a[k:k + 256]).argmax(1) == b[k:k + 256]).sum().item()
                               for k in range(0, len(a), 256)) / len(a)

    rows, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(x))
        for k in range(0, len(x), bs):
            idx = perm[k:k + bs]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rows.append({"epoch": epoch, "train_top1": accuracy(x, y), "test_top1": accuracy(xt, yt),
                     "time_s": time.perf_counter() - t0})
        print(f"epoch {epoch}/{epochs}  train {rows[-1]['train_top1']:.2f}  test {rows[-1]['test_top1']:.2f}",
              flush=True)
    lines = ["# 3D-conv reference on the cpu-video task", "",
             "| epoch | train top-1 (%) | test top-1 (%) | time (s) |", "|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['train_top1']:.2f} | {r['test_top1']:.2f} | {r['time_s']:.0f} |" for r in rows]
    settings = {"data_kwargs": train["data_kwargs"], "canvas_size": train["canvas_size"],
                "train_samples": train["train_samples"], "test_samples": train["test_samples"],
                "batch_size": bs, "lr": train["lr"], "epochs": epochs, "input": side, "seed": args.seed,
                "params": sum(p.numel() for p in model.parameters())}
    result = {"rows": rows, "settings": settings, "machine": machine_info("cpu"), "command": script_command()}
    finish_report(result, lines, args.out, "video_conv3d_reference")


if __name__ == "__main__":
    main()
