"""Image Vim weights inflated into VideoMamba (issue 11 item 6; OpenGVLab's inflate_weight)."""
from __future__ import annotations

import dartok  # noqa: F401  (before timm: torchvision shim)
import pytest
import torch

from dartok.models import create_model
from dartok.models.videomamba import VIDEO_INIT_KEYS, inflate_image_state_dict, load_image_weights


def _f64(name, **kw):
    torch.manual_seed(0)
    return create_model(name, **kw).double().eval()


@pytest.mark.parametrize("image, video", [("vim_micro_patch8", "videomamba_micro_patch8"),
                                          ("dart_vim_micro_patch8", "dart_videomamba_micro_patch8")])
def test_every_key_is_mapped_except_the_temporal_embedding(image, video):
    img, vid = create_model(image), create_model(video)
    before = {k: v.clone() for k, v in vid.state_dict().items()}
    report = load_image_weights(vid, img)
    assert [k.rsplit(".", 1)[-1] for k in report.missing] == ["temporal_pos_embedding"]
    assert set(report.missing) <= set(VIDEO_INIT_KEYS) and report.unexpected == []
    # every image tensor but the image scorer's auxiliary CAM head (docs/method.md §10; none on video)
    cam = [k for k in img.state_dict() if k.startswith("patch_embed.scorer.cam.")]
    assert len(cam) == (2 if image.startswith("dart_") else 0)
    assert len(report.loaded) == len(vid.state_dict()) - 1 == len(img.state_dict()) - len(cam)
    assert any("CAM" in note for note in report.notes) == bool(cam)
    sd_img, sd_vid = img.state_dict(), vid.state_dict()
    assert torch.equal(sd_vid[report.missing[0]], before[report.missing[0]])  # zeros, as initialised
    assert torch.equal(sd_vid["norm_f.weight"], sd_img["norm_f.weight"])
    assert torch.equal(sd_vid["head.weight"], sd_img["head.weight"])
    assert torch.equal(sd_vid["layers.3.mixer.in_proj.weight"], sd_img["layers.3.mixer.in_proj.weight"])
    # Vim averages its two scan directions, VideoMamba adds them: out_proj carries the 1/2
    assert torch.equal(sd_vid["layers.3.mixer.out_proj.weight"], sd_img["layers.3.mixer.out_proj.weight"] / 2)
    if image.startswith("dart_"):
        assert torch.equal(sd_vid["patch_embed.scorer.score_bias"], sd_img["patch_embed.scorer.score_bias"])


def test_one_frame_video_model_computes_the_image_model():
    """A plain Vim with its class token at the head and a 1-frame VideoMamba: the same logits."""
    img = _f64("vim_micro_patch8", use_middle_cls_token=False)
    vid = _f64("videomamba_micro_patch8", num_frames=1)
    load_image_weights(vid, img)
    x = torch.randn(3, 1, 48, 48, dtype=torch.float64)
    assert torch.equal(vid(x.unsqueeze(2)), img(x))


def test_one_frame_dart_video_model_computes_the_dart_image_model():
    img = _f64("dart_vim_micro_patch8", scorer=None, use_middle_cls_token=False, img_size=48)
    vid = _f64("dart_videomamba_micro_patch8", scorer=None, num_frames=1, img_size=48, num_tokens=36)
    load_image_weights(vid, img)
    x = torch.rand(2, 1, 48, 48, dtype=torch.float64)
    assert torch.allclose(vid(x.unsqueeze(2)), img(x), atol=1e-12)


def test_each_frame_gets_the_image_models_patch_tokens():
    """Middle class token, 4 frames: another sequence, but the Conv3d (tubelet 1) is the Conv2d on
    every frame, the grid positions are the image's and the class token keeps its entry."""
    img = _f64("vim_micro_patch8")  # class token at index 18 of 37
    vid = _f64("videomamba_micro_patch8")
    load_image_weights(vid, img)
    clip = torch.randn(2, 1, 4, 48, 48, dtype=torch.float64)
    tokens = vid.embed(clip)
    for t in range(4):
        ref = img.embed(clip[:, :, t])
        assert torch.equal(tokens[:, 1 + 36 * t:1 + 36 * (t + 1)], torch.cat([ref[:, :18], ref[:, 19:]], 1))
        assert torch.equal(tokens[:, 0], ref[:, 18])


def test_tubelet_inflation_centre_or_mean():
    img = create_model("vim_micro_patch8")
    w = img.patch_embed.proj.weight.detach()
    vid = create_model("videomamba_micro_patch8", kernel_size=2)
    centre = inflate_image_state_dict(img, vid)["patch_embed.proj.weight"]
    assert centre.shape == (96, 1, 2, 8, 8) and torch.equal(centre[:, :, 1], w) and not centre[:, :, 0].any()
    mean = inflate_image_state_dict(img, vid, center=False)["patch_embed.proj.weight"]
    assert torch.allclose(mean.sum(2), w)


def test_grids_resampled_head_dropped_and_crossings():
    img = create_model("vim_micro_patch8", img_size=32, num_classes=5)  # 4x4 grid, 5 classes
    vid = create_model("videomamba_micro_patch8")  # 6x6, 10 classes
    report = load_image_weights(vid, img)
    assert any("4x4 -> 6x6" in n for n in report.notes) and any("head dropped" in n for n in report.notes)
    assert set(report.missing) == {"temporal_pos_embedding", "head.weight", "head.bias"}
    # DART image -> plain / oracle video: the scorer is dropped; plain image -> DART video: scorer at init
    dart_img = create_model("dart_vim_micro_patch8")
    for video in (create_model("videomamba_micro_patch8"),
                  create_model("dart_videomamba_micro_patch8", score_source="oracle")):
        r = load_image_weights(video, dart_img)
        assert any("scorer dropped" in n for n in r.notes) and r.unexpected == []
    r = load_image_weights(create_model("dart_videomamba_micro_patch8"), create_model("vim_micro_patch8"))
    assert any(k.startswith("patch_embed.scorer.") for k in r.missing)


def test_state_dict_input_uses_the_declared_layout():
    img = _f64("vim_micro_patch8", use_middle_cls_token=False)
    vid = _f64("videomamba_micro_patch8", num_frames=1)
    load_image_weights(vid, {"model": img.state_dict()}, middle_cls_token=False)
    x = torch.randn(1, 1, 48, 48, dtype=torch.float64)
    assert torch.equal(vid(x.unsqueeze(2)), img(x))


def test_errors_name_what_does_not_fit():
    vid = create_model("videomamba_micro_patch8")
    with pytest.raises(ValueError, match=r"shape mismatch for cls_token: \(1, 1, 64\) vs model \(1, 1, 96\)"):
        load_image_weights(vid, create_model("vim_micro_patch8", embed_dim=64))
    with pytest.raises(ValueError, match="missing keys layers.5"):
        load_image_weights(vid, create_model("vim_micro_patch8", depth=5))
    with pytest.raises(ValueError, match="a video model's already"):
        load_image_weights(vid, create_model("videomamba_micro_patch8").state_dict())
    with pytest.raises(ValueError, match="not a Vision Mamba state dict"):
        load_image_weights(vid, create_model("vit_micro_patch8").state_dict())
    with pytest.raises(ValueError, match="inflation takes a"):
        load_image_weights(vid, create_model("vit_micro_patch8"))
    with pytest.raises(ValueError, match="no class token"):
        load_image_weights(vid, create_model("vim_micro_patch8", if_cls_token=False))
