"""Scorer pretraining (issue 11): the trunk learns as a classifier alone, then stays frozen."""
from __future__ import annotations

import json

import dartok  # noqa: F401  (before timm: torchvision shim)
import pytest
import timm
import torch

from dartok.engine import TrainConfig, build_optimization, read_metrics, train
from dartok.scorer import Scorer
from dartok.train.scorer_pretrain import freeze_scorer_trunk, learned_scorer, pretrain_scorer


def tiny_cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(
        model="dart_vit_micro_patch8", num_tokens=9, canvas_size=32,
        data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2},
        model_kwargs={"scorer_input_size": 32, "scorer_stage": 2, "depth": 1},
        train_samples=32, test_samples=16, epochs=2, warmup_epochs=1, batch_size=8, progress=False,
        threads=1, output=str(tmp_path / name),
    )
    base.update(kw)
    return TrainConfig(**base)


def _toy_loader(n=64, batch=16, seed=0):
    """Two classes told apart by where a bright square sits (left or right half): learnable by a CNN."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = 0.1 * torch.randn(n, 1, 32, 32, generator=g)
    for i, y in enumerate(labels.tolist()):
        x0 = 2 + 16 * y + int(torch.randint(0, 6, (), generator=g))
        y0 = int(torch.randint(2, 22, (), generator=g))
        images[i, :, y0:y0 + 8, x0:x0 + 8] += 2.0
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, n, batch)]


def _scorer(**kw) -> Scorer:
    torch.manual_seed(0)
    return Scorer("mobilenetv3_small", input_size=32, stage=2, in_chans=1, cam_classes=2, **kw)


def test_pretraining_trains_trunk_and_cam_only_and_lowers_the_loss():
    scorer = _scorer()
    before = {k: v.clone() for k, v in scorer.state_dict().items()}
    loader = _toy_loader()
    hist = pretrain_scorer(scorer, loader, epochs=6, lr=3e-3, weight_decay=0.0, device=torch.device("cpu"),
                           input_size=(1, 32, 32), unpack=lambda t: t)
    assert [h["epoch"] for h in hist] == list(range(1, 7)) and all(h["n"] == 64 for h in hist)
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"], [h["loss"] for h in hist]
    after = scorer.state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert any(k.startswith("trunk.") for k in changed) and {"cam.weight", "cam.bias"} <= changed
    # the score head and the contrast are DART training's, not the classifier's
    assert not any(k.startswith("head.") or k.startswith("score_") for k in changed), sorted(changed)
    assert scorer.trainable_trunk and all(p.requires_grad for p in scorer.trunk.parameters())


def test_pretraining_refuses_what_it_cannot_train():
    loader = _toy_loader(16)
    kw = dict(lr=1e-3, weight_decay=0.0, device=torch.device("cpu"), input_size=(1, 32, 32), unpack=lambda t: t)
    with pytest.raises(ValueError, match="CAM head"):
        pretrain_scorer(Scorer("mobilenetv3_small", input_size=32, in_chans=1), loader, epochs=1, **kw)
    with pytest.raises(ValueError, match="frozen"):
        pretrain_scorer(_scorer(trainable_trunk=False), loader, epochs=1, **kw)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="epochs"):
            pretrain_scorer(_scorer(), loader, epochs=bad, **kw)


def test_freeze_keeps_the_trunk_in_eval_mode_and_out_of_the_optimizer(tmp_path):
    model = timm.create_model("dart_vit_micro_patch8", num_tokens=9, img_size=32, in_chans=1, num_classes=10,
                              scorer_input_size=32, depth=1)
    scorer = learned_scorer(model)
    assert scorer is not None and scorer.cam is not None
    freeze_scorer_trunk(scorer)
    assert learned_scorer(model) is None  # frozen: nothing left to pretrain
    model.train()
    assert not scorer.trunk.training and scorer.head.training
    opt, _, _ = build_optimization(model, tiny_cfg(tmp_path), updates_per_epoch=4)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in scorer.trunk.parameters())
    assert all(id(p) in in_opt for p in [*scorer.head.parameters(), *scorer.cam.parameters()])
    # models without a learned scorer trunk
    assert learned_scorer(timm.create_model("vit_micro_patch8", num_classes=10)) is None
    oracle = timm.create_model("dart_vit_micro_patch8", num_tokens=9, img_size=32, in_chans=1, num_classes=10,
                               scorer_input_size=32, depth=1, score_source="oracle")
    assert learned_scorer(oracle) is None


def test_train_pretrains_then_freezes_and_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_cfg(tmp_path, "a", scorer_pretrain_epochs=2)
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "a" / "scorer_pretrain.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 <= r["object_mass"] <= 1 and r["n"] == 32 and 0 <= r["acc"] <= 100 for r in records)
    assert len(read_metrics(tmp_path / "a")) == 2
    # interrupted after DART epoch 1 and resumed: the same weights as the straight run, and the
    # trunk is the pretrained one in both epochs' checkpoints (frozen during DART training)
    train(tiny_cfg(tmp_path, "b", scorer_pretrain_epochs=2, stop_after=1))
    trunk1 = {k: v for k, v in load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors")).items()
              if ".scorer.trunk." in k}
    train(tiny_cfg(tmp_path, "b", scorer_pretrain_epochs=2, resume=True))
    wa = load_file(str(tmp_path / "a" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert trunk1 and all(torch.equal(trunk1[k], wb[k]) for k in trunk1)
    # and the pretrained trunk is not the initial one: a run without pretraining starts elsewhere
    train(tiny_cfg(tmp_path, "c", stop_after=1))
    wc = load_file(str(tmp_path / "c" / "checkpoint" / "model.safetensors"))
    assert not (tmp_path / "c" / "scorer_pretrain.jsonl").exists()
    assert any(not torch.equal(wc[k], trunk1[k]) for k in trunk1 if wc[k].is_floating_point())


def test_runs_without_a_learned_scorer_skip_it(tmp_path, capsys):
    train(tiny_cfg(tmp_path, "g", model="vit_micro_patch8", num_tokens=16, canvas_size=32,
                   model_kwargs={"depth": 1}, epochs=1, warmup_epochs=0, scorer_pretrain_epochs=2))
    assert not (tmp_path / "g" / "scorer_pretrain.jsonl").exists()
    assert "scorer pretraining: skipped" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_config_refuses_bad_values(tmp_path, bad):
    with pytest.raises(ValueError, match="scorer_pretrain_epochs"):
        tiny_cfg(tmp_path, scorer_pretrain_epochs=bad).validate()


@pytest.mark.parametrize("bad", [0, -1e-3, float("nan"), True, "3e-3"])
def test_config_refuses_bad_pretraining_lr(tmp_path, bad):
    with pytest.raises(ValueError, match="scorer_pretrain_lr"):
        tiny_cfg(tmp_path, scorer_pretrain_lr=bad).validate()


def test_pretraining_lr_defaults_to_the_lr_and_can_be_set(tmp_path, monkeypatch):
    """--scorer-pretrain-lr reaches pretrain_scorer; unset, the run's --lr does."""
    import dartok.train.scorer_pretrain as sp

    seen = []
    real = sp.pretrain_scorer

    def spy(*args, **kw):
        seen.append(kw["lr"])
        return real(*args, **kw)

    monkeypatch.setattr(sp, "pretrain_scorer", spy)
    train(tiny_cfg(tmp_path, "l1", scorer_pretrain_epochs=1, epochs=1, warmup_epochs=0, stop_after=1))
    train(tiny_cfg(tmp_path, "l2", scorer_pretrain_epochs=1, scorer_pretrain_lr=3e-3, epochs=1, warmup_epochs=0,
                   stop_after=1))
    assert seen == [tiny_cfg(tmp_path).lr, 3e-3]


def test_cli_refuses_a_negative_count(tmp_path):
    from typer.testing import CliRunner

    from dartok.cli import app

    res = CliRunner().invoke(app, ["train", "--scorer-pretrain-epochs", "-1", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "scorer-pretrain-epochs" in res.output
    res = CliRunner().invoke(app, ["train", "--scorer-pretrain-lr", "0", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "Error: --scorer-pretrain-lr must be a finite number > 0" in res.output


def test_cam_logits_are_the_auxiliary_classifiers():
    """Scorer.cam_logits (what pretraining trains) is what a training forward stores for auxiliary_loss."""
    for pool in ("avg", "lse"):
        scorer = _scorer(cam_pool=pool).train()
        x = torch.rand(3, 1, 32, 32)
        feats = scorer.features(x)
        scorer.scores_from_features(feats)
        stored = scorer._cam_logits
        assert stored.shape == (3, 2) and torch.allclose(scorer.cam_logits(feats), stored)
    with pytest.raises(RuntimeError, match="no CAM head"):
        Scorer("mobilenetv3_small", input_size=32, in_chans=1).cam_logits(feats)


def test_the_weight_ema_starts_from_the_pretrained_scorer(tmp_path):
    from safetensors.torch import load_file

    train(tiny_cfg(tmp_path, "e", scorer_pretrain_epochs=1, epochs=1, warmup_epochs=0, model_ema=True,
                   model_ema_decay=0.9))
    w = load_file(str(tmp_path / "e" / "checkpoint" / "model.safetensors"))
    ema = load_file(str(tmp_path / "e" / "checkpoint" / "model_ema.safetensors"))
    trunk = [k for k in w if ".scorer.trunk." in k and w[k].is_floating_point()]
    assert trunk and all(torch.allclose(ema[k], w[k]) for k in trunk)  # frozen in both, from the same weights
