"""Accuracy benchmark harness: train several tokenizers with one recipe and compare them.

Issue 3 §2 (paper Table 1/2, Fig. 2, 6, 7 in miniature). Every run is a
:class:`dartok.train.TrainConfig` built from its :class:`RunSpec` and the preset's shared
options (:func:`train_config`), trained by :func:`dartok.train.train` in a child process
(``python -m dartok.tools.compare --run-config ...``; one CPU thread each, ``jobs`` at a
time) with the same data, recipe, epochs and seed; only the model / token budget /
tokenizer options differ. DART runs are trained in chunks (``stop_after`` + exact
``resume``) so their partitions can be drawn at several epochs (Fig. 7). Results:
``<name>.json`` / ``<name>.md`` tables (top-1, top-5, GMACs, params, train images/s, train
time) and an accuracy-vs-GMACs plot. :func:`demo` is the README's main job: the ``demo``
preset (fixed grid vs DART at one budget).

**Seeds** (issue 11 item 4): a comparison can train every spec at several seeds (``seeds``,
the CPU presets' ``"seeds"``: ``(0, 1, 2)``). Each (spec, seed) run has its own folder
(:func:`seed_run_dir`: ``<output>/<name>/seed<k>``; with one seed ``<output>/<name>`` as
before), :func:`collect` gives one row per run and :func:`aggregate_seeds` one row per spec
(mean, min, max over the seeds), which the tables and plots show.

Every CPU preset and the demo also run the **oracle** (issue 11): the DART model at the same
budget whose score map is the true object box (``score_source="oracle"``), the best a scorer
could do at that budget and grid. DART runs on a dataset with object boxes log the
localisation metric (``test_object_mass``, ``test_object_tokens``,
:class:`dartok.train.task.LocalizationMetrics`); the tables show it and
:func:`plot_localization` draws it against the epoch (``<name>_localization.png``).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .._io import atomic_path, atomic_write, write_json

if TYPE_CHECKING:  # pragma: no cover
    from ..train import TrainConfig

__all__ = ["CPU_SEEDS", "DEIT_RECIPE", "DEMO_DEFAULTS", "ORACLE", "PRESETS", "SCRATCH_TRAIN", "SMALL_OBJECTS_AUG",
           "VIM_RECIPE", "scratch_scorer",
           "RunSpec", "aggregate_seeds", "check_seeds", "collect", "compare", "deit_lr", "demo", "demo_preset",
           "plot_accuracy_vs_macs", "plot_localization", "run_plan", "run_specs", "seed_run_dir", "select_runs", "train_config",
           "write_tables"]

ORACLE = {"score_source": "oracle"}
"""The model kwargs of an oracle run: DART whose score map is the data's object box."""


@dataclass
class RunSpec:
    """One run of a comparison.

    Attributes:
        name: short label, also the run's folder name (e.g. ``"dart@16"``).
        model: registered model name (``vit_micro_patch8``, ``dart_vit_micro_patch8``, ...).
        num_tokens: token budget N (a square for fixed-grid models; the box count R·C of a warp
            model; ``None`` for a model without tokens, such as a plain CNN).
        model_kwargs: extra model kwargs (scorer options, alpha, ...).
        group: what the row is compared within (``"main"`` or an ablation name).
    """

    name: str
    model: str
    num_tokens: int | None
    model_kwargs: dict = field(default_factory=dict)
    group: str = "main"

    @property
    def is_dart(self) -> bool:
        return self.model.startswith("dart_")

    @property
    def is_oracle(self) -> bool:
        """A DART run whose score map is the data's object box (``score_source="oracle"``)."""
        return self.is_dart and self.model_kwargs.get("score_source") == "oracle"


CPU_SEEDS = (0, 1, 2)
"""The seeds every CPU preset trains each run at (issue 11 item 4: a gap is only read against
the spread over seeds); ``dartok compare --seeds 0`` for a quick single-seed run."""


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """Validate the seeds of a comparison.

    Args:
        seeds: training seeds (:class:`~dartok.train.TrainConfig` ``seed``: model init and
            data order; the data set itself is fixed by ``data_seed``).

    Returns:
        The seeds as a tuple of ints, in the given order.

    Raises:
        ValueError: not a sequence, empty, a value that is not an int >= 0 (bools included),
            or a seed given twice (the two runs would share a folder).
    """
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise ValueError(f"seeds must be a sequence of ints, got {seeds!r}")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be ints >= 0, got {list(seeds)!r}")
    twice = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if twice:
        raise ValueError(f"seeds must be distinct, got {list(seeds)!r} ({', '.join(map(str, twice))} twice)")
    return tuple(int(s) for s in seeds)


def seed_run_dir(output: str | os.PathLike, name: str, seed: int | None, seeds: Sequence[int] | None) -> Path:
    """The folder of run ``name`` at ``seed`` in a comparison of ``seeds``.

    ``<output>/<name>/seed<seed>`` when ``seeds`` holds more than one seed, else
    ``<output>/<name>`` (the layout of single-seed comparisons, so their results and
    ``resume`` keep working).
    """
    if seeds is not None and len(seeds) > 1:
        return Path(output) / name / f"seed{seed}"
    return Path(output) / name


def _run_label(name: str, seed: int | None, seeds: Sequence[int] | None) -> str:
    """A run's name in logs and exit codes: ``name`` or ``name/seed<k>`` (its folder under the output)."""
    return f"{name}/seed{seed}" if seeds is not None and len(seeds) > 1 else name


def _main_set(n: int, grid: str, dart: str, oracle: bool = False,
              dart_kwargs: dict[str, Any] | None = None) -> list[RunSpec]:
    """The paper's main comparison: fixed grid at N, DART at N, fixed grid at 4N, DART at 2N;
    with ``oracle`` (datasets with object boxes), ``oracle@N`` after DART at N. ``dart_kwargs`` go to
    every DART run, the oracle's included."""
    kw = dict(dart_kwargs or {})
    return [
        RunSpec(f"grid@{n}", grid, n),
        RunSpec(f"dart@{n}", dart, n, copy.deepcopy(kw)),
        *([RunSpec(f"oracle@{n}", dart, n, {**copy.deepcopy(kw), **ORACLE})] if oracle else []),
        RunSpec(f"grid@{4 * n}", grid, 4 * n),
        RunSpec(f"dart@{2 * n}", dart, 2 * n, copy.deepcopy(kw)),
    ]


def _micro(n: int, canvas_size: int = 128) -> list[RunSpec]:
    """The main set on the micro ViT, DART (and the oracle) with the from-scratch scorer at the canvas
    size (:func:`scratch_scorer`; the presets' training adds :data:`SCRATCH_TRAIN`)."""
    return _main_set(n, "vit_micro_patch8", "dart_vit_micro_patch8", oracle=True,
                     dart_kwargs={"scorer": scratch_scorer(canvas_size)})


def _video(per_frame: int, frames: int, grid: str, dart: str, dart_kwargs: dict | None = None,
           oracle: bool = False, learned_kwargs: dict | None = None) -> list[RunSpec]:
    """Paper Table 3: fixed grid on every one of T frames vs DART with T/2 frames' worth of tokens;
    with ``oracle``, the oracle at DART's budget (the moving item's box in every frame).

    ``num_tokens`` of a plain VideoMamba is per frame; of a DART one, for the whole clip.
    ``dart_kwargs`` go to the DART models only (e.g. ``scorer_input_size``), ``learned_kwargs``
    to the learned DART row only (e.g. ``motion_prior``, which an oracle's given pdf ignores).
    """
    dart_n = per_frame * (frames // 2)
    return [
        RunSpec(f"grid {per_frame}x{frames}", grid, per_frame),
        RunSpec(f"dart {per_frame}x{frames // 2}", dart, dart_n, {**(dart_kwargs or {}), **(learned_kwargs or {})}),
        *([RunSpec(f"oracle {per_frame}x{frames // 2}", dart, dart_n, {**(dart_kwargs or {}), **ORACLE})]
          if oracle else []),
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
    runs += [RunSpec(f"oracle@{n}", d, n, dict(ORACLE), "oracle (true object box)")]
    runs += [RunSpec(f"alpha={a}", d, n, {"alpha": a}, "alpha") for a in (0.0, 0.3)]
    runs += [RunSpec("paper_contrast", d, n, {"learn_contrast": False}, "score contrast")]
    runs += [RunSpec("frozen_trunk", d, n, {"trainable_scorer_trunk": False}, "trunk frozen?")]
    runs += [RunSpec(f"scorer_input={s}", d, n, {"scorer_input_size": s}, "scorer input") for s in (96, 64)]
    return runs


def _seg(budgets: Sequence[int] = (16, 36), dart_kwargs: dict | None = None) -> list[RunSpec]:
    """Segmentation at equal tokens (issue 13): the micro ViT's fixed grid, DART and the oracle at each
    budget, all with Segmenter's linear decoder painted back to the masks (one ``main`` table and the
    mIoU-vs-GMACs plot). ``dart_kwargs`` go to the DART and oracle runs."""
    grid, dart, kw = "vit_micro_patch8", "dart_vit_micro_patch8", dict(dart_kwargs or {})
    return [spec for n in budgets for spec in (RunSpec(f"grid@{n}", grid, n),
                                               RunSpec(f"dart@{n}", dart, n, dict(kw)),
                                               RunSpec(f"oracle@{n}", dart, n, {**kw, **ORACLE}))]


_CPU_RECIPE = {"canvas_size": 128, "epochs": 12, "train_samples": 20000, "test_samples": 2000, "batch_size": 64,
               "lr": 1e-3}
"""The ``cpu`` preset's recipe, shared by its harder-data variants (only the data options differ)."""

# Harder Cluttered Fashion-MNIST (issue 11: "smaller objects relative to the canvas, more fragments,
# larger canvases"), one change each from the dataset defaults the cpu preset uses (128 px canvas,
# object_scale (0.15, 0.3): 19-38 px objects, 8 fragments of 0.08 * 128 = 10 px).
_HARDER_DATA: dict[str, dict[str, Any]] = {
    # half-size scene: objects 10-19 px (>= 8) and 5 px fragments (crops magnified as the object is)
    "small": {"canvas_size": 128, "data_kwargs": {"object_scale": [0.075, 0.15], "clutter_size": 0.04}},
    # 3x the fragments, a bit larger: 24 of 13 px (ink off the object: 16% of the canvas vs 3%)
    "clutter": {"canvas_size": 128, "data_kwargs": {"num_clutter": 24, "clutter_size": 0.1}},
    # 192 px canvas, everything the same pixel size as on 128 px: objects 19-38 px, 10 px
    # fragments, 18 of them (the same density); the grid's resize and the scorer's 128 px input
    # shrink the object 1.5x more
    "large": {"canvas_size": 192, "data_kwargs": {"object_scale": [0.1, 0.2], "num_clutter": 18,
                                                  "clutter_size": 0.05}},
}


def scratch_scorer(input_size: int = 128, num_classes: int = 10) -> dict[str, Any]:
    """The scorer that localises from scratch on the micro models (docs/method.md §10, issue 11).

    MobileNetV3-Small on an ``input_size`` copy cut at stride 8 (``stage=2``: cells of 8 px, the
    micro backbone's patch; the default stride 16 gives 8×8 cells of 16 px on the 128 px canvas,
    too coarse for its objects), the CAM head over ``num_classes`` classes, the softmax activation,
    the score map read at its cells' centres (``align_cells``: the trunk's features sit half a cell
    up and left of them; +2.6 and +2.2 points at seeds 0 and 1, docs/scorer_from_scratch.md), and
    the pdf spread over each cell's 3×3 neighbourhood (``pdf_blur=3``: tokens over the whole object,
    not only its most telling cells). It pays only with the trunk pretrained as a classifier and
    frozen (``scorer_pretrain_epochs``, :data:`SCRATCH_TRAIN`); without that the softmax of a random
    map costs accuracy (docs/scorer_from_scratch.md).

    Returns:
        The DART model's ``scorer`` kwarg (a dict of :class:`~dartok.scorer.Scorer` kwargs).
    """
    return {"trunk": "mobilenetv3_small", "input_size": int(input_size), "stage": 2, "activation": "softmax",
            "pdf_blur": 3, "cam_classes": int(num_classes), "align_cells": True}


SCRATCH_TRAIN: dict[str, Any] = {"scorer_pretrain_epochs": 8, "scorer_pretrain_lr": 3e-3}
"""The training options that go with :func:`scratch_scorer`: 8 epochs of scorer pretraining at a peak
learning rate of 3e-3, then its trunk frozen (:mod:`dartok.train.scorer_pretrain`). Runs without a
learned scorer skip it. At 1e-3 (the DART recipe's lr) the trunk's classifier reaches 31-40 % and
its map localises at some seeds only; at 3e-3 it reaches 56.8-60.0 % after 4 epochs and its pdf's object
mass 0.61-0.64 at seeds 0, 1, 2. 8 epochs rather than 4 (session 11): on 24-fragment clutter the classifier
needs them (DART 39.4 against 32.3 % over 3 seeds), elsewhere they cost nothing (docs/scorer_from_scratch.md)."""

_WHICH_VIDEO_SCORER = {"trunk": "mobilenetv3_small", "input_size": 64, "stage": 2, "head": "v2", "activation": "softmax",
                       "align_cells": True, "trainable_trunk": False}
"""The ``cpu-video-which`` video rows' scorer: :func:`scratch_scorer`'s trunk, map and activation on the 64 px
frames (an 8×8 map of 8 px cells per frame), head v2 (which takes the frame difference), no CAM head (a clip's
label is not every frame's item) and no blur (the pdf is the frames' stacked maps). Its trunk is frozen, as the
paper freezes its ImageNet trunk: with ``--image-first`` it is the image run's, pretrained as a classifier. The
oracle cuts the same 8×8 cells; the DART row mixes in the motion map (``motion_prior``)."""

_WARP_KWARGS = {"warp_size": 64, "scorer_input_size": 64, "scorer_stage": 2, "antialias": True}
"""The ``cpu-warp`` preset's warp: the 128 px canvas warped to 64×64 (8×8 boxes of 8 px, anti-aliased),
the scorer (MobileNetV3-Small from scratch, with its CAM head) on a 64 px copy, cut at stride 8: an 8×8
score map, as the micro ViT's."""


def _warp_set(cnn: str, side: int, scorer: dict[str, Any] | None = None) -> list[RunSpec]:
    """Paper App. C in miniature: ``cnn`` on the canvas resized to ``side`` px vs the same CNN behind the
    regular-grid warp to ``side`` px (the same input pixels): with a uniform pdf (the warp's own resampling,
    no scorer), with the learned scorer, and with the oracle score map. ``scorer`` (a dict of
    :class:`~dartok.scorer.Scorer` kwargs, e.g. :func:`scratch_scorer`) replaces :data:`_WARP_KWARGS`'
    scorer in the learned and oracle rows (the oracle cuts the same cells)."""
    learned = {**_WARP_KWARGS, "warp_size": side}
    if scorer is not None:  # a dict scorer is built as given: the scorer_* kwargs would be ignored
        learned = {k: v for k, v in learned.items() if not k.startswith("scorer_")} | {"scorer": dict(scorer)}
    return [
        RunSpec(f"cnn@{side}px", cnn, None, {"pretrained_cfg_overlay": {"input_size": (1, side, side)}}),
        RunSpec(f"warp-uniform@{side}px", f"dart_warp_{cnn}", (side // 8) ** 2,
                {**_WARP_KWARGS, "warp_size": side, "scorer": None}),
        RunSpec(f"warp@{side}px", f"dart_warp_{cnn}", (side // 8) ** 2, dict(learned)),
        RunSpec(f"warp-oracle@{side}px", f"dart_warp_{cnn}", (side // 8) ** 2, {**learned, **ORACLE}),
    ]


def _partition_set(n: int) -> list[RunSpec]:
    """Irregular (the paper's bands) vs regular grid on the same micro DART ViT at N tokens (paper
    Fig. 10, App. C), each with its learned scorer and with the oracle score map."""
    d = "dart_vit_micro_patch8"
    return [RunSpec(f"bands@{n}", d, n, {}, "learned scorer"),
            RunSpec(f"grid@{n}", d, n, {"partition": "grid"}, "learned scorer"),
            RunSpec(f"bands-oracle@{n}", d, n, dict(ORACLE), "oracle score map"),
            RunSpec(f"grid-oracle@{n}", d, n, {"partition": "grid", **ORACLE}, "oracle score map")]


_WARP_RECIPE = {"canvas_size": 128, "epochs": 6, "train_samples": 8000, "test_samples": 2000, "batch_size": 64,
                "lr": 1e-3}
"""The short recipe of the ``cpu-warp`` and ``cpu-partition`` presets."""

_DEIT_RUNS = [RunSpec("grid@196", "deit_tiny_patch16_224", 196),
               RunSpec("dart@196", "dart_deit_tiny_patch16_224", 196),
               RunSpec("grid@784", "deit_tiny_patch16_224", 784),
               RunSpec("dart@392", "dart_deit_tiny_patch16_224", 392)]


def deit_lr(batch_size: int) -> float:
    """DeiT's learning rate for a global batch: ``5e-4 × batch_size / 512`` (DeiT ``main.py``'s linear scaling)."""
    return 5e-4 * batch_size / 512


DEIT_RECIPE: dict[str, Any] = {
    "epochs": 300, "batch_size": 1024, "lr": deit_lr(1024), "weight_decay": 0.05, "warmup_epochs": 5,
    "warmup_lr": 1e-6, "min_lr": 1e-5, "label_smoothing": 0.1, "drop_path": 0.1,
    "aa": "rand-m9-mstd0.5-inc1", "color_jitter": 0.4, "train_interpolation": "bicubic", "reprob": 0.25,
    "crop_pct": 0.875, "mixup": 0.8, "cutmix": 1.0, "mixup_prob": 1.0, "repeated_aug": True,
    "model_ema": True, "model_ema_decay": 0.99996, "amp": True, "num_workers": 10, "pin_mem": True,
}
"""DeiT-Ti / DeiT-S's published recipe (Touvron et al. 2021, Table 9; facebookresearch/deit
``main.py`` defaults, the README's 4 GPUs x 256 images) as :class:`~dartok.train.TrainConfig`
fields: AdamW, lr ``5e-4 × 1024 / 512``, cosine to 1e-5 after 5 warm-up epochs from 1e-6,
weight decay 0.05, label smoothing 0.1 (inside timm's Mixup), stochastic depth 0.1,
RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25 (pixel mode), mixup 0.8, cutmix
1.0 (always one of the two, switch 0.5), repeated augmentation, bicubic training resize,
evaluation crop 0.875 (resize 256, crop 224). EMA as DeiT's ``main.py``: kept (decay 0.99996
per step) and evaluated alongside; the published numbers, and our ``best_top1``, are the
model's own (DeiT's ``evaluate`` takes the model, not the EMA). Where we differ: bf16
autocast instead of fp16 with a loss scaler, and the schedule steps every update instead of
every epoch (timm's ``--sched-on-updates``)."""

SMALL_OBJECTS_AUG: dict[str, Any] = {"scale": (1.0, 1.0), "cutmix": 0.0, "reprob": 0.0}
"""Changes to :data:`DEIT_RECIPE` for data whose objects are small and anywhere in the image
(README "Augmentation"): no crop (``scale`` (1, 1): RandomResizedCrop keeps the whole image,
resized, for aspects within ``ratio``), no cutmix and no random erasing (a pasted or erased
box can hide the whole object while the label keeps it). Mixup, RandAugment, flips and
repeated augmentation stay."""

VIM_RECIPE: dict[str, Any] = {**DEIT_RECIPE, "weight_decay": 0.1, "drop_path": 0.0, "color_jitter": 0.3,
                              "amp": False, "num_workers": 25}
"""Vim-Ti's published recipe (hustvl/Vim ``vim/scripts/pt-vim-t.sh`` on DeiT's ``main.py``: 8 GPUs x
128 images, ``--drop-path 0.0 --weight-decay 0.1 --no_amp``, colour jitter 0.3; the rest
:data:`DEIT_RECIPE`)."""

PRESETS: dict[str, dict[str, Any]] = {
    # the main set (grid N, DART N, oracle N, grid 4N, DART 2N) at N = 16, 3 seeds: about 3 h
    # on 2 cores with two jobs (about 1 h a seed; --seeds 0 for one)
    # DART and the oracle use the from-scratch scorer, pretrained 8 epochs and frozen (scratch_scorer,
    # SCRATCH_TRAIN; issue 11, session 10); the paper's scorer: --dart-kwargs '{"scorer":
    # "mobilenetv3_small"}' --scorer-pretrain-epochs 0
    "cpu": {"specs": _micro(16), "seeds": CPU_SEEDS, "train": {**_CPU_RECIPE, **SCRATCH_TRAIN}},
    # the same at N = 36 (grid 144, DART 72; the second budget): roughly 1.5-2 h a seed,
    # 5 h at 3 seeds (an estimate from the demo's N = 36 runs, not measured)
    "cpu-36": {"specs": _micro(36), "seeds": CPU_SEEDS, "train": {**_CPU_RECIPE, **SCRATCH_TRAIN}},
    # one option at a time vs a reference run of the same (shorter: 10k images, 8 epochs) recipe;
    # about 2.5 core-hours, 75-90 min a seed with two jobs (the larger trunks dominate): 4-5 h at 3 seeds
    "cpu-ablations": {"specs": _ablations(16), "seeds": CPU_SEEDS,
                      "train": {"canvas_size": 128, "epochs": 8, "train_samples": 10000,
                                "test_samples": 2000, "batch_size": 64, "lr": 1e-3}},
    # Vision Mamba (issue 4): the same four runs on the micro Vim (pure-PyTorch scan on CPU)
    # (about 3-15× slower per step than the micro ViT: 6k images, 8 epochs, ~30-50 min a seed on 2 cores)
    "cpu-vim": {"specs": _main_set(16, "vim_micro_patch8", "dart_vim_micro_patch8", oracle=True), "seeds": CPU_SEEDS,
                "train": {"canvas_size": 128, "epochs": 8, "train_samples": 6000, "test_samples": 2000,
                          "batch_size": 64, "lr": 1e-3}},
    # VideoMamba on Moving Cluttered Fashion-MNIST (direction task, 4 frames of 64², 4-8 px per
    # frame): 4×4 grid on every frame vs DART with 2 frames' worth of tokens (paper Table 3 in
    # miniature); the scorer sees the 64² frames as they are (not upsampled to 128²). 3k clips x
    # 20 epochs: patch-token models from scratch need that long before they pick up the motion
    # at all (a 6-block video ViT sat at chance for 5 of 15 epochs); about 45 min a seed with two jobs
    "cpu-video": {"specs": _video(16, 4, "videomamba_micro_patch8", "dart_videomamba_micro_patch8",
                                  {"scorer_input_size": 64}, oracle=True), "seeds": CPU_SEEDS,
                  "train": {"data": "moving_fmnist", "data_kwargs": {"num_frames": 4, "speed": [4, 8]},
                            "canvas_size": 64, "epochs": 20, "train_samples": 3000, "test_samples": 1000,
                            "batch_size": 32, "lr": 1e-3}},
    # the cpu recipe and main set on harder data (_HARDER_DATA above), N = 16 and N = 36:
    # cpu-small(-36): half-size objects (10-19 px) and fragments on the 128 px canvas; as long as cpu(-36)
    # cpu-clutter(-36): 24 fragments of 13 px; as long as cpu(-36) (the data takes a little longer to draw)
    # cpu-large(-36): a 192 px canvas, objects and fragments the size they have on 128 px; as long as
    #   cpu(-36) plus drawing 2.25x the pixels (estimate: 10-20% more)
    **{f"cpu-{variant}{suffix}": {"specs": _micro(n, data["canvas_size"]), "seeds": CPU_SEEDS,
                                  "train": {**_CPU_RECIPE, **SCRATCH_TRAIN, **copy.deepcopy(data)}}
       for variant, data in _HARDER_DATA.items() for n, suffix in ((16, ""), (36, "-36"))},
    # tokens that must follow motion (issue 11 item 6): which_moves, two items, the label is the class of
    # the one that moves; the temporal-difference score should put DART's tokens on it, and the oracle
    # (the moving item's box) is the bound. The localisation metric is the moving item's object mass.
    # Two steps, as VideoMamba starts from ImageNet weights: the "image" run (a DART Vim on Cluttered
    # Fashion-MNIST with the video's 64² canvas and item sizes) trains first, then every video row
    # starts from it, inflated (`dartok compare --preset cpu-video-which --image-first`, or
    # `dartok train` the image run yourself and pass `--init-from <its checkpoint>`)
    # DART cuts the pixel-difference motion map (motion_prior=1, docs/method.md §6): seed 0 in session 12,
    # DART 16x2 (top-1 at 20 epochs) with motion_prior 0 / 0.5 / 1 against the grid and oracle, README
    # "Measured: tokens that must follow motion"; about 1 h a seed with two jobs on 2 cores
    "cpu-video-which": {
        "specs": _video(16, 4, "videomamba_micro_patch8", "dart_videomamba_micro_patch8",
                        {"scorer": _WHICH_VIDEO_SCORER}, oracle=True, learned_kwargs={"motion_prior": 1.0}),
        "seeds": CPU_SEEDS,
        "train": {"data": "moving_fmnist", "data_kwargs": {"task": "which_moves", "num_frames": 4, "speed": [4, 8]},
                  "canvas_size": 64, "epochs": 20, "train_samples": 3000, "test_samples": 1000, "batch_size": 32,
                  "lr": 1e-3},
        "image": {"spec": RunSpec("image", "dart_vim_micro_patch8", 16, {"scorer": {**scratch_scorer(64), "head": "v2"}}),
                  "train": {**SCRATCH_TRAIN, "data": "cluttered_fmnist", "canvas_size": 64,
                            "data_kwargs": {"object_scale": [0.25, 0.4], "num_clutter": 6, "clutter_size": 0.12},
                            "epochs": 8, "train_samples": 6000, "test_samples": 1000, "batch_size": 64, "lr": 1e-3}},
    },
    # segmentation on Cluttered Fashion-MNIST (issue 13): grid, DART and oracle at N = 16 and 36 on a
    # 64 px canvas (objects 26-45 px, 4 fragments; the scorer sees the 64 px canvas as it is), the
    # masks' resolution, per-pixel cross-entropy without smoothing, best-mIoU checkpoint. 3k images x
    # 6 epochs: 21 min a seed with two jobs on 2 busy cores (measured); README "Dense prediction".
    # The scorer is cut at stride 8 (an 8x8 map of 8 px cells; stride 16 gave 4x4): DART +2.95 mIoU at
    # N = 36 and +6.9 at N = 16 over the stride-16 scorer (3 seeds vs 2; README "Measured: `dartok compare
    # --preset cpu-seg`", "Before: the stride-16 scorer")
    "cpu-seg": {"specs": _seg((16, 36), {"scorer_input_size": 64, "scorer_stage": 2}), "seeds": CPU_SEEDS,
                "train": {"task": "segmentation", "data": "cluttered_fmnist_seg", "canvas_size": 64,
                          "data_kwargs": {"object_scale": [0.4, 0.7], "num_clutter": 4}, "epochs": 6,
                          "train_samples": 3000, "test_samples": 500, "batch_size": 16, "lr": 2e-3,
                          "label_smoothing": 0.0}},
    # DART in front of a CNN (paper App. C, issue 13 §3): resnet10t on the canvas resized to 64 px vs
    # resnet10t behind the regular-grid warp of the full 128 px canvas to 64 px, and its oracle; a short
    # recipe (8k images, 6 epochs): about 40 min a seed with two jobs on a busy 2-core VM
    # The learned and oracle rows use the from-scratch scorer (a 16x16 map of the full canvas, pretrained 8
    # epochs and frozen: scratch_scorer, SCRATCH_TRAIN); with the 8x8 map of _WARP_KWARGS learned from the
    # classification loss alone the warp stayed level with the plain CNN (README "Any backbone").
    "cpu-warp": {"specs": _warp_set("resnet10t", 64, scratch_scorer(128)), "seeds": CPU_SEEDS,
                 "train": {**_WARP_RECIPE, **SCRATCH_TRAIN}},
    # irregular (bands) vs regular grid on the micro DART ViT at N = 16 (paper Fig. 10), learned and
    # oracle score maps, with cpu-warp's recipe (about 40 min a seed with two jobs; --seeds 0 for one)
    "cpu-partition": {"specs": _partition_set(16), "seeds": CPU_SEEDS, "train": dict(_WARP_RECIPE)},
    # Vim-Ti / VideoMamba-Ti sizes for a GPU (an ImageFolder / an SSv2-style clip folder at --data-root)
    "full-vim": {"specs": _main_set(196, "vim_tiny_patch16_224", "dart_vim_tiny_patch16_224"),
                 "train": {"data": "", **VIM_RECIPE}},
    "full-video": {"specs": _video(196, 8, "videomamba_tiny_patch16_224", "dart_videomamba_tiny_patch16_224"),
                   "train": {"data": "ssv2", "data_kwargs": {"num_frames": 8}, "epochs": 35, "batch_size": 256,
                             "lr": 4e-4, "warmup_epochs": 5, "amp": True}},
    # DeiT-Ti sizes on a GPU and an ImageFolder dataset (--data folder --data-root ...), DeiT's published recipe
    "full": {"specs": _DEIT_RUNS, "train": {"data": "", **DEIT_RECIPE}},
    # the same on data with small objects anywhere in the image: no crop, no cutmix, no erasing
    "full-small-objects": {"specs": _DEIT_RUNS, "train": {"data": "", **DEIT_RECIPE, **SMALL_OBJECTS_AUG}},
}


# --------------------------------------------------------------------------------------
# one run: a TrainConfig, trained by dartok.train.train in a child process
# --------------------------------------------------------------------------------------
_IMAGE_OVERRIDES = ("epochs", "train_samples", "test_samples", "warmup_epochs")
"""Options of a comparison's own ``train`` that also apply to its image run (``compare(image=)``)."""
_RUN_FIELDS = frozenset({"model", "num_tokens", "model_kwargs"})  # given by the RunSpec
_HARNESS_FIELDS = frozenset({"output", "threads", "progress", "resume", "stop_after"})  # set by run_specs


def train_config(spec: RunSpec, train: dict[str, Any], run_dir: str | os.PathLike, threads: int | None = None
                 ) -> "TrainConfig":
    """The :class:`dartok.train.TrainConfig` of one run: ``spec``'s model, budget and model
    kwargs, the shared ``train`` options, output ``run_dir``, no progress bar.

    Args:
        spec: the run.
        train: :class:`~dartok.train.TrainConfig` field names → values (``epochs``,
            ``canvas_size``, ``data``...), the same for every run of a comparison.
        run_dir: the run's folder (``output`` of the config).
        threads: CPU threads of the run (``None``: torch's default).

    Returns:
        A validated ``TrainConfig``.

    Raises:
        ValueError: a key of ``train`` that is not a ``TrainConfig`` field, or one the spec
            or the harness sets (``model``, ``num_tokens``, ``model_kwargs``, ``output``,
            ``threads``, ``progress``, ``resume``, ``stop_after``); an invalid value
            (:meth:`TrainConfig.validate`), or options the data refuses (e.g. image
            augmentation on a tensor dataset: :func:`dartok.train.augment.check_augment`, for
            one process). Checked by :func:`dartok.train.resolve_config`, the one place that
            knows the fields.
    """
    from ..data.registry import dataset_info
    from ..train import resolve_config
    from ..train.augment import check_augment

    reserved = sorted(set(train) & (_RUN_FIELDS | _HARNESS_FIELDS))
    if reserved:
        raise ValueError(f"training option(s) {', '.join(map(repr, reserved))} are set per run by the comparison "
                         f"(RunSpec fields or the harness), not by the shared options")
    try:
        cfg = resolve_config(**train, model=spec.model, num_tokens=spec.num_tokens,
                             model_kwargs=dict(spec.model_kwargs), output=str(run_dir), threads=threads,
                             progress=False)
    except TypeError as e:  # a key that is no TrainConfig field
        raise ValueError(f"run {spec.name!r}: {e}") from None
    cfg.validate()
    check_augment(cfg, dataset_info(cfg.data))
    return cfg


def _plan(spec: RunSpec, cfg: "TrainConfig", snapshot_epochs: Sequence[int], resume: bool) -> list[dict[str, Any]]:
    """Steps of one run: ``{"stop_after", "resume", "partition_png"}`` each.

    DART runs stop after each of ``snapshot_epochs`` (below ``cfg.epochs``), draw
    ``partition_epoch<k>.png`` and resume exactly; a resumed run only takes the snapshots
    it has not passed yet.
    """
    run_dir = Path(cfg.output)
    already = (run_dir / "checkpoint").exists()
    done = 0
    if resume and already:
        from ..train.checkpoint import load_config

        done = int(load_config(run_dir / "checkpoint").get("epoch", 0))
    stops = sorted({e for e in snapshot_epochs if done < e < cfg.epochs}) if spec.is_dart else []
    steps = []
    for k, stop in enumerate([*stops, None]):
        shown = stop if stop is not None else (cfg.epochs if cfg.epochs in snapshot_epochs else None)
        steps.append({"stop_after": stop, "resume": k > 0 or (resume and already),
                      "partition_png": str(run_dir / f"partition_epoch{shown}.png")
                      if spec.is_dart and shown is not None else None})
    return steps


def run_plan(config: dict[str, Any], steps: Sequence[dict[str, Any]], echo: Callable[[str], None] = print) -> None:
    """Train one run in this process: each step is one :func:`dartok.train.train` call.

    Args:
        config: a :class:`~dartok.train.TrainConfig` as a dict (:meth:`TrainConfig.to_dict`).
        steps: ``{"stop_after": int | None, "resume": bool, "partition_png": path | None}``
            dicts (:func:`_plan`); after a step with a ``partition_png`` the checkpoint's
            partitions of the first 8 test images are drawn there (:func:`dartok.tools.viz.visualize`).
        echo: printer of the one-line summary per step.

    Raises:
        whatever :func:`dartok.train.train` raises (``ValueError``, ``FileExistsError``...).
    """
    from ..train import TrainConfig, train
    from ..train.task import create_task

    for step in steps:
        cfg = TrainConfig(**config)
        summary = train(cfg, stop_after=step["stop_after"], resume=step["resume"])
        task = create_task(summary["task"])
        echo(f"epoch {summary['epoch']}/{summary['epochs']}: test {task.describe(summary['test'])}  "
             f"checkpoint: {summary['checkpoint']}")
        if step.get("partition_png"):
            from .viz import visualize

            path, n = visualize(step["partition_png"], checkpoint=Path(cfg.output) / "checkpoint", device=cfg.device)
            echo(f"wrote {path} ({n} images)")


def _run_child(plan_path: Path, prefix: str, echo: Callable[[str], None]) -> int:
    """``python -m dartok.tools.compare --run-config plan_path``, its output echoed line by line as ``[prefix] ...``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dartok.tools.compare", "--run-config", str(plan_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
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
    seeds: Sequence[int] | None = None,
) -> dict[str, int]:
    """Train every spec (at every seed) with the same ``train`` options, ``jobs`` runs at a time.

    Every run's :class:`~dartok.train.TrainConfig` is built first (:func:`train_config`:
    output :func:`seed_run_dir`, ``threads`` 1 when several jobs share the CPU, no progress
    bar), so a bad option fails before anything trains. Each run then trains in its own
    process (``python -m dartok.tools.compare --run-config <plan>.json``, which calls
    :func:`dartok.train.train`); its output is echoed with a ``[<label>]`` prefix. For DART
    runs, ``snapshot_epochs`` (e.g. ``(1, 3, 12)``) stops after those epochs, draws
    ``<run folder>/partition_epoch<k>.png`` and resumes exactly. ``resume`` continues
    runs that hold a checkpoint (a finished run is neither retrained nor redrawn), each
    (spec, seed) run on its own.

    Args:
        seeds: train each spec once per seed (``train``'s ``seed`` replaced), all runs
            scheduled seed-major on one pool (every spec at the first seed, then the next...),
            so an interrupted comparison has whole seeds done; ``None``: one run per spec at
            ``train``'s seed. Folders and labels: ``<name>/seed<k>`` with several seeds,
            ``<name>`` with one or ``None``.

    Returns:
        ``{label: exit code}`` (0 for success, 2 for an option the engine refused); the label
        is the run's folder under ``output`` (``name`` or ``name/seed<k>``).

    Raises:
        ValueError: a bad training option (see :func:`train_config`), bad seeds
            (:func:`check_seeds`).
    """
    output = Path(output)
    if seeds is not None:
        seeds = check_seeds(seeds)
    threads = 1 if jobs > 1 else max(1, os.cpu_count() or 1)
    runs = [(spec, seed) for seed in (seeds if seeds is not None else (None,)) for spec in specs]
    configs = [train_config(spec, train if seed is None else {**train, "seed": seed},
                            seed_run_dir(output, spec.name, seed, seeds), threads) for spec, seed in runs]
    plans = [{"name": _run_label(spec.name, seed, seeds), "config": cfg.to_dict(),
              "steps": _plan(spec, cfg, snapshot_epochs, resume)} for (spec, seed), cfg in zip(runs, configs)]
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    with tempfile.TemporaryDirectory(prefix="dartok-compare-") as tmp:
        def one(k: int) -> int:
            path = Path(tmp) / f"run{k}.json"
            write_json(path, plans[k])
            return _run_child(path, plans[k]["name"], say)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            codes = dict(zip([p["name"] for p in plans], pool.map(one, range(len(plans)))))
    return codes


def _child_main(argv: Sequence[str] | None = None) -> int:
    """Entry of the child process: train the run described by ``--run-config`` (see :func:`run_plan`).

    Exit status 0 on success, 2 with one ``Error: ...`` line for an option or file the
    engine refuses; other failures raise (traceback, status 1).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dartok.tools.compare",
                                     description="Train one run of a dartok comparison (used by run_specs).")
    parser.add_argument("--run-config", required=True, type=Path,
                        help="JSON {name, config: TrainConfig fields, steps: [{stop_after, resume, partition_png}]}")
    args = parser.parse_args(argv)
    plan = json.loads(args.run_config.read_text(encoding="utf-8"))
    config = plan["config"]
    if config.get("threads"):
        import torch

        torch.set_num_threads(int(config["threads"]))  # drawing too, not only the training
    try:
        run_plan(config, plan["steps"], echo=lambda line: print(line, flush=True))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, KeyError) as e:
        print(f"Error: {e}", flush=True)  # options the engine refuses (TypeError: unknown data/model kwargs)
        return 2
    return 0


def collect(specs: Sequence[RunSpec], output: str | os.PathLike, count_macs: bool = True,
            seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per finished run (per spec, and per seed with ``seeds``, spec-major): the task's
    test metrics (``test_<metric>``; classification: ``test_top1``, ``test_top5``,
    ``test_loss``), the best metric by epoch (``<best_metric>_by_epoch``, e.g.
    ``top1_by_epoch``), MACs, params, speed, train time, and ``seed`` (the run's training seed,
    read from its checkpoint); DART runs with the localisation metric add
    ``test_object_mass``, ``test_object_tokens`` and ``object_mass_by_epoch``,
    ``object_tokens_by_epoch``.

    MACs are fvcore multiply-accumulates per image ("GMACs", the field's "GFLOPs") counted
    by :func:`dartok.tools.flops.count_macs` with fused attention off, once per spec (every
    seed of a spec has the same model).

    Args:
        seeds: the comparison's seeds (:func:`run_specs`): where the runs are
            (:func:`seed_run_dir`); ``None``: one run per spec in ``<output>/<name>``.

    Raises:
        FileNotFoundError: a run without a checkpoint.
    """
    from ..train import read_metrics
    from ..train.checkpoint import load_config
    from ..train.task import LocalizationMetrics, create_task

    rows = []
    for spec in specs:
        cost: dict[str, float] = {}
        for seed in (seeds if seeds is not None else (None,)):
            run_dir = seed_run_dir(output, spec.name, seed, seeds)
            config = load_config(run_dir / "checkpoint")
            metrics = read_metrics(run_dir)
            last = config["metrics"]
            task = create_task(config.get("task", "classification"))
            best = task.best_metric
            row = {**asdict(spec), "seed": config.get("train", {}).get("seed", seed), "task": task.name,
                   "best_metric": best, "input_size": config["input_size"], "epochs": config["epoch"],
                   **{k: v for k, v in last.items() if k.startswith("test_") and not k.endswith("_ema")},
                   "train_images_per_s": last["images_per_s"],
                   "train_time_s": sum(m.get("epoch_time_s", 0.0) for m in metrics),
                   f"{best}_by_epoch": [m[f"test_{best}"] for m in metrics]}
            for key, _, _ in LocalizationMetrics.columns:  # DART runs on data with object boxes
                if metrics and all(f"test_{key}" in m for m in metrics):
                    row[f"{key}_by_epoch"] = [m[f"test_{key}"] for m in metrics]
            if count_macs and not cost:
                from ..train.checkpoint import model_from_checkpoint
                from .bench import with_frames
                from .flops import count_macs as macs_of, count_params

                model, _ = model_from_checkpoint(run_dir / "checkpoint")
                report = macs_of(model.eval(), with_frames(model, config["input_size"]))
                cost = {"gmacs": report.total / 1e9, "params_m": count_params(model)[0] / 1e6}
            rows.append({**row, **cost})
    return rows


_SEED_STATS = ("gmacs", "params_m", "train_images_per_s", "train_time_s")  # besides every test_* metric


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def aggregate_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run name from :func:`collect`'s per-seed rows (order of first appearance).

    The row keeps the spec's fields (``name``, ``model``, ``num_tokens``, ``model_kwargs``,
    ``group``, ``task``, ``input_size``...) and holds, for every number the seeds share
    (each ``test_*`` metric, ``gmacs``, ``params_m``, ``train_images_per_s``,
    ``train_time_s``), the **mean** over the seeds; ``min`` and ``max`` (dicts with the same
    keys) hold the extremes when there is more than one seed. Per-epoch curves
    (``*_by_epoch``) are averaged epoch by epoch over the epochs every seed has. Also
    ``seeds`` (list, in row order; ``None`` for rows without a ``seed``), ``num_seeds``, and
    ``epochs``: the seeds' epoch count, or the list of them where they differ. A number only
    some seeds have is left out (no mean of a subset).

    Raises:
        ValueError: two rows of one name with the same seed.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["name"], []).append(r)
    out = []
    for name, group in groups.items():
        seeds = [r.get("seed") for r in group]
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"run {name!r} has two rows with the same seed: {seeds}")
        keys = [k for k, v in group[0].items() if (k.startswith("test_") or k in _SEED_STATS) and _is_number(v)
                and all(_is_number(r.get(k)) for r in group)]
        curves = [k for k, v in group[0].items() if k.endswith("_by_epoch") and isinstance(v, list)
                  and all(isinstance(r.get(k), list) for r in group)]
        row = {k: v for k, v in group[0].items()
               if k != "seed" and not (k.startswith("test_") or k in _SEED_STATS or k.endswith("_by_epoch"))}
        for k in keys:
            values = [r[k] for r in group]
            row[k] = values[0] if len(values) == 1 else sum(values) / len(values)
        for k in curves:
            length = min(len(r[k]) for r in group)
            row[k] = [sum(r[k][e] for r in group) / len(group) for e in range(length)]
        epochs = [r.get("epochs") for r in group]
        if "epochs" in group[0]:
            row["epochs"] = epochs[0] if len(set(map(str, epochs))) == 1 else epochs
        row["seeds"] = seeds
        row["num_seeds"] = len(group)
        if len(group) > 1:
            row["min"] = {k: min(r[k] for r in group) for k in keys}
            row["max"] = {k: max(r[k] for r in group) for k in keys}
        out.append(row)
    return out


def _metric_columns(rows: list[dict[str, Any]], create_task) -> tuple[tuple[str, str, str], ...]:
    """The report columns of the rows' task (classification for rows written before tasks existed).

    Raises:
        ValueError: rows of different tasks in one table.
    """
    names = {r.get("task", "classification") for r in rows}
    if len(names) != 1:
        raise ValueError(f"one table holds one task's runs, got {sorted(names)}")
    return create_task(names.pop()).columns


def _localization_columns(rows: list[dict[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """The localisation metric's columns if any row has it (``-`` for the others: fixed grids)."""
    from ..train.task import LocalizationMetrics

    return tuple(c for c in LocalizationMetrics.columns if any(f"test_{c[0]}" in r for r in rows))


def _cell(r: dict[str, Any], key: str) -> str:
    """A metric's table cell: ``mean`` (2 decimals), ``mean [min, max]`` over several seeds, ``-`` if absent."""
    if key not in r:
        return "-"
    if r.get("num_seeds", 1) > 1 and key in r.get("min", {}):
        return f"{r[key]:.2f} [{r['min'][key]:.2f}, {r['max'][key]:.2f}]"
    return f"{r[key]:.2f}"


def write_tables(rows: list[dict[str, Any]], path_stem: str | os.PathLike, meta: dict[str, Any],
                 seed_rows: list[dict[str, Any]] | None = None) -> str:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically; returns the markdown table.

    Args:
        rows: one per run (:func:`collect`) or per spec over seeds (:func:`aggregate_seeds`).
            When a row has ``num_seeds`` > 1 the table gets a ``seeds`` column and shows each
            metric as ``mean [min, max]`` over the seeds; speed and train time are means.
        path_stem: ``<stem>``, the paths without the suffixes (a dot in it is kept, not read
            as a suffix); the folder is created.
        meta: written as the JSON's ``meta``.
        seed_rows: the per-seed rows, written as the JSON's ``seed_rows`` (``None``: left out).

    Returns:
        The markdown: one table per ``group``.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    from ..train.task import create_task

    multi = any(r.get("num_seeds", 1) > 1 for r in rows)
    lines = []
    if multi:
        lines += ["Metrics: mean [min, max] over the seeds (`seeds`: how many); img/s and train time: "
                  "means per run.", ""]
    for group in dict.fromkeys(r["group"] for r in rows):
        group_rows = [r for r in rows if r["group"] == group]
        columns = _metric_columns(group_rows, create_task) + _localization_columns(group_rows)
        heads = [("test " if i == 0 else "") + (f"{label} ({unit})" if unit else label)
                 for i, (_, label, unit) in enumerate(columns)]
        lines += [f"**{group}**", "",
                  "| run | model | tokens | input | epochs | " + ("seeds | " if multi else "") + " | ".join(heads)
                  + " | GMACs | params (M) | train img/s | train time (min) |",
                  "|---" * (9 + multi + len(columns)) + "|"]
        for r in group_rows:
            size = "x".join(str(v) for v in r["input_size"][1:])
            gm = f"{r['gmacs']:.4f}" if "gmacs" in r else "-"
            pm = f"{r['params_m']:.2f}" if "params_m" in r else "-"
            values = " | ".join(_cell(r, f"test_{key}") for key, _, _ in columns)
            seeds = f"{r.get('num_seeds', 1)} | " if multi else ""
            tokens = "-" if r["num_tokens"] is None else r["num_tokens"]
            lines.append(f"| {r['name']} | {r['model']} | {tokens} | {size} | {r.get('epochs', '-')} | "
                         f"{seeds}{values} | {gm} | {pm} | {r['train_images_per_s']:.0f} | "
                         f"{r['train_time_s'] / 60:.1f} |")
        lines.append("")
    md = "\n".join(lines)
    # the stem's own dots stay (``head_lr0.1`` writes ``head_lr0.1.json``, not ``head_lr0.json``)
    write_json(stem.parent / f"{stem.name}.json", {"meta": meta, "rows": rows,
                                                   **({"seed_rows": seed_rows} if seed_rows is not None else {})})
    atomic_write(stem.parent / f"{stem.name}.md", md)
    return md


def plot_accuracy_vs_macs(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """The task's best metric (top-1 for classification) vs GMACs, in the style of the paper's
    Fig. 2/6 (marker size ~ params), for the ``main`` group's rows with MACs: one line each for
    the fixed grid, learned DART and the oracle (``score_source="oracle"``).

    Rows over several seeds (:func:`aggregate_seeds`) are drawn at their mean with min-max
    error bars.

    Returns:
        The ``.png`` written.
    """
    from .viz import save_png  # first: selects the Agg backend

    import matplotlib.pyplot as plt

    from ..train.task import create_task

    main = [r for r in rows if r["group"] == "main" and "gmacs" in r]
    key, label, unit = _metric_columns(main, create_task)[0] if main else ("top1", "top-1", "%")
    y = f"test_{key}"
    fig, ax = plt.subplots(figsize=(5.5, 4))
    def kind_of(r):
        if not r["model"].startswith("dart_"):
            return "grid"
        return "oracle" if (r.get("model_kwargs") or {}).get("score_source") == "oracle" else "dart"

    labels = {"grid": "fixed grid", "dart": "DART", "oracle": "oracle (true object box)"}
    for kind, color, marker in (("grid", "tab:gray", "s"), ("dart", "tab:red", "o"), ("oracle", "tab:green", "^")):
        pts = sorted((r for r in main if kind_of(r) == kind), key=lambda r: r["gmacs"])
        if not pts:
            continue
        ax.plot([r["gmacs"] for r in pts], [r[y] for r in pts], color=color, lw=1, alpha=0.6)
        spread = [r for r in pts if r.get("num_seeds", 1) > 1 and y in r.get("min", {})]
        if spread:  # min-max over the seeds around the mean
            ax.errorbar([r["gmacs"] for r in spread], [r[y] for r in spread],
                        yerr=[[r[y] - r["min"][y] for r in spread], [r["max"][y] - r[y] for r in spread]],
                        fmt="none", ecolor=color, elinewidth=1, capsize=3, zorder=2)
        ax.scatter([r["gmacs"] for r in pts], [r[y] for r in pts], s=[40 + 60 * r["params_m"] for r in pts],
                   color=color, marker=marker, label=labels[kind], zorder=3)
        for r in pts:
            ax.annotate(f"{r['num_tokens'] or 'x'.join(map(str, r['input_size'][1:]))}", (r["gmacs"], r[y]), textcoords="offset points",
                        xytext=(6, -10), fontsize=8)
    ax.set_xlabel("GMACs per image (fvcore)")
    ax.set_ylabel(f"test {label} ({unit})" if unit else f"test {label}")
    seeds = max((r.get("num_seeds", 1) for r in main), default=1)
    ax.set_title((title or "accuracy vs compute") + (f" (mean of {seeds} seeds, bars: min-max)" if seeds > 1 else ""),
                 fontsize=10 if seeds > 1 else None)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        return save_png(fig, path, dpi=120)
    finally:
        plt.close(fig)


def plot_localization(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path | None:
    """Object mass and object tokens against the epoch (issue 11 item 2; paper Fig. 7 shows the
    partitions over time), one line per DART run that logged them (oracle runs dashed); for rows
    over several seeds (:func:`aggregate_seeds`) the line is the mean curve.

    Args:
        rows: :func:`collect`'s rows (``object_mass_by_epoch``, ``object_tokens_by_epoch``).
        path: the ``.png`` to write.
        title: figure title.

    Returns:
        The path written, or ``None`` when no row has the metric (nothing is written).
    """
    runs = [r for r in rows if "object_mass_by_epoch" in r]
    if not runs:
        return None
    from .viz import save_png  # first: selects the Agg backend

    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("object_mass_by_epoch", "object mass (score map share in the box, before mixing)"),
              ("object_tokens_by_epoch", "object tokens (box centres in the object, per image)"))
    for ax, (key, label) in zip(axes, panels):
        for r in runs:
            ys = r.get(key) or []
            oracle = r.get("model_kwargs", {}).get("score_source") == "oracle"
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, ls="--" if oracle else "-",
                    label=f"{r['name']} (N={r['num_tokens']}"
                          + (f", mean of {r['num_seeds']} seeds)" if r.get("num_seeds", 1) > 1 else ")"))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7)
    fig.suptitle(title or "localisation vs epoch")
    fig.tight_layout()
    try:
        return save_png(fig, path, dpi=120)
    finally:
        plt.close(fig)


def publish_results(src_dir: str | os.PathLike, results_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Copy ``<src_dir>/<stem>.{json,md,png}`` and ``<stem>_localization.png`` (those that exist)
    into ``results_dir``, atomically each.

    Returns:
        The paths written.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".json", ".md", ".png", "_localization.png"):
        src = Path(src_dir) / f"{stem}{suffix}"
        if src.exists():
            with atomic_path(results_dir / f"{stem}{suffix}") as tmp:
                shutil.copyfile(src, tmp)
            written.append(results_dir / f"{stem}{suffix}")
    return written


def select_runs(specs: Sequence[RunSpec], names: Sequence[str]) -> list[RunSpec]:
    """The specs named ``names`` (their ``name``, as in a comparison's table), in the specs' order.

    Raises:
        ValueError: a name no spec has (the message lists the specs' names).
    """
    known = [s.name for s in specs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no run {', '.join(map(repr, unknown))}; the runs: {', '.join(known)}")
    return [s for s in specs if s.name in names]


def compare(preset: str | None, output: str | os.PathLike, name: str, specs: Sequence[RunSpec] | None = None,
            train: dict[str, Any] | None = None, jobs: int = 2, snapshot_epochs: Sequence[int] = (),
            resume: bool = False, count_macs: bool = True, echo: Callable[[str], None] = print,
            dart_kwargs: dict[str, Any] | None = None, results_dir: str | os.PathLike | None = None,
            extra_meta: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
            seeds: Sequence[int] | None = None, image: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a preset (or given specs), then write ``<output>/<name>.{json,md,png}``.

    Args:
        preset: a name of :data:`PRESETS` (its specs and training options), or ``None``
            for ``specs`` / ``train`` alone.
        output: folder of the runs (:func:`seed_run_dir`: ``<output>/<run name>``, or
            ``<output>/<run name>/seed<k>`` with several seeds) and the result files.
        name: result file stem.
        specs: the runs (default: the preset's).
        train: training options, :class:`~dartok.train.TrainConfig` fields, over the
            preset's.
        jobs: runs trained at once (one CPU thread each when > 1).
        snapshot_epochs: draw DART partitions after these epochs (:func:`run_specs`).
        resume: continue interrupted runs.
        count_macs: count GMACs (fvcore) for the table and draw the accuracy-vs-GMACs plot.
        echo: printer of the runs' output.
        dart_kwargs: added to every DART spec's ``model_kwargs`` (the spec's own win).
        results_dir: also copy the result files there (:func:`publish_results`).
        extra_meta: a function of the rows whose dict is merged into the meta written.
        seeds: train every spec at each of these seeds (:func:`check_seeds`; ``train``'s
            ``seed`` is replaced). Default: the preset's ``"seeds"``, else one run per spec at
            ``train``'s seed. The table has one row per spec over the seeds
            (:func:`aggregate_seeds`), the JSON the per-seed rows too (``seed_rows``, with
            several seeds).
        image: ``{"spec": RunSpec, "train": options}``, an image run trained first (into
            ``<output>/<spec name>``, with ``resume`` like the others) that every run then
            starts from (``init_from`` its checkpoint: inflated into video models), as
            VideoMamba starts from ImageNet weights; a preset's ``"image"`` entry
            (``cpu-video-which``). Its row is not in the table. ``epochs``,
            ``train_samples``, ``test_samples`` and ``warmup_epochs`` given in ``train``
            apply to it too.

    Returns:
        ``{"rows" (one per spec, :func:`aggregate_seeds`), "seed_rows" (one per run,
        :func:`collect`), "markdown", "plot" (path or None), "localization_plot"
        (:func:`plot_localization`'s path or None), "meta" (``seeds``: the seeds, or ``None``),
        "written" (copies in results_dir)}``.

    Raises:
        ValueError: unknown preset, no runs, bad seeds, a bad training option (before
            anything trains); RuntimeError: a run failed.
    """
    t0 = time.perf_counter()
    given = dict(train or {})  # the caller's own options (e.g. a smoke run's epochs), before the preset's
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        specs = specs or PRESETS[preset]["specs"]
        train = {**PRESETS[preset]["train"], **(train or {})}
        if seeds is None:
            seeds = PRESETS[preset].get("seeds")
    if not specs:
        raise ValueError("no runs to compare")
    if seeds is not None:
        seeds = check_seeds(seeds)
    if dart_kwargs:
        specs = [replace(s, model_kwargs={**dart_kwargs, **s.model_kwargs}) if s.is_dart else s for s in specs]
    if image is not None:
        spec = image["spec"]
        if spec.name in {s.name for s in specs}:
            raise ValueError(f"the image run's name {spec.name!r} is also a run of the comparison")
        # the caller's length options shorten the image run too (a smoke run stays a smoke run)
        image = {**image, "train": {**image["train"], **{k: given[k] for k in _IMAGE_OVERRIDES if k in given}}}
        train_config(spec, image["train"], Path(output) / spec.name)  # a bad option fails before anything trains
        for s in specs:
            train_config(s, {**(train or {}), "init_from": str(Path(output) / spec.name / "checkpoint")},
                         Path(output) / s.name)
        codes = run_specs([spec], output, image["train"], jobs=1, resume=resume, echo=echo)
        if codes[spec.name] != 0:
            raise RuntimeError(f"training failed for the image run {spec.name!r}")
        train = {**(train or {}), "init_from": str(Path(output) / spec.name / "checkpoint")}
    codes = run_specs(specs, output, train or {}, jobs=jobs, snapshot_epochs=snapshot_epochs, resume=resume,
                      echo=echo, seeds=seeds)
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        raise RuntimeError(f"training failed for {', '.join(failed)}")
    seed_rows = collect(specs, output, count_macs=count_macs, seeds=seeds)
    rows = aggregate_seeds(seed_rows)
    meta = {"preset": preset, "train": train, "seeds": list(seeds) if seeds is not None else None,
            "dart_kwargs": dart_kwargs or {}, "jobs": jobs,
            "image": None if image is None else {"spec": asdict(image["spec"]), "train": image["train"]},
            "wall_time_s": time.perf_counter() - t0, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    try:
        from .bench import machine_info

        meta["machine"] = machine_info("cpu")
    except Exception as e:  # machine info is decoration; never lose results over it
        meta["machine"] = {"error": str(e)}
    if extra_meta is not None:
        meta.update(extra_meta(rows))
    md = write_tables(rows, Path(output) / name, meta, seed_rows=seed_rows if len(seeds or ()) > 1 else None)
    png = None
    if count_macs and any(r["group"] == "main" for r in rows):
        png = plot_accuracy_vs_macs(rows, Path(output) / f"{name}.png", title=name)
    loc_png = plot_localization(rows, Path(output) / f"{name}_localization.png", title=name)
    written = publish_results(output, results_dir, name) if results_dir is not None else []
    return {"rows": rows, "seed_rows": seed_rows, "markdown": md, "plot": str(png) if png else None,
            "localization_plot": str(loc_png) if loc_png else None, "meta": meta, "written": written}


# --------------------------------------------------------------------------------------
# the demo: the README's main job, a preset of two runs
# --------------------------------------------------------------------------------------
DEMO_DEFAULTS: dict[str, Any] = dict(num_tokens=36, canvas_size=128, epochs=5, train_samples=8000,
                                     test_samples=2000, batch_size=64, lr=1e-3, warmup_epochs=1, seed=0,
                                     **SCRATCH_TRAIN)
"""``dartok demo``'s defaults: the short recipe of ``benchmarks/scorer_remedies.py`` (8 000 / 2 000
images, 5 epochs) with the from-scratch scorer (:func:`scratch_scorer`, pretrained 8 epochs); the
same backbone, recipe, epochs and seed for all three runs, only the tokenizer (and its score
source) differs. About 6 minutes on 2 CPU cores (README "The main job")."""


def demo_preset(num_tokens: int = DEMO_DEFAULTS["num_tokens"], dart_kwargs: dict[str, Any] | None = None,
                **train: Any) -> dict[str, Any]:
    """The demo as a preset: ``{"specs", "train"}`` like an entry of :data:`PRESETS`.

    Runs ``grid`` (``vit_micro_patch8`` at ``num_tokens``: the canvas resized to √N·8 px),
    ``dart`` (``dart_vit_micro_patch8`` at ``num_tokens`` on the full canvas, with
    the from-scratch scorer, :func:`scratch_scorer` at the canvas size, under ``dart_kwargs``) and
    ``oracle`` (the same DART model and kwargs, its score map the true
    object box: the best a scorer could do at that budget); ``train`` overrides
    :data:`DEMO_DEFAULTS`' training options.

    Raises:
        ValueError: a ``num_tokens`` that is not a square (the fixed grid needs n×n).
    """
    side = round(num_tokens ** 0.5)
    if side * side != num_tokens:
        raise ValueError(f"the fixed-grid baseline needs a square --num-tokens, got {num_tokens}")
    options = {k: v for k, v in DEMO_DEFAULTS.items() if k != "num_tokens"}
    options.update(train)
    dart_kwargs = {"scorer": scratch_scorer(int(options["canvas_size"])), **(dart_kwargs or {})}
    return {"specs": [RunSpec("grid", "vit_micro_patch8", num_tokens),
                      RunSpec("dart", "dart_vit_micro_patch8", num_tokens, dict(dart_kwargs)),
                      RunSpec("oracle", "dart_vit_micro_patch8", num_tokens, {**dart_kwargs, **ORACLE})],
            "train": options}


def demo(output: str | os.PathLike = "runs/demo", num_tokens: int = DEMO_DEFAULTS["num_tokens"],
         dart_kwargs: dict[str, Any] | None = None, parallel: bool = True, resume: bool = False,
         echo: Callable[[str], None] = print, **train: Any) -> dict[str, Any]:
    """The main job: DART vs the fixed grid at the same token count on Cluttered Fashion-MNIST.

    :func:`compare` on :func:`demo_preset` (both runs trained at once with one CPU thread
    each when ``parallel``), without MAC counts; the DART run's partitions after its last
    epoch are copied to ``<output>/partition.png``. Writes ``<output>/results.{json,md}``
    (meta: compare's, plus ``elapsed_s``, ``delta_top1`` = DART − grid top-1,
    ``delta_top1_oracle`` = oracle − grid top-1, ``partition_png``, ``parallel``) and echoes
    the table and the differences. Three runs (grid, DART, oracle), two at a time when ``parallel``.

    Args:
        output: folder of both runs and the results.
        num_tokens: the budget N of both models (a square).
        dart_kwargs: extra kwargs of the DART model.
        parallel: train both runs at once.
        resume: continue interrupted runs.
        echo: printer.
        **train: training options over :data:`DEMO_DEFAULTS` (``epochs``, ``canvas_size``...).

    Returns:
        :func:`compare`'s result.

    Raises:
        ValueError: a non-square budget or a bad option; RuntimeError: a run failed.
    """
    t0 = time.perf_counter()
    output = Path(output)
    preset = demo_preset(num_tokens, dart_kwargs, **train)
    opts = preset["train"]
    for spec in preset["specs"]:  # a bad option is one error before anything is announced or trained
        train_config(spec, opts, output / spec.name)
    epochs = int(opts["epochs"])
    echo(f"training dart_vit_micro_patch8 (learned scorer, and the oracle: the true object box) and "
         f"vit_micro_patch8 at N={num_tokens} tokens on Cluttered "
         f"Fashion-MNIST ({opts['canvas_size']}px canvas, {opts['train_samples']} train / {opts['test_samples']} "
         f"test, {epochs} epochs, {'in parallel' if parallel else 'one after the other'})")
    png = output / "partition.png"

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        with atomic_path(png) as tmp:
            shutil.copyfile(output / "dart" / f"partition_epoch{epochs}.png", tmp)
        by_name = {r["name"]: r for r in rows}
        return {"elapsed_s": time.perf_counter() - t0, "partition_png": str(png), "parallel": parallel,
                "delta_top1": by_name["dart"]["test_top1"] - by_name["grid"]["test_top1"],
                "delta_top1_oracle": by_name["oracle"]["test_top1"] - by_name["grid"]["test_top1"]}

    result = compare(None, output, "results", specs=preset["specs"], train=opts, jobs=2 if parallel else 1,
                     snapshot_epochs=(epochs,), resume=resume, count_macs=False, echo=echo, extra_meta=summary)
    meta = result["meta"]
    echo("")
    echo(result["markdown"])
    echo(f"DART - fixed grid: {meta['delta_top1']:+.2f} points top-1 at {num_tokens} tokens "
         f"(oracle - fixed grid: {meta['delta_top1_oracle']:+.2f}) | "
         f"wall time {meta['elapsed_s'] / 60:.1f} min | partitions: {png}")
    return result


if __name__ == "__main__":  # the child process of run_specs
    sys.exit(_child_main())
