"""The elastic token budget (issue 14 §2): ``set_num_tokens(N)`` on a trained model computes what the
same model built at N with the same weights computes, on every DART family."""
import json
import pytest
import torch
import torch.nn as nn

import dartok
from dartok import DART, VideoDART
from dartok.models import create_model, patch_warp, set_num_tokens


def _random_pdf(b, h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, generator=gen, dtype=torch.float64) + 0.05


@pytest.mark.parametrize("kwargs, new_n", [
    ({}, 16),  # default bands follow N: round(√16) = 4
    ({}, 7),  # a prime: bands 3 of 2, 2, 3
    ({"bands": 2}, 10),  # the bands given at construction stay
    ({"partition": "grid"}, 25),
])
def test_tokenizer_set_num_tokens_equals_one_built_at_n(kwargs, new_n):
    torch.manual_seed(0)
    a = DART(num_tokens=36 if "bands" not in kwargs else 8, patch_size=4, in_chans=3, embed_dim=8, pos_grid=5,
             **kwargs).double()
    b = DART(num_tokens=new_n, patch_size=4, in_chans=3, embed_dim=8, pos_grid=5, **kwargs).double()
    b.load_state_dict(a.state_dict())  # no parameter depends on N
    a.set_num_tokens(new_n)
    assert (a.num_tokens, a.num_patches, a.counts, a.bands, a.grid_size) == \
        (b.num_tokens, b.num_patches, b.counts, b.bands, b.grid_size)
    x = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    pdf = _random_pdf(2, 6, 6)
    out_a, out_b = a(x, pdf=pdf), b(x, pdf=pdf)
    assert out_a.tokens.shape == (2, new_n, 8)
    for ta, tb in zip(out_a, out_b):
        assert torch.equal(ta, tb)


def test_tokenizer_set_num_tokens_explicit_bands_and_back():
    tok = DART(num_tokens=16, patch_size=4, in_chans=1, embed_dim=4, pos_grid=0)
    tok.set_num_tokens(12, bands=2)
    assert tok.counts == (6, 6) and tok.grid_size == (2, 6)
    tok.set_num_tokens(16)  # no bands: the construction rule (round(√N)) again
    assert tok.counts == (4, 4, 4, 4)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "16", None])
def test_tokenizer_set_num_tokens_refuses_bad_budgets_and_stays(bad):
    tok = DART(num_tokens=16, patch_size=4, in_chans=1, embed_dim=4, pos_grid=0)
    with pytest.raises(ValueError, match="num_tokens must be an integer >= 1"):
        tok.set_num_tokens(bad)
    assert (tok.num_tokens, tok.counts) == (16, (4, 4, 4, 4))


def test_tokenizer_set_num_tokens_refuses_bad_layouts():
    tok = DART(num_tokens=16, patch_size=4, in_chans=1, embed_dim=4, pos_grid=0, partition="grid")
    with pytest.raises(ValueError, match="uneven"):
        tok.set_num_tokens(10)  # round(√10) = 3 rows do not divide 10
    with pytest.raises(ValueError, match=r"bands must be an integer in \[1, num_tokens=4\]"):
        DART(num_tokens=16, patch_size=4, in_chans=1, embed_dim=4, pos_grid=0).set_num_tokens(4, bands=5)
    assert tok.num_tokens == 16


def test_video_tokenizer_bands_follow_the_clip_rule():
    torch.manual_seed(0)
    a = VideoDART(num_tokens=4 * 9, num_frames=4, patch_size=4, in_chans=1, embed_dim=8, pos_grid=3).double()
    b = VideoDART(num_tokens=4 * 4, num_frames=4, patch_size=4, in_chans=1, embed_dim=8, pos_grid=3).double()
    with torch.no_grad():
        a.temporal_pos_embedding.normal_()
    b.load_state_dict(a.state_dict())
    a.set_num_tokens(16)
    assert a.bands == b.bands == 8  # T·round(√(N/T)): one 2×2 grid per frame
    clip = torch.randn(2, 1, 4, 16, 16, dtype=torch.float64)
    for ta, tb in zip(a(clip), b(clip)):
        assert torch.equal(ta, tb)


MICRO = {
    "dart_vit_micro_patch8": ((2, 1, 48, 48), {}),
    "dart_vim_micro_patch8": ((2, 1, 48, 48), {}),
    "dart_videomamba_micro_patch8": ((2, 1, 2, 32, 32), {"num_frames": 2}),
}


@pytest.mark.parametrize("name", sorted(MICRO))
def test_model_set_num_tokens_equals_model_built_at_n(name):
    """Trained at 36, run at 16 / 64: the same as a model built there with the same weights (the state dict
    loads across budgets), timm's _model_args follow, and the class count does not change."""
    shape, extra = MICRO[name]
    kwargs = dict(depth=1, scorer_input_size=32, **extra)
    torch.manual_seed(0)
    model = create_model(name, num_tokens=36, **kwargs).eval()
    x = torch.randn(shape)
    for n in (16, 64):
        ref = create_model(name, num_tokens=n, **kwargs).eval()
        ref.load_state_dict(model.state_dict())
        model.set_num_tokens(n)
        assert model.patch_embed.num_tokens == n and model._model_args["num_tokens"] == n
        with torch.no_grad():
            out, expected = model(x), ref(x)
            assert model.forward_features(x).shape[1] == ref.forward_features(x).shape[1]
        assert out.shape == (2, 10)
        assert torch.equal(out, expected)


def test_vit_feature_info_and_intermediates_follow_the_budget():
    model = create_model("dart_vit_micro_patch8", num_tokens=36, depth=2, scorer_input_size=32).eval()
    model.set_num_tokens(12)
    assert model.patch_embed.grid_size == (3, 4)
    assert all(info["reduction"] == pytest.approx(128 / 12 ** 0.5) for info in model.feature_info)
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 1, 48, 48), intermediates_only=True)
    assert maps[-1].shape == (1, 96, 3, 4)


class TinyCNN(nn.Module):
    """A 3-channel image classifier that takes any input size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_warp_set_num_tokens_keeps_the_warped_size():
    torch.manual_seed(0)
    scorer = dict(trunk="mobilenetv3_small", input_size=32, head="v1", pretrained=False)
    model = patch_warp(TinyCNN(), num_tokens=16, warp_size=32, scorer=scorer).eval()
    assert model.patch_embed.patch_size == (8, 8)
    x = torch.randn(2, 3, 64, 64)
    model.set_num_tokens(64)
    ref = patch_warp(TinyCNN(), num_tokens=64, warp_size=32, scorer=scorer).eval()
    ref.load_state_dict(model.state_dict())
    assert model.patch_embed.grid == (8, 8) and model.patch_embed.patch_size == (4, 4)
    assert model.patch_embed.out_size == (32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
        assert model.tokenize(x).image.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"one of \[1, 4, 16, 64, 256, 1024\], got 10"):
        model.set_num_tokens(10)
    with pytest.raises(ValueError, match="bands is an option of the token tokenizer"):
        model.set_num_tokens(16, bands=4)
    assert model.patch_embed.num_tokens == 64


def test_segmenter_set_num_tokens():
    torch.manual_seed(0)
    seg = create_model("dart_vit_micro_patch8", num_tokens=16, task="segmentation", num_classes=3, depth=1,
                       scorer_input_size=32).eval()
    ref = create_model("dart_vit_micro_patch8", num_tokens=25, task="segmentation", num_classes=3, depth=1,
                       scorer_input_size=32).eval()
    ref.load_state_dict(seg.state_dict())
    set_num_tokens(seg, 25)
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        logits, boxes = seg.forward_tokens(x)
        assert logits.shape == (1, 25, 3) and boxes.shape == (1, 25, 4)
        assert torch.equal(seg(x), ref(x))
    grid = create_model("vit_micro_patch8", task="segmentation", num_classes=3, depth=1)
    with pytest.raises(ValueError, match="fixed-grid"):
        grid.set_num_tokens(16)


def test_set_num_tokens_refuses_fixed_grid_models():
    with pytest.raises(ValueError, match="VisionTransformer is a fixed-grid model"):
        set_num_tokens(create_model("vit_micro_patch8", depth=1), 16)
    assert dartok.models.set_num_tokens is set_num_tokens


# --------------------------------------------------------------------------------------
# training at a random budget per batch (FlexiViT's idea; TrainConfig.train_num_tokens)
# --------------------------------------------------------------------------------------
def _flexi_cfg(tmp_path, **kw):
    from dartok.engine import TrainConfig

    base = dict(model="dart_vit_micro_patch8", num_tokens=9, canvas_size=32,
                data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2},
                model_kwargs={"scorer_input_size": 32, "depth": 2}, train_samples=48, test_samples=16,
                epochs=2, warmup_epochs=1, batch_size=8, progress=False, output=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def test_train_num_tokens_draws_a_budget_per_batch_and_evaluates_at_the_run_budget(tmp_path, monkeypatch):
    """Every training step runs at a budget from the list (drawn from (seed, step) alone: a rerun draws
    the same), evaluation and the checkpoint at --num-tokens."""
    from dartok.engine import train
    from dartok.tokenizer import DART

    seen = []
    forward = DART.forward

    def spy(self, images, pdf=None):
        seen.append((self.training, self.num_tokens))
        return forward(self, images, pdf)

    monkeypatch.setattr(DART, "forward", spy)
    summary = train(_flexi_cfg(tmp_path, train_num_tokens=[4, 9, 16]))
    train_budgets = [n for training, n in seen if training]
    assert len(train_budgets) == 12  # 6 steps x 2 epochs
    assert set(train_budgets) <= {4, 9, 16} and len(set(train_budgets)) > 1
    assert {n for training, n in seen if not training} == {9}
    assert summary["model"].patch_embed.num_tokens == 9
    cfg = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert cfg["model_kwargs"]["num_tokens"] == 9 and cfg["train"]["train_num_tokens"] == [4, 9, 16]
    seen.clear()
    train(_flexi_cfg(tmp_path, train_num_tokens=[4, 9, 16], output=str(tmp_path / "again")))
    assert [n for training, n in seen if training] == train_budgets


@pytest.mark.parametrize("bad", [[], [0], [4, "9"], [True], 9])
def test_train_num_tokens_rejects_bad_lists(tmp_path, bad):
    with pytest.raises(ValueError, match="train_num_tokens must be a non-empty list"):
        _flexi_cfg(tmp_path, train_num_tokens=bad).validate()


def test_train_num_tokens_refuses_grid_models_and_refused_budgets(tmp_path):
    from dartok.engine import train

    with pytest.raises(ValueError, match="fixed-grid model"):
        train(_flexi_cfg(tmp_path, model="vit_micro_patch8", model_kwargs={"depth": 2}, train_num_tokens=[4, 9]))
    with pytest.raises(ValueError, match="budget 10 is refused"):
        train(_flexi_cfg(tmp_path, model_kwargs={"scorer_input_size": 32, "depth": 2, "partition": "grid"},
                         train_num_tokens=[4, 10]))
