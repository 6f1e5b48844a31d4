"""Accuracy benchmark harness: train several tokenizers with one recipe and compare them.

Issue 3 §2 (paper Table 1/2, Fig. 2, 6, 7 in miniature). Every run is a ``dartok train``
subprocess (one CPU thread each, ``jobs`` at a time) with the same data, recipe, epochs and
seed; only the model / token budget / tokenizer options differ. DART runs are trained in
chunks (``--stop-after`` + exact ``--resume``) so their partitions can be drawn at several
epochs (Fig. 7). Results: ``<name>.json`` / ``<name>.md`` tables (top-1, top-5, GMACs,
params, train images/s, train time) and an accuracy-vs-GMACs plot.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["PRESETS", "RunSpec", "collect", "plot_accuracy_vs_macs", "run_specs", "write_tables"]


@dataclass
class RunSpec:
    """One run of a comparison.

    Attributes:
        name: short label, also the run's folder name (e.g. ``"dart@16"``).
        model: registered model name (``vit_micro_patch8``, ``dart_vit_micro_patch8``, ...).
        num_tokens: token budget N (a square for fixed-grid models).
        model_kwargs: extra model kwargs (scorer options, alpha, ...).
        group: what the row is compared within (``"main"`` or an ablation name).
    """

    name: str
    model: str
    num_tokens: int
    model_kwargs: dict = field(default_factory=dict)
    group: str = "main"

    @property
    def is_dart(self) -> bool:
        return self.model.startswith("dart_")


def _main_set(n: int, grid: str, dart: str) -> list[RunSpec]:
    """The paper's main comparison: fixed grid at N, DART at N, fixed grid at 4N, DART at 2N."""
    return [
        RunSpec(f"grid@{n}", grid, n),
        RunSpec(f"dart@{n}", dart, n),
        RunSpec(f"grid@{4 * n}", grid, 4 * n),
        RunSpec(f"dart@{2 * n}", dart, 2 * n),
    ]


def _micro(n: int) -> list[RunSpec]:
    return _main_set(n, "vit_micro_patch8", "dart_vit_micro_patch8")


def _video(per_frame: int, frames: int, grid: str, dart: str, dart_kwargs: dict | None = None) -> list[RunSpec]:
    """Paper Table 3: fixed grid on every one of T frames vs DART with T/2 frames' worth of tokens.

    ``num_tokens`` of a plain VideoMamba is per frame; of a DART one, for the whole clip.
    ``dart_kwargs`` go to the DART model only (e.g. ``scorer_input_size``).
    """
    return [
        RunSpec(f"grid {per_frame}x{frames}", grid, per_frame),
        RunSpec(f"dart {per_frame}x{frames // 2}", dart, per_frame * (frames // 2), dict(dart_kwargs or {})),
    ]


def _ablations(n: int) -> list[RunSpec]:
    """One option changed at a time from ``dart_vit_micro_patch8``'s defaults (MobileNetV3-S trunk
    trained from scratch, alpha 0.1, scorer input 128, learned contrast, anti-aliased boxes).

    Ordered slowest first (EfficientNet-B0 is ~6x the default step) so two jobs finish together.
    """
    d = "dart_vit_micro_patch8"
    runs = [RunSpec(f"trunk={t}", d, n, {"scorer": t}, "scorer trunk")
            for t in ("efficientnet_b0", "mobilenetv3_large", "mnasnet")]
    runs += [RunSpec(f"reference@{n}", d, n, {}, "reference (defaults)")]
    runs += [RunSpec(f"alpha={a}", d, n, {"alpha": a}, "alpha") for a in (0.0, 0.3)]
    runs += [RunSpec("paper_contrast", d, n, {"learn_contrast": False}, "score contrast")]
    runs += [RunSpec("frozen_trunk", d, n, {"trainable_scorer_trunk": False}, "trunk frozen?")]
    runs += [RunSpec(f"scorer_input={s}", d, n, {"scorer_input_size": s}, "scorer input") for s in (96, 64)]
    return runs


PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores, about an hour for the main set with ablations off
    "cpu": {"specs": _micro(16), "train": {"canvas_size": 128, "epochs": 12, "train_samples": 20000,
                                            "test_samples": 2000, "batch_size": 64, "lr": 1e-3}},
    # one option at a time vs a reference run of the same (shorter: 10k images, 8 epochs) recipe;
    # about 2.5 core-hours, 75-90 min with two jobs (the larger trunks dominate)
    "cpu-ablations": {"specs": _ablations(16),
                      "train": {"canvas_size": 128, "epochs": 8, "train_samples": 10000,
                                "test_samples": 2000, "batch_size": 64, "lr": 1e-3}},
    # Vision Mamba (issue 4): the same four runs on the micro Vim (pure-PyTorch scan on CPU)
    # (about 3-15× slower per step than the micro ViT: 6k images, 8 epochs, ~30 min on 2 cores)
    "cpu-vim": {"specs": _main_set(16, "vim_micro_patch8", "dart_vim_micro_patch8"),
                "train": {"canvas_size": 128, "epochs": 8, "train_samples": 6000, "test_samples": 2000,
                          "batch_size": 64, "lr": 1e-3}},
    # VideoMamba on Moving Cluttered Fashion-MNIST (direction task, 4 frames of 64², 4-8 px per
    # frame): 4×4 grid on every frame vs DART with 2 frames' worth of tokens (paper Table 3 in
    # miniature); the scorer sees the 64² frames as they are (not upsampled to 128²). 3k clips x
    # 20 epochs: patch-token models from scratch need that long before they pick up the motion
    # at all (a 6-block video ViT sat at chance for 5 of 15 epochs); about 45 min with two jobs
    "cpu-video": {"specs": _video(16, 4, "videomamba_micro_patch8", "dart_videomamba_micro_patch8",
                                  {"scorer_input_size": 64}),
                  "train": {"data": "moving_fmnist", "data_kwargs": {"num_frames": 4, "speed": [4, 8]},
                            "canvas_size": 64, "epochs": 20, "train_samples": 3000, "test_samples": 1000,
                            "batch_size": 32, "lr": 1e-3}},
    # Vim-Ti / VideoMamba-Ti sizes for a GPU (ImageFolder / SSv2-style clip folder via --data, --data-root)
    "full-vim": {"specs": _main_set(196, "vim_tiny_patch16_224", "dart_vim_tiny_patch16_224"),
                 "train": {"epochs": 300, "batch_size": 1024, "lr": 1e-3, "warmup_epochs": 5, "amp": True}},
    "full-video": {"specs": _video(196, 8, "videomamba_tiny_patch16_224", "dart_videomamba_tiny_patch16_224"),
                   "train": {"data": "ssv2", "data_kwargs": {"num_frames": 8}, "epochs": 35, "batch_size": 256,
                             "lr": 4e-4, "warmup_epochs": 5, "amp": True}},
    # DeiT-Ti sizes on a GPU and an ImageFolder dataset (--data "" --data-root ...), DeiT recipe
    "full": {"specs": [RunSpec("grid@196", "deit_tiny_patch16_224", 196),
                       RunSpec("dart@196", "dart_deit_tiny_patch16_224", 196),
                       RunSpec("grid@784", "deit_tiny_patch16_224", 784),
                       RunSpec("dart@392", "dart_deit_tiny_patch16_224", 392)],
             "train": {"epochs": 300, "batch_size": 1024, "lr": 1e-3, "warmup_epochs": 5, "amp": True}},
}


def _train_args(options: dict[str, Any]) -> list[str]:
    args = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, dict):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


def _run_cli(args: Sequence[str], prefix: str, echo: Callable[[str], None]) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dartok.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        echo(f"[{prefix}] {line.rstrip()}")
    return proc.wait()


def run_specs(
    specs: Sequence[RunSpec],
    output: str | os.PathLike,
    train: dict[str, Any],
    jobs: int = 2,
    snapshot_epochs: Sequence[int] = (),
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, int]:
    """Train every spec with the same ``train`` options, ``jobs`` runs at a time.

    Each run is ``dartok train --model ... -o <output>/<name> --threads T --no-progress``
    plus ``train`` as options (``T`` = 1 when several jobs share the CPU). For DART runs,
    ``snapshot_epochs`` (e.g. ``(1, 3, 12)``) stops after those epochs, draws
    ``<output>/<name>/partition_epoch<k>.png`` and resumes exactly.

    Returns:
        ``{name: exit code}`` (0 for success).
    """
    output = Path(output)
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    threads = "1" if jobs > 1 else str(max(1, os.cpu_count() or 1))
    epochs = int(train.get("epochs", 10))

    def one(spec: RunSpec) -> int:
        run_dir = output / spec.name
        base = ["train", "--model", spec.model, "--num-tokens", str(spec.num_tokens), "-o", str(run_dir),
                "--threads", threads, "--no-progress", *_train_args(train)]
        if spec.model_kwargs:
            base += ["--model-kwargs", json.dumps(spec.model_kwargs)]
        already = (run_dir / "checkpoint").exists()
        done = 0
        if resume and already:  # a resumed run draws only the snapshots it has not passed yet
            from .checkpoint import load_config

            done = int(load_config(run_dir / "checkpoint").get("epoch", 0))
        stops = sorted({e for e in snapshot_epochs if done < e < epochs}) if spec.is_dart else []
        for k, stop in enumerate([*stops, None]):
            args = list(base)
            if stop is not None:
                args += ["--stop-after", str(stop)]
            if k > 0 or (resume and already):
                args += ["--resume"]
            code = _run_cli(args, spec.name, say)
            if code != 0:
                return code
            if spec.is_dart and (stop is not None or epochs in snapshot_epochs):
                shown = stop if stop is not None else epochs
                code = _run_cli(["visualize", "--checkpoint", str(run_dir / "checkpoint"), "--indices", "0-7",
                                 "--threads", threads, "-o", str(run_dir / f"partition_epoch{shown}.png")],
                                spec.name, say)
                if code != 0:
                    return code
        return 0

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        codes = dict(zip([s.name for s in specs], pool.map(one, specs)))
    return codes


def collect(specs: Sequence[RunSpec], output: str | os.PathLike, count_macs: bool = True) -> list[dict[str, Any]]:
    """One row per finished run: accuracy, MACs, params, speed, train time.

    MACs are fvcore multiply-accumulates per image ("GMACs", the field's "GFLOPs") counted
    by :func:`dartok.bench.count_macs` with fused attention off.
    """
    from .checkpoint import load_config
    from .engine import read_metrics

    rows = []
    for spec in specs:
        run_dir = Path(output) / spec.name
        config = load_config(run_dir / "checkpoint")
        metrics = read_metrics(run_dir)
        last = config["metrics"]
        row = {**asdict(spec), "input_size": config["input_size"], "epochs": config["epoch"],
               "test_top1": last["test_top1"], "test_top5": last["test_top5"], "test_loss": last["test_loss"],
               "train_images_per_s": last["images_per_s"],
               "train_time_s": sum(m.get("epoch_time_s", 0.0) for m in metrics),
               "top1_by_epoch": [m["test_top1"] for m in metrics]}
        if count_macs:
            from .bench import count_macs as macs_of, count_params, with_frames
            from .checkpoint import model_from_checkpoint

            model, _ = model_from_checkpoint(run_dir / "checkpoint")
            report = macs_of(model.eval(), with_frames(model, config["input_size"]))
            row["gmacs"] = report.total / 1e9
            row["params_m"] = count_params(model)[0] / 1e6
        rows.append(row)
    return rows


def write_tables(rows: list[dict[str, Any]], path_stem: str | os.PathLike, meta: dict[str, Any]) -> str:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically; returns the markdown table."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for group in dict.fromkeys(r["group"] for r in rows):
        lines += [f"**{group}**", "",
                  "| run | model | tokens | input | epochs | test top-1 (%) | top-5 (%) | GMACs | params (M) | "
                  "train img/s | train time (min) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["group"] == group):
            size = "x".join(str(v) for v in r["input_size"][1:])
            gm = f"{r['gmacs']:.4f}" if "gmacs" in r else "-"
            pm = f"{r['params_m']:.2f}" if "params_m" in r else "-"
            lines.append(f"| {r['name']} | {r['model']} | {r['num_tokens']} | {size} | {r.get('epochs', '-')} | "
                         f"{r['test_top1']:.2f} | "
                         f"{r['test_top5']:.2f} | {gm} | {pm} | {r['train_images_per_s']:.0f} | "
                         f"{r['train_time_s'] / 60:.1f} |")
        lines.append("")
    md = "\n".join(lines)
    for suffix, text in ((".json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"), (".md", md)):
        target = stem.with_suffix(suffix)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return md


def plot_accuracy_vs_macs(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Accuracy vs GMACs in the style of the paper's Fig. 2/6 (marker size ~ params)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in rows if r["group"] == "main" and "gmacs" in r]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, color, marker in (("grid", "tab:gray", "s"), ("dart", "tab:red", "o")):
        pts = sorted((r for r in main if r["model"].startswith("dart_") == (kind == "dart")),
                     key=lambda r: r["gmacs"])
        if not pts:
            continue
        ax.plot([r["gmacs"] for r in pts], [r["test_top1"] for r in pts], color=color, lw=1, alpha=0.6)
        ax.scatter([r["gmacs"] for r in pts], [r["test_top1"] for r in pts], s=[40 + 60 * r["params_m"] for r in pts],
                   color=color, marker=marker, label="DART" if kind == "dart" else "fixed grid", zorder=3)
        for r in pts:
            ax.annotate(f"{r['num_tokens']}", (r["gmacs"], r["test_top1"]), textcoords="offset points",
                        xytext=(6, -10), fontsize=8)
    ax.set_xlabel("GMACs per image (fvcore)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title or "accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def compare(preset: str | None, output: str | os.PathLike, name: str, specs: Sequence[RunSpec] | None = None,
            train: dict[str, Any] | None = None, jobs: int = 2, snapshot_epochs: Sequence[int] = (),
            resume: bool = False, count_macs: bool = True, echo: Callable[[str], None] = print,
            dart_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a preset (or given specs), then write ``<output>/<name>.{json,md,png}``.

    ``dart_kwargs`` are added to every DART spec's ``model_kwargs`` (the spec's own win).

    Raises:
        ValueError: unknown preset; RuntimeError: a run failed.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        specs = specs or PRESETS[preset]["specs"]
        train = {**PRESETS[preset]["train"], **(train or {})}
    if not specs:
        raise ValueError("no runs to compare")
    if dart_kwargs:
        specs = [replace(s, model_kwargs={**dart_kwargs, **s.model_kwargs}) if s.is_dart else s for s in specs]
    t0 = time.perf_counter()
    codes = run_specs(specs, output, train or {}, jobs=jobs, snapshot_epochs=snapshot_epochs, resume=resume,
                      echo=echo)
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        raise RuntimeError(f"training failed for {', '.join(failed)}")
    rows = collect(specs, output, count_macs=count_macs)
    meta = {"preset": preset, "train": train, "dart_kwargs": dart_kwargs or {}, "jobs": jobs,
            "wall_time_s": time.perf_counter() - t0, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    try:
        from .bench import machine_info

        meta["machine"] = machine_info("cpu")
    except Exception as e:  # machine info is decoration; never lose results over it
        meta["machine"] = {"error": str(e)}
    md = write_tables(rows, Path(output) / name, meta)
    png = None
    if count_macs and any(r["group"] == "main" for r in rows):
        png = plot_accuracy_vs_macs(rows, Path(output) / f"{name}.png", title=name)
    return {"rows": rows, "markdown": md, "plot": str(png) if png else None, "meta": meta}
