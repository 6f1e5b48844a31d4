"""Vision Mamba and DART Vim (issue 4 §1): registry, glue to DART, hustvl weight loading."""
import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

import dartok
from dartok import DART
from dartok.vim import DartVisionMamba, VisionMamba, convert_vim_state_dict, load_vim_weights, patch_vim

SMALL = dict(embed_dim=16, depth=2)


def small_vim(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_classes=5, drop_path_rate=0.0)
    args.update(kw)
    return VisionMamba(**args)


def hustvl_state_dict(dim=16, depth=2, grid=4, patch=8, chans=3, classes=5, d_state=16, seed=0):
    """A random checkpoint with the key layout of hustvl's v2 Vim (models_mamba.VisionMamba with
    mamba-1p1p1 Mamba(bimamba_type="v2"), RMSNorm without bias), wrapped as released: {"model": ...}."""
    g = torch.Generator().manual_seed(seed)
    inner, rank = 2 * dim, -(-dim // 16)
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, grid * grid + 1, dim),
              "patch_embed.proj.weight": (dim, chans, patch, patch), "patch_embed.proj.bias": (dim,),
              "head.weight": (classes, dim), "head.bias": (classes,), "norm_f.weight": (dim,)}
    for i in range(depth):
        p = f"layers.{i}."
        shapes[p + "norm.weight"] = (dim,)
        for sfx in ("", "_b"):
            shapes[p + f"mixer.conv1d{sfx}.weight"] = (inner, 1, 4)
            shapes[p + f"mixer.conv1d{sfx}.bias"] = (inner,)
            shapes[p + f"mixer.x_proj{sfx}.weight"] = (rank + 2 * d_state, inner)
            shapes[p + f"mixer.dt_proj{sfx}.weight"] = (inner, rank)
            shapes[p + f"mixer.dt_proj{sfx}.bias"] = (inner,)
            shapes[p + f"mixer.D{sfx}"] = (inner,)
        shapes[p + "mixer.A_log"] = shapes[p + "mixer.A_b_log"] = (inner, d_state)
        shapes[p + "mixer.in_proj.weight"] = (2 * inner, dim)
        shapes[p + "mixer.out_proj.weight"] = (dim, inner)
    sd = {k: torch.randn(*s, generator=g) * 0.1 for k, s in shapes.items()}
    return {"model": sd, "epoch": 300}


def test_registered_models_forward_backward():
    names = ["vim_tiny_patch16_224", "vim_small_patch16_224", "vim_micro_patch8",
             "dart_vim_tiny_patch16_224", "dart_vim_small_patch16_224", "dart_vim_micro_patch8"]
    assert set(timm.list_models("*vim_*")) >= set(names)
    for name in names:
        kw = dict(SMALL, num_classes=3)
        if name.startswith("dart_"):
            kw.update(num_tokens=10, img_size=64, scorer_input_size=32)
        else:
            kw.update(img_size=32)
        model = timm.create_model(name, **kw)
        c, h, w = model.pretrained_cfg["input_size"]
        assert (h, w) == ((64, 64) if name.startswith("dart_") else (32, 32))
        x = torch.randn(2, c, h, w)
        out = model(x)
        assert out.shape == (2, 3)
        out.sum().backward()
        assert model.layers[0].mixer.A_b_log.grad is not None and model.cls_token.grad is not None
        if name.startswith("dart_"):
            assert isinstance(model, DartVisionMamba) and model.patch_embed.scorer.head_type == "v2"
            assert model.patch_embed.num_tokens == 10
            assert model.patch_embed.scorer.head.fc1.weight.grad is not None
            assert model.patch_embed.scorer.trunk_name == ("mobilenetv3_large_100" if "small" in name
                                                           else "mobilenetv3_small_100")


def test_registered_configs_sizes():
    tiny = timm.create_model("vim_tiny_patch16_224", depth=1)
    assert (tiny.embed_dim, tiny.patch_embed.patch_size) == (192, (16, 16))
    assert tiny.pretrained_cfg["input_size"] == (3, 224, 224)
    assert tiny.pretrained_cfg["hf_hub_id"] == "hustvl/Vim-tiny-midclstok"
    assert timm.create_model("vim_small_patch16_224", depth=1).embed_dim == 384
    assert len(timm.create_model("vim_tiny_patch16_224", embed_dim=8).layers) == 24
    micro = timm.create_model("vim_micro_patch8")
    assert (micro.embed_dim, len(micro.layers), micro.in_chans, micro.num_classes) == (96, 6, 1, 10)
    assert micro.pretrained_cfg["input_size"] == (1, 48, 48) and micro.patch_embed.num_patches == 36
    dart = timm.create_model("dart_vim_micro_patch8", **SMALL)
    assert dart.pretrained_cfg["input_size"] == (1, 128, 128) and dart.patch_embed.num_tokens == 36


def test_create_model_token_budget_for_plain_and_dart_vim():
    plain = dartok.create_model("vim_micro_patch8", num_tokens=64, **SMALL)
    assert plain.pretrained_cfg["input_size"] == (1, 64, 64) and plain.pos_embed.shape == (1, 65, 16)
    assert plain(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    dart = dartok.create_model("dart_vim_micro_patch8", num_tokens=50, scorer_input_size=32, **SMALL)
    assert dart.patch_embed.num_tokens == 50 and dart.embed(torch.randn(1, 1, 128, 128)).shape == (1, 51, 16)
    with pytest.raises(ValueError, match="square num_tokens"):
        dartok.create_model("vim_micro_patch8", num_tokens=50)


def test_uniform_pdf_dart_vim_equals_plain_vim():
    """With a uniform pdf and no scorer, DART Vim computes exactly what Vim computes on the g·P input."""
    torch.manual_seed(0)
    vim = small_vim().double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref_logits = vim(x)
        ref_tokens = vim.embed(x)
    pos, cls = vim.pos_embed.detach().clone(), vim.cls_token.detach().clone()
    model = patch_vim(vim, scorer=None).eval()
    assert isinstance(model, DartVisionMamba) and isinstance(model.patch_embed, DART)
    torch.testing.assert_close(model.pos_embed, pos[:, 8:9])  # the class entry, index N//2 = 8
    torch.testing.assert_close(model.patch_embed.pos_embed, torch.cat([pos[:, :8], pos[:, 9:]], 1))
    with torch.no_grad():
        out = model.patch_embed(x, pdf=torch.ones(2, 4, 4))
        torch.testing.assert_close(model.embed_tokens(out), ref_tokens, atol=1e-12, rtol=0)
        torch.testing.assert_close(model(x), ref_logits, atol=1e-12, rtol=0)
    assert torch.equal(model.cls_token, cls)
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)


def test_middle_class_token_position_and_readout():
    vim = small_vim(img_size=40).eval()  # 25 patches: class token at 12 of 26
    x = torch.randn(2, 3, 40, 40)
    tokens = vim.embed(x)
    patches = vim.patch_embed(x)
    assert vim.cls_position(25) == 12
    torch.testing.assert_close(tokens[:, 12], (vim.cls_token[0, 0] + vim.pos_embed[0, 12]).expand(2, -1))
    torch.testing.assert_close(tokens[:, :12], patches[:, :12] + vim.pos_embed[:, :12])
    torch.testing.assert_close(tokens[:, 13:], patches[:, 12:] + vim.pos_embed[:, 13:])
    feats = vim.forward_features(x)
    torch.testing.assert_close(vim.forward_head(feats, pre_logits=True), feats[:, 12])
    head_cls = small_vim(use_middle_cls_token=False).eval()
    assert head_cls.cls_position(16) == 0
    dart = patch_vim(small_vim(), num_tokens=11, scorer=None).eval()  # odd budget: class token at 5 of 12
    dtokens = dart.embed(torch.randn(1, 3, 64, 64))
    assert dtokens.shape == (1, 12, 16)
    torch.testing.assert_close(dtokens[0, 5], (dart.cls_token + dart.pos_embed)[0, 0])


def test_plain_vim_tokens_are_row_major():
    vim = small_vim().eval()
    x = torch.randn(1, 3, 32, 32)
    patches = x.unfold(2, 8, 8).unfold(3, 8, 8)  # 1×3×4×4×8×8: (row, col) grid
    rows = [torch.einsum("cpq,dcpq->d", patches[0, :, i, j], vim.patch_embed.proj.weight) + vim.patch_embed.proj.bias
            for i in range(4) for j in range(4)]
    torch.testing.assert_close(vim.patch_embed(x)[0], torch.stack(rows), atol=1e-5, rtol=1e-5)


def test_dart_vim_token_order_is_band_major():
    torch.manual_seed(0)
    model = timm.create_model("dart_vim_micro_patch8", num_tokens=12, bands=3, scorer_input_size=32, **SMALL).eval()
    x = torch.rand(2, 1, 128, 128)
    x[:, :, 10:40, 80:120] += 3.0  # content off-centre: a non-uniform partition
    with torch.no_grad():
        out = model.tokenize(x)
        tokens = model.embed(x)
    boxes = out.boxes
    assert not torch.allclose(boxes[0, :, 2] - boxes[0, :, 0], boxes[0, :1, 2] - boxes[0, :1, 0])  # adaptive
    # band-major: 3 bands of 4 boxes, each band shares its y-range, x increases inside a band
    y0 = boxes[..., 1].view(2, 3, 4)
    x0 = boxes[..., 0].view(2, 3, 4)
    assert torch.allclose(y0, y0[..., :1].expand_as(y0)) and (y0[:, 1:, 0] > y0[:, :-1, 0]).all()
    assert (x0[..., 1:] > x0[..., :-1]).all()
    # the sequence is tokens 0..5, class token, tokens 6..11
    seq = out.tokens + out.pos_embed
    torch.testing.assert_close(tokens[:, :6], seq[:, :6])
    torch.testing.assert_close(tokens[:, 7:], seq[:, 6:])


def test_load_hustvl_checkpoint_into_plain_vim():
    ckpt = hustvl_state_dict()
    vim = small_vim().eval()
    assert set(vim.state_dict()) == set(ckpt["model"])  # same key layout as hustvl
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = vim(x)
    missing, unexpected = load_vim_weights(vim, ckpt)
    assert missing == [] and unexpected == []
    for k, v in vim.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
    with torch.no_grad():
        assert not torch.allclose(vim(x), before)


def test_load_hustvl_checkpoint_into_dart_vim():
    ckpt = hustvl_state_dict()
    src = ckpt["model"]
    model = patch_vim(small_vim(), scorer=dict(trunk="mobilenetv3_small", head="v2", input_size=32)).eval()
    scorer_before = {k: v.clone() for k, v in model.patch_embed.scorer.state_dict().items()}
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    missing, unexpected = load_vim_weights(model, ckpt)
    assert unexpected == [] and all(k.startswith("patch_embed.scorer.") for k in missing)
    torch.testing.assert_close(model.pos_embed, src["pos_embed"][:, 8:9])
    grid = torch.cat([src["pos_embed"][:, :8], src["pos_embed"][:, 9:]], 1)
    torch.testing.assert_close(model.patch_embed.pos_embed, grid)
    torch.testing.assert_close(model.patch_embed.proj.weight, src["patch_embed.proj.weight"])
    for k, v in src.items():
        if k not in ("pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
            assert torch.equal(model.state_dict()[k], v), k
    for k, v in model.patch_embed.scorer.state_dict().items():
        assert torch.equal(v, scorer_before[k]), k  # the scorer keeps its weights
    with torch.no_grad():
        assert not torch.allclose(model(x), before)


def test_load_resamples_position_grid_and_keeps_the_class_entry():
    ckpt = hustvl_state_dict(grid=4)
    src_pos = ckpt["model"]["pos_embed"]
    grid = torch.cat([src_pos[:, :8], src_pos[:, 9:]], 1)
    vim = small_vim(img_size=48)  # 6×6 grid: class entry at 18 of 37
    load_vim_weights(vim, ckpt)
    expected = resample_abs_pos_embed(grid, new_size=[6, 6], old_size=[4, 4], num_prefix_tokens=0)
    torch.testing.assert_close(vim.pos_embed[:, 18], src_pos[:, 8])
    torch.testing.assert_close(torch.cat([vim.pos_embed[:, :18], vim.pos_embed[:, 19:]], 1), expected)
    dart = patch_vim(small_vim(), scorer=None)  # DART map 4×4 from a 6×6 checkpoint grid
    big = {"model": dict(vim.state_dict())}
    load_vim_weights(dart, big)
    torch.testing.assert_close(dart.pos_embed[:, 0], src_pos[:, 8])
    torch.testing.assert_close(dart.patch_embed.pos_embed, resample_abs_pos_embed(
        expected, new_size=[4, 4], old_size=[6, 6], num_prefix_tokens=0))
    # a DART-layout state dict passes through
    assert convert_vim_state_dict(dart.state_dict(), dart).keys() == dart.state_dict().keys()


def test_load_rejects_mismatched_checkpoints():
    vim = small_vim()
    bad = hustvl_state_dict(dim=24)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_vim_weights(vim, bad)
    partial = hustvl_state_dict()
    partial["model"].pop("layers.1.mixer.A_b_log")
    with pytest.raises(ValueError, match="missing.*A_b_log"):
        load_vim_weights(vim, partial)
    load_vim_weights(vim, partial, strict=False)
    odd = hustvl_state_dict()
    odd["model"]["pos_embed"] = odd["model"]["pos_embed"][:, :-2]
    with pytest.raises(ValueError, match="not a square grid"):
        convert_vim_state_dict(odd, vim)


def test_vim_input_and_option_errors():
    vim = small_vim()
    with pytest.raises(ValueError, match="this Vim takes"):
        vim(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="channels"):
        vim(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="B×C×H×W"):
        vim(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="if_rope=True is not supported"):
        small_vim(if_rope=True)
    with pytest.raises(ValueError, match="final_pool_type"):
        small_vim(final_pool_type="max")
    with pytest.raises(TypeError, match="VisionMamba"):
        patch_vim(torch.nn.Linear(2, 2))
    dart = patch_vim(small_vim(), scorer=None)
    with pytest.raises(ValueError, match="already has a DART"):
        patch_vim(dart)


def test_no_class_token_pools_by_mean():
    vim = small_vim(if_cls_token=False).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = vim.forward_features(x)
    assert feats.shape == (2, 16, 16)
    torch.testing.assert_close(vim.forward_head(feats, pre_logits=True), feats.mean(1))
    dart = patch_vim(vim, scorer=None).eval()
    assert dart.pos_embed is None
    with torch.no_grad():
        assert dart.embed(torch.randn(2, 3, 64, 64)).shape == (2, 16, 16)


def test_hustvl_initialisation():
    torch.manual_seed(0)
    vim = small_vim(depth=4)
    assert vim.no_weight_decay() == {"pos_embed", "cls_token"}
    assert patch_vim(small_vim(), scorer=None).no_weight_decay() >= {"patch_embed.pos_embed"}
    for layer in vim.layers:
        m = layer.mixer
        assert m.bimamba_type == "v2" and m.if_devide_out
        assert torch.equal(m.D_b.data, torch.ones_like(m.D_b))
        assert float(torch.nn.functional.softplus(m.dt_proj.bias.detach()).max()) <= 0.1 + 1e-6  # not zeroed
    # out_proj: kaiming-uniform(a=√5) scaled by 1/√depth → |w| ≤ 1/√fan_in/√depth
    bound = (1 / 32) ** 0.5 / 4 ** 0.5
    assert all(float(layer.mixer.out_proj.weight.detach().abs().max()) <= bound + 1e-6 for layer in vim.layers)
    assert float(vim.head.bias.detach().abs().max()) == 0.0 and 0.005 < float(vim.pos_embed.detach().std()) < 0.04


def test_patch_vim_keeps_float64_weights_exactly():
    """The tokenizer moves to the model's dtype before the weights are copied (no float32 round trip)."""
    vim = small_vim().double()
    with torch.no_grad():  # values float32 cannot hold
        vim.patch_embed.proj.weight.add_(1e-12)
        vim.pos_embed.add_(1e-12)
    proj, pos = vim.patch_embed.proj.weight.clone(), vim.pos_embed.clone()
    model = patch_vim(vim, scorer=None)
    assert model.patch_embed.proj.weight.dtype == torch.float64
    assert torch.equal(model.patch_embed.proj.weight, proj)
    assert torch.equal(model.patch_embed.pos_embed, torch.cat([pos[:, :8], pos[:, 9:]], 1))
    assert torch.equal(model.pos_embed, pos[:, 8:9])
