"""``dartok`` command line: train, eval, visualize, and the main job ``demo``.

Examples::

    dartok train --model dart_vit_micro_patch8 --num-tokens 36 --canvas-size 128 \\
        --epochs 10 -o runs/dart36
    dartok train --model vit_micro_patch8 --num-tokens 36 --canvas-size 128 -o runs/vit36
    dartok train -o runs/dart36 --resume --epochs 20      # continue / extend a run
    dartok train --model dart_videomamba_micro_patch8 --data moving_fmnist \
        --init-from runs/image/checkpoint -o runs/video  # start from an image model (inflated)
    dartok eval --checkpoint runs/dart36/checkpoint --split test --json eval.json
    dartok visualize --checkpoint runs/dart36/checkpoint --indices 0,1,2,3 -o partition.png
    dartok visualize --score-source edges --num-tokens 64 --image photo.png -o edges.png
    dartok train --data-root my_images/ --model dart_vit_micro_patch8 -o runs/mine   # an ImageFolder
    dartok predict -c runs/mine/checkpoint photo.jpg more_photos/ --top-k 3 --json preds.json
    dartok train --task segmentation --num-tokens 16 -o runs/seg16   # Cluttered Fashion-MNIST, per pixel
    dartok train --task segmentation --data-root my_seg/ -o runs/myseg  # images/ + annotations/ label PNGs

User errors (bad options, missing / corrupt checkpoints, conflicting resume options) print
one ``Error: ...`` line and exit with status 2, without a traceback.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple

import typer

from . import _compat

_compat.ensure_torchvision_importable()

__all__ = ["app", "main"]

app = typer.Typer(
    name="dartok",
    help="DART: adaptive-region tokenization for timm ViTs -- train, evaluate, visualize.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Exceptions that mean "the user asked for something impossible"; reported without traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, TypeError, KeyError)


def _fail(message: str, code: int = 2) -> "typer.Exit":
    """Print ``Error: message`` to stderr and return an Exit to raise."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def _user_error_message(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"missing entry {e}"
    text = str(e) or type(e).__name__
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its own message is the last line
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith(type(e).__name__) else last
    return text


def _check_writable(path: Optional[Path], option: str) -> None:
    """Refuse up front an output file that cannot be written (before any work is done)."""
    if path is None:
        return
    import tempfile

    if path.is_dir():
        raise _fail(f"{option} {str(path)!r} is a folder; give a file name")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise _fail(f"{option} {str(path)!r}: {str(blocker)!r} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise _fail(f"{option} {str(path)!r}: cannot write to {str(path.parent)!r} ({e.strerror or e})") from None


def _parse_json_dict(value: Optional[str], option: str) -> dict:
    if value is None or value.strip() == "":
        return {}
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"not valid JSON ({e}): {value!r}", param_hint=option) from None
    if not isinstance(obj, dict):
        raise typer.BadParameter(f"must be a JSON object like '{{\"key\": 1}}', got {value!r}", param_hint=option)
    return obj


def _check_model_name(name: str) -> None:
    import timm

    from . import models  # noqa: F401  (registers dart_* with timm)

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise typer.BadParameter(f"unknown model {name!r}{hint}", param_hint="--model")


def _set_threads(threads: Optional[int]) -> None:
    if threads is None:
        return
    if threads < 1:
        raise typer.BadParameter(f"must be >= 1, got {threads}", param_hint="--threads")
    import torch

    torch.set_num_threads(threads)


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`dartok._io.write_json`), creating its folder."""
    from ._io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, obj)


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------
# CLI parameter name -> TrainConfig field (same unless listed)
_TRAIN_PARAM_TO_FIELD = {"model_kwargs_json": "model_kwargs", "data_kwargs_json": "data_kwargs"}
_AUG = "Augmentation and data loading (timm / DeiT names)"
# options whose default depends on others (resolve_config): not passed when left off
_TRAIN_DERIVED_DEFAULTS = ("data", "warmup_epochs")


@app.command()
def train(
    ctx: typer.Context,
    model: str = typer.Option("dart_vit_micro_patch8", "--model", "-m", help="Model name (dart_* or plain timm ViT)."),
    task: Optional[str] = typer.Option(
        None, help="classification or segmentation (default: the dataset's). segmentation trains the model with "
        "Segmenter's linear decoder on cluttered_fmnist_seg, or on --data-root images/ + annotations/."),
    num_tokens: Optional[int] = typer.Option(None, help="Token budget N (plain ViTs: a square, sets img_size)."),
    data: Optional[str] = typer.Option(
        None, help="cluttered_fmnist, cluttered_fmnist_seg, fashion_mnist, folder (your images: an ImageFolder), "
        "seg_folder (images/ + annotations/) or a timm name (default: from --data-root's layout, else the task's: "
        "cluttered_fmnist / cluttered_fmnist_seg)."),
    data_root: Optional[str] = typer.Option(None, help="Dataset directory (default: the dataset's own)."),
    canvas_size: Optional[int] = typer.Option(None, help="Canvas side of cluttered_fmnist (default: dataset default)."),
    train_samples: Optional[int] = typer.Option(
        None, help="Use N training samples (default: all; an ImageFolder: a class-stratified subset, --data-seed)."),
    test_samples: Optional[int] = typer.Option(
        None, help="Use N test samples (default: all; an ImageFolder: a class-stratified subset, --data-seed)."),
    val_split: Optional[float] = typer.Option(
        None, help="ImageFolder without a val/ folder: hold out this class-stratified fraction of the training "
        "images (--data-seed) and evaluate on it, e.g. 0.1."),
    epochs: int = typer.Option(10, help="Total epochs of the schedule."),
    batch_size: int = typer.Option(
        64, help="GLOBAL training batch size (under torchrun: split evenly across the processes)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(0.05, help="Weight decay (not on norms/biases/pos_embed/cls_token)."),
    warmup_epochs: Optional[int] = typer.Option(None, help="Linear warmup epochs (default: 1; 0 when --epochs is 1)."),
    warmup_lr: float = typer.Option(1e-6, help="Learning rate at the start of warmup."),
    min_lr: float = typer.Option(1e-5, help="Final learning rate of the cosine schedule."),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", "--smoothing",
                                          help="Label smoothing of the training loss (with --mixup/--cutmix: "
                                          "of the mixed targets)."),
    clip_grad: Optional[float] = typer.Option(None, help="Clip the gradient norm to this value."),
    prior_epochs: float = typer.Option(0.0, help="A DART model built with a training-free prior "
                                       "(--model-kwargs '{\"prior\": \"saliency\"}') mixes it into its score map, "
                                       "its share annealed from 1 to 0 over this many epochs (docs/method.md §10)."),
    scorer_pretrain_epochs: int = typer.Option(
        0, min=0, help="A DART model whose scorer trunk learns from scratch first trains that trunk (and its CAM "
        "head) alone as a classifier of the full images for N epochs, then freezes it, as the paper freezes its "
        "ImageNet-trained trunk (docs/method.md §10). 0: off. Runs without such a scorer skip it."),
    scorer_pretrain_lr: Optional[float] = typer.Option(
        None, help="Peak learning rate of the scorer pretraining (--scorer-pretrain-epochs; "
        "default: --lr). A small CNN trained from scratch as a classifier wants more than a ViT: 3e-3 localises "
        "at every seed where 1e-3 does not (docs/scorer_from_scratch.md)."),
    train_num_tokens: Optional[str] = typer.Option(
        None, help="A DART model trains each batch at a token budget drawn from these, e.g. 9,16,25,36,49,64 "
        "(FlexiViT's random patch size), and is evaluated at --num-tokens; it then runs well at each "
        "(README \"Elastic token budget\")."),
    model_ema: bool = typer.Option(False, "--model-ema", help="Keep an EMA of the weights (DeiT); evaluated "
                                   "and checkpointed (model_ema.safetensors) alongside."),
    model_ema_decay: float = typer.Option(0.99996, help="Decay of the weight EMA (--model-ema)."),
    seed: int = typer.Option(0, help="Seed of initialization, data order, dropout."),
    data_seed: int = typer.Option(0, help="Seed of the data: cluttered generation, ImageFolder subsets, --val-split."),
    num_workers: int = typer.Option(0, help="DataLoader worker processes."),
    output: Path = typer.Option(Path("runs/default"), "--output", "-o", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output where it stopped."),
    init_from: Optional[Path] = typer.Option(
        None, "--init-from", help="Start from these weights (checkpoint folder, .safetensors, .pth): an image Vim's "
        "are inflated into a VideoMamba; epoch 0, fresh optimizer (not --resume)."),
    amp: bool = typer.Option(False, "--amp", help="bf16 autocast."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cuda if available)."),
    model_kwargs_json: Optional[str] = typer.Option(
        None, "--model-kwargs", help='Extra model kwargs as JSON, e.g. \'{"scorer_head": "v2", "alpha": 0.2}\'.'),
    data_kwargs_json: Optional[str] = typer.Option(
        None, "--data-kwargs", help='Extra dataset kwargs as JSON, e.g. \'{"num_clutter": 4}\'.'),
    num_classes: Optional[int] = typer.Option(None, help="Number of classes (default: from the dataset, e.g. an "
                                              "ImageFolder's class folders)."),
    in_chans: Optional[int] = typer.Option(None, help="Image channels 1 or 3 (default: 1 for Fashion-MNIST data)."),
    eval_batch_size: Optional[int] = typer.Option(
        None, help="Global evaluation batch size (default: 2x --batch-size)."),
    stop_after: Optional[int] = typer.Option(None, help="Stop after this many epochs in total (resume later)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (1 is fastest on a busy 2-core box)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the final summary to this JSON file."),
    # augmentation (timm train.py's names; PIL datasets: ImageFolder, timm's sources) -- README "Augmentation"
    scale: Optional[Tuple[float, float]] = typer.Option(
        None, help="RandomResizedCrop area range (timm: 0.08 1; '1 1': no crop, keeps small objects).",
        rich_help_panel=_AUG),
    ratio: Optional[Tuple[float, float]] = typer.Option(
        None, help="RandomResizedCrop aspect range (timm: 0.75 1.333).", rich_help_panel=_AUG),
    hflip: Optional[float] = typer.Option(None, help="Horizontal flip probability (timm: 0.5).",
                                          rich_help_panel=_AUG),
    vflip: Optional[float] = typer.Option(None, help="Vertical flip probability (timm: 0).", rich_help_panel=_AUG),
    color_jitter: Optional[float] = typer.Option(None, help="Colour jitter strength (timm: 0.4; off with --aa).",
                                                 rich_help_panel=_AUG),
    aa: Optional[str] = typer.Option(None, help="RandAugment / AutoAugment policy, e.g. rand-m9-mstd0.5-inc1 "
                                     "(DeiT), original, augmix-m5-w4-d2 (timm: none).", rich_help_panel=_AUG),
    reprob: Optional[float] = typer.Option(None, help="Random erasing probability (timm: 0; DeiT 0.25).",
                                           rich_help_panel=_AUG),
    train_interpolation: Optional[str] = typer.Option(
        None, help="Training resize interpolation: random, bilinear, bicubic, ... (default: the model's).",
        rich_help_panel=_AUG),
    crop_pct: Optional[float] = typer.Option(None, help="Evaluation centre-crop share (default: the model's).",
                                             rich_help_panel=_AUG),
    mixup: float = typer.Option(0.0, help="Mixup alpha, on if > 0 (any image dataset; DeiT 0.8).",
                                rich_help_panel=_AUG),
    cutmix: float = typer.Option(0.0, help="CutMix alpha, on if > 0 (DeiT 1.0).", rich_help_panel=_AUG),
    mixup_prob: float = typer.Option(1.0, help="Share of batches mixed when --mixup/--cutmix is on.",
                                     rich_help_panel=_AUG),
    drop_path: Optional[float] = typer.Option(None, help="Stochastic depth rate (default: the model's; DeiT 0.1).",
                                              rich_help_panel=_AUG),
    repeated_aug: bool = typer.Option(False, "--repeated-aug/--no-repeated-aug",
                                      help="timm's RepeatAugSampler: 3 augmented copies of each image (DeiT).",
                                      rich_help_panel=_AUG),
    pin_mem: Optional[bool] = typer.Option(None, "--pin-mem/--no-pin-mem",
                                           help="Pinned batch memory (default: on for CUDA).", rich_help_panel=_AUG),
    persistent_workers: bool = typer.Option(False, "--persistent-workers",
                                            help="Keep the --num-workers processes between epochs.",
                                            rich_help_panel=_AUG),
) -> None:
    """Train a model; writes <output>/metrics.jsonl and <output>/checkpoint/ every epoch.

    Multi-process (DDP): run the same command under torchrun, e.g.
    torchrun --standalone --nproc_per_node=4 $(which dartok) train --batch-size 256 ...
    (NCCL on GPUs, gloo on CPU; --batch-size stays the global batch; rank 0 writes).
    """
    from .train.config import resolve_config
    from .train.distributed import is_main_process
    from .train.run import train as run_train
    from .train.task import create_task

    values = dict(ctx.params)
    values["model_kwargs_json"] = _parse_json_dict(model_kwargs_json, "--model-kwargs")
    values["data_kwargs_json"] = _parse_json_dict(data_kwargs_json, "--data-kwargs")
    values["output"] = str(output)
    values["data_root"] = None if data_root is None else str(data_root)
    values["init_from"] = None if init_from is None else str(init_from)
    if train_num_tokens is not None:
        values["train_num_tokens"] = _parse_int_list(train_num_tokens, "--train-num-tokens")

    def given(name: str) -> bool:  # with --resume, options left off the command line come from the saved run
        source = getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
        return not resume or source in ("COMMANDLINE", "ENVIRONMENT")

    options = {_TRAIN_PARAM_TO_FIELD.get(k, k): v for k, v in values.items() if k != "json_out" and given(k)}
    for k in _TRAIN_DERIVED_DEFAULTS:  # None: resolve_config derives them from other options
        if options.get(k) is None:
            options.pop(k, None)
    options.update(output=str(output), resume=resume)
    if not resume:
        _check_model_name(model)
    _check_writable(json_out, "--json")
    try:
        cfg = resolve_config(options)
        cfg.validate(flags=True)
        summary = run_train(cfg)
    except KeyboardInterrupt:
        typer.echo("interrupted; resume with --resume", err=True)
        raise typer.Exit(130)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e))
    except RuntimeError as e:
        if "Unknown model" in str(e) or "num_tokens" in str(e):
            raise _fail(str(e))
        raise
    summary.pop("model", None)
    summary.pop("model_ema", None)
    if not is_main_process():  # under torchrun: rank 0 reports
        return
    test = summary["test"]
    if json_out is not None:
        _write_json(json_out, summary)
    ema = summary.get("test_ema")
    task = create_task(summary["task"])
    typer.echo(
        f"final test {task.describe(test)}  "
        + (f"(EMA {task.describe({task.best_metric: ema[task.best_metric]})})  " if ema else "")
        + f"(n={test['n']}, epoch {summary['epoch']}/{summary['epochs']})  checkpoint: {summary['checkpoint']}"
    )
    for line in task.details(test, summary.get("classes")):
        typer.echo(line)


# --------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                              help="Checkpoint directory (run_dir/checkpoint)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Instead of --checkpoint: a timm model with "
                                        "pretrained weights, e.g. dart_deit_tiny_patch16_224.hcplab_in1k (the DART "
                                        "authors' checkpoint), on the ImageFolder --data-root (ImageNet's val/)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="With --model: a local weights file "
                                           "(pretrained_cfg_overlay file=...), e.g. a downloaded darvit-tiny.pth."),
    split: str = typer.Option("test", help="test or train."),
    data: Optional[str] = typer.Option(None, help="Dataset (default: the one the checkpoint was trained on)."),
    data_root: Optional[str] = typer.Option(None, help="Dataset directory."),
    canvas_size: Optional[int] = typer.Option(None, help="Canvas side for cluttered_fmnist (default: checkpoint's)."),
    samples: Optional[int] = typer.Option(None, help="Evaluate the first N samples (default: as in training)."),
    data_seed: Optional[int] = typer.Option(None, help="Cluttered dataset seed (default: checkpoint's)."),
    batch_size: int = typer.Option(128, help="Batch size."),
    num_workers: int = typer.Option(0, help="DataLoader workers."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)."),
    amp: bool = typer.Option(False, "--amp", help="bf16 autocast."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results to this JSON file."),
    num_tokens: Optional[int] = typer.Option(
        None, "--num-tokens", help="Evaluate a DART model at this token budget instead of the trained one "
        "(no retraining; README 'Elastic token budget')."),
) -> None:
    """Evaluate a checkpoint: prints top-1 / top-5 / loss (segmentation: mIoU, pixel accuracy, loss and
    the per-class IoU). With --model: a pretrained timm model on an ImageFolder (--data-root)."""
    _set_threads(threads)
    from .train.run import evaluate_checkpoint
    from .train.task import create_task

    if split not in ("test", "train"):
        raise typer.BadParameter(f"must be 'test' or 'train', got {split!r}", param_hint="--split")
    if batch_size <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--batch-size")
    if (checkpoint is None) == (model is None):
        raise _fail("give one of --checkpoint (a run's checkpoint) or --model (a timm model with pretrained weights)")
    if weights is not None and model is None:
        raise _fail("--weights goes with --model (a local file of that model's weights)")
    _check_writable(json_out, "--json")
    if model is not None:
        _eval_pretrained(model, weights, split=split, data=data, data_root=data_root, canvas_size=canvas_size,
                         samples=samples, data_seed=data_seed, batch_size=batch_size, num_workers=num_workers,
                         device=device, amp=amp, progress=progress, json_out=json_out, num_tokens=num_tokens)
        return
    try:
        out = evaluate_checkpoint(checkpoint, split, data=data, data_root=data_root, canvas_size=canvas_size,
                                  samples=samples, data_seed=data_seed, batch_size=batch_size,
                                  num_workers=num_workers, device=device, amp=amp, progress=progress,
                                  num_tokens=num_tokens)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e))
    if json_out is not None:
        _write_json(json_out, out)
    task = create_task(out["task"])
    details = task.details(out, out.get("classes"))
    budget = f" at {out['num_tokens']} tokens" if num_tokens is not None else ""
    typer.echo(f"{out['model']}{budget} on {out['data'] or 'folder'}/{split} (n={out['n']}): "
               f"{task.describe(out)}" + (f"  | classes: {_short_list(out['classes'])}"
                                          if out.get("classes") and not details else ""))
    for line in details:
        typer.echo(line)


def _eval_pretrained(model: str, weights: Optional[Path], *, split: str, data: Optional[str],
                     data_root: Optional[str], canvas_size: Optional[int], samples: Optional[int],
                     data_seed: Optional[int], batch_size: int, num_workers: int, device: Optional[str], amp: bool,
                     progress: bool, json_out: Optional[Path], num_tokens: Optional[int] = None) -> None:
    """``dartok eval --model NAME [--weights FILE] --data-root FOLDER``: :func:`dartok.train.run.evaluate_pretrained`."""
    from .train.run import evaluate_pretrained

    if data_root is None:
        raise _fail("--model needs --data-root: an ImageFolder (ImageNet's val/ with its 1000 synset folders, "
                    "or a root holding train/ and val/)")
    if split != "test" or data is not None or canvas_size is not None:
        raise _fail("--model evaluates the ImageFolder at --data-root; --split train, --data and --canvas-size "
                    "apply to --checkpoint")
    if samples is not None and samples <= 0:
        raise _fail(f"--samples must be > 0, got {samples}")
    try:
        out = evaluate_pretrained(model, data_root, weights=weights, samples=samples, data_seed=data_seed or 0,
                                  batch_size=batch_size, num_workers=num_workers, device=device, amp=amp,
                                  progress=progress, num_tokens=num_tokens)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e))
    except RuntimeError as e:  # pretrained weights that cannot be had (offline, none)
        hint = "" if weights is not None else " (dartok eval: a downloaded file goes in --weights FILE)"
        raise _fail(_user_error_message(e) + hint)
    if json_out is not None:
        _write_json(json_out, out)
    from .train.task import create_task
    typer.echo(f"{out['model']} ({out['weights']}) on {out['data_root']} ({out['split']}/, n={out['n']}): "
               f"{create_task(out['task']).describe(out)}")


def _short_list(names, k: int = 12) -> str:
    return ", ".join(map(str, names[:k])) + (f", ... ({len(names)} in all)" if len(names) > k else "")


# --------------------------------------------------------------------------------------
# visualize
# --------------------------------------------------------------------------------------
def _parse_indices(text: Optional[str]) -> Optional[list[int]]:
    """``"0,1,2"`` / ``"0-7"`` → indices; ``None`` for no text (the library's default: the first 8)."""
    if text is None or text.strip() == "":
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            out.extend(range(int(m.group(1)), int(m.group(2)) + 1))
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated integers like 0,1,2 or 0-7, got {text!r}",
                                     param_hint="--indices") from None
    if not out:
        raise typer.BadParameter("no indices given", param_hint="--indices")
    return out


@app.command()
def visualize(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint of a trained model."),
    score_source: Optional[str] = typer.Option(
        None, help="Without a checkpoint: 'uniform' (plain grid) or 'edges' (gradient-magnitude score map)."),
    num_tokens: Optional[int] = typer.Option(None, help="Token budget for --score-source; with --checkpoint, "
                                             "draws a DART model at this budget instead of its trained one."),
    patch_size: int = typer.Option(16, help="Patch size for --score-source (kept for old scripts: the boxes drawn "
                                             "do not depend on it)."),
    pdf_size: int = typer.Option(14, help="Score-map side for --score-source edges."),
    alpha: Optional[float] = typer.Option(None, help="Uniform mixing weight for --score-source (default DART's)."),
    data: Optional[str] = typer.Option(None, help="Dataset for --indices (default: the checkpoint's, else cluttered_fmnist)."),
    data_root: Optional[str] = typer.Option(None, help="Dataset directory."),
    canvas_size: Optional[int] = typer.Option(None, help="Canvas side for cluttered_fmnist."),
    data_seed: Optional[int] = typer.Option(None, help="Cluttered dataset seed."),
    split: str = typer.Option("test", help="Dataset split: test or train."),
    indices: Optional[str] = typer.Option(None, help="Dataset indices, e.g. 0,1,2 or 0-7 (default: 0-7)."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="Image file(s) instead of dataset samples (repeatable)."),
    output: Path = typer.Option(Path("partition.png"), "--output", "-o", help="Output PNG."),
    ncols: int = typer.Option(4, help="Columns of the figure grid."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
) -> None:
    """Draw DART partitions (score map + boxes) for dataset samples or image files."""
    _set_threads(threads)
    from .tools.viz import visualize as draw

    if patch_size < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--patch-size")
    _check_writable(output, "--output")
    try:
        path, n = draw(output, checkpoint=checkpoint, score_source=score_source, num_tokens=num_tokens,
                       pdf_size=pdf_size, alpha=alpha, data=data, data_root=data_root, canvas_size=canvas_size,
                       data_seed=data_seed, split=split, indices=_parse_indices(indices),
                       images=image or None, ncols=ncols, device=device)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e))
    typer.echo(f"wrote {path} ({n} image{'s' if n != 1 else ''})")


# --------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------
@app.command()
def predict(
    inputs: List[Path] = typer.Argument(..., help="Image files, or folders of images (searched recursively)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Checkpoint of a trained model."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Classes shown per image (at most the model's classes)."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the predictions to this JSON file."),
    num_tokens: Optional[int] = typer.Option(
        None, "--num-tokens", help="Run a DART model at this token budget instead of the trained one."),
) -> None:
    """Top-k class names (with probabilities) of image files by a trained checkpoint.

    Images are prepared as the checkpoint's evaluation data were (an ImageFolder model: timm's
    evaluation transform). One line per image: path, then class probability pairs.
    """
    _set_threads(threads)
    from .tools.predict import predict as run_predict

    if top_k < 1:
        raise typer.BadParameter(f"must be >= 1, got {top_k}", param_hint="--top-k")
    if batch_size < 1:
        raise typer.BadParameter(f"must be >= 1, got {batch_size}", param_hint="--batch-size")
    _check_writable(json_out, "--json")
    try:
        out = run_predict(checkpoint, inputs, top_k=top_k, batch_size=batch_size, device=device,
                          num_tokens=num_tokens)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e))
    for row in out["predictions"]:
        typer.echo(row["path"] + "  " + "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in row["top"]))
    if json_out is not None:
        _write_json(json_out, out)


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------
from .tools.compare import DEMO_DEFAULTS  # noqa: E402  (the demo preset's defaults, shown in --help)


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o", help="Folder for both runs and the results."),
    num_tokens: int = typer.Option(DEMO_DEFAULTS["num_tokens"], help="Token budget N of both models (a square)."),
    canvas_size: int = typer.Option(DEMO_DEFAULTS["canvas_size"], help="Cluttered Fashion-MNIST canvas side."),
    epochs: int = typer.Option(DEMO_DEFAULTS["epochs"], help="Epochs of both runs."),
    train_samples: int = typer.Option(DEMO_DEFAULTS["train_samples"], help="Training images."),
    test_samples: int = typer.Option(DEMO_DEFAULTS["test_samples"], help="Test images."),
    batch_size: int = typer.Option(DEMO_DEFAULTS["batch_size"], help="Batch size of both runs."),
    lr: float = typer.Option(DEMO_DEFAULTS["lr"], help="Peak learning rate of both runs."),
    warmup_epochs: int = typer.Option(DEMO_DEFAULTS["warmup_epochs"], help="Linear warm-up epochs of both runs."),
    seed: int = typer.Option(DEMO_DEFAULTS["seed"], help="Seed of both runs."),
    scorer_pretrain_epochs: int = typer.Option(
        DEMO_DEFAULTS["scorer_pretrain_epochs"], min=0,
        help="Epochs the DART scorer's trunk first trains alone as a classifier, then frozen (0: off)."),
    scorer_pretrain_lr: float = typer.Option(
        DEMO_DEFAULTS["scorer_pretrain_lr"],
        help="Peak learning rate of that pretraining."),
    dart_kwargs_json: Optional[str] = typer.Option(
        None, "--dart-kwargs", help="Extra kwargs for the DART model as JSON (scorer options, alpha, ...), over the "
        "default from-scratch scorer; '{\"scorer\": \"mobilenetv3_small\"}' with --scorer-pretrain-epochs 0 is "
        "the paper's scorer."),
    parallel: bool = typer.Option(True, "--parallel/--sequential",
                                  help="Train both models at once, one CPU thread each (fastest on 2 cores)."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs in --output."),
) -> None:
    """The main job: DART vs the fixed grid at the same token count on Cluttered Fashion-MNIST.

    Trains ``dart_vit_micro_patch8`` (full canvas, N adaptive tokens),
    ``vit_micro_patch8`` (canvas resized to sqrt(N)*8 px, N grid tokens) and the oracle (the
    DART model cutting the true object box instead of a learned score map) with the same
    backbone, recipe, epochs and seed; prints the test accuracies side by side and writes
    ``results.json``, ``results.md``, ``results_localization.png`` and ``partition.png`` into --output.
    """
    from .tools.compare import demo as run_demo

    dart_kwargs = _parse_json_dict(dart_kwargs_json, "--dart-kwargs")
    try:
        run_demo(output, num_tokens=num_tokens, dart_kwargs=dart_kwargs, parallel=parallel, resume=resume,
                 echo=typer.echo, canvas_size=canvas_size, epochs=epochs, train_samples=train_samples,
                 test_samples=test_samples, batch_size=batch_size, lr=lr, warmup_epochs=warmup_epochs, seed=seed,
                 scorer_pretrain_epochs=scorer_pretrain_epochs, scorer_pretrain_lr=scorer_pretrain_lr)
    except ValueError as e:
        raise _fail(str(e))
    except RuntimeError as e:
        raise _fail(f"{e} (see the output above)", code=1)


def _parse_seeds(text: str) -> Optional[List[int]]:
    """``--seeds``: comma-separated ints >= 0, each once; ``""`` -> ``None`` (the preset's seeds)."""
    from .tools.compare import check_seeds

    if not text.strip():
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"must be comma-separated ints >= 0, got {text!r}", param_hint="--seeds") from None
    try:
        return list(check_seeds(values))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--seeds") from None


@app.command()
def compare(
    preset: str = typer.Option("cpu", help="cpu (grid N, DART N, oracle N, grid 4N, DART 2N on the micro ViT, "
                                           "N=16), cpu-36 (N=36), cpu-small, cpu-clutter, cpu-large (harder "
                                           "data; -36 for N=36), cpu-ablations, cpu-vim, cpu-video (Moving "
                                           "Fashion-MNIST), cpu-video-which (which item moves; --image-first), cpu-seg "
                                           "(segmentation: grid, DART, oracle at N=16 and 36), cpu-warp (a CNN behind "
                                           "the regular-grid warp vs on the resized canvas), cpu-partition (bands vs "
                                           "regular grid on the micro DART ViT), "
                                           "or full (DeiT-Ti, DeiT's recipe), full-small-objects (the same without crop, cutmix, "
                                           "erasing), full-vim, full-video (Ti sizes, for a GPU)."),
    output: Path = typer.Option(Path("runs/compare"), "--output", "-o", help="Folder of the runs."),
    runs: str = typer.Option("", "--runs", help="Train only these rows of the preset, comma-separated names as "
                             "in its table, e.g. 'grid 16x4,dart 16x2' (default: all)."),
    name: Optional[str] = typer.Option(None, help="Result file stem (default: the preset)."),
    results_dir: Path = typer.Option(Path("benchmarks/results"), help="Where the tables and plot go."),
    jobs: int = typer.Option(2, help="Runs trained at once (one CPU thread each when > 1)."),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epochs."),
    train_samples: Optional[int] = typer.Option(None, help="Override the preset's training images."),
    test_samples: Optional[int] = typer.Option(None, help="Override the preset's test samples (a quick smoke run)."),
    data: Optional[str] = typer.Option(None, help="Dataset (the full presets train on an ImageFolder: --data folder --data-root DIR)."),
    data_root: Optional[str] = typer.Option(None, help="Dataset directory."),
    snapshot_epochs: str = typer.Option("", help="Draw DART partitions after these epochs, e.g. 1,3,12."),
    macs: bool = typer.Option(True, "--macs/--no-macs", help="Count GMACs with fvcore for the table and plot."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs."),
    init_from: Optional[Path] = typer.Option(
        None, "--init-from", help="Start every run from these weights (train --init-from), e.g. an image model's "
        "checkpoint for the video presets (inflated)."),
    image_first: bool = typer.Option(False, "--image-first", help="Train the preset's image model first "
                                     "(cpu-video-which) and start every run from it (inflated)."),
    dart_kwargs: str = typer.Option("", help="Extra model kwargs (JSON) for every DART run, e.g. "
                                              "'{\"alpha\": 0.2}'; a run's own kwargs win."),
    seeds: str = typer.Option("", help="Train every run at these seeds, e.g. 0,1,2 (default: the preset's; "
                                       "the CPU presets use 0,1,2); --seeds 0 for one quick run per spec."),
    scratch_scorer: bool = typer.Option(False, "--scratch-scorer", help="DART runs (the oracle's grid too) use the "
                                        "scorer that localises from scratch (stride-8 map, softmax, 3x3 blur, CAM head "
                                        "over 10 classes, map read at the cells' centres; docs/method.md §10) and pretrain it "
                                        "(--scorer-pretrain-epochs, default 8, at --scorer-pretrain-lr 3e-3). Classification presets on Cluttered "
                                        "Fashion-MNIST; cpu, cpu-36, cpu-warp and the harder-data presets already do."),
    scorer_pretrain_epochs: Optional[int] = typer.Option(
        None, min=0, help="Pretrain each DART run's from-scratch scorer trunk this many epochs, then freeze it "
        "(default: the preset's; 8 with --scratch-scorer)."),
    scorer_pretrain_lr: Optional[float] = typer.Option(
        None, help="Peak learning rate of that pretraining (default: the preset's; "
        "3e-3 with --scratch-scorer; otherwise --lr)."),
) -> None:
    """Accuracy benchmark: train a set of tokenizers with one recipe, write tables and a plot.

    With several seeds each run trains once per seed (<output>/<preset>/<run>/seed<k>) and the
    table shows mean [min, max] over the seeds; with one seed the runs are <output>/<preset>/<run>.
    """
    from .tools.compare import PRESETS, SCRATCH_TRAIN, compare as run_compare, scratch_scorer as scratch, select_runs

    if preset not in PRESETS:
        raise typer.BadParameter(f"choose from {sorted(PRESETS)}", param_hint="--preset")
    try:
        snaps = tuple(int(v) for v in snapshot_epochs.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated epochs, got {snapshot_epochs!r}",
                                 param_hint="--snapshot-epochs") from None
    extra = _parse_json_dict(dart_kwargs, "--dart-kwargs")
    seed_list = _parse_seeds(seeds)
    specs = PRESETS[preset]["specs"]
    if runs.strip():
        try:
            specs = select_runs(specs, [r.strip() for r in runs.split(",") if r.strip()])
        except ValueError as e:
            raise _fail(f"--runs: preset {preset!r} has {e}") from None
    image = PRESETS[preset].get("image") if image_first else None
    if image_first and image is None:
        raise _fail(f"--image-first: preset {preset!r} has no image run; presets with one: "
                    f"{sorted(k for k, v in PRESETS.items() if 'image' in v)}")
    if image_first and init_from is not None:
        raise _fail("--image-first and --init-from both say where the runs start from; give one")
    overrides = {k: v for k, v in dict(epochs=epochs, train_samples=train_samples, test_samples=test_samples, data=data,
                                       data_root=data_root, init_from=None if init_from is None else str(init_from),
                                       scorer_pretrain_epochs=scorer_pretrain_epochs,
                                       scorer_pretrain_lr=scorer_pretrain_lr).items()
                 if v is not None}
    if scratch_scorer:
        extra = {"scorer": scratch(int(PRESETS[preset]["train"].get("canvas_size", 128))), **extra}
        overrides = {**SCRATCH_TRAIN, **overrides}
    stem = name or preset
    try:
        result = run_compare(preset, output / preset, stem, specs=specs, train=overrides, jobs=jobs, snapshot_epochs=snaps,
                             resume=resume, count_macs=macs, echo=typer.echo, dart_kwargs=extra,
                             results_dir=results_dir, seeds=seed_list, image=image)
    except ValueError as e:  # a bad option, found before anything trains
        raise _fail(str(e))
    except (RuntimeError, FileNotFoundError) as e:
        raise _fail(str(e), code=1)
    typer.echo(result["markdown"])
    typer.echo(f"wrote {results_dir / stem}.json / .md" + (" / .png" if result["plot"] else ""))


# --------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------


def _parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"must be comma-separated integers, got {text!r}", param_hint=option) from None
    if any(v < 1 for v in values):
        raise typer.BadParameter(f"values must be >= 1, got {text!r}", param_hint=option)
    return values


@app.command()
def bench(
    suite: str = typer.Argument("compute", help="compute (params, GMACs, img/s, latency, tokenizer stages), "
                                "scaling (vs input resolution and token budget) or macs (counts only)"),
    models: str = typer.Option("deit_tiny_patch16_224,dart_deit_tiny_patch16_224", "--models",
                               help="compute/macs: comma-separated model names (first = reference); "
                               "name\\[key=value;...] passes model kwargs (a value starting with { is JSON), "
                               "e.g. dart_deit_tiny_patch16_224\\[scorer=none]"),
    model: str = typer.Option("dart_deit_tiny_patch16_224", "--model", help="scaling: the DART model"),
    baseline: str = typer.Option("deit_tiny_patch16_224", "--baseline", help="scaling: the fixed-grid model"),
    num_tokens: Optional[int] = typer.Option(None, "--num-tokens", help="compute/macs: token budget for every model"),
    resolutions: str = typer.Option("224,448,672,896", "--resolutions", help="scaling: input sides"),
    budgets: str = typer.Option("49,98,196,392,784", "--budgets", help="scaling: token budgets"),
    resolution_tokens: int = typer.Option(196, "--resolution-tokens", help="scaling: tokens of the resolution sweep"),
    budget_input: int = typer.Option(448, "--budget-input", help="scaling: DART input side of the budget sweep"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:i]"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="throughput batch size"),
    warmup: int = typer.Option(2, "--warmup", help="untimed calls before timing"),
    repeats: int = typer.Option(5, "--repeats", help="timed calls per measurement (median reported)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch intra-op threads (CPU)"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (default: on for CUDA only)"),
    compile_model: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the timed models"),
    breakdown: bool = typer.Option(True, "--breakdown/--no-breakdown", help="compute: time the tokenizer stages"),
    model_kwargs_json: Optional[str] = typer.Option(None, "--model-kwargs", help="JSON dict for create_model"),
    notes: Optional[List[str]] = typer.Option(None, "--note", help="a note to record with the results (repeatable)"),
    name: Optional[str] = typer.Option(None, "--name", help="result file stem (default <suite>_<device type>)"),
    output_dir: Path = typer.Option(Path("benchmarks/results"), "--output-dir", "-o", help="folder of the results"),
) -> None:
    """Measure params, MACs (fvcore), throughput, latency and tokenizer stages; write JSON + Markdown.

    Examples: dartok bench compute --threads 2 | dartok bench scaling -b 32 --repeats 7 |
    dartok bench macs --models dart_deit_small_patch16_224. Results: <output-dir>/<name>.json and .md
    (see benchmarks/README.md).
    """
    import shlex
    import sys

    _set_threads(threads)
    from .tools.bench import parse_model_spec, run_bench, split_model_specs

    try:
        names = split_model_specs(models)
        for m in (names if suite != "scaling" else [model, baseline]):
            _check_model_name(parse_model_spec(m)[0])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--models") from None
    res_list = _parse_int_list(resolutions, "--resolutions")
    budget_list = _parse_int_list(budgets, "--budgets")
    kwargs = _parse_json_dict(model_kwargs_json, "--model-kwargs")
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None
    try:
        _, md, json_path, md_path = run_bench(
            suite, models=names, model=model, baseline=baseline, num_tokens=num_tokens, resolutions=res_list,
            budgets=budget_list, resolution_tokens=resolution_tokens, budget_input=budget_input, device=device,
            batch_size=batch_size, warmup=warmup, repeats=repeats, amp=amp, compile_model=compile_model,
            breakdown=breakdown, model_kwargs=kwargs, notes=notes or (), name=name, output_dir=output_dir,
            log=typer.echo, command=command)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e)) from None
    typer.echo("")
    typer.echo(md)
    typer.echo(f"written: {json_path} and {md_path}")


def main() -> None:  # pragma: no cover - console entry convenience
    """Run the CLI (same as the ``dartok`` console script)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
