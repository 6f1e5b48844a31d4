"""The DART module and DART models on timm (SPEC §1, §3; issue 2 §1-2)."""
import pytest
import timm
import torch

import dartok
from dartok import DART, Scorer, load_vit_weights, patch_timm
from dartok.scorer import SCORER_TRUNKS, edge_pdf, scores_to_pdf


def tiny_vit(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2, num_classes=5)
    args.update(kw)
    return timm.models.vision_transformer.VisionTransformer(**args)


def test_uniform_pdf_equals_timm_patch_embed_and_pos_embed():
    torch.manual_seed(0)
    vit = timm.create_model("deit_tiny_patch16_224", pretrained=False).double().eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    ref_tokens = vit.patch_embed(x)
    ref_pos = vit.pos_embed[:, 1:].expand(2, -1, -1)
    with torch.no_grad():
        ref_logits = vit(x)
    model = patch_timm(vit, scorer=None).eval()
    out = model.patch_embed(x, pdf=torch.ones(2, 14, 14))
    torch.testing.assert_close(out.tokens, ref_tokens, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.pos_embed, ref_pos, atol=1e-12, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref_logits, atol=1e-9, rtol=0)


def test_uniform_pdf_float32_tolerance():
    vit = tiny_vit().eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = vit(x)
        out = patch_timm(vit, scorer=None).eval()(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_patch_timm_without_class_token_and_no_embed_class():
    for kw in (dict(class_token=False, global_pool="avg"), dict(no_embed_class=True)):
        vit = tiny_vit(**kw).eval()
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            ref = vit(x)
            model = patch_timm(vit, scorer=None).eval()
            torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)
        assert model.pos_embed is None


def test_patch_timm_keeps_weights_and_rejects_bad_models():
    vit = tiny_vit()
    blocks = {k: v.clone() for k, v in vit.blocks.state_dict().items()}
    proj = vit.patch_embed.proj.weight.clone()
    model = patch_timm(vit, num_tokens=10, scorer=dict(trunk="mobilenetv3_small", input_size=64))
    assert dartok.is_dart(model) and model.patch_embed.num_tokens == 10
    assert torch.equal(model.patch_embed.proj.weight, proj)
    for k, v in model.blocks.state_dict().items():
        assert torch.equal(v, blocks[k])
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    with pytest.raises(ValueError, match="already"):
        patch_timm(model)
    with pytest.raises(TypeError, match="takes B×C×H×W images"):  # not a ViT: the warp, which needs an image model
        patch_timm(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="VisionTransformer"):
        patch_timm(torch.nn.Linear(2, 2), mode="tokens")
    with pytest.raises(ValueError, match="absolute position"):
        patch_timm(tiny_vit(pos_embed="none"))


def test_any_budget_forward_backward():
    model = patch_timm(tiny_vit(), num_tokens=13, scorer=dict(trunk="mobilenetv3_small", input_size=32))
    out = model(torch.rand(2, 3, 40, 56))
    assert out.shape == (2, 5)
    out.sum().backward()


def test_gradient_reaches_scorer_head_not_trunk():
    model = timm.create_model("dart_vit_micro_patch8", num_classes=4, scorer_input_size=64, img_size=64,
                              trainable_scorer_trunk=False)
    x = torch.rand(2, 1, 64, 64)
    model(x).logsumexp(-1).sum().backward()
    head = model.patch_embed.scorer.head
    assert head.fc1.weight.grad is not None and head.fc1.weight.grad.abs().sum() > 0
    assert head.fc2.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.patch_embed.scorer.trunk.parameters())
    # trainable trunk gets gradients when asked
    model = timm.create_model("dart_vit_micro_patch8", num_classes=4, scorer_input_size=64,
                              trainable_scorer_trunk=True)
    model(x).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.patch_embed.scorer.trunk.parameters())


def test_batch_invariance_in_eval():
    torch.manual_seed(0)
    model = timm.create_model("dart_vit_micro_patch8", num_classes=4, scorer_input_size=64).eval()
    x = torch.rand(5, 1, 64, 64)
    with torch.no_grad():
        full = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(5)])
        pdf_full = model.patch_embed(x).pdf
        pdf_alone = model.patch_embed(x[2:3]).pdf
    torch.testing.assert_close(alone, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pdf_alone[0], pdf_full[2], atol=1e-6, rtol=1e-5)


def test_trunk_trainable_by_default_only_without_pretrained_weights():
    # SPEC §3: pretrained weights → frozen trunk; none → trained from scratch
    assert Scorer("mobilenetv3_small", input_size=64).trainable_trunk
    assert not Scorer("mobilenetv3_small", input_size=64, trainable_trunk=False).trainable_trunk
    model = timm.create_model("dart_vit_micro_patch8", num_classes=4, scorer_input_size=64)
    trunk = model.patch_embed.scorer.trunk
    assert all(p.requires_grad for p in trunk.parameters())
    model.train()
    assert trunk.training  # BatchNorm of a trunk trained from scratch learns its statistics
    model.eval()
    assert not trunk.training


def test_trunk_frozen_eval_and_untouched_by_init():
    trunk_ref = Scorer("mobilenetv3_small", input_size=64).trunk.state_dict()
    scorer = Scorer("mobilenetv3_small", input_size=64, trainable_trunk=False)
    scorer.trunk.load_state_dict(trunk_ref)
    model = patch_timm(tiny_vit(), scorer=scorer)
    model.init_weights()  # timm's ViT init must not touch the trunk
    model.train()
    trunk = model.patch_embed.scorer.trunk
    assert not trunk.training and all(not m.training for m in trunk.modules())
    assert all(not p.requires_grad for p in trunk.parameters())
    for k, v in trunk.state_dict().items():
        assert torch.equal(v, trunk_ref[k]), k
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    model(torch.rand(4, 3, 32, 32)).sum().backward()  # BN running stats must not move
    for k, v in trunk.state_dict().items():
        assert torch.equal(v, before[k]), k
    # and the registered models' trunk is unchanged by construction-time init
    torch.manual_seed(1)
    m1 = timm.create_model("dart_deit_tiny_patch16_224", num_classes=3)
    torch.manual_seed(1)
    timm.create_model("deit_tiny_patch16_224", num_classes=3)  # same RNG draws as the backbone
    ref = Scorer("mobilenetv3_small").trunk.state_dict()
    got = m1.patch_embed.scorer.trunk.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_timm_deit_state_dict_loads():
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", num_classes=7).eval()
    model = timm.create_model("dart_deit_tiny_patch16_224", num_classes=7).eval()
    missing, unexpected = load_vit_weights(model, deit.state_dict())
    assert not unexpected and all(k.startswith("patch_embed.scorer.") for k in missing)
    x = torch.rand(2, 3, 224, 224)
    model.patch_embed.scorer = None  # uniform pdf: the DART model must compute DeiT exactly
    with torch.no_grad():
        torch.testing.assert_close(model(x), deit(x), atol=1e-4, rtol=1e-4)
    # a checkpoint at another grid (DeiT at 384 → 24×24 pos grid) is resampled to 14×14
    big = timm.create_model("deit_tiny_patch16_224", img_size=384, num_classes=7)
    load_vit_weights(model, big.state_dict())
    assert model.patch_embed.pos_embed.shape == (1, 196, 192)
    with pytest.raises(ValueError, match="shape mismatch|do not fit"):
        load_vit_weights(model, timm.create_model("deit_tiny_patch16_224", num_classes=9).state_dict())


def test_registered_models_and_defaults():
    for name, tokens in [("dart_deit_tiny_patch16_224", 196), ("dart_deit_small_patch16_224", 196)]:
        model = timm.create_model(name, num_classes=10)
        assert model.pretrained_cfg["input_size"] == (3, 448, 448)
        assert model.patch_embed.num_tokens == tokens
    m = timm.create_model("dart_deit_tiny_patch16_224", num_tokens=392, num_classes=10)
    assert m.patch_embed.num_tokens == 392 and sorted(m.patch_embed.counts) == [19] * 8 + [20] * 12
    assert m.patch_embed.scorer.trunk_name == "mobilenetv3_small_100"
    assert timm.create_model("dart_deit_small_patch16_224").patch_embed.scorer.trunk_name == "mobilenetv3_large_100"
    base = dartok.create_model("vit_micro_patch8", num_tokens=64)
    assert base.pretrained_cfg["input_size"] == (1, 64, 64) and base.patch_embed.num_patches == 64
    with pytest.raises(ValueError, match="square"):
        dartok.create_model("vit_micro_patch8", num_tokens=50)
    d = dartok.create_model("dart_vit_micro_patch8", num_tokens=50)
    assert d.patch_embed.num_tokens == 50


@pytest.mark.parametrize("trunk", sorted(SCORER_TRUNKS))
def test_scorer_trunks(trunk):
    scorer = Scorer(trunk, input_size=64)
    assert scorer.stride == 16 and scorer.grid_size == (4, 4)
    pdf = scorer(torch.rand(3, 3, 100, 80))
    assert pdf.shape == (3, 4, 4)
    torch.testing.assert_close(pdf.sum((1, 2)), torch.ones(3))
    # truncated: blocks after the chosen stage are dropped
    full = timm.create_model(SCORER_TRUNKS[trunk].model_name, features_only=True)
    assert sum(p.numel() for p in scorer.trunk.parameters()) < sum(p.numel() for p in full.parameters())
    tag = f"{SCORER_TRUNKS[trunk].model_name}.{SCORER_TRUNKS[trunk].pretrained_tag}"
    assert tag in timm.list_pretrained(SCORER_TRUNKS[trunk].model_name + "*")
    v2 = Scorer(trunk, head="v2", input_size=64)
    assert v2(torch.rand(2, 3, 64, 64)).shape == (2, 4, 4)


def test_scores_to_pdf_per_sample():
    s = torch.randn(4, 5, 5)
    pdf = scores_to_pdf(s)
    torch.testing.assert_close(pdf.sum((1, 2)), torch.ones(4))
    torch.testing.assert_close(scores_to_pdf(s[1:2] * 3 + 7), pdf[1:2], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(scores_to_pdf(torch.full((1, 3, 3), 2.0)), torch.full((1, 3, 3), 1 / 9))
    img = torch.zeros(1, 3, 32, 32)
    img[..., 8:16, 20:28] = 1.0
    e = edge_pdf(img, (4, 4))
    assert e[0].argmax() in (1 * 4 + 2, 2, 1 * 4 + 3, 3)


@pytest.mark.parametrize("images, match", [
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    (torch.rand(1, 1, 32, 32), "channels"),
    (torch.rand(3, 32, 32), "B×C×H×W"),
    (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "floating"),
])
def test_dart_bad_images(images, match):
    dart = DART(num_tokens=4, patch_size=4, in_chans=3, embed_dim=8, pos_grid=2)
    with pytest.raises(ValueError, match=match):
        dart(images)


def test_dart_bad_pdf_and_config():
    dart = DART(num_tokens=4, patch_size=4, in_chans=3, embed_dim=8, pos_grid=2)
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="B×h×w"):
        dart(x, pdf=torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        dart(x, pdf=-torch.ones(2, 4, 4))
    out = dart(x, pdf=torch.zeros(2, 4, 4))  # all-zero → uniform
    torch.testing.assert_close(out.boxes, dart(x, pdf=torch.ones(2, 4, 4)).boxes)
    with pytest.raises(ValueError, match="num_tokens"):
        DART(num_tokens=0)
    with pytest.raises(ValueError, match="alpha"):
        DART(alpha=1.0)


def test_learned_contrast_lifts_the_paper_normalisation_cap():
    scores = torch.zeros(1, 8, 8)
    scores[0, 2, 3] = 1.0  # one object cell among 64
    paper = scores_to_pdf(scores)
    assert paper.max() / paper.min() < 2.2  # sigmoid(7.9) / sigmoid(-0.13) ≈ 2.1: capped
    sharp = scores_to_pdf(scores, scale=torch.tensor(2.0), bias=torch.tensor(-4.0))
    assert sharp.max() / sharp.min() > 50
    learned = Scorer("mobilenetv3_small", input_size=32)
    assert {"score_scale", "score_bias"} <= {n for n, _ in learned.named_parameters()}
    fixed = Scorer("mobilenetv3_small", input_size=32, learn_contrast=False)
    assert not any("score_" in n for n, _ in fixed.named_parameters())
    x = torch.rand(2, 3, 32, 32)
    fixed.head.load_state_dict(learned.head.state_dict())
    fixed.trunk.load_state_dict(learned.trunk.state_dict())
    torch.testing.assert_close(learned(x), fixed(x))  # identity at initialisation
    learned(x).pow(2).sum().backward()
    assert learned.score_scale.grad is not None and learned.score_bias.grad is not None


def test_patch_timm_keeps_float64_weights_exactly():
    vit = tiny_vit().double()
    with torch.no_grad():  # values float32 cannot hold
        vit.patch_embed.proj.weight.add_(1e-12)
        vit.pos_embed.add_(1e-12)
    proj, pos = vit.patch_embed.proj.weight.clone(), vit.pos_embed[:, 1:].clone()
    model = patch_timm(vit, scorer=None)
    assert model.patch_embed.proj.weight.dtype == torch.float64
    assert torch.equal(model.patch_embed.proj.weight, proj)
    assert torch.equal(model.patch_embed.pos_embed, pos)
