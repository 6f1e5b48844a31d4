"""Engine + checkpoint tests: metrics, exact resume, atomic saves, checkpoint validation."""
from __future__ import annotations

import json
import math
import os

import dartok  # noqa: F401  (before timm: torchvision shim)
import pytest
import torch
from torch import nn

from dartok import checkpoint as ckpt
from dartok.engine import (
    ResumeConflictError,
    TrainConfig,
    build_optimization,
    build_loader,
    epoch_seed,
    evaluate,
    get_rng_state,
    model_input_size,
    prepare_images,
    read_metrics,
    set_rng_state,
    train,
)



def tiny_cfg(tmp_path, name="run", **kw) -> TrainConfig:
    """A run that takes well under a second per epoch on one CPU core."""
    base = dict(
        model="dart_vit_micro_patch8",
        num_tokens=9,
        canvas_size=32,
        data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2},
        model_kwargs={"scorer_input_size": 32, "depth": 2, "drop_rate": 0.1, "drop_path_rate": 0.1},
        train_samples=32,
        test_samples=16,
        epochs=2,
        warmup_epochs=1,
        batch_size=8,
        progress=False,
        output=str(tmp_path / name),
    )
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------------------
# evaluate / prepare_images
# --------------------------------------------------------------------------------------
class TableModel(nn.Module):
    """Returns a fixed logits row per sample; the sample's id is pixel [0, 0, 0]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def test_evaluate_top1_top5_loss_by_hand():
    # 7 classes, 4 samples
    table = torch.tensor([
        [9, 8, 7, 6, 5, 4, 3],   # label 0: top-1 hit
        [9, 8, 7, 6, 5, 4, 3],   # label 3: rank 4 -> top-5 hit only
        [9, 8, 7, 6, 5, 4, 3],   # label 6: rank 7 -> miss
        [0, 0, 0, 0, 0, 0, 1],   # label 6: top-1 hit
    ], dtype=torch.float32)
    labels = torch.tensor([0, 3, 6, 6])
    images = torch.zeros(4, 1, 2, 2)
    images[:, 0, 0, 0] = torch.arange(4).float()
    loader = [(images[:3], labels[:3]), (images[3:], labels[3:])]  # uneven batches
    res = evaluate(TableModel(table), loader, "cpu", input_size=None)
    assert res["n"] == 4
    assert res["top1"] == pytest.approx(50.0)
    assert res["top5"] == pytest.approx(75.0)
    expected = nn.functional.cross_entropy(table, labels).item()
    assert res["loss"] == pytest.approx(expected, rel=1e-6)


def test_evaluate_fewer_than_5_classes_and_restores_train_mode():
    table = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    m = TableModel(table).train()
    images = torch.zeros(2, 1, 1, 1)
    images[1, 0, 0, 0] = 1
    res = evaluate(m, [(images, torch.tensor([0, 2]))], "cpu", input_size=None)
    assert res["top1"] == 50.0 and res["top5"] == 100.0  # top-5 over 3 classes = all
    assert m.training


def test_evaluate_empty_loader():
    res = evaluate(TableModel(torch.zeros(1, 3)), [], "cpu", input_size=None)
    assert res["n"] == 0 and math.isnan(res["top1"])


def test_prepare_images_channels_and_resize():
    x = torch.rand(2, 1, 64, 64)
    y = prepare_images(x, (3, 32, 32))
    assert y.shape == (2, 3, 32, 32)
    assert torch.allclose(y[:, 0], y[:, 2])
    z = prepare_images(torch.rand(2, 3, 16, 16), (1, 16, 16))
    assert z.shape == (2, 1, 16, 16)
    same = torch.rand(2, 1, 8, 8)
    assert torch.equal(prepare_images(same, (1, 8, 8)), same)
    with pytest.raises(ValueError, match="B×C×H×W"):
        prepare_images(torch.rand(1, 8, 8), (1, 8, 8))


def test_model_input_sizes():
    from dartok.models import create_model

    vit = create_model("vit_micro_patch8", num_tokens=16, num_classes=10, in_chans=1)
    assert model_input_size(vit) == (1, 32, 32)  # sqrt(16) * 8
    dart = create_model("dart_vit_micro_patch8", num_tokens=9, img_size=40, in_chans=3, scorer_input_size=32)
    assert model_input_size(dart) == (3, 40, 40)


def test_data_order_is_function_of_seed_and_epoch():
    ds = torch.utils.data.TensorDataset(torch.arange(20))
    def order(seed, epoch):
        g = torch.Generator()
        loader = build_loader(ds, 5, shuffle=True, generator=g)
        g.manual_seed(epoch_seed(seed, epoch))
        return torch.cat([b[0] for b in loader]).tolist()
    torch.manual_seed(123)
    a = order(0, 3)
    torch.manual_seed(999)  # global RNG does not matter
    assert order(0, 3) == a
    assert order(0, 4) != a
    assert order(1, 3) != a
    assert epoch_seed(0, 0) != epoch_seed(0, 0, stream=1)


def test_rng_state_roundtrip_through_weights_only(tmp_path):
    torch.manual_seed(5)
    import random

    import numpy as np

    state = get_rng_state()
    ref = (torch.rand(3), np.random.rand(2), random.random())
    torch.save(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    torch.rand(10), np.random.rand(5), random.random()
    set_rng_state(loaded)
    again = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(ref[0], again[0]) and np.array_equal(ref[1], again[1]) and ref[2] == again[2]


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------
class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.out = nn.Linear(4, 5, bias=False)
        self.out.weight = self.emb.weight  # shared tensor
        self.norm = nn.LayerNorm(4)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_roundtrip_with_shared_tensors(tmp_path):
    m = Tied()
    cfg = {"model": "tied", "model_kwargs": {"num_classes": 5}, "epoch": 3, "metrics": {"test_top1": 1.5}}
    state = {"epoch": 3, "global_step": 12, "opt": {"lr": torch.tensor(0.5)}, "rng": get_rng_state()}
    path = ckpt.save_checkpoint(tmp_path / "ck", m, cfg, state)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "train_state.pt"]
    m2 = Tied()
    config, st = ckpt.load_checkpoint(path, m2, load_state=True)
    assert _same_weights(m, m2)
    assert m2.out.weight is m2.emb.weight
    assert config["epoch"] == 3 and config["metrics"]["test_top1"] == 1.5 and config["format_version"] == 1
    assert st["global_step"] == 12 and torch.equal(st["opt"]["lr"], torch.tensor(0.5))
    # no temp / backup directories left behind
    assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_failed_save_keeps_old_checkpoint(tmp_path, monkeypatch):
    m = Tied()
    path = ckpt.save_checkpoint(tmp_path / "ck", m, {"model": "tied", "epoch": 1}, {"epoch": 1})
    m_new = Tied()

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", boom)  # fails after the weights and config are written
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, m_new, {"model": "tied", "epoch": 2}, {"epoch": 2})
    monkeypatch.undo()
    m3 = Tied()
    config, st = ckpt.load_checkpoint(path, m3, load_state=True)
    assert config["epoch"] == 1 and st["epoch"] == 1
    assert _same_weights(m, m3)
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # temp dir cleaned up


def test_failed_swap_keeps_old_checkpoint(tmp_path, monkeypatch):
    m = Tied()
    path = ckpt.save_checkpoint(tmp_path / "ck", m, {"model": "tied", "epoch": 1})
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((str(src), str(dst)))
        if len(calls) == 2:  # old -> backup succeeded; tmp -> target fails
            raise OSError("rename failed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="rename failed"):
        ckpt.save_checkpoint(path, Tied(), {"model": "tied", "epoch": 2})
    monkeypatch.undo()
    m2 = Tied()
    config, _ = ckpt.load_checkpoint(path, m2)
    assert config["epoch"] == 1 and _same_weights(m, m2)


def test_crash_between_renames_recovers_backup(tmp_path):
    m = Tied()
    path = ckpt.save_checkpoint(tmp_path / "ck", m, {"model": "tied", "epoch": 1})
    os.replace(path, tmp_path / "ck.old")  # state after a hard crash mid-swap
    m2 = Tied()
    config, _ = ckpt.load_checkpoint(path, m2)
    assert config["epoch"] == 1 and _same_weights(m, m2)
    assert ckpt.checkpoint_exists(path)
    ckpt.save_checkpoint(path, m, {"model": "tied", "epoch": 2})
    assert ckpt.load_config(path)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_checkpoint_errors(tmp_path):
    m = Tied()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope", m)
    path = ckpt.save_checkpoint(tmp_path / "ck", m, {"model": "tied"})
    # no training state saved
    with pytest.raises(FileNotFoundError, match="train_state.pt"):
        ckpt.load_checkpoint(path, m, load_state=True)
    # shape mismatch
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(6, 4)
            self.out = nn.Linear(4, 6, bias=False)
            self.norm = nn.LayerNorm(4)
            self.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"model.safetensors.*emb.weight: checkpoint \(5, 4\) vs model \(6, 4\)"):
        ckpt.load_weights(Other(), path)
    with pytest.raises(ValueError, match="missing keys extra.bias, extra.weight"):
        ckpt.load_weights(Other(), path)
    # corrupt weights
    (path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="model.safetensors.*corrupt"):
        ckpt.load_checkpoint(path, m)
    # missing weights
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ckpt.load_checkpoint(path, m)
    # bad JSON
    path2 = ckpt.save_checkpoint(tmp_path / "ck2", m, {"model": "tied"}, {"epoch": 1})
    (path2 / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json.*not valid JSON"):
        ckpt.load_config(path2)
    (path2 / "config.json").write_text(json.dumps({"no_model": 1}))
    with pytest.raises(ValueError, match="no 'model'"):
        ckpt.load_config(path2)
    (path2 / "config.json").write_text(json.dumps({"model": "tied"}))
    (path2 / "train_state.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="train_state.pt.*corrupt"):
        ckpt.load_train_state(path2)
    # a file instead of a directory
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        ckpt.load_config(tmp_path / "afile")


# --------------------------------------------------------------------------------------
# training runs
# --------------------------------------------------------------------------------------
REQUIRED_METRICS = {"epoch", "train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "lr",
                    "images_per_s", "epoch_time_s", "data_time_s", "compute_time_s"}


def test_train_writes_metrics_and_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, model="vit_micro_patch8", num_tokens=4, model_kwargs={"depth": 1},
                   data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2}, label_smoothing=0.0, clip_grad=1.0)
    out = train(cfg)
    rows = read_metrics(cfg.output)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert REQUIRED_METRICS <= set(r)
        assert all(math.isfinite(r[k]) for k in REQUIRED_METRICS)
        assert 0 <= r["test_top1"] <= r["test_top5"] <= 100
    assert rows[-1]["lr"] == pytest.approx(cfg.min_lr)  # cosine reached its floor
    # plain ViT sees the 32 canvas downsampled to sqrt(4)*8 = 16
    config = ckpt.load_config(out["checkpoint"])
    assert config["input_size"] == [1, 16, 16] and config["epoch"] == 2 and not config["is_dart"]
    assert config["model_kwargs"]["num_tokens"] == 4
    model, _ = ckpt.model_from_checkpoint(out["checkpoint"])
    assert _same_weights(model, out["model"])
    # the reloaded model evaluates like the trained one
    from dartok.engine import build_dataset

    ds = build_dataset(cfg, "test", num_samples=cfg.test_samples)
    res = evaluate(model, build_loader(ds, 16, shuffle=False), "cpu")
    assert res["top1"] == pytest.approx(out["test"]["top1"]) and res["loss"] == pytest.approx(out["test"]["loss"])


def test_resume_is_bit_identical(tmp_path):
    train(tiny_cfg(tmp_path, "a"))
    first = train(tiny_cfg(tmp_path, "b", stop_after=1))
    assert first["epoch"] == 1 and len(read_metrics(tmp_path / "b")) == 1
    resumed = train(tiny_cfg(tmp_path, "b", resume=True))
    assert resumed["epoch"] == 2
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "a" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed weights differ from the straight run"
    ma, mb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    for key in ("train_loss", "train_acc", "test_loss", "test_top1", "lr", "global_step"):
        assert [r[key] for r in ma] == [r[key] for r in mb]
    sa = ckpt.load_train_state(tmp_path / "a" / "checkpoint")
    sb = ckpt.load_train_state(tmp_path / "b" / "checkpoint")
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    # a finished run resumed again trains nothing and keeps its metrics
    again = train(tiny_cfg(tmp_path, "b", resume=True))
    assert again["epoch"] == 2 and len(read_metrics(tmp_path / "b")) == 2


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_cfg(tmp_path, "x", resume=True))
    train(tiny_cfg(tmp_path, "r", epochs=2, stop_after=1, model_kwargs={"scorer_input_size": 32, "depth": 1}))
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        train(tiny_cfg(tmp_path, "r", model_kwargs={"scorer_input_size": 32, "depth": 1}))
    with pytest.raises(ResumeConflictError, match="holds model 'dart_vit_micro_patch8', requested 'vit_micro_patch8'"):
        train(tiny_cfg(tmp_path, "r", resume=True, model="vit_micro_patch8", num_tokens=4))
    with pytest.raises(ResumeConflictError, match="lr: checkpoint 0.001 vs requested 0.5"):
        train(tiny_cfg(tmp_path, "r", resume=True, lr=0.5, model_kwargs={"scorer_input_size": 32, "depth": 1}))
    with pytest.raises(ResumeConflictError, match="model_kwargs"):
        train(tiny_cfg(tmp_path, "r", resume=True))


def test_config_validation():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0).validate()
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=2).validate()
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), "unknown_key": 1})
    assert cfg == TrainConfig()


# --------------------------------------------------------------------------------------
# EMA of the weights (--model-ema)
# --------------------------------------------------------------------------------------
def test_model_ema_roundtrip_and_exact_resume(tmp_path):
    from safetensors.torch import load_file

    kw = dict(model="vit_micro_patch8", num_tokens=4, model_kwargs={"depth": 1}, model_ema=True,
              model_ema_decay=0.9, lr=3e-3)
    straight = train(tiny_cfg(tmp_path, "a", **kw))
    assert straight["test_ema"]["n"] == 16 and straight["best_top1_ema"] is not None
    rows = read_metrics(tmp_path / "a")
    assert all({"test_loss_ema", "test_top1_ema", "test_top5_ema"} <= set(r) for r in rows)
    ck = tmp_path / "a" / "checkpoint"
    assert ckpt.has_ema_weights(ck) and ckpt.load_config(ck)["has_ema"]
    raw, ema = load_file(str(ck / "model.safetensors")), load_file(str(ck / "model_ema.safetensors"))
    assert raw.keys() == ema.keys()
    assert not all(torch.equal(raw[k], ema[k]) for k in raw)  # the EMA lags behind the weights
    # round trip: the EMA model rebuilt from the checkpoint is the trained EMA
    m_ema, _ = ckpt.model_from_checkpoint(ck, ema=True)
    assert _same_weights(m_ema, straight["model_ema"])
    m_raw, _ = ckpt.model_from_checkpoint(ck)
    assert _same_weights(m_raw, straight["model"])
    # resume restores the EMA: 1 epoch + resume == 2 epochs, bit for bit
    train(tiny_cfg(tmp_path, "b", stop_after=1, **kw))
    train(tiny_cfg(tmp_path, "b", resume=True, **kw))
    for name in ("model.safetensors", "model_ema.safetensors"):
        wa = load_file(str(tmp_path / "a" / "checkpoint" / name))
        wb = load_file(str(tmp_path / "b" / "checkpoint" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert [r["test_top1_ema"] for r in read_metrics(tmp_path / "b")] == [r["test_top1_ema"] for r in rows]
    # EMA on / off cannot change on resume; a run without EMA has no EMA weights
    with pytest.raises(ResumeConflictError, match="model_ema"):
        train(tiny_cfg(tmp_path, "b", resume=True, **{**kw, "model_ema": False}))
    plain = train(tiny_cfg(tmp_path, "c", model="vit_micro_patch8", num_tokens=4, model_kwargs={"depth": 1},
                           epochs=2, stop_after=1))
    assert "test_ema" not in plain and not ckpt.has_ema_weights(plain["checkpoint"])
    with pytest.raises(FileNotFoundError, match="without --model-ema"):
        ckpt.model_from_checkpoint(plain["checkpoint"], ema=True)


def test_checkpoint_unwraps_ddp_like_wrappers(tmp_path):
    from timm.utils import ModelEmaV3

    m = Tied()
    wrapped = nn.DataParallel(m)  # same unwrapping path as DistributedDataParallel
    path = ckpt.save_checkpoint(tmp_path / "ck", wrapped, {"model": "tied"}, ema_model=ModelEmaV3(m, decay=0.5))
    from safetensors.torch import load_file

    assert not any(k.startswith("module.") for k in load_file(str(path / "model.safetensors")))
    assert load_file(str(path / "model_ema.safetensors")).keys() == load_file(str(path / "model.safetensors")).keys()
    m2 = Tied()
    ckpt.load_weights(nn.DataParallel(m2), path)
    assert _same_weights(m, m2)


def test_config_validation_ema_decay():
    with pytest.raises(ValueError, match="model_ema_decay"):
        TrainConfig(model_ema_decay=1.0).validate()


def test_build_optimization_recipe():
    """AdamW without decay on norms / biases, per-update warmup then cosine to min_lr, smoothed loss."""
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    cfg = TrainConfig(epochs=3, lr=1e-2, weight_decay=0.1, warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-4,
                      label_smoothing=0.2)
    optimizer, scheduler, loss_fn = build_optimization(model, cfg, updates_per_epoch=10)
    assert isinstance(optimizer, torch.optim.AdamW)
    decay = {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in optimizer.param_groups}
    assert decay == {0.1: 4 * 8 + 8 * 3, 0.0: 8 + 8 + 8 + 3}  # the two weights; the biases and the norm
    lrs = []
    for step in (0, 5, 10, 30):
        scheduler.step_update(num_updates=step)
        lrs.append(optimizer.param_groups[0]["lr"])
    # timm's warmup is not a prefix: the cosine runs over all 30 updates, warmup covers the first 10
    cosine_at_10 = 1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 10 / 30))
    assert lrs[0] == pytest.approx(1e-5) and lrs[0] < lrs[1] < lrs[2] == pytest.approx(cosine_at_10)
    assert lrs[3] == pytest.approx(1e-4)
    assert loss_fn.label_smoothing == 0.2


# --------------------------------------------------------------------------------------
# layout: old import paths, one-way dependencies
# --------------------------------------------------------------------------------------
OLD_NAMES = {
    "dartok.engine": [
        "TrainConfig", "DistInfo", "dist_info", "is_main_process", "init_distributed", "ShardedBatchSampler",
        "shard_indices", "select_device", "build_model", "model_is_dart", "model_input_size", "prepare_images",
        "build_optimization", "build_dataset", "build_loader", "epoch_seed", "get_rng_state", "set_rng_state",
        "evaluate", "train_one_epoch", "train", "ResumeConflictError", "LOCAL_DATASETS", "VIDEO_DATASETS",
        "pil_transform", "read_metrics", "seed_everything", "METRICS_NAME", "CHECKPOINT_DIRNAME",
    ],
    "dartok.checkpoint": [
        "WEIGHTS_NAME", "EMA_WEIGHTS_NAME", "CONFIG_NAME", "TRAIN_STATE_NAME", "CHECKPOINT_FORMAT_VERSION",
        "save_checkpoint", "load_checkpoint", "load_config", "load_weights", "load_train_state",
        "model_from_checkpoint", "checkpoint_exists", "resolve_checkpoint_dir", "has_ema_weights", "unwrap_model",
    ],
    "dartok.data": [
        "DEFAULT_FASHION_MNIST_ROOT", "FASHION_MNIST_CLASSES", "ClutteredFashionMNIST", "FashionMNISTDataset",
        "create_dataset", "load_fashion_mnist", "read_idx",
    ],
    "dartok.video_data": [
        "DIRECTIONS", "MovingClutteredFashionMNIST", "VIDEO_EXTENSIONS", "FRAME_EXTENSIONS", "VideoFolderDataset",
        "create_video_dataset", "read_annotations", "segment_indices",
    ],
}


@pytest.mark.parametrize("module", sorted(OLD_NAMES))
def test_old_import_paths_keep_their_names(module):
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in OLD_NAMES[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
    assert all(hasattr(mod, n) for n in mod.__all__)
    if module == "dartok.engine":  # registry queries, not frozen tuples
        assert set(mod.LOCAL_DATASETS) == {"cluttered_fmnist", "fashion_mnist", "moving_fmnist",
                                           "moving_cluttered_fmnist"}
        assert set(mod.VIDEO_DATASETS) == {"moving_fmnist", "moving_cluttered_fmnist", "video_folder", "ssv2"}


def test_data_and_train_import_nothing_above_them():
    """data/ imports neither train/ nor the tools or CLI; train/ imports neither the old shims nor the tools/CLI."""
    import ast
    import pathlib

    import dartok

    root = pathlib.Path(dartok.__file__).parent
    above = {"data": ("train", "engine", "checkpoint", "cli", "bench", "compare", "viz", "tools"),
             "train": ("engine", "checkpoint", "video_data", "cli", "bench", "compare", "viz", "tools")}
    for package, banned in above.items():
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..X import (dartok.X)
                    assert (node.module or "").split(".")[0] not in banned, f"{path.name} imports dartok.{node.module}"


def test_train_takes_its_config_by_keyword_too(tmp_path):
    from dartok.engine import train

    # reaches TrainConfig's validation (not "unknown training options ['cfg']")
    with pytest.raises(ValueError, match="epochs"):
        train(cfg={"output": str(tmp_path / "r"), "epochs": 0})
