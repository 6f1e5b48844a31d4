"""Score maps that localise: the CAM pooling and the moment-matched box pdf (issue 11 item 3, docs/method.md §10)."""
from __future__ import annotations

import dartok  # noqa: F401  (before timm: torchvision shim)
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dartok.localization import box_pdf, object_mass
from dartok.scorer import Scorer, cam_pool_logits, moment_box, scores_to_pdf


def test_cam_pool_avg_max_and_lse_limits():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(cam_pool_logits(a, "avg"), a.mean((2, 3)))
    torch.testing.assert_close(cam_pool_logits(a, "max"), a.amax((2, 3)))
    # LSE lies between the mean and the max, and tends to each at its ends
    lse = cam_pool_logits(a, "lse", 5.0)
    assert bool((lse >= a.mean((2, 3)) - 1e-12).all()) and bool((lse <= a.amax((2, 3)) + 1e-12).all())
    torch.testing.assert_close(cam_pool_logits(a, "lse", 1e-6), a.mean((2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(cam_pool_logits(a, "lse", 1e4), a.amax((2, 3)), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="cam_pool must be one of"):
        cam_pool_logits(a, "median")


def test_lse_pool_sends_the_classifier_gradient_to_the_strongest_location():
    a = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    a[0, 1, 2, 3] = 4.0
    a.requires_grad_()
    torch.nn.functional.cross_entropy(cam_pool_logits(a, "lse", 5.0), torch.tensor([1])).backward()
    g = a.grad[0, 1].abs()
    assert g[2, 3] > 0.9 * g.sum()  # average pooling would give every location 1/16 of it


def test_scorer_checks_cam_pool_options():
    with pytest.raises(ValueError, match="cam_pool must be one of"):
        Scorer("mobilenetv3_small", input_size=32, in_chans=1, cam_classes=3, cam_pool="median")
    with pytest.raises(ValueError, match="cam_pool_r"):
        Scorer("mobilenetv3_small", input_size=32, in_chans=1, cam_classes=3, cam_pool="lse", cam_pool_r=0.0)


def test_scorer_lse_pool_logits_are_lse_of_the_class_map():
    torch.manual_seed(0)
    s = Scorer("mobilenetv3_small", input_size=64, in_chans=1, cam_classes=5, cam_pool="lse", cam_pool_r=3.0).train()
    x = torch.randn(2, 1, 64, 64)
    feats = s.features(x)
    s.scores_from_features(feats)
    cam = s.cam(feats)
    expected = (torch.logsumexp(3.0 * cam.flatten(2), 2) - torch.log(torch.tensor(16.0))) / 3.0
    torch.testing.assert_close(s._cam_logits, expected, rtol=1e-5, atol=1e-5)


def test_moment_box_of_the_uniform_pdf_is_the_image():
    for h, w in [(1, 1), (8, 8), (5, 7)]:
        box = moment_box(torch.full((2, h, w), 1.0 / (h * w), dtype=torch.float64))
        torch.testing.assert_close(box, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(x0=st.integers(0, 7), y0=st.integers(0, 7), bw=st.integers(1, 8), bh=st.integers(1, 8))
def test_moment_box_recovers_a_box_pdf_on_cell_edges(x0, y0, bw, bh):
    x1, y1 = min(8, x0 + bw), min(8, y0 + bh)
    box = torch.tensor([[x0 / 8, y0 / 8, x1 / 8, y1 / 8]], dtype=torch.float64)
    torch.testing.assert_close(moment_box(box_pdf(box, (8, 8))), box, atol=1e-9, rtol=0)


def test_box_activation_is_the_box_pdf_of_the_moment_box_and_has_gradients():
    torch.manual_seed(0)
    z = torch.randn(2, 6, 6, dtype=torch.float64)
    z[:, 1:3, 3:5] += 4.0
    pdf = scores_to_pdf(z, activation="box")
    std = (z.var((1, 2), unbiased=False, keepdim=True) + 1e-5).sqrt()  # scores_to_pdf's eps
    p = torch.softmax(((z - z.mean((1, 2), keepdim=True)) / std).flatten(1), 1)
    torch.testing.assert_close(pdf, box_pdf(moment_box(p.view_as(z)), (6, 6)), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(pdf.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    # the box concentrates mass on the peak: more than its area share (4/36), as a uniform map would give
    peak = torch.tensor([[3 / 6, 1 / 6, 5 / 6, 3 / 6]] * 2, dtype=torch.float64)
    assert bool((object_mass(pdf, peak) > 1.5 * 4 / 36).all())
    assert torch.autograd.gradcheck(lambda s: scores_to_pdf(s, activation="box"), (z.clone().requires_grad_(),))


def test_box_activation_in_a_dart_model_trains_the_scorer():
    from dartok.models import create_model

    torch.manual_seed(0)
    m = create_model("dart_vit_micro_patch8", num_classes=3, num_tokens=16,
                     scorer={"trunk": "mobilenetv3_small", "input_size": 64, "cam_classes": 3,
                             "cam_pool": "lse", "activation": "box"}).train()
    x = torch.randn(2, 1, 64, 64)
    loss = torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 2]))
    loss = loss + m.patch_embed.scorer.auxiliary_loss(torch.tensor([0, 2]))
    loss.backward()
    head = [p.grad for p in m.patch_embed.scorer.head.parameters()]
    trunk = [p.grad for p in m.patch_embed.scorer.trunk.parameters() if p.grad is not None]
    assert trunk and all(torch.isfinite(g).all() for g in trunk)
    assert any(g is not None and g.abs().sum() > 0 for g in head)


def test_a_checkpoint_from_before_the_cam_default_loads(tmp_path):
    """Checkpoints written before the CAM head became the default record no ``scorer_cam``:
    the head is rebuilt iff its weights are there (``model_from_checkpoint``)."""
    from dartok.models import create_model
    from dartok.train.checkpoint import model_from_checkpoint, save_checkpoint

    kw = {"num_classes": 3, "in_chans": 1, "img_size": 64, "num_tokens": 16}
    for cam in (False, True):  # the default scorer (named by its trunk, from scratch): CAM head on by default
        m = create_model("dart_vit_micro_patch8", **({} if cam else {"scorer_cam": False}), **kw)
        assert (m.patch_embed.scorer.cam is not None) == cam
        save_checkpoint(tmp_path / str(cam), m, {"model": "dart_vit_micro_patch8", "is_dart": True,
                                                 "model_kwargs": kw})  # no scorer_cam recorded
        loaded, _ = model_from_checkpoint(tmp_path / str(cam))
        assert (loaded.patch_embed.scorer.cam is not None) == cam
        x = torch.randn(2, 1, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), m.eval()(x))


def test_softmax_ramp_moves_the_pdf_from_sigmoid_to_softmax():
    torch.manual_seed(0)
    s = Scorer("mobilenetv3_small", input_size=64, in_chans=1, softmax_ramp=(1, 3)).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        scores = s.scores_from_features(s.features(x))
        sig = scores_to_pdf(scores, scale=s.score_scale, bias=s.score_bias)
        soft = scores_to_pdf(scores, scale=s.score_scale, activation="softmax")
        for epochs, share in [(0.0, 0.0), (1.0, 0.0), (2.0, 0.5), (3.0, 1.0), (7.5, 1.0)]:
            s.set_progress(epochs)
            assert float(s.softmax_share) == share
            torch.testing.assert_close(s(x), (1 - share) * sig + share * soft)
    # the share is saved with the weights, so a reloaded model evaluates as trained
    t = Scorer("mobilenetv3_small", input_size=64, in_chans=1, softmax_ramp=(1, 3))
    t.load_state_dict(s.state_dict())
    assert float(t.softmax_share) == 1.0
    # without a ramp the buffer is not in the state dict (older checkpoints load as they are)
    assert "softmax_share" not in Scorer("mobilenetv3_small", input_size=64, in_chans=1).state_dict()
    with pytest.raises(ValueError, match="softmax_ramp must be"):
        Scorer("mobilenetv3_small", input_size=64, in_chans=1, softmax_ramp=(3, 1))
    with pytest.raises(ValueError, match="needs activation='sigmoid'"):
        Scorer("mobilenetv3_small", input_size=64, in_chans=1, softmax_ramp=(0, 1), activation="softmax")


def test_training_loop_sets_the_ramp_each_step():
    from dartok.models import create_model
    from dartok.train.loop import train_one_epoch

    torch.manual_seed(0)
    m = create_model("dart_vit_micro_patch8", num_classes=2, num_tokens=16, in_chans=1, img_size=64,
                     scorer={"trunk": "mobilenetv3_small", "input_size": 64, "softmax_ramp": [0, 2]})
    loader = [(torch.randn(2, 1, 64, 64), torch.tensor([0, 1]))] * 4
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    seen = []
    scorer = m.patch_embed.scorer
    hook = scorer.register_forward_pre_hook(lambda mod, args: seen.append(float(mod.softmax_share)))
    train_one_epoch(m, loader, opt, None, torch.nn.functional.cross_entropy, torch.device("cpu"), epoch=1,
                    global_step=0, input_size=(1, 64, 64), progress=False)
    hook.remove()
    assert seen == [0.5, 0.625, 0.75, 0.875]


def test_scorer_lr_scale_gives_its_parameters_a_scaled_group():
    from types import SimpleNamespace

    from dartok.models import create_model
    from dartok.train.loop import build_optimization

    cfg = SimpleNamespace(lr=1e-3, weight_decay=0.05, epochs=2, warmup_epochs=0, warmup_lr=1e-6, min_lr=1e-5,
                          label_smoothing=0.0)
    kw = dict(num_classes=3, num_tokens=16, in_chans=1, img_size=64)
    plain = create_model("dart_vit_micro_patch8", scorer={"trunk": "mobilenetv3_small", "input_size": 64}, **kw)
    scaled = create_model("dart_vit_micro_patch8",
                          scorer={"trunk": "mobilenetv3_small", "input_size": 64, "lr_scale": 5.0}, **kw)
    opt_plain, _, _ = build_optimization(plain, cfg, 10)
    opt, sched, _ = build_optimization(scaled, cfg, 10)
    sched.step_update(5)
    scorer_ids = {id(p) for p in scaled.patch_embed.scorer.parameters()}
    scorer_groups = [g for g in opt.param_groups if {id(p) for p in g["params"]} <= scorer_ids]
    other_groups = [g for g in opt.param_groups if not {id(p) for p in g["params"]} & scorer_ids]
    assert len(scorer_groups) + len(other_groups) == len(opt.param_groups)  # no group mixes them
    assert sum(len(g["params"]) for g in scorer_groups) == len(scorer_ids)
    base = other_groups[0]["lr"]
    assert base > 0 and all(g["lr"] == base and "lr_scale" not in g for g in other_groups)
    assert all(g["lr_scale"] == 5.0 and abs(g["lr"] - 5 * base) < 1e-12 for g in scorer_groups)
    # the same parameters are decayed as without the scale
    def decayed(o, model):
        names = {id(p): n for n, p in model.named_parameters()}
        return sorted(names[id(p)] for g in o.param_groups if g["weight_decay"] > 0 for p in g["params"])
    assert decayed(opt, scaled) == decayed(opt_plain, plain)
    with pytest.raises(ValueError, match="lr_scale"):
        Scorer("mobilenetv3_small", input_size=64, in_chans=1, lr_scale=0.0)


# --------------------------------------------------------------------------------------
# pdf_blur: a peaked pdf spread over the cells around its peak
# --------------------------------------------------------------------------------------
def test_blur_pdf_spreads_a_cell_over_its_block_and_keeps_uniform():
    from dartok.scorer import blur_pdf

    pdf = torch.zeros(2, 9, 9, dtype=torch.float64)
    pdf[0, 4, 4] = 1.0
    pdf[1] = 1.0 / 81
    out = blur_pdf(pdf, 3)
    expect = torch.zeros(9, 9, dtype=torch.float64)
    expect[3:6, 3:6] = 1.0 / 9
    assert torch.allclose(out[0], expect) and torch.allclose(out[1], pdf[1])
    assert torch.equal(blur_pdf(pdf, 1), pdf)
    # a corner cell: the border windows count only the cells inside the map
    corner = torch.zeros(1, 5, 5, dtype=torch.float64)
    corner[0, 0, 0] = 1.0
    out = blur_pdf(corner, 3)
    assert out.sum().item() == pytest.approx(1.0) and (out[0, :2, :2] > 0).all() and (out[0, 2:] == 0).all()
    assert torch.autograd.gradcheck(lambda p: blur_pdf(p.softmax(-1).view(1, 5, 5), 3),
                                    torch.randn(1, 25, dtype=torch.float64, requires_grad=True))
    for bad in (0, 2, 1.5, True):
        with pytest.raises(ValueError, match="odd int"):
            blur_pdf(pdf, bad)


def test_scorer_pdf_blur_option():
    torch.manual_seed(0)
    plain = Scorer("mobilenetv3_small", input_size=64, stage=2, in_chans=1, activation="softmax")
    blurred = Scorer("mobilenetv3_small", input_size=64, stage=2, in_chans=1, activation="softmax", pdf_blur=3)
    blurred.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 64, 64)
    from dartok.scorer import blur_pdf

    assert torch.allclose(blurred.eval()(x), blur_pdf(plain.eval()(x), 3), atol=1e-6)
    with pytest.raises(ValueError, match="pdf_blur"):
        Scorer("mobilenetv3_small", input_size=64, in_chans=1, pdf_blur=4)
