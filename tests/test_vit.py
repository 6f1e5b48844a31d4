"""DART on timm ViTs: every prefix-token layout timm has (issue 10, numerics item 1)."""
import pytest
import timm
import torch

import dartok  # noqa: F401  (registers the models)
from dartok import patch_timm

SMALL = dict(depth=2, embed_dim=48, num_heads=2, num_classes=7)


@pytest.mark.parametrize("name, kwargs", [
    ("deit_tiny_patch16_224", {}),  # class token with position entry
    ("deit_tiny_distilled_patch16_224", {}),  # class + distillation token, eval logits = mean of both heads
    ("vit_small_patch16_224", dict(reg_tokens=4, no_embed_class=True)),  # registers, prefix without position
    ("vit_small_patch16_224", dict(reg_tokens=2)),  # registers with position entries
    ("vit_small_patch16_224", dict(no_embed_class=True)),  # class token without position entry
    ("vit_small_patch16_224", dict(class_token=False, global_pool="avg")),  # no prefix at all
])
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
