"""Cost of the regular-grid warp (paper App. C): MACs (fvcore) and CPU throughput, plain CNN vs warp.

Two settings, each timed interleaved (``dartok.tools.bench.measure_speeds``: one call of every model per
round, so a shared machine's slow spells hit all alike; paired ratios against the plain CNN):

- ``cpu-warp``: ResNet-10-T on a 64² one-channel image vs the same behind the warp of a 128² canvas to
  64² (8×8 boxes of 8 px, anti-aliased), with the ``cpu-warp`` preset's from-scratch scorer
  (``scratch_scorer(128)``: MobileNetV3-Small on the 128² canvas cut at stride 8, a 16×16 map, softmax,
  3×3 blur, CAM head), with the warp models' default scorer (on a 64² copy, cut at stride 8: an 8×8
  map) and with a uniform pdf (the warp alone: the oracle's cost);
- ImageNet size: ResNet-18 at 224² vs ``dart_warp_resnet18`` (448² input warped to 224², 14×14 boxes of
  16 px, scorer on a 224² copy) and the same with a uniform pdf.

    python benchmarks/warp_compute.py [--batch-size 64] [--threads 2] [--repeats 7]

Writes ``benchmarks/results/warp_compute_cpu.{json,md}``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import timm
import torch

from dartok.models import create_model
from dartok.tools.compare import scratch_scorer
from dartok.tools.bench import finish_report, machine_info, measure_speeds, paired_speed_ratio, script_command
from dartok.tools.flops import count_macs

_MICRO = {"num_tokens": 64, "warp_size": 64, "img_size": 128, "in_chans": 1, "num_classes": 10,
          "scorer_input_size": 64, "scorer_stage": 2, "antialias": True}


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its scorer trunk frozen, as after ``--scorer-pretrain-epochs`` (BatchNorm folded at inference)."""
    from dartok.train.scorer_pretrain import freeze_scorer_trunk

    freeze_scorer_trunk(model.patch_embed.scorer)
    return model


def settings() -> dict[str, list[tuple[str, torch.nn.Module, tuple[int, ...]]]]:
    """``{setting: [(label, model, C×H×W input)]}``, the plain CNN first."""
    torch.manual_seed(0)
    return {
        "cpu-warp (Cluttered Fashion-MNIST, 1 channel)": [
            ("resnet10t @ 64² (canvas resized)", timm.create_model("resnet10t", in_chans=1, num_classes=10), (1, 64, 64)),
            ("dart_warp_resnet10t, 128² → 64², from-scratch scorer (the preset's; trunk frozen)",
             _frozen(create_model("dart_warp_resnet10t", **_MICRO, scorer=scratch_scorer(128))), (1, 128, 128)),
            ("dart_warp_resnet10t, 128² → 64², scorer on a 64² copy", create_model("dart_warp_resnet10t", **_MICRO),
             (1, 128, 128)),
            ("dart_warp_resnet10t, 128² → 64², uniform pdf (the warp alone)",
             create_model("dart_warp_resnet10t", **_MICRO, scorer=None), (1, 128, 128)),
        ],
        "ImageNet size (RGB, 1000 classes)": [
            ("resnet18 @ 224²", timm.create_model("resnet18"), (3, 224, 224)),
            ("dart_warp_resnet18, 448² → 224², learned scorer", create_model("dart_warp_resnet18"), (3, 448, 448)),
            ("dart_warp_resnet18, 448² → 224², uniform pdf", create_model("dart_warp_resnet18", scorer=None),
             (3, 448, 448)),
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, lines = [], ["# Cost of the regular-grid warp: MACs and CPU throughput (eval, batch "
                       f"{args.batch_size}, {args.threads} threads)", ""]
    for setting, entries in settings().items():
        speeds = measure_speeds([(m.eval(), shape) for _, m, shape in entries], batch_size=args.batch_size,
                                repeats=args.repeats)
        lines += [f"**{setting}**", "",
                  "| model | input | GMACs | of which warp | scorer | params (M) | img/s | × plain (paired) |",
                  "|---|---|---|---|---|---|---|---|"]
        for (label, model, shape), speed in zip(entries, speeds):
            report = count_macs(model, shape)
            warp = report.by_part.get("tokenizer without scorer", report.by_part.get("tokenizer", 0))
            ratio = paired_speed_ratio(speeds[0], speed)
            row = {"setting": setting, "model": label, "input": list(shape), "gmacs": report.total / 1e9,
                   "warp_gmacs": warp / 1e9, "scorer_gmacs": report.by_part.get("scorer", 0) / 1e9,
                   "params_m": report.params / 1e6, "speed": speed, "paired_ratio": ratio}
            rows.append(row)
            lines.append(f"| {label} | {'×'.join(map(str, shape[1:]))} | {row['gmacs']:.4f} | "
                         f"{row['warp_gmacs']:.4f} | {row['scorer_gmacs']:.4f} | {row['params_m']:.2f} | "
                         f"{speed['images_per_s']:.0f} | {ratio:.3f} |")
        lines.append("")
    result = {"command": script_command(), "machine": machine_info("cpu"), "rows": rows,
              "settings": {"batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats}}
    finish_report(result, lines, args.out, "warp_compute_cpu")


if __name__ == "__main__":
    main()
