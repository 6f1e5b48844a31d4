"""Compute measurements behind the paper's cost claims (Tables 1-2, the README's "Compute"): MACs, params, speed.

What it measures, per model:

- **params** (total and trainable; a frozen scorer trunk counts in the total only);
- **MACs per image** with fvcore (:mod:`dartok.tools.flops`: :func:`count_macs`, fused
  attention off, the tokenizer's ops counted by hand, nothing left out silently);
- **throughput** (images/s at a batch size) and **batch-1 latency**, in eval mode under
  ``torch.inference_mode``: warm-up calls, then the median of timed calls. On CUDA:
  bf16 autocast, ``torch.cuda.synchronize`` around each call, optional ``torch.compile``;
- **tokenizer breakdown**: each step of :class:`dartok.DART` timed on its own, by calling
  the methods ``DART.forward`` calls (input check, score, density, partition, sample,
  project, position embeddings; the scorer's resize / trunk / head as a finer breakdown of
  score), see :func:`tokenizer_breakdown`;
- **scaling**: DART throughput vs input resolution at a fixed token budget, and DART vs the
  fixed grid vs the token budget.

Results go to ``<out>/<name>.json`` and ``<out>/<name>.md``, written atomically
(:func:`write_results`), with the machine, versions, date and the exact command.
The CLI is ``dartok bench compute|scaling|macs`` (see :mod:`dartok.cli`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .. import _compat

_compat.ensure_torchvision_importable()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from .._io import atomic_write, autocast, write_json  # noqa: E402
from ..models.factory import fixed_grid_shape  # noqa: E402,F401  (re-exported: bench.fixed_grid_shape)
from .flops import HAND_COUNTED_OPS, count_macs  # noqa: E402

__all__ = [
    "PAPER_GMACS", "finish_report", "fixed_grid_shape", "machine_info", "make_model", "measure_speed",
    "measure_speeds", "paired_speed_ratio", "parse_model_spec", "render_markdown", "run_bench", "run_compute",
    "run_scaling", "script_command", "time_callable", "time_callables", "tokenizer_breakdown", "with_frames",
    "write_results",
]

PAPER_GMACS = {
    "deit_tiny_patch16_224": 1.26,
    "dart_deit_tiny_patch16_224": 1.32,
    "deit_small_patch16_224": 4.61,
    "dart_deit_small_patch16_224": 4.84,
    "dart_deit_small_patch16_224[num_tokens=392]": 10.1,
    "deit_small_patch16_224[img_size=384]": 15.5,
}
"""GMACs the paper reports (Table 1/2, its "GFLOPs"), by model spec (:func:`parse_model_spec`)."""

DEFAULT_MODELS = ("deit_tiny_patch16_224", "dart_deit_tiny_patch16_224")
DEFAULT_RESOLUTIONS = (224, 448, 672, 896)
DEFAULT_BUDGETS = (49, 98, 196, 392, 784)

# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callables(fns: Sequence[Callable[[], Any]], device: torch.device | str = "cpu", warmup: int = 2,
                   repeats: int = 5) -> list[list[float]]:
    """Seconds per call of each of ``fns``, interleaved: ``warmup`` untimed calls of each,
    then ``repeats`` rounds that time one call of every function in turn (so a slow spell
    of a shared machine hits all of them alike).

    On CUDA every timed call is bracketed by ``torch.cuda.synchronize``. The caller sets
    the grad / autocast context.

    Returns:
        One list of ``max(1, repeats)`` times (s) per function.
    """
    device = torch.device(device)
    for fn in fns:
        for _ in range(warmup):
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return times


def time_callable(fn: Callable[[], Any], device: torch.device | str = "cpu", warmup: int = 2,
                  repeats: int = 5) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``repeats`` timed ones
    (:func:`time_callables` with one function)."""
    return time_callables([fn], device, warmup, repeats)[0]


def _stats(times: Sequence[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": [round(t, 6) for t in times]}


def _images(batch_size: int, input_shape: Sequence[int], device: torch.device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, *input_shape, generator=gen).to(device)


def measure_speeds(entries: Sequence[tuple[nn.Module, Sequence[int]]], batch_size: int = 64,
                   device: str = "cpu", warmup: int = 2, repeats: int = 5, amp: bool = False) -> list[dict[str, Any]]:
    """Eval-mode forward times of several ``(model, C×H×W input)`` pairs, interleaved.

    Each model gets its own random ``batch_size×C×H×W`` batch and ``warmup`` untimed calls;
    then ``repeats`` rounds time one call of every model in turn, so a slow spell of a
    shared machine hits all of them alike and their ratio stays fair. The same model may
    appear with several input shapes. ``torch.inference_mode``; ``amp``: bf16 autocast;
    on CUDA each timed call is bracketed by ``torch.cuda.synchronize``. Models should
    already be on ``device`` (and compiled, if wanted).

    Returns:
        One dict per entry: ``batch_size``, ``median_s``, ``min_s``, ``max_s``,
        ``times_s``, ``images_per_s`` (``batch_size / median_s``), ``images_per_s_best``
        (``batch_size / min_s``) and ``latency_ms`` (median ms per call).
    """
    dev = torch.device(device)
    xs = [_images(batch_size, shape, dev, seed=i) for i, (_, shape) in enumerate(entries)]
    for model, _ in entries:
        model.eval()
    with torch.inference_mode(), autocast(dev, amp):
        times = time_callables([lambda m=model, x=x: m(x) for (model, _), x in zip(entries, xs)], dev, warmup,
                               repeats)
    out = []
    for t in times:
        row = {"batch_size": batch_size, **_stats(t)}
        row["images_per_s"] = batch_size / row["median_s"]
        row["images_per_s_best"] = batch_size / row["min_s"]
        row["latency_ms"] = 1e3 * row["median_s"]
        out.append(row)
    return out


def paired_speed_ratio(reference: dict[str, Any], other: dict[str, Any]) -> float:
    """Throughput of ``other`` relative to ``reference``, from interleaved timings.

    The median over rounds of ``t_reference / t_other`` (two :func:`measure_speeds` rows
    of the same call): each round's two calls ran back to back, so a machine that speeds
    up or slows down during the run (a shared VM) cancels out of every ratio.
    """
    pairs = [a / b for a, b in zip(reference["times_s"], other["times_s"]) if b > 0]
    return statistics.median(pairs)


def measure_speed(model: nn.Module, input_shape: Sequence[int], batch_size: int = 64, device: str = "cpu",
                  warmup: int = 2, repeats: int = 5, amp: bool = False) -> dict[str, Any]:
    """Eval-mode forward time of one model: :func:`measure_speeds` with one entry."""
    return measure_speeds([(model, input_shape)], batch_size, device, warmup, repeats, amp)[0]


def tokenizer_breakdown(model: nn.Module, input_shape: Sequence[int], batch_size: int = 64, device: str = "cpu",
                        warmup: int = 1, repeats: int = 5, amp: bool = False,
                        include_model: bool = True) -> list[dict[str, Any]]:
    """Time each step of the tokenizer on its own (median ms per batch), in rounds over the steps.

    For a DART model the steps are :class:`~dartok.DART`'s own methods, the ones
    ``DART.forward`` calls, in its order; each is fed the previous step's output, computed
    once beforehand, so nothing of the tokenizer is re-implemented here:

    ======================  ==================================  ==========
    stage                   call                                part_of
    ======================  ==================================  ==========
    input check             ``DART._check_images(images)``       (only with ``check_inputs``)
    score                   ``DART.score(images)``               ("score (uniform)" without a scorer)
    scorer: resize to S     ``Scorer.resize(images)``            score
    scorer: trunk           ``Scorer.trunk_features(small)``     score
    scorer: head + pdf      ``Scorer.pdf_from_features(feats)``  score
    density                 ``DART.density(images, score)``      (normalise + mix a given score)
    partition               ``DART.partition(pdf)``
    sampling                ``DART.sample(images, boxes)``
    projection              ``DART.project(patches)``
    position embeddings     ``DART.position_embeddings(boxes)``
    tokenizer (whole)       ``DART.forward(images)``
    model (whole)           ``model.forward(images)``            (with ``include_model``)
    ======================  ==================================  ==========

    So the rows without ``part_of`` between the input check and the position embeddings
    are the steps of ``DART.forward`` (``density(images)`` without a pdf is ``score`` then
    ``density(images, score)``), and ``tokenizer (whole)`` ≈ their sum (each timed
    apart, so up to timing noise); the ``part_of="score"`` rows are a finer breakdown of
    ``score`` (≈ its time). For the regular-grid warp (:class:`dartok.warp.WarpDART`) sampling is
    the warp itself (resample and stitch) and there is no projection nor position-embedding row.
    For a fixed-grid model: ``patch_embed`` (and the model).

    Returns:
        Rows ``{"stage", "call", "part_of" (None or the stage it refines), "median_ms",
        "min_ms", "times_s"}``.
    """
    from ..tokenizer import DART

    dev = torch.device(device)
    x = _images(batch_size, input_shape, dev)
    model.eval()
    stages: list[tuple[str, str, str | None, Callable[[], Any]]] = []
    with torch.inference_mode(), autocast(dev, amp):
        dart = getattr(model, "patch_embed", model)
        if isinstance(dart, DART):
            if dart.check_inputs:
                stages.append(("input check", "DART._check_images", None, lambda: dart._check_images(x)))
            scorer = dart.scorer
            stages.append(("score" if scorer is not None else "score (uniform)", "DART.score", None,
                           lambda: dart.score(x)))
            if scorer is not None:
                small = scorer.resize(x)
                feats = scorer.trunk_features(small)
                stages += [
                    (f"scorer: resize to {scorer.input_size}", "Scorer.resize", "score", lambda: scorer.resize(x)),
                    ("scorer: trunk", "Scorer.trunk_features", "score", lambda: scorer.trunk_features(small)),
                    ("scorer: head + pdf", "Scorer.pdf_from_features", "score",
                     lambda: scorer.pdf_from_features(feats)),
                ]
            score = dart.score(x)
            stages.append(("density", "DART.density", None, lambda: dart.density(x, score)))
            pdf = dart.density(x, score)
            stages.append(("partition", "DART.partition", None, lambda: dart.partition(pdf)))
            boxes = dart.partition(pdf)
            stages.append(("sampling", "DART.sample", None, lambda: dart.sample(x, boxes)))
            if dart.proj is not None:  # the regular-grid warp (WarpDART) has no projection nor position map
                patches = dart.sample(x, boxes)
                stages.append(("projection", "DART.project", None, lambda: dart.project(patches)))
                stages.append(("position embeddings", "DART.position_embeddings", None,
                               lambda: dart.position_embeddings(boxes)))
            stages.append(("tokenizer (whole)", "DART.forward", None, lambda: dart(x)))
        elif hasattr(model, "patch_embed"):
            stages.append(("tokenizer (whole)", "patch_embed", None, lambda: model.patch_embed(x)))
        if include_model:
            stages.append(("model (whole)", "model.forward", None, lambda: model(x)))
        times = time_callables([fn for *_, fn in stages], dev, warmup, repeats)  # rounds over all stages
    return [{"stage": name, "call": call, "part_of": part_of, "median_ms": 1e3 * statistics.median(t),
             "min_ms": 1e3 * min(t), "times_s": [round(v, 6) for v in t]}
            for (name, call, part_of, _), t in zip(stages, times)]


# --------------------------------------------------------------------------------------
# models, machine, results
# --------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    if text.strip().startswith("{"):  # a dict kwarg, e.g. scorer={"trunk": "mobilenetv3_small_050"}
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"model spec value {text.strip()!r} is not a JSON object: {e.msg}") from None
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def split_model_specs(text: str) -> list[str]:
    """Comma-separated model specs → the specs, splitting only at commas outside ``[...]``
    (and so outside a spec's JSON values): ``'a,b[scorer={"x": 1, "y": 2}]'`` → two specs.

    Raises:
        ValueError: unbalanced brackets.
    """
    specs, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in model specs {text!r}")
        elif ch == "," and depth == 0:
            specs.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced '[' in model specs {text!r}")
    specs.append(text[start:])
    return [p.strip() for p in specs if p.strip()]


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name[key=value;key=value]"`` → ``(name, kwargs)`` (``none``/``true``/numbers parsed,
    a value that starts with ``{`` read as a JSON object).

    Lets one benchmark run compare variants of a model, e.g.
    ``dart_deit_tiny_patch16_224[scorer=none]`` (DART with a uniform pdf: no scorer cost).

    Raises:
        ValueError: a malformed spec.
    """
    spec = spec.strip()
    if "[" not in spec:
        return spec, {}
    if not spec.endswith("]") or spec.count("[") != 1:
        raise ValueError(f"model spec must look like name[key=value;key=value], got {spec!r}")
    name, inner = spec[:-1].split("[", 1)
    kwargs = {}
    for item in filter(None, (i.strip() for i in inner.split(";"))):
        if "=" not in item:
            raise ValueError(f"model spec option {item!r} in {spec!r} is not key=value")
        key, value = item.split("=", 1)
        kwargs[key.strip()] = _parse_value(value)
    return name.strip(), kwargs


def make_model(name: str, num_tokens: int | None = None, **kwargs) -> tuple[nn.Module, tuple[int, ...]]:
    """A model and its input shape ``(C, H, W)`` (``(C, T, H, W)`` for a video model) for a token budget.

    ``name`` may carry model kwargs (:func:`parse_model_spec`; a ``num_tokens`` there wins
    over the argument). The model comes from :func:`dartok.models.create_model`, the one
    factory and its one budget rule: DART models take ``num_tokens`` directly (input from
    their config, 448 for DART-DeiT; ``img_size`` overrides); a fixed-grid ViT at N tokens
    gets the input that makes N patches: ``√N·P`` square, or for a non-square N the most
    square ``rows×cols`` grid (:func:`~dartok.models.factory.fixed_grid_shape`, 98 → 7×14,
    the scaling suite's 98 and 392) through the factory's ``grid=``. The input shape is
    read back from the model built.

    Raises:
        ValueError: a malformed spec, or a budget the factory refuses.
    """
    from ..models import create_model, is_dart

    name, spec_kwargs = parse_model_spec(name)
    if "num_tokens" in spec_kwargs:  # the spec's own budget wins
        num_tokens = spec_kwargs.pop("num_tokens")
    kwargs = {**kwargs, **spec_kwargs}
    if name.startswith("dart_") or num_tokens is None or math.isqrt(num_tokens) ** 2 == num_tokens:
        model = create_model(name, num_tokens=num_tokens, **kwargs)
    else:  # a fixed grid at a non-square budget: the most square rows×cols grid (98 → 7×14)
        model = create_model(name, num_tokens=num_tokens, grid=fixed_grid_shape(num_tokens), **kwargs)
    if is_dart(model):
        side = model.patch_embed.img_size[0]
        shape = (model.patch_embed.in_chans, side, side)
    else:
        shape = tuple(model.pretrained_cfg["input_size"])
    return model.eval(), with_frames(model, shape)


def with_frames(model: nn.Module, shape: Sequence[int]) -> tuple[int, ...]:
    """The input shape of one sample: ``(C, H, W)``, or ``(C, T, H, W)`` for a video model
    (one with a ``num_frames`` attribute), which takes C×T×H×W clips."""
    frames = getattr(model, "num_frames", None)
    shape = tuple(int(v) for v in shape)
    if frames and len(shape) == 3:
        shape = (shape[0], int(frames), *shape[1:])
    return shape


def _num_tokens(model: nn.Module) -> int:
    pe = getattr(model, "patch_embed", None)
    return int(getattr(pe, "num_patches", 0) or 0)


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, threads, load, GPU (if any), versions, git commit and UTC date."""
    import timm

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        # allocator / threading settings that change CPU timings a lot (see benchmarks/README.md)
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_", "DNNL_", "ONEDNN_")) or k == "LD_PRELOAD"},
    }
    try:
        import fvcore

        info["fvcore"] = getattr(fvcore, "__version__", "unknown")
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    try:
        root = Path(__file__).resolve().parents[3]  # src/dartok/tools/bench.py -> repo
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit:
            info["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_results(result: dict[str, Any], out_dir: str | Path, name: str,
                  markdown: str | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md`` atomically.

    The JSON is serialised in full before anything is written (a value that cannot be
    serialised raises ``TypeError`` and leaves any old files untouched); each file is
    written to a temporary file in the same folder, fsynced and renamed over the target.
    NaN/Inf are refused (``ValueError``): the JSON stays standard.

    Returns:
        ``(json_path, md_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown if markdown is not None else render_markdown(result)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    write_json(json_path, result, allow_nan=False)  # serialised in full before the file is touched
    atomic_write(md_path, md if md.endswith("\n") else md + "\n")
    return json_path, md_path


def script_command(argv: list[str] | None = None) -> str:
    """The command line of the running script, shell-quoted (``python benchmarks/x.py --a 1``)."""
    import shlex

    argv = list(sys.argv if argv is None else argv)
    return shlex.join([Path(sys.executable).name, *argv])


def finish_report(result: dict[str, Any], lines: list[str], out_dir: str | Path, name: str,
                  echo: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Append the machine / command / settings footer to ``lines``, write and print the report.

    ``result`` needs ``"machine"`` (:func:`machine_info`), ``"command"`` and ``"settings"``
    (a flat dict). Writes ``<out_dir>/<name>.{json,md}`` with :func:`write_results`
    (atomic) and echoes the markdown and the paths.

    Returns:
        ``(json_path, md_path)``.

    Raises:
        KeyError: ``result`` lacks ``machine``, ``command`` or ``settings``.
    """
    md = "\n".join([*lines, "", *_machine_lines(result)]) + "\n"
    jp, mp = write_results(result, out_dir, name, md)
    echo(md.rstrip("\n"))
    echo(f"written: {jp} and {mp}")
    return jp, mp


# --------------------------------------------------------------------------------------
# suites
# --------------------------------------------------------------------------------------


def _prepare(model: nn.Module, device: str, compile_model: bool) -> nn.Module:
    model = model.to(device).eval()
    if compile_model:
        model = torch.compile(model)
    return model


def _check_device(device: str) -> None:
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but torch.cuda.is_available() is False "
                         f"(torch {torch.__version__})")


def _target(name: str, value: float, threshold: float, op: str, unit: str = "") -> dict[str, Any]:
    holds = value <= threshold if op == "<=" else value >= threshold
    return {"target": name, "value": value, "threshold": threshold, "op": op, "unit": unit, "holds": bool(holds)}


def _settings(**kw) -> dict[str, Any]:
    return dict(kw)


def run_compute(models: Sequence[str] = DEFAULT_MODELS, device: str = "cpu", batch_size: int = 64,
                warmup: int = 2, repeats: int = 5, latency_repeats: int | None = None, amp: bool | None = None,
                compile_model: bool = False, breakdown: bool = True, num_tokens: int | None = None,
                model_kwargs: dict | None = None, log: Callable[[str], None] = print,
                command: str | None = None, timing: bool = True, interleave: bool = True) -> dict[str, Any]:
    """Params, GMACs, throughput, batch-1 latency and tokenizer breakdown of each model.

    Args:
        models: timm / dartok model names (first one is the reference for the ratios).
        device: ``"cpu"`` or ``"cuda[:i]"``.
        batch_size: batch of the throughput run.
        warmup, repeats: untimed and timed calls per measurement.
        latency_repeats: timed batch-1 calls (default ``4·repeats``).
        amp: bf16 autocast (default: on for CUDA, off for CPU).
        compile_model: ``torch.compile`` the models for the timed runs (MACs are counted
            on the eager model).
        breakdown: time the tokenizer stages too.
        num_tokens: token budget passed to :func:`make_model` (default: each model's own).
        model_kwargs: extra ``create_model`` kwargs for every model.
        log: progress printer.
        command: the command line to record (default ``sys.argv``).
        timing: False counts params and MACs only (no throughput, latency or breakdown).
        interleave: time the models in alternation (:func:`measure_speeds`), so load from
            other processes hits them alike; False times one model after the other.

    Returns:
        The result dict (``machine``, ``settings``, ``models``, ``targets``, ``notes``).
    """
    _check_device(device)
    dev_type = torch.device(device).type
    amp = (dev_type == "cuda") if amp is None else amp
    latency_repeats = latency_repeats or 4 * repeats
    rows, built = [], []
    for name in models:
        log(f"[bench] {name}: building")
        model, shape = make_model(name, num_tokens=num_tokens, **(model_kwargs or {}))
        macs = count_macs(model, shape)
        log(f"[bench] {name}: {macs.gmacs:.4f} GMACs, {macs.params / 1e6:.3f} M params")
        rows.append({"model": name, "input": list(shape), "tokens": _num_tokens(model), "params": macs.params,
                     "trainable_params": macs.trainable_params, "gmacs": macs.gmacs, "macs": asdict(macs)})
        built.append((model, shape))
    if timing:
        timed = [(_prepare(m, device, compile_model), shape) for m, shape in built]
        log(f"[bench] throughput at batch {batch_size} ({'interleaved' if interleave else 'one model at a time'})")
        groups = [timed] if interleave else [[e] for e in timed]
        thr = [r for g in groups for r in measure_speeds(g, batch_size, device, warmup, repeats, amp)]
        log("[bench] batch-1 latency")
        lat = [r for g in groups for r in measure_speeds(g, 1, device, max(warmup, 3), latency_repeats, amp)]
        for row, t, l_ in zip(rows, thr, lat):
            row["throughput"], row["latency"] = t, l_
            if interleave:
                row["throughput_ratio_paired"] = paired_speed_ratio(thr[0], t)
            log(f"[bench] {row['model']}: {t['images_per_s']:.1f} img/s (best {t['images_per_s_best']:.1f}), "
                f"latency {l_['latency_ms']:.1f} ms")
        if breakdown:
            for row, (model, shape) in zip(rows, built):
                row["breakdown"] = tokenizer_breakdown(model.to(device), shape, batch_size, device,
                                                       max(1, warmup - 1), repeats, amp)
                log(f"[bench] {row['model']}: tokenizer stages timed")
        del timed
    del built
    targets = []
    by_name = {r["model"]: r for r in rows}
    for name, paper in PAPER_GMACS.items():
        if name not in by_name:
            continue
        g = by_name[name]["gmacs"]
        by_name[name]["paper_gmacs"] = paper
        if name.startswith("dart_"):  # DART: no more than the paper reports
            targets.append(_target(f"{name} GMACs (paper {paper})", g, paper, "<=", "GMACs"))
        else:  # the baselines: the paper's count, to 2%
            targets.append(_target(f"{name} GMACs within 2% of the paper's {paper}", abs(g / paper - 1), 0.02, "<="))
    if timing and {"deit_tiny_patch16_224", "dart_deit_tiny_patch16_224"} <= set(by_name):
        ref, dart = by_name["deit_tiny_patch16_224"]["throughput"], by_name["dart_deit_tiny_patch16_224"]["throughput"]
        if interleave:
            ratio, how = paired_speed_ratio(ref, dart), "median of per-round ratios"
        else:
            ratio, how = dart["images_per_s"] / ref["images_per_s"], "ratio of medians"
        targets.append(_target(f"DART-DeiT-Ti / DeiT-Ti throughput, batch {batch_size} ({how})", ratio, 0.90, ">="))
    return {
        "suite": "compute" if timing else "macs",
        "command": command or " ".join(sys.argv),
        "machine": machine_info(device),
        "settings": _settings(device=device, batch_size=batch_size, warmup=warmup, repeats=repeats,
                              latency_repeats=latency_repeats, amp_bf16=amp, compile=compile_model,
                              interleave=interleave, num_tokens=num_tokens, model_kwargs=model_kwargs or {}),
        "models": rows,
        "targets": targets,
        "conventions": {op: text for op, (_, text) in HAND_COUNTED_OPS.items()},
        "notes": _notes(device),
    }


def _notes(device: str) -> list[str]:
    notes = ["MACs: fvcore FlopCountAnalysis, one multiply-add = 1 (fvcore's 'flop'); timm fused attention "
             "switched off while counting so the attention matmuls are counted; elementwise ops (add, mul, "
             "softmax, GELU, sigmoid, hardswish...) are not counted (listed as unsupported).",
             "Timing: eval mode, torch.inference_mode, random N(0,1) input, median of the timed calls after "
             "warm-up; throughput = batch / median batch time. Models (or input sides) compared in one table are "
             "timed interleaved, one call each per round; 'paired' ratios are the median over rounds of the "
             "per-round time ratio, which cancels a machine that speeds up or slows down during the run."]
    if torch.device(device).type == "cpu":
        notes.append("CUDA path (bf16 autocast, synchronize, optional torch.compile) exists but was not run: "
                     "no GPU on this machine." if not torch.cuda.is_available() else "Run on CPU.")
    return notes


def run_scaling(model: str = "dart_deit_tiny_patch16_224", baseline: str = "deit_tiny_patch16_224",
                resolutions: Sequence[int] = DEFAULT_RESOLUTIONS, budgets: Sequence[int] = DEFAULT_BUDGETS,
                resolution_tokens: int = 196, budget_input: int = 448, device: str = "cpu",
                batch_size: int = 32, warmup: int = 1, repeats: int = 3, amp: bool | None = None,
                compile_model: bool = False, log: Callable[[str], None] = print,
                command: str | None = None) -> dict[str, Any]:
    """Throughput vs input resolution (DART, fixed tokens) and vs token budget (DART vs grid).

    Resolution sweep: one DART model at ``resolution_tokens`` tokens fed square inputs of
    each side in ``resolutions``; per side: GMACs, throughput and the times of the stages
    whose cost grows with the input (input check, scorer resize, sampling, the tokenizer).
    Budget sweep: for each N in ``budgets``, the DART model at N tokens on a
    ``budget_input`` input and the fixed-grid ``baseline`` at N patches
    (:func:`make_model`); GMACs, throughput and their ratio.

    Returns:
        The result dict (``resolution``, ``budget`` rows, ``targets``...).
    """
    _check_device(device)
    dev_type = torch.device(device).type
    amp = (dev_type == "cuda") if amp is None else amp
    res_rows = []
    if resolutions:
        base, _ = make_model(model, num_tokens=resolution_tokens)
        chans = base.patch_embed.in_chans
        timed = _prepare(base, device, compile_model)
        shapes = [(chans, side, side) for side in resolutions]
        log(f"[bench] {model}: inputs {list(resolutions)} at {resolution_tokens} tokens (interleaved)")
        speeds = measure_speeds([(timed, shape) for shape in shapes], batch_size, device, warmup, repeats, amp)
        ref_speed = next((sp for side, sp in zip(resolutions, speeds) if side == 448), speeds[0])
        for side, shape, thr in zip(resolutions, shapes, speeds):
            macs = count_macs(base, shape)
            stages = tokenizer_breakdown(base.to(device), shape, batch_size, device, warmup, repeats, amp,
                                         include_model=False)
            keep = {r["stage"]: r["median_ms"] for r in stages}
            res_rows.append({"input": side, "tokens": resolution_tokens, "gmacs": macs.gmacs,
                             "throughput_ratio_paired": paired_speed_ratio(ref_speed, thr),
                             "tokenizer_gmacs": macs.by_part.get("tokenizer", 0) / 1e9,
                             "resize_macs": macs.hand_counted.get("_upsample_bilinear2d_aa", 0),
                             "throughput": thr, "stages_ms": keep})
            log(f"[bench] {model} input {side}: {macs.gmacs:.4f} GMACs, {thr['images_per_s']:.1f} img/s")
        del base, timed
    bud_rows = []
    for n in budgets:
        row: dict[str, Any] = {"tokens": n}
        pair = []
        for key, name in (("dart", model), ("grid", baseline)):
            kwargs = {"img_size": budget_input} if key == "dart" else {}
            m, shape = make_model(name, num_tokens=n, **kwargs)
            macs = count_macs(m, shape)
            row[key] = {"model": name, "input": list(shape), "gmacs": macs.gmacs}
            pair.append((_prepare(m, device, compile_model), shape))
        for key, thr in zip(("dart", "grid"), measure_speeds(pair, batch_size, device, warmup, repeats, amp)):
            row[key]["throughput"] = thr
            r = row[key]
            log(f"[bench] {r['model']} @ {n} tokens, input {r['input'][1]}x{r['input'][2]}: {r['gmacs']:.4f} GMACs, "
                f"{thr['images_per_s']:.1f} img/s")
        del pair
        row["throughput_ratio"] = paired_speed_ratio(row["grid"]["throughput"], row["dart"]["throughput"])
        row["gmacs_ratio"] = row["dart"]["gmacs"] / row["grid"]["gmacs"]
        bud_rows.append(row)
    targets = []
    by_side = {r["input"]: r for r in res_rows}
    if 448 in by_side and 896 in by_side:
        drop = 1 - paired_speed_ratio(by_side[448]["throughput"], by_side[896]["throughput"])
        targets.append(_target(f"DART throughput drop, input 448 → 896 at {resolution_tokens} tokens", drop, 0.10,
                               "<="))
    return {
        "suite": "scaling",
        "command": command or " ".join(sys.argv),
        "machine": machine_info(device),
        "settings": _settings(model=model, baseline=baseline, device=device, batch_size=batch_size, warmup=warmup,
                              repeats=repeats, amp_bf16=amp, compile=compile_model,
                              resolution_tokens=resolution_tokens, budget_input=budget_input),
        "resolution": res_rows,
        "budget": bud_rows,
        "targets": targets,
        "conventions": {op: text for op, (_, text) in HAND_COUNTED_OPS.items()},
        "notes": _notes(device) + ["Fixed grid at a non-square N uses the most square rows×cols grid "
                                   "(98 → 7×14 on 112×224, 392 → 14×28 on 224×448)."],
    }


SUITES = ("compute", "scaling", "macs")
"""What :func:`run_bench` runs: ``compute`` (params, GMACs, img/s, latency, tokenizer steps),
``scaling`` (vs input resolution and token budget), ``macs`` (counts only, no timing)."""


def run_bench(suite: str = "compute", *, models: Sequence[str] = DEFAULT_MODELS,
              model: str = "dart_deit_tiny_patch16_224", baseline: str = "deit_tiny_patch16_224",
              num_tokens: int | None = None, resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
              budgets: Sequence[int] = DEFAULT_BUDGETS, resolution_tokens: int = 196, budget_input: int = 448,
              device: str = "cpu", batch_size: int = 64, warmup: int = 2, repeats: int = 5, amp: bool | None = None,
              compile_model: bool = False, breakdown: bool = True, model_kwargs: dict | None = None,
              notes: Sequence[str] = (), name: str | None = None, output_dir: str | os.PathLike = "benchmarks/results",
              log: Callable[[str], None] = print, command: str | None = None) -> tuple[dict[str, Any], str, Path, Path]:
    """Run one suite and write ``<output_dir>/<name>.json`` and ``.md`` (what ``dartok bench`` does).

    ``compute`` / ``macs``: :func:`run_compute` on ``models`` (``macs``: counts only);
    ``scaling``: :func:`run_scaling` of ``model`` vs ``baseline``. ``notes`` are appended
    to the result's notes; ``name`` defaults to ``<suite>_<device type>`` (``compute_cpu``).

    Returns:
        ``(result, markdown, json_path, md_path)``.

    Raises:
        ValueError: an unknown suite, ``batch_size`` or ``repeats`` < 1, ``warmup`` < 0,
            a CUDA device without CUDA, a bad model spec.
    """
    if suite not in SUITES:
        raise ValueError(f"suite must be compute, scaling or macs, got {suite!r}")
    for value, option in ((batch_size, "batch_size"), (repeats, "repeats")):
        if value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    stem = name or f"{suite}_{torch.device(device).type}"
    if suite == "scaling":
        result = run_scaling(model=model, baseline=baseline, resolutions=resolutions, budgets=budgets,
                             resolution_tokens=resolution_tokens, budget_input=budget_input, device=device,
                             batch_size=batch_size, warmup=warmup, repeats=repeats, amp=amp,
                             compile_model=compile_model, log=log, command=command)
    else:
        timing = suite != "macs"
        result = run_compute(models=models, device=device, batch_size=batch_size, warmup=warmup, repeats=repeats,
                             amp=amp, compile_model=compile_model, breakdown=breakdown and timing,
                             num_tokens=num_tokens, model_kwargs=model_kwargs, log=log, command=command,
                             timing=timing)
    result["notes"] = list(result.get("notes", [])) + list(notes or [])
    md = render_markdown(result)
    json_path, md_path = write_results(result, output_dir, stem, md)
    return result, md, json_path, md_path


# --------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------


def _fmt_int(n: int) -> str:
    return f"{n / 1e6:.3f} M"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def _machine_lines(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    s = result["settings"]
    env = ", ".join(f"{k}={v}" for k, v in (m.get("env") or {}).items()) or "none"
    lines = [f"Machine: {m.get('cpu')} ({m.get('cpu_count')} cores, {m.get('torch_threads')} torch threads"
             f"{', GPU ' + m['gpu'] if 'gpu' in m else ''}), load avg {m.get('loadavg_1_5_15')}; "
             f"allocator/threading env: {env}; "
             f"torch {m.get('torch')}, timm {m.get('timm')}, fvcore {m.get('fvcore')}, Python {m.get('python')}; "
             f"{m.get('date_utc')}; commit {m.get('git_commit', '?')}.",
             "", f"Command: `{result['command']}`", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in s.items()) + "."]
    return lines


def _targets_lines(result: dict[str, Any]) -> list[str]:
    if not result.get("targets"):
        return []
    rows = [(t["target"], f"{t['value']:.4g}", f"{t['op']} {t['threshold']}", "yes" if t["holds"] else "**no**")
            for t in result["targets"]]
    return ["", "### Targets", ""] + _table(["target", "measured", "required", "holds"], rows)


def render_markdown(result: dict[str, Any]) -> str:
    """Markdown tables for a :func:`run_compute` or :func:`run_scaling` result."""
    lines: list[str] = []
    if result.get("suite") in ("compute", "macs"):
        lines += [f"## Compute: {', '.join(r['model'] for r in result['models'])}", ""]
        timed = all("throughput" in r for r in result["models"])
        ref = result["models"][0]["throughput"]["images_per_s"] if timed and result["models"] else 1.0
        b = result["settings"]["batch_size"]
        rows = []
        for r in result["models"]:
            row = [r["model"], "×".join(map(str, r["input"][1:])), r["tokens"], _fmt_int(r["params"]),
                   _fmt_int(r["trainable_params"]), f"{r['gmacs']:.4f}", r.get("paper_gmacs", "-")]
            if timed:
                t, lat = r["throughput"], r["latency"]
                paired = r.get("throughput_ratio_paired")
                row += [f"{t['images_per_s']:.1f}", f"{t['images_per_s'] / ref:.3f}",
                        f"{paired:.3f}" if paired is not None else "-", f"{lat['latency_ms']:.1f}"]
            rows.append(row)
        header = ["model", "input", "tokens", "params", "trainable", "GMACs", "paper GMACs"]
        if timed:
            header += [f"img/s (batch {b})", "× first", "× first, paired", "latency b=1 (ms)"]
        lines += _table(header, rows)
        for r in result["models"]:
            m = r["macs"]
            lines += ["", f"### {r['model']}: MACs", ""]
            parts = [(k, f"{v / 1e9:.4f}") for k, v in m["by_part"].items()]
            if parts:
                lines += _table(["part", "GMACs"], parts) + [""]
            lines += _table(["op (counted)", "GMACs"],
                            [(k, f"{v / 1e9:.5f}") for k, v in m["by_operator"].items()])
            if m["tokenizer_by_operator"]:
                lines += ["", "Tokenizer without scorer, by op (MACs): "
                          + ", ".join(f"{k} {v:,}" for k, v in m["tokenizer_by_operator"].items()) + "."]
            lines += ["", "Hand-counted ops (MACs): " + (", ".join(f"{k} {v:,}" for k, v in m["hand_counted"].items())
                                                          or "none") + ".",
                      "Not counted (fvcore has no handle; occurrences): "
                      + (", ".join(f"{k} ×{v}" for k, v in m["unsupported"].items()) or "none") + ".",
                      f"Attention modules switched to unfused for counting: {m['unfused_attention_modules']}."]
            if r.get("breakdown"):
                total = next((x["median_ms"] for x in r["breakdown"] if x["stage"] == "model (whole)"), None)
                lines += ["", f"### {r['model']}: time per stage (batch {b})", ""]
                lines += _table(["stage", "call", "median ms", "% of model"],
                                [(("↳ " if x.get("part_of") else "") + x["stage"], f"`{x['call']}`",
                                  f"{x['median_ms']:.2f}",
                                  f"{100 * x['median_ms'] / total:.1f}" if total else "")
                                 for x in r["breakdown"]])
    elif result.get("suite") == "scaling":
        s = result["settings"]
        if result.get("resolution"):
            lines += [f"## {s['model']}: throughput vs input resolution ({s['resolution_tokens']} tokens, "
                      f"batch {s['batch_size']})", ""]
            first = result["resolution"][0]["throughput"]["images_per_s"]
            ref = next((r["throughput"]["images_per_s"] for r in result["resolution"] if r["input"] == 448), first)
            stage_names = []
            for r in result["resolution"]:
                stage_names += [k for k in r["stages_ms"] if k not in stage_names]
            rows = [(f"{r['input']}×{r['input']}", f"{r['gmacs']:.4f}", f"{r['throughput']['images_per_s']:.1f}",
                     f"{r['throughput']['images_per_s'] / ref:.3f}",
                     f"{r['throughput_ratio_paired']:.3f}" if "throughput_ratio_paired" in r else "-",
                     *[f"{r['stages_ms'][k]:.1f}" if k in r["stages_ms"] else "-" for k in stage_names])
                    for r in result["resolution"]]
            header = ["input", "GMACs", "img/s", "× 448", "× 448, paired", *[f"{k} (ms)" for k in stage_names]]
            lines += _table(header, rows)
        if result.get("budget"):
            lines += ["", f"## Throughput vs token budget: {s['model']} (input {s['budget_input']}) vs "
                      f"{s['baseline']} fixed grid (batch {s['batch_size']})", ""]
            rows = []
            for r in result["budget"]:
                d, g = r["dart"], r["grid"]
                rows.append((r["tokens"], f"{d['gmacs']:.4f}", f"{d['throughput']['images_per_s']:.1f}",
                             "×".join(map(str, g["input"][1:])), f"{g['gmacs']:.4f}",
                             f"{g['throughput']['images_per_s']:.1f}", f"{r['throughput_ratio']:.3f}"))
            lines += _table(["tokens", "DART GMACs", "DART img/s", "grid input", "grid GMACs", "grid img/s",
                             "DART / grid img/s (paired)"], rows)
    lines += _targets_lines(result)
    lines += ["", "### Setup", ""] + _machine_lines(result)
    if result.get("conventions"):
        lines += ["", "Hand-counted op conventions: "
                  + "; ".join(f"`{k}`: {v}" for k, v in result["conventions"].items()) + "."]
    lines += [""] + [f"- {n}" for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"
