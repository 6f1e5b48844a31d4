"""``dartok`` command line: train, eval, visualize, and the main job ``demo``.

Examples::

    dartok train --model dart_vit_micro_patch8 --num-tokens 36 --canvas-size 128 \\
        --epochs 10 -o runs/dart36
    dartok train --model vit_micro_patch8 --num-tokens 36 --canvas-size 128 -o runs/vit36
    dartok train -o runs/dart36 --resume --epochs 20      # continue / extend a run
    dartok eval --checkpoint runs/dart36/checkpoint --split test --json eval.json
    dartok visualize --checkpoint runs/dart36/checkpoint --indices 0,1,2,3 -o partition.png
    dartok visualize --score-source edges --num-tokens 64 --image photo.png -o edges.png

User errors (bad options, missing / corrupt checkpoints, conflicting resume options) print
one ``Error: ...`` line and exit with status 2, without a traceback.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, List, Optional

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
    return str(e) or type(e).__name__


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


@app.command()
def train(
    ctx: typer.Context,
    model: str = typer.Option("dart_vit_micro_patch8", "--model", "-m", help="Model name (dart_* or plain timm ViT)."),
    num_tokens: Optional[int] = typer.Option(None, help="Token budget N (plain ViTs: a square, sets img_size)."),
    data: str = typer.Option("cluttered_fmnist", help="cluttered_fmnist, fashion_mnist, or a timm / ImageFolder name."),
    data_root: Optional[str] = typer.Option(None, help="Dataset directory (default: the dataset's own)."),
    canvas_size: Optional[int] = typer.Option(None, help="Canvas side of cluttered_fmnist (default: dataset default)."),
    train_samples: Optional[int] = typer.Option(None, help="Use the first N training samples (default: all)."),
    test_samples: Optional[int] = typer.Option(None, help="Use the first N test samples (default: all)."),
    epochs: int = typer.Option(10, help="Total epochs of the schedule."),
    batch_size: int = typer.Option(
        64, help="GLOBAL training batch size (under torchrun: split evenly across the processes)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(0.05, help="Weight decay (not on norms/biases/pos_embed/cls_token)."),
    warmup_epochs: int = typer.Option(1, help="Linear warmup epochs."),
    warmup_lr: float = typer.Option(1e-6, help="Learning rate at the start of warmup."),
    min_lr: float = typer.Option(1e-5, help="Final learning rate of the cosine schedule."),
    label_smoothing: float = typer.Option(0.1, help="Label smoothing of the training loss."),
    clip_grad: Optional[float] = typer.Option(None, help="Clip the gradient norm to this value."),
    model_ema: bool = typer.Option(False, "--model-ema", help="Keep an EMA of the weights (DeiT); evaluated "
                                   "and checkpointed (model_ema.safetensors) alongside."),
    model_ema_decay: float = typer.Option(0.99996, help="Decay of the weight EMA (--model-ema)."),
    seed: int = typer.Option(0, help="Seed of initialization, data order, dropout."),
    data_seed: int = typer.Option(0, help="Seed of the cluttered dataset generation."),
    num_workers: int = typer.Option(0, help="DataLoader worker processes."),
    output: Path = typer.Option(Path("runs/default"), "--output", "-o", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output where it stopped."),
    amp: bool = typer.Option(False, "--amp", help="bf16 autocast."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cuda if available)."),
    model_kwargs_json: Optional[str] = typer.Option(
        None, "--model-kwargs", help='Extra model kwargs as JSON, e.g. \'{"scorer_head": "v2", "alpha": 0.2}\'.'),
    data_kwargs_json: Optional[str] = typer.Option(
        None, "--data-kwargs", help='Extra dataset kwargs as JSON, e.g. \'{"num_clutter": 4}\'.'),
    num_classes: Optional[int] = typer.Option(None, help="Number of classes (default: from the dataset)."),
    in_chans: Optional[int] = typer.Option(None, help="Image channels 1 or 3 (default: 1 for Fashion-MNIST data)."),
    eval_batch_size: Optional[int] = typer.Option(
        None, help="Global evaluation batch size (default: 2x --batch-size)."),
    stop_after: Optional[int] = typer.Option(None, help="Stop after this many epochs in total (resume later)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (1 is fastest on a busy 2-core box)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the final summary to this JSON file."),
) -> None:
    """Train a model; writes <output>/metrics.jsonl and <output>/checkpoint/ every epoch.

    Multi-process (DDP): run the same command under torchrun, e.g.
    torchrun --standalone --nproc_per_node=4 $(which dartok) train --batch-size 256 ...
    (NCCL on GPUs, gloo on CPU; --batch-size stays the global batch; rank 0 writes).
    """
    from .train.distributed import is_main_process
    from .train.run import train as run_train

    values = dict(ctx.params)
    values["model_kwargs_json"] = _parse_json_dict(model_kwargs_json, "--model-kwargs")
    values["data_kwargs_json"] = _parse_json_dict(data_kwargs_json, "--data-kwargs")
    values["output"] = str(output)
    values["data_root"] = None if data_root is None else str(data_root)

    def given(name: str) -> bool:  # with --resume, options left off the command line come from the saved run
        source = getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
        return not resume or source in ("COMMANDLINE", "ENVIRONMENT")

    options = {_TRAIN_PARAM_TO_FIELD.get(k, k): v for k, v in values.items() if k != "json_out" and given(k)}
    options.update(output=str(output), resume=resume)
    if not resume:
        _check_model_name(model)
    try:
        summary = run_train(options)
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
    typer.echo(
        f"final test top-1 {test['top1']:.2f}%  top-5 {test['top5']:.2f}%  loss {test['loss']:.4f}  "
        + (f"(EMA top-1 {ema['top1']:.2f}%)  " if ema else "")
        + f"(n={test['n']}, epoch {summary['epoch']}/{summary['epochs']})  checkpoint: {summary['checkpoint']}"
    )


# --------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------
def _dataset_cfg_from_checkpoint(config: dict, *, data, data_root, canvas_size, split_samples, data_seed):
    """The checkpoint's data options with CLI overrides (:meth:`dartok.data.DataConfig.from_checkpoint`)."""
    from .data import DataConfig

    return DataConfig.from_checkpoint(config, data=data, data_root=data_root, canvas_size=canvas_size,
                                      num_samples=split_samples, data_seed=data_seed)


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Checkpoint directory (run_dir/checkpoint)."),
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
) -> None:
    """Evaluate a checkpoint: prints top-1 / top-5 / loss."""
    _set_threads(threads)
    from .train.run import evaluate_checkpoint

    if split not in ("test", "train"):
        raise typer.BadParameter(f"must be 'test' or 'train', got {split!r}", param_hint="--split")
    if batch_size <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--batch-size")
    try:
        out = evaluate_checkpoint(checkpoint, split, data=data, data_root=data_root, canvas_size=canvas_size,
                                  samples=samples, data_seed=data_seed, batch_size=batch_size,
                                  num_workers=num_workers, device=device, amp=amp, progress=progress)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e))
    if json_out is not None:
        _write_json(json_out, out)
    typer.echo(f"{out['model']} on {out['data']}/{split} (n={out['n']}): top-1 {out['top1']:.2f}%  "
               f"top-5 {out['top5']:.2f}%  loss {out['loss']:.4f}")


# --------------------------------------------------------------------------------------
# visualize
# --------------------------------------------------------------------------------------
def _parse_indices(text: Optional[str], n_default: int) -> list[int]:
    if text is None or text.strip() == "":
        return list(range(n_default))
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


def _load_image_file(path: Path, chans: int):
    """Image file → float tensor C×H×W in [0, 1] with ``chans`` channels."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise typer.BadParameter(f"image file {str(path)!r} does not exist", param_hint="--image")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I", "F"):
                arr = np.asarray(im, dtype=np.float32)
                arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-12)
                im = Image.fromarray((arr * 255).astype(np.uint8))
            im = im.convert("L" if chans == 1 else "RGB")
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise typer.BadParameter(f"cannot read image {str(path)!r}: {e}", param_hint="--image") from None
    t = torch.from_numpy(a.copy())
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _image_file_channels(paths: list[Path]) -> int:
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p) as im:
                if im.mode not in ("L", "1", "I", "I;16", "F", "LA"):
                    return 3
        except OSError:
            pass
    return 1


def _grid_boxes(rows: int, cols: int):
    import torch

    ys = torch.linspace(0, 1, rows + 1)
    xs = torch.linspace(0, 1, cols + 1)
    boxes = [[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(rows) for c in range(cols)]
    return torch.tensor(boxes)


@app.command()
def visualize(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint of a trained model."),
    score_source: Optional[str] = typer.Option(
        None, help="Without a checkpoint: 'uniform' (plain grid) or 'edges' (gradient-magnitude score map)."),
    num_tokens: Optional[int] = typer.Option(None, help="Token budget for --score-source."),
    patch_size: int = typer.Option(16, help="Patch size for --score-source (only affects the token sampling)."),
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
    import torch

    from . import checkpoint as ckpt
    from .engine import build_dataset, model_input_size, model_is_dart, prepare_images, select_device
    from .viz import save_partition_figure

    if (checkpoint is None) == (score_source is None):
        raise typer.BadParameter("give exactly one of --checkpoint or --score-source", param_hint="--checkpoint")
    if score_source is not None:
        if score_source not in ("uniform", "edges"):
            raise typer.BadParameter(f"must be 'uniform' or 'edges', got {score_source!r}", param_hint="--score-source")
        if num_tokens is None or num_tokens < 1:
            raise typer.BadParameter("--score-source needs --num-tokens N (N >= 1)", param_hint="--num-tokens")
    elif num_tokens is not None:
        raise typer.BadParameter("--num-tokens only applies to --score-source (a checkpoint has its own)",
                                 param_hint="--num-tokens")
    if split not in ("test", "train"):
        raise typer.BadParameter(f"must be 'test' or 'train', got {split!r}", param_hint="--split")
    if image and indices:
        raise typer.BadParameter("give either --image or --indices, not both", param_hint="--image")
    if ncols < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--ncols")
    if patch_size < 1 or pdf_size < 1:
        raise typer.BadParameter("--patch-size and --pdf-size must be >= 1", param_hint="--patch-size")
    if output.suffix.lower() != ".png":
        raise typer.BadParameter(f"output must be a .png file, got {str(output)!r}", param_hint="--output")

    try:
        dev = select_device(device)
        model = config = None
        class_names = None
        if checkpoint is not None:
            model, config = ckpt.model_from_checkpoint(checkpoint, device=dev)
            in_size = model_input_size(model)
            chans = in_size[0]
            dd = config.get("data") or {}
            mean = torch.tensor(dd.get("mean") or [0.5] * chans).view(-1, 1, 1)
            std = torch.tensor(dd.get("std") or [0.5] * chans).view(-1, 1, 1)
            if (dd.get("name") in ("cluttered_fmnist", "fashion_mnist")) and (dd.get("num_classes") == 10):
                from .data import FASHION_MNIST_CLASSES

                class_names = list(FASHION_MNIST_CLASSES)
        # ---- inputs: list of (image C×H×W normalized, label or None, name) ----
        items: list[tuple[torch.Tensor, Optional[int], str]] = []
        if image:
            chans_img = chans if checkpoint is not None else _image_file_channels(list(image))
            for p in image:
                x = _load_image_file(p, chans_img)
                x = (x - mean) / std if checkpoint is not None else x
                items.append((x, None, p.name))
        else:
            if checkpoint is not None:
                dcfg = _dataset_cfg_from_checkpoint(config, data=data, data_root=data_root, canvas_size=canvas_size,
                                                    split_samples=None, data_seed=data_seed)
            else:
                from .engine import TrainConfig

                dcfg = TrainConfig(data=data or "cluttered_fmnist", data_root=data_root, canvas_size=canvas_size,
                                   data_seed=data_seed or 0)
            from .engine import LOCAL_DATASETS

            if dcfg.data not in LOCAL_DATASETS:
                raise typer.BadParameter(f"--indices works with {', '.join(LOCAL_DATASETS)}; use --image for "
                                         "other pictures", param_hint="--data")
            ds = build_dataset(dcfg, split)
            if class_names is None:
                from .data import FASHION_MNIST_CLASSES

                class_names = list(getattr(ds, "classes", None) or FASHION_MNIST_CLASSES)
            idx = _parse_indices(indices, min(8, len(ds)))
            bad = [i for i in idx if not -len(ds) <= i < len(ds)]
            if bad:
                raise typer.BadParameter(f"indices {bad} out of range for {dcfg.data}/{split} of {len(ds)} samples",
                                         param_hint="--indices")
            for i in idx:
                x, y = ds[i]
                items.append((x, int(y), f"{dcfg.data}[{i}]"))

        # ---- partitions ----
        imgs, boxes, pdfs, titles = [], [], [], []
        with torch.no_grad():
            if checkpoint is not None:
                dart = model_is_dart(model)
                for x, y, name in items:
                    xb = prepare_images(x[None].to(dev), in_size)
                    logits = model(xb)
                    logits = logits[0] if isinstance(logits, (tuple, list)) else logits
                    pred = int(logits.argmax(1)[0])
                    if dart:
                        o = model.patch_embed(xb)
                        b, pdf = o.boxes[0].cpu(), o.pdf[0].float().cpu()
                    elif x.ndim == 4:
                        raise typer.BadParameter("clips can be drawn for DART video models only (a fixed-grid "
                                                 "model has no partition to show)", param_hint="--checkpoint")
                    else:  # fixed grid: draw the patch grid
                        gh, gw = getattr(model.patch_embed, "grid_size", (1, 1))
                        b, pdf = _grid_boxes(int(gh), int(gw)), None
                    pn = class_names[pred] if class_names and pred < len(class_names) else str(pred)
                    t = f"{name}\npred {pn}"
                    if y is not None:
                        yn = class_names[y] if class_names and y < len(class_names) else str(y)
                        t += f" | true {yn}"
                    imgs.append(x)
                    boxes.append(b)
                    pdfs.append(pdf)
                    titles.append(t)
            else:
                from .scorer import edge_pdf, uniform_pdf
                from .tokenizer import DART

                for x, y, name in items:
                    kw = {} if alpha is None else {"alpha": alpha}
                    tok = DART(num_tokens=num_tokens, patch_size=patch_size, in_chans=x.shape[0], embed_dim=8,
                               pos_grid=0, scorer=None, img_size=max(x.shape[-2:]), **kw).to(dev)
                    xb = x[None].to(dev)
                    if score_source == "uniform":
                        pdf = uniform_pdf(1, (pdf_size, pdf_size), device=dev)
                    else:
                        pdf = edge_pdf(xb, (pdf_size, pdf_size))
                    o = tok(xb, pdf=pdf)
                    imgs.append(x)
                    boxes.append(o.boxes[0].cpu())
                    pdfs.append(None if score_source == "uniform" else o.pdf[0].float().cpu())
                    t = f"{name}\n{score_source}, N={num_tokens}"
                    if y is not None and class_names:
                        t += f" | {class_names[y]}"
                    titles.append(t)
        if imgs and imgs[0].ndim == 4:  # clips C×T×H×W: one row of frames per clip
            from .viz import save_video_partition_figure

            path = save_video_partition_figure(output, torch.stack(imgs), torch.stack(boxes),
                                               torch.stack(pdfs), titles=titles)
        else:
            path = save_partition_figure(output, imgs, boxes, pdfs, titles=titles, ncols=ncols)
    except typer.BadParameter:
        raise
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e))
    typer.echo(f"wrote {path} ({len(imgs)} image{'s' if len(imgs) != 1 else ''})")


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------
# Defaults of the main job: small enough for 2 CPU cores in about 20 minutes, the
# same backbone, recipe, epochs and seed for both models; only the tokenizer differs.
DEMO_DEFAULTS = dict(num_tokens=36, canvas_size=128, epochs=8, train_samples=20000, test_samples=2000,
                     batch_size=64, lr=1e-3, seed=0)


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
    warmup_epochs: int = typer.Option(1, help="Linear warm-up epochs of both runs."),
    seed: int = typer.Option(DEMO_DEFAULTS["seed"], help="Seed of both runs."),
    dart_kwargs_json: Optional[str] = typer.Option(
        None, "--dart-kwargs", help="Extra kwargs for the DART model as JSON (scorer options, alpha, ...)."),
    parallel: bool = typer.Option(True, "--parallel/--sequential",
                                  help="Train both models at once, one CPU thread each (fastest on 2 cores)."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs in --output."),
) -> None:
    """The main job: DART vs the fixed grid at the same token count on Cluttered Fashion-MNIST.

    Trains ``dart_vit_micro_patch8`` (full canvas, N adaptive tokens) and
    ``vit_micro_patch8`` (canvas resized to sqrt(N)*8 px, N grid tokens) with the same
    backbone, recipe, epochs and seed; prints both test accuracies side by side and writes
    ``results.json``, ``results.md`` and ``partition.png`` into --output.
    """
    import shutil
    import time

    from .compare import RunSpec, collect, run_specs, write_tables

    t0 = time.perf_counter()
    dart_kwargs = _parse_json_dict(dart_kwargs_json, "--dart-kwargs")
    side = int(round(num_tokens ** 0.5))
    if side * side != num_tokens:
        raise typer.BadParameter(f"the fixed-grid baseline needs a square token count, got {num_tokens}",
                                 param_hint="--num-tokens")
    specs = [RunSpec("grid", "vit_micro_patch8", num_tokens), RunSpec("dart", "dart_vit_micro_patch8", num_tokens,
                                                                      dart_kwargs)]
    train_opts = dict(canvas_size=canvas_size, epochs=epochs, train_samples=train_samples,
                      test_samples=test_samples, batch_size=batch_size, lr=lr, warmup_epochs=warmup_epochs, seed=seed)
    typer.echo(f"training {specs[1].model} and {specs[0].model} at N={num_tokens} tokens on Cluttered "
               f"Fashion-MNIST ({canvas_size}px canvas, {train_samples} train / {test_samples} test, "
               f"{epochs} epochs, {'in parallel' if parallel else 'one after the other'})")
    codes = run_specs(specs, output, train_opts, jobs=2 if parallel else 1, snapshot_epochs=(epochs,),
                      resume=resume, echo=typer.echo)
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        raise _fail(f"training failed for {', '.join(failed)} (see the output above)", code=1)
    rows = collect(specs, output, count_macs=False)
    png = output / "partition.png"
    shutil.copyfile(output / "dart" / f"partition_epoch{epochs}.png", png)
    elapsed = time.perf_counter() - t0
    by_name = {r["name"]: r for r in rows}
    delta = by_name["dart"]["test_top1"] - by_name["grid"]["test_top1"]
    meta = {"elapsed_s": elapsed, "delta_top1": delta, "partition_png": str(png), "parallel": parallel,
            "train": train_opts}
    md = write_tables(rows, output / "results", meta)
    typer.echo("")
    typer.echo(md)
    typer.echo(f"DART - fixed grid: {delta:+.2f} points top-1 at {num_tokens} tokens | "
               f"wall time {elapsed / 60:.1f} min | partitions: {png}")


@app.command()
def compare(
    preset: str = typer.Option("cpu", help="cpu (grid N, DART N, grid 4N, DART 2N on the micro ViT), "
                                           "cpu-ablations, cpu-vim, cpu-video (Moving Fashion-MNIST), or "
                                           "full, full-vim, full-video (Ti sizes, for a GPU)."),
    output: Path = typer.Option(Path("runs/compare"), "--output", "-o", help="Folder of the runs."),
    name: Optional[str] = typer.Option(None, help="Result file stem (default: the preset)."),
    results_dir: Path = typer.Option(Path("benchmarks/results"), help="Where the tables and plot go."),
    jobs: int = typer.Option(2, help="Runs trained at once (one CPU thread each when > 1)."),
    epochs: Optional[int] = typer.Option(None, help="Override the preset's epochs."),
    train_samples: Optional[int] = typer.Option(None, help="Override the preset's training images."),
    data: Optional[str] = typer.Option(None, help="Dataset (the full preset needs an ImageFolder: --data '')."),
    data_root: Optional[str] = typer.Option(None, help="Dataset directory."),
    snapshot_epochs: str = typer.Option("", help="Draw DART partitions after these epochs, e.g. 1,3,12."),
    macs: bool = typer.Option(True, "--macs/--no-macs", help="Count GMACs with fvcore for the table and plot."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs."),
    dart_kwargs: str = typer.Option("", help="Extra model kwargs (JSON) for every DART run, e.g. "
                                              "'{\"alpha\": 0.2}'; a run's own kwargs win."),
) -> None:
    """Accuracy benchmark: train a set of tokenizers with one recipe, write tables and a plot."""
    from .compare import PRESETS, compare as run_compare

    if preset not in PRESETS:
        raise typer.BadParameter(f"choose from {sorted(PRESETS)}", param_hint="--preset")
    try:
        snaps = tuple(int(v) for v in snapshot_epochs.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated epochs, got {snapshot_epochs!r}",
                                 param_hint="--snapshot-epochs") from None
    try:
        extra = json.loads(dart_kwargs) if dart_kwargs.strip() else {}
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"not valid JSON ({e}): {dart_kwargs!r}", param_hint="--dart-kwargs") from None
    if not isinstance(extra, dict):
        raise typer.BadParameter(f"expected a JSON object, got {dart_kwargs!r}", param_hint="--dart-kwargs")
    overrides = {k: v for k, v in dict(epochs=epochs, train_samples=train_samples, data=data,
                                       data_root=data_root).items() if v is not None}
    try:
        result = run_compare(preset, output / preset, name or preset, train=overrides, jobs=jobs,
                             snapshot_epochs=snaps, resume=resume, count_macs=macs, echo=typer.echo,
                             dart_kwargs=extra)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise _fail(str(e), code=1)
    results_dir.mkdir(parents=True, exist_ok=True)
    import shutil

    stem = name or preset
    for suffix in (".json", ".md", ".png"):
        src = output / preset / f"{stem}{suffix}"
        if src.exists():
            tmp = results_dir / f".{stem}{suffix}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, results_dir / f"{stem}{suffix}")
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
                               "name\\[key=value;...] passes model kwargs, "
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

    if suite not in ("compute", "scaling", "macs"):
        raise typer.BadParameter(f"must be compute, scaling or macs, got {suite!r}", param_hint="SUITE")
    for value, option in ((batch_size, "--batch-size"), (repeats, "--repeats")):
        if value < 1:
            raise typer.BadParameter(f"must be >= 1, got {value}", param_hint=option)
    if warmup < 0:
        raise typer.BadParameter(f"must be >= 0, got {warmup}", param_hint="--warmup")
    _set_threads(threads)
    from . import bench as B

    names = [m.strip() for m in models.split(",") if m.strip()]
    try:
        for m in (names if suite != "scaling" else [model, baseline]):
            _check_model_name(B.parse_model_spec(m)[0])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--models") from None
    res_list = _parse_int_list(resolutions, "--resolutions")
    budget_list = _parse_int_list(budgets, "--budgets")
    kwargs = _parse_json_dict(model_kwargs_json, "--model-kwargs")

    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None
    try:
        import torch

        stem = name or f"{suite}_{torch.device(device).type}"
        if suite == "scaling":
            result = B.run_scaling(model=model, baseline=baseline, resolutions=res_list, budgets=budget_list,
                                   resolution_tokens=resolution_tokens, budget_input=budget_input,
                                   device=device, batch_size=batch_size,
                                   warmup=warmup, repeats=repeats, amp=amp, compile_model=compile_model,
                                   log=typer.echo, command=command)
        else:
            macs_only = suite == "macs"
            result = B.run_compute(models=names, device=device, batch_size=batch_size, warmup=warmup,
                                   repeats=repeats, amp=amp, compile_model=compile_model,
                                   breakdown=breakdown and not macs_only, num_tokens=num_tokens,
                                   model_kwargs=kwargs, log=typer.echo, command=command, timing=not macs_only)
    except _USER_ERRORS as e:
        raise _fail(_user_error_message(e)) from None
    result["notes"] = list(result.get("notes", [])) + list(notes or [])
    md = B.render_markdown(result)
    json_path, md_path = B.write_results(result, output_dir, stem, md)
    typer.echo("")
    typer.echo(md)
    typer.echo(f"written: {json_path} and {md_path}")


def main() -> None:  # pragma: no cover - console entry convenience
    """Run the CLI (same as the ``dartok`` console script)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
