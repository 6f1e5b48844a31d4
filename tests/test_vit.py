"""DART on timm ViTs: every prefix-token layout timm has (issue 10, numerics item 1)."""
import pytest
import timm
import torch

import dartok  # noqa: F401  (registers the models)
from dartok import patch_timm

SMALL = dict(depth=2, embed_dim=48, num_heads=2, num_classes=7)


LAYOUTS = pytest.mark.parametrize("name, kwargs", [
    ("deit_tiny_patch16_224", {}),  # class token with position entry
    ("deit_tiny_distilled_patch16_224", {}),  # class + distillation token, eval logits = mean of both heads
    ("vit_small_patch16_224", dict(reg_tokens=4, no_embed_class=True)),  # registers, prefix without position
    ("vit_small_patch16_224", dict(reg_tokens=2)),  # registers with position entries
    ("vit_small_patch16_224", dict(no_embed_class=True)),  # class token without position entry
    ("vit_small_patch16_224", dict(class_token=False, global_pool="avg")),  # no prefix at all
])


@LAYOUTS
def test_uniform_pdf_reproduces_every_prefix_layout(name, kwargs):
    """With a uniform pdf the patched model's logits equal the original's on a g·P input.

    The distilled DeiT used to get ``cls_token + dist_pos`` in its distillation slot (the 1×1
    prefix broadcast over the 1×2 position entries): logits off by ~1e-2.
    """
    torch.manual_seed(0)
    vit = timm.create_model(name, pretrained=False, img_size=64, **SMALL, **kwargs).double().eval()
    with torch.no_grad():  # every prefix token and position entry distinct and non-zero
        for p in (vit.cls_token, getattr(vit, "dist_token", None), vit.reg_token, vit.pos_embed):
            if p is not None:
                p.normal_()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = vit(x)
        ref_tokens = vit.patch_embed(x)
        model = patch_timm(vit, scorer=None).eval()
        got = model(x)
        uniform = model.tokenize(x, pdf=torch.ones(2, 4, 4, dtype=torch.float64))
    assert isinstance(model, timm.models.vision_transformer.VisionTransformer)
    torch.testing.assert_close(uniform.tokens, ref_tokens, atol=1e-10, rtol=0)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


@LAYOUTS
def test_timm_state_dict_of_every_prefix_layout_loads(name, kwargs):
    """``load_vit_weights`` splits a plain checkpoint's pos_embed by the same layout rule."""
    from dartok import load_vit_weights

    torch.manual_seed(0)
    vit = timm.create_model(name, pretrained=False, img_size=64, **SMALL, **kwargs).eval()
    with torch.no_grad():
        for p in (vit.cls_token, getattr(vit, "dist_token", None), vit.reg_token, vit.pos_embed):
            if p is not None:
                p.normal_()
    model = patch_timm(timm.create_model(name, pretrained=False, img_size=64, **SMALL, **kwargs), scorer=None)
    missing, unexpected = load_vit_weights(model.eval(), vit.state_dict())
    assert not missing and not unexpected
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), vit(x), atol=1e-5, rtol=1e-5)


def tiny_vit(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2, num_classes=5)
    args.update(kw)
    return timm.models.vision_transformer.VisionTransformer(**args)


def test_patch_timm_refuses_layouts_it_cannot_reproduce():
    from functools import partial

    from timm.layers import HybridEmbed
    from timm.models.deit import VisionTransformerDistilled

    with pytest.raises(ValueError, match="register tokens"):
        patch_timm(VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2,
                                              reg_tokens=2), scorer=None)

    class OwnPrefix(timm.models.vision_transformer.VisionTransformer):
        def _pos_embed(self, x):  # a layout patch_timm cannot know
            return super()._pos_embed(x)

    with pytest.raises(ValueError, match="_pos_embed"):
        patch_timm(OwnPrefix(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2), scorer=None)
    hybrid = tiny_vit(embed_layer=partial(HybridEmbed, backbone=torch.nn.Conv2d(3, 8, 4, 4)), patch_size=2)
    with pytest.raises(ValueError, match="plain patch projection"):
        patch_timm(hybrid, scorer=None)  # would silently drop the CNN stem
    bad = tiny_vit()
    bad.num_prefix_tokens = 2  # prefix tokens and position entries that do not add up
    with pytest.raises(ValueError, match="prefix-token layout"):
        patch_timm(bad, scorer=None)
    assert not dartok.is_dart(bad)  # refused before anything moved


def test_user_subclass_keeps_its_methods_and_the_mixin():
    class MyViT(timm.models.vision_transformer.VisionTransformer):
        def extra(self):
            return "mine"

    model = patch_timm(MyViT(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2), scorer=None)
    assert type(model).__name__ == "DartMyViT" and model.extra() == "mine"
    assert isinstance(model, dartok.models.DartVisionTransformer) and isinstance(model, MyViT)
    assert type(patch_timm(MyViT(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2),
                           scorer=None)) is type(model)  # cached class
    assert model.no_weight_decay() == {"pos_embed", "cls_token", "patch_embed.pos_embed"}


def test_init_weights_spares_the_scorer_trunk_in_every_family():
    """The mixin's init takes the trunk out; a Vim's own init used to re-draw it (segm_init_weights)."""
    from dartok.models import DartVisionMamba, VisionMamba, patch_vim

    vim = patch_vim(VisionMamba(img_size=32, patch_size=8, depth=1, embed_dim=16, num_classes=3),
                    scorer=dict(trunk="mobilenetv3_small", head="v2", input_size=32))
    assert isinstance(vim, DartVisionMamba)
    for model in (vim, patch_timm(tiny_vit(), scorer=dict(trunk="mobilenetv3_small", input_size=32))):
        trunk = model.patch_embed.scorer.trunk
        before = {k: v.clone() for k, v in trunk.state_dict().items()}
        head = model.head.weight.clone()
        model.init_weights()
        assert model.patch_embed.scorer.trunk is trunk
        assert all(torch.equal(v, before[k]) for k, v in trunk.state_dict().items())
        assert not torch.equal(model.head.weight, head)  # the backbone's init did run
