"""Where a DART training step spends its time on CPU (issue 11: the demo's wall time).

Times one AdamW training step (forward, the task's and the auxiliary losses, backward, step)
of a DART model, and the same step of its scorer alone (trunk + head + CAM head, forward and
backward of the pdf; the same AdamW step over all parameters in both), at one thread, and prints the scorer's share. The rest is the
partition, the resampling and the backbone.

    python benchmarks/step_profile.py [--model dart_vit_micro_patch8] [--num-tokens 36] [--img-size 128]

Writes ``benchmarks/results/step_profile.{json,md}``. Times are medians of ``--steps`` steps
after 2 warm-up steps; other processes on the machine inflate them, so compare shares.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.bench import finish_report, machine_info, script_command
from dartok.models import create_model


def _median_time(fn, steps: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dart_vit_micro_patch8")
    ap.add_argument("--num-tokens", type=int, default=36)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--scorer", default=None, help="scorer kwargs as JSON, e.g. '{\"input_size\": 64, \"stage\": 2}'")
    ap.add_argument("--name", default="step_profile")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    extra = {"scorer": json.loads(args.scorer)} if args.scorer else {}
    model = create_model(args.model, num_tokens=args.num_tokens, num_classes=10, in_chans=args.in_chans,
                         img_size=args.img_size, **extra).train()
    x = torch.randn(args.batch_size, args.in_chans, args.img_size, args.img_size)
    y = torch.randint(0, 10, (args.batch_size,))
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    tok = model.patch_embed
    scorer = tok.scorer

    def full_step():
        loss = F.cross_entropy(model(x), y)
        aux = tok.auxiliary_loss(y)
        if aux is not None:
            loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def scorer_step():
        pdf = scorer(x)
        loss = (pdf * torch.randn_like(pdf)).sum()
        aux = scorer.auxiliary_loss(y)
        if aux is not None:
            loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_full = _median_time(full_step, args.steps)
    t_scorer = _median_time(scorer_step, args.steps)
    share = t_scorer / t_full
    rows = {"full_step_s": round(t_full, 4), "scorer_step_s": round(t_scorer, 4), "scorer_share": round(share, 3),
            "img_per_s": round(args.batch_size / t_full, 1)}
    lines = [f"# One training step of {args.model} (N={args.num_tokens}, {args.img_size} px, batch "
             f"{args.batch_size}, 1 thread)", "",
             "| part | s / step | share |", "|---|---|---|",
             f"| whole step (model + losses + AdamW) | {t_full:.3f} | 1.00 |",
             f"| scorer alone (trunk {scorer.trunk_name} at {scorer.input_size} px, head, CAM head; score map {scorer.grid_size[0]}×{scorer.grid_size[1]}; "
             f"fwd + bwd) | {t_scorer:.3f} | {share:.2f} |",
             f"| the rest (partition, resampling, backbone) | {t_full - t_scorer:.3f} | {1 - share:.2f} |"]
    result = {"command": script_command(), "machine": machine_info("cpu"), "settings": vars(args), "result": rows}
    finish_report(result, lines, Path(__file__).resolve().parent / "results", args.name)


if __name__ == "__main__":
    main()
