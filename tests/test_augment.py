"""Augmentation flags (issue 12 §1): each reaches timm's transform / Mixup / loss / sampler, round-trips
through the checkpoint and --resume, bad values are one Error line, the full presets are DeiT's recipe."""
from __future__ import annotations

import dataclasses

import dartok  # noqa: F401  (before timm: torchvision shim)
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dartok.cli import app
from dartok.data.registry import dataset_info
from dartok.data.transforms import pil_transform
from dartok.engine import TrainConfig, read_metrics, train
from dartok.train.augment import build_mixup, check_augment, transform_kwargs

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny ImageFolder: 2 classes x 6 train / 2 test RGB images of 40x48 px."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def folder_cfg(root, out, **kw) -> TrainConfig:
    base = dict(data="", data_root=str(root), model="vit_micro_patch8", num_tokens=4, model_kwargs={"depth": 1},
                epochs=2, warmup_epochs=0, batch_size=4, progress=False, output=str(out))
    return TrainConfig(**{**base, **kw})


def steps(transform) -> dict:
    """Flattened Compose: type name -> the step."""
    out = {}

    def walk(t):
        for u in getattr(t, "transforms", None) or [t]:
            if u is t:
                out[type(t).__name__] = t
            else:
                walk(u)

    walk(transform)
    return out


@pytest.fixture(scope="module")
def micro():
    from dartok.models import create_model

    return create_model("vit_micro_patch8", num_tokens=4, depth=1, in_chans=3)


# ------------------------------------------------------------------ each flag reaches timm's objects


def test_no_flags_keep_timms_imagenet_default(micro):
    cfg = TrainConfig()
    assert transform_kwargs(cfg, True) == {} and transform_kwargs(cfg, False) == {}
    s = steps(pil_transform(micro, True, 3, **transform_kwargs(cfg, True))[0])
    rrc = s["RandomResizedCropAndInterpolation"]
    assert rrc.scale == (0.08, 1.0) and rrc.ratio == pytest.approx((3 / 4, 4 / 3))
    assert s["RandomHorizontalFlip"].p == 0.5 and "ColorJitter" in s
    assert "RandomVerticalFlip" not in s and "RandAugment" not in s and "RandomErasing" not in s


def test_transform_flags_reach_create_transform(micro):
    cfg = TrainConfig(scale=[0.5, 1.0], ratio=(0.9, 1.1), hflip=0.25, vflip=0.5, aa="rand-m9-mstd0.5-inc1",
                      reprob=0.3, train_interpolation="bilinear", crop_pct=0.5)
    assert cfg.scale == (0.5, 1.0)  # a JSON list and a tuple are the same option
    s = steps(pil_transform(micro, True, 3, **transform_kwargs(cfg, True))[0])
    rrc = s["RandomResizedCropAndInterpolation"]
    assert rrc.scale == (0.5, 1.0) and rrc.ratio == (0.9, 1.1) and rrc.interpolation.value == "bilinear"
    assert s["RandomHorizontalFlip"].p == 0.25 and s["RandomVerticalFlip"].p == 0.5
    ra = s["RandAugment"]
    assert ra.num_layers == 2 and ra.ops[0].magnitude == 9 and ra.ops[0].magnitude_std == 0.5
    assert "ColorJitter" not in s  # timm turns colour jitter off under RandAugment
    assert s["RandomErasing"].probability == 0.3 and s["RandomErasing"].mode == "pixel"
    # crop_pct is the evaluation crop: 16 px input, crop 0.5 -> resize to 32, centre crop 16
    ev = steps(pil_transform(micro, False, 3, **transform_kwargs(cfg, False))[0])
    assert ev["Resize"].size == 32 and ev["CenterCrop"].size == (16, 16)
    cj = steps(pil_transform(micro, True, 3, **transform_kwargs(TrainConfig(color_jitter=0.2), True))[0])
    assert cj["ColorJitter"].brightness == (0.8, 1.2)


def test_mixup_gives_soft_targets_and_the_loss_takes_them():
    from timm.loss import SoftTargetCrossEntropy

    from dartok.train.task import Classification

    cfg = TrainConfig(mixup=0.8, cutmix=1.0, mixup_prob=0.5, label_smoothing=0.2)
    task = Classification.from_config(cfg)
    assert isinstance(task.criterion, SoftTargetCrossEntropy)
    assert isinstance(Classification.from_config(TrainConfig()).criterion, torch.nn.CrossEntropyLoss)
    mix = build_mixup(cfg, num_classes=5)
    assert (mix.mixup_alpha, mix.cutmix_alpha, mix.mix_prob, mix.label_smoothing, mix.num_classes) == (
        0.8, 1.0, 0.5, 0.2, 5)
    assert build_mixup(TrainConfig(), 5) is None
    np.random.seed(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 4, 4).contiguous()
    mix = build_mixup(TrainConfig(mixup=0.8), num_classes=5)  # mixup only, every batch
    xm, y = mix(x.clone(), torch.tensor([0, 1, 2, 3]))
    assert y.shape == (4, 5) and y.dtype == torch.float32
    torch.testing.assert_close(y.sum(1), torch.ones(4))
    assert (y > 0).sum(1).min() >= 2  # each target mixes two classes (and smoothing)
    assert not torch.equal(xm, x)  # the images are mixed with their mirror in the batch
    loss = task.loss(torch.randn(4, 5), y)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_train_one_epoch_feeds_mixed_images_and_soft_targets_to_the_loss():
    from dartok.train.loop import train_one_epoch

    seen = []

    def loss_fn(logits, targets):
        seen.append(targets)
        return torch.nn.functional.cross_entropy(logits, targets)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    data = [(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0]))] * 2
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats, step = train_one_epoch(model, data, opt, None, loss_fn, torch.device("cpu"), epoch=0, global_step=0,
                                  input_size=(1, 4, 4), progress=False,
                                  mixup_fn=build_mixup(TrainConfig(mixup=1.0), 3))
    assert step == 2 and all(t.shape == (4, 3) and t.is_floating_point() for t in seen)
    assert stats["n"] == 8 and stats["data_time_s"] >= 0 and stats["compute_time_s"] > 0


def test_drop_path_reaches_the_model(folder, tmp_path):
    out = train(folder_cfg(folder, tmp_path / "dp", epochs=1, drop_path=0.2, model_kwargs={"depth": 2}))
    rates = [b.drop_path1.drop_prob for b in out["model"].blocks if hasattr(b.drop_path1, "drop_prob")]
    assert rates and max(rates) == pytest.approx(0.2)


def _loaders(cfg, n=24):
    from dartok.train.run import _build_loaders, _Data
    from dartok.train.task import Classification

    ds = torch.utils.data.TensorDataset(torch.arange(n), torch.zeros(n, dtype=torch.long))
    data = _Data(ds, ds, dataset_info("cluttered_fmnist"), Classification(), 2, 1)
    return _build_loaders(cfg, data, torch.device("cpu"))


def _order(loaders, epoch):
    loaders.set_epoch(epoch)
    return [i for x, _ in loaders.train for i in x.tolist()]


def test_repeated_aug_uses_timms_sampler_seeded_by_run_and_epoch():
    from timm.data.distributed_sampler import RepeatAugSampler

    ld = _loaders(TrainConfig(repeated_aug=True, batch_size=6, seed=1))
    assert isinstance(ld.sampler, RepeatAugSampler) and ld.sampler.num_repeats == 3
    order = _order(ld, 0)
    assert len(order) == 24 and len(ld.train) == len(ld.batch_plan) == 4 and ld.batch_plan[0] == (6, 1.0)
    assert all(order[i] == order[i + 1] == order[i + 2] for i in range(0, 24, 3))  # 3 copies, side by side
    assert order == _order(ld, 0) and order != _order(ld, 1)  # a function of the epoch ...
    assert order != _order(_loaders(TrainConfig(repeated_aug=True, batch_size=6, seed=2)), 0)  # ... and the seed
    plain = _loaders(TrainConfig(batch_size=6))
    assert not isinstance(plain.sampler, RepeatAugSampler) and sorted(_order(plain, 0)) == list(range(24))


def test_repeated_aug_over_two_processes_spreads_each_global_batch(monkeypatch):
    """Rank r of K takes every K-th index (timm's sampler): the union over ranks of step i's batches is the
    1-process step-i batch, and the 3 copies of an image are spread over the processes, as in DeiT."""
    from dartok.train import run
    from dartok.train.distributed import DistInfo

    cfg = TrainConfig(repeated_aug=True, batch_size=6, seed=1)
    one = _order(_loaders(cfg), 0)
    ranks = []
    for r in (0, 1):
        monkeypatch.setattr(run, "dist_info", lambda r=r: DistInfo(rank=r, world_size=2))
        ld = _loaders(cfg)
        ld.set_epoch(0)
        ranks.append([x.tolist() for x, _ in ld.train])
        assert ld.batch_plan == [(3, 1.0)] * 4
    for i, (a, b) in enumerate(zip(*ranks)):
        assert sorted(a + b) == sorted(one[6 * i:6 * i + 6])


def test_mixup_drops_the_last_partial_batch_and_loader_options():
    assert len(_loaders(TrainConfig(batch_size=16), n=24).train) == 2  # < 2 batches: the partial one is kept
    ld = _loaders(TrainConfig(batch_size=16, mixup=0.5), n=24)
    assert len(ld.train) == 1 and ld.batch_plan == [(16, 1.0)]
    with pytest.raises(ValueError, match="no full batch of 32"):
        _loaders(TrainConfig(batch_size=32, mixup=0.5), n=24)
    with pytest.raises(ValueError, match="RepeatAugSampler"):
        _loaders(TrainConfig(batch_size=32, repeated_aug=True), n=24)
    ld = _loaders(TrainConfig(pin_mem=True, num_workers=1, persistent_workers=True, batch_size=6))
    assert ld.train.pin_memory and ld.train.persistent_workers and ld.test.persistent_workers
    assert not _loaders(TrainConfig()).train.pin_memory  # default: pinned on CUDA only


def test_persistent_workers_keep_the_order_a_function_of_seed_and_epoch():
    cfg = TrainConfig(num_workers=1, persistent_workers=True, batch_size=6, seed=3)
    straight = _loaders(cfg)
    _order(straight, 0)
    resumed = _loaders(cfg)  # a resumed run starts its workers at epoch 1
    assert _order(straight, 1) == _order(resumed, 1)


# ------------------------------------------------------------------ a run: checkpoint, resume, metrics


def test_flags_round_trip_through_checkpoint_and_exact_resume(folder, tmp_path):
    from safetensors.torch import load_file

    from dartok.checkpoint import load_config
    from dartok.engine import ResumeConflictError

    flags = dict(scale=(0.5, 1.0), aa="rand-m5-mstd0.5", reprob=0.25, mixup=0.8, cutmix=1.0, repeated_aug=True,
                 drop_path=0.1, hflip=0.3)
    train(folder_cfg(folder, tmp_path / "straight", **flags))
    train(folder_cfg(folder, tmp_path / "split", stop_after=1, **flags))
    saved = load_config(tmp_path / "split" / "checkpoint")
    assert {k: saved["train"][k] for k in flags} == {**flags, "scale": [0.5, 1.0]}
    assert "RandAugment(n=2, 15 ops, m=5" in saved["data"]["train_transform"]
    assert "scale=(0.5, 1.0)" in saved["data"]["train_transform"]
    with pytest.raises(ResumeConflictError, match="mixup: checkpoint 0.8 vs requested 0.0"):
        train(output=str(tmp_path / "split"), resume=True, mixup=0.0, progress=False)
    summary = train(output=str(tmp_path / "split"), resume=True, progress=False)  # the flags come from the run
    assert summary["epoch"] == 2
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # augmentation and mixup draws continue exactly
    rows = read_metrics(tmp_path / "straight")
    assert all(r["data_time_s"] >= 0 and r["compute_time_s"] > 0 for r in rows)
    assert rows[0]["data_time_s"] + rows[0]["compute_time_s"] <= rows[0]["epoch_time_s"] + 1e-6


def test_resume_is_exact_with_worker_processes_drawing_the_augmentation(folder, tmp_path):
    from safetensors.torch import load_file

    flags = dict(aa="rand-m9-mstd0.5-inc1", reprob=0.5, num_workers=1)
    train(folder_cfg(folder, tmp_path / "straight", **flags))
    train(folder_cfg(folder, tmp_path / "split", stop_after=1, **flags))
    train(output=str(tmp_path / "split"), resume=True, progress=False)
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mixup_trains_a_dart_model_on_the_canvas_data(tmp_path):
    """Mixing applies to the tensor datasets too: the scorer sees the mixed canvas, its CAM head takes soft targets."""
    cfg = TrainConfig(model="dart_vit_micro_patch8", num_tokens=9, canvas_size=32, train_samples=16, test_samples=8,
                      data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2}, batch_size=8, epochs=1,
                      warmup_epochs=0, model_kwargs={"scorer_input_size": 32, "depth": 1}, mixup=0.5, cutmix=1.0,
                      progress=False, output=str(tmp_path / "dart"))
    out = train(cfg)
    assert out["epoch"] == 1 and np.isfinite(out["metrics"]["train_loss"])


def test_throughput_line_names_the_bottleneck():
    from dartok.train.run import throughput_line

    assert "loader-bound" in throughput_line(3.0, 7.0, 0) and "--num-workers" in throughput_line(3.0, 7.0, 0)
    assert "model-bound" in throughput_line(0.5, 9.5, 4)


# ------------------------------------------------------------------ errors: one line, exit 2


def assert_clean_error(res, *fragments):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.output.count("Error:") == 1
    for f in fragments:
        assert f in " ".join(res.output.split()), res.output


@pytest.mark.parametrize("args, fragments", [
    (["--reprob", "1.5"], ["reprob must be a probability in [0, 1]", "1.5"]),
    (["--aa", "foo"], ["aa 'foo' is not a policy timm knows", "rand-m9-mstd0.5-inc1"]),
    (["--scale", "0.9", "0.5"], ["scale must be two numbers", "(0.9, 0.5)"]),
    (["--train-interpolation", "cubic"], ["train_interpolation must be one of", "bicubic"]),
    (["--mixup-prob", "2"], ["mixup_prob must be a probability"]),
    (["--mixup-prob", "0.5"], ["mixup_prob 0.5 has no effect without mixup or cutmix"]),
    (["--drop-path", "1"], ["drop_path must be in [0, 1)"]),
    (["--persistent-workers"], ["needs num_workers > 0"]),
    (["--aa", "rand-m9-mstd0.5-inc1"], ["--aa: per-image transforms apply to PIL-image datasets", "cluttered_fmnist",
                                        "--mixup"]),
    (["--scale", "1", "1", "--hflip", "0"], ["--scale, --hflip: per-image transforms"]),
    (["--mixup", "0.8", "--batch-size", "7"], ["need an even batch", "got 7"]),
    (["--mixup", "0.8", "--model-kwargs", '{"score_source": "oracle"}'], ["oracle"]),
    (["--cutmix", "1", "--data", "moving_fmnist"], ["--cutmix cuts boxes", "--mixup alone"]),
    (["--drop-path", "0.1", "--model-kwargs", '{"drop_path_rate": 0.2}'], ["set the same thing"]),
])
def test_bad_augmentation_options_are_one_error_line(tmp_path, args, fragments):
    res = runner.invoke(app, ["train", "--no-progress", "-o", str(tmp_path / "x"), *args])
    assert_clean_error(res, *fragments)
    assert not (tmp_path / "x").exists()  # refused before anything is built or written


def test_mixup_batch_must_be_even_per_process():
    cfg = TrainConfig(mixup=0.8, batch_size=6)
    check_augment(cfg, dataset_info("cluttered_fmnist"), world_size=1)
    with pytest.raises(ValueError, match=r"per process \(6 / 2\).*got 3"):
        check_augment(cfg, dataset_info("cluttered_fmnist"), world_size=2)
    check_augment(dataclasses.replace(cfg, aa="v0", scale=(1, 1)), dataset_info("folder"), world_size=1)


def test_cli_flags_and_smoothing_alias_reach_the_config(folder, tmp_path):
    from dartok.checkpoint import load_config

    res = runner.invoke(app, ["train", "--data", "", "--data-root", str(folder), "--model", "vit_micro_patch8",
                              "--num-tokens", "4", "--model-kwargs", '{"depth": 1}', "--epochs", "1",
                              "--warmup-epochs", "0", "--batch-size", "4", "--no-progress", "-o", str(tmp_path / "c"),
                              "--scale", "1", "1", "--ratio", "1", "1", "--vflip", "0.5", "--color-jitter", "0.1",
                              "--smoothing", "0.2", "--cutmix", "1", "--mixup-prob", "0.5", "--repeated-aug",
                              "--crop-pct", "0.9", "--train-interpolation", "bicubic", "--no-pin-mem"])
    assert res.exit_code == 0, res.output
    assert "throughput: data wait" in res.output and "RepeatAugSampler" in res.output
    t = load_config(tmp_path / "c" / "checkpoint")["train"]
    assert (t["scale"], t["ratio"], t["vflip"], t["color_jitter"], t["label_smoothing"], t["cutmix"], t["mixup_prob"],
            t["repeated_aug"], t["crop_pct"], t["train_interpolation"], t["pin_mem"]) == (
        [1.0, 1.0], [1.0, 1.0], 0.5, 0.1, 0.2, 1.0, 0.5, True, 0.9, "bicubic", False)
    res = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "c" / "checkpoint"), "--no-progress"])
    assert res.exit_code == 0 and "(n=4)" in res.output, res.output


# ------------------------------------------------------------------ the full presets are the published recipes


def test_full_preset_is_deits_published_recipe(tmp_path):
    from dartok.tools import compare as cmp

    deit = {"epochs": 300, "batch_size": 1024, "lr": 5e-4 * 1024 / 512, "weight_decay": 0.05, "warmup_epochs": 5,
            "warmup_lr": 1e-6, "min_lr": 1e-5, "label_smoothing": 0.1, "drop_path": 0.1,
            "aa": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "mixup": 0.8, "cutmix": 1.0, "mixup_prob": 1.0,
            "repeated_aug": True, "train_interpolation": "bicubic", "color_jitter": 0.4, "crop_pct": 0.875,
            "model_ema": True, "model_ema_decay": 0.99996}
    train_opts = cmp.PRESETS["full"]["train"]
    assert {k: train_opts[k] for k in deit} == deit and cmp.deit_lr(512) == 5e-4
    small = cmp.PRESETS["full-small-objects"]["train"]
    assert {k for k in small if small[k] != train_opts.get(k)} == {"scale", "cutmix", "reprob"}
    assert small["scale"] == (1.0, 1.0) and small["cutmix"] == small["reprob"] == 0.0
    vim = cmp.PRESETS["full-vim"]["train"]
    assert (vim["weight_decay"], vim["drop_path"], vim["amp"], vim["aa"], vim["mixup"]) == (0.1, 0.0, False,
                                                                                           deit["aa"], 0.8)
    for name in ("full", "full-small-objects", "full-vim"):
        for spec in cmp.PRESETS[name]["specs"]:
            cfg = cmp.train_config(spec, cmp.PRESETS[name]["train"], tmp_path / spec.name)
            check_augment(cfg, dataset_info(""), world_size=8)  # 8 GPUs x 128, an ImageFolder


def test_a_preset_whose_flags_the_data_refuses_fails_before_training(tmp_path):
    from dartok.tools import compare as cmp

    with pytest.raises(ValueError, match="per-image transforms apply to PIL-image datasets"):
        cmp.compare("full", tmp_path, "t", train={"data": "cluttered_fmnist"}, count_macs=False)
    assert not any(tmp_path.iterdir())
