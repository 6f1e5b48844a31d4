"""torch.export of DART models: export, run the exported program, compare with eager (issue 12 §3).

Usage (from the repository root)::

    .venv/bin/python benchmarks/export_check.py                      # DART-DeiT-Ti and DART-Vim-Ti
    .venv/bin/python benchmarks/export_check.py dart_vit_micro_patch8 --batch 4

For each model (random weights, eval mode, its default input): ``torch.export.export``, the
exported program's output against the eager model's on the same batch (max absolute
difference, and whether it is within ``--atol``), the times, and, if ``onnx``,
``onnxscript`` and ``onnxruntime`` are installed, ``torch.onnx.export`` (the dynamo exporter
and the TorchScript-based one, opset 18) run under onnxruntime (skipped otherwise).
Results go to ``benchmarks/results/export_check.json``.
The CI tests (tests/test_timm_conventions.py) do the same on two-block micro models.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm)
import timm
import torch
from dartok._io import write_json

ROOT = Path(__file__).resolve().parents[1]


def example_input(model: torch.nn.Module, batch: int) -> torch.Tensor:
    """``B×C×H×W`` (``B×C×T×H×W`` for video) at the model's recorded input size, seed 0."""
    c, h, w = model.pretrained_cfg["input_size"]
    frames = getattr(model, "num_frames", None)
    shape = (batch, c, frames, h, w) if frames else (batch, c, h, w)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def check(name: str, batch: int, atol: float) -> dict:
    """Export ``name``, run both, compare; ONNX (dynamo) too when onnx/onnxscript are installed."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = example_input(model, batch)
    with torch.no_grad():
        start = time.perf_counter()
        ref = model(x)
        eager_s = time.perf_counter() - start
        start = time.perf_counter()
        program = torch.export.export(model, (x,))
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        out = program.module()(x)
        run_s = time.perf_counter() - start
    diff = float((out - ref).abs().max())
    row = dict(model=name, batch=batch, input=list(x.shape), eager_s=round(eager_s, 2), export_s=round(export_s, 1),
               exported_run_s=round(run_s, 2), max_abs_diff=diff, within_atol=diff <= atol, atol=atol)
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        row.update(onnx_check(model, x, ref))
    else:
        row["onnx"] = "skipped: onnx / onnxscript / onnxruntime not installed"
    return row


def onnx_check(model: torch.nn.Module, x: torch.Tensor, ref: torch.Tensor) -> dict:
    """Max |ONNX − eager| under onnxruntime for both exporters (or the error, reported, not hidden)."""
    import io

    import onnxruntime

    out = {}
    for key, dynamo in (("onnx", True), ("onnx_legacy", False)):
        try:
            start = time.perf_counter()
            if dynamo:
                result = torch.onnx.export(model, (x,), dynamo=True).model_proto.SerializeToString()
            else:
                buffer = io.BytesIO()
                torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=18)
                result = buffer.getvalue()
            session = onnxruntime.InferenceSession(result, providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            out[f"{key}_max_abs_diff"] = float((torch.as_tensor(got) - ref).abs().max())
            out[f"{key}_s"] = round(time.perf_counter() - start, 1)
        except Exception as e:  # report, do not hide
            out[f"{key}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["dart_deit_tiny_patch16_224", "dart_vim_tiny_patch16_224"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export_check.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows.append(check(name, args.batch, args.atol))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, dict(torch=torch.__version__, timm=timm.__version__, threads=args.threads, rows=rows))


if __name__ == "__main__":
    main()
