"""VideoMamba (issue 4 §1): OpenGVLab's layout and token order, registry, errors."""
import pytest
import timm
import torch
import torch.nn.functional as F

from dartok.videomamba import VideoMamba

SMALL = dict(img_size=16, patch_size=8, embed_dim=16, depth=2, num_classes=3, num_frames=3, drop_path_rate=0.0)


def opengvlab_embed(model: VideoMamba, x: torch.Tensor) -> torch.Tensor:
    """OpenGVLab video_sm VisionMamba.forward_features up to the Mamba layers (einops spelled out)."""
    x = model.patch_embed(x)
    B, C, T, H, W = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(B * T, H * W, C)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    x = x + model.pos_embed
    cls_tokens = x[:B, :1, :]
    x = x[:, 1:]
    x = x.reshape(B, T, H * W, C).permute(0, 2, 1, 3).reshape(B * H * W, T, C)  # '(b t) n m -> (b n) t m'
    x = x + model.temporal_pos_embedding
    x = x.reshape(B, H * W, T, C).permute(0, 2, 1, 3).reshape(B, T * H * W, C)  # '(b n) t m -> b (t n) m'
    return torch.cat((cls_tokens, x), dim=1)


def test_embed_matches_opengvlab_and_is_frame_major():
    torch.manual_seed(0)
    model = VideoMamba(**SMALL).eval()
    with torch.no_grad():
        model.cls_token.normal_()
        model.temporal_pos_embedding.normal_()
    x = torch.randn(2, 3, 3, 16, 16)
    tokens = model.embed(x)
    assert tokens.shape == (2, 1 + 3 * 4, 16)
    torch.testing.assert_close(tokens, opengvlab_embed(model, x))
    # token 1 + t·g² + i·g + j is patch (i, j) of frame t
    w = model.patch_embed.proj.weight[:, :, 0]
    for t in range(3):
        frame = F.conv2d(x[:, :, t], w, model.patch_embed.proj.bias, stride=8).flatten(2).transpose(1, 2)  # row-major
        expected = frame + model.pos_embed[:, 1:] + model.temporal_pos_embedding[:, t:t + 1]
        torch.testing.assert_close(tokens[:, 1 + 4 * t:1 + 4 * (t + 1)], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens[:, 0], (model.cls_token + model.pos_embed[:, :1])[0].expand(2, -1))


def test_forward_backward_and_class_token_readout():
    model = VideoMamba(**SMALL)
    x = torch.randn(2, 3, 3, 16, 16)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    assert model.temporal_pos_embedding.grad is not None and model.layers[1].mixer.A_b_log.grad is not None
    model.eval()
    feats = model.forward_features(x)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats[:, 0])
    # VideoMamba adds the two scan directions (no halving)
    assert all(layer.mixer.bimamba_type == "v2" and not layer.mixer.if_devide_out for layer in model.layers)


def test_opengvlab_key_layout_and_init():
    model = VideoMamba(**SMALL)
    sd = model.state_dict()
    assert sd["patch_embed.proj.weight"].shape == (16, 3, 1, 8, 8)
    assert sd["pos_embed"].shape == (1, 5, 16) and sd["temporal_pos_embedding"].shape == (1, 3, 16)
    assert sd["cls_token"].shape == (1, 1, 16) and "norm_f.weight" in sd and "head.weight" in sd
    assert {k.split(".", 3)[-1] for k in sd if k.startswith("layers.0.mixer.")} >= {
        "A_log", "A_b_log", "D", "D_b", "in_proj.weight", "out_proj.weight", "conv1d_b.weight", "x_proj_b.weight",
        "dt_proj_b.bias"}
    # OpenGVLab: segm_init_weights zeroes every Linear bias (the Δ bias too), cls / temporal stay zero
    assert torch.equal(model.layers[0].mixer.dt_proj.bias.detach(), torch.zeros(32))
    assert torch.equal(model.cls_token.detach(), torch.zeros(1, 1, 16))
    assert torch.equal(model.temporal_pos_embedding.detach(), torch.zeros(1, 3, 16))
    assert model.no_weight_decay() == {"pos_embed", "cls_token", "temporal_pos_embedding"}
    tubelet = VideoMamba(**{**SMALL, "num_frames": 4, "kernel_size": 2})
    assert tubelet.temporal_pos_embedding.shape == (1, 2, 16)
    assert tubelet.embed(torch.randn(1, 3, 4, 16, 16)).shape == (1, 1 + 2 * 4, 16)


def test_registered_models():
    micro = timm.create_model("videomamba_micro_patch8")
    assert (micro.embed_dim, len(micro.layers), micro.in_chans) == (96, 6, 1)
    assert (micro.num_frames, micro.num_classes) == (4, 10)
    assert micro.pretrained_cfg["input_size"] == (1, 48, 48)
    timm.models.PretrainedCfg(**micro.pretrained_cfg)  # a valid timm cfg (num_frames is a model argument)
    small_micro = timm.create_model("videomamba_micro_patch8", embed_dim=16, depth=1)
    out = small_micro(torch.randn(2, 1, 4, 48, 48))
    assert out.shape == (2, 10)
    out.sum().backward()
    tiny = timm.create_model("videomamba_tiny_patch16_224", embed_dim=16, depth=1, img_size=32)
    assert (tiny.num_frames, tiny.patch_size, tiny.pretrained_cfg["input_size"]) == (8, 16, (3, 32, 32))
    assert tiny(torch.randn(1, 3, 8, 32, 32)).shape == (1, 1000)
    assert timm.create_model("videomamba_tiny_patch16_224", depth=1).embed_dim == 192


def test_video_input_errors():
    model = VideoMamba(**SMALL)
    with pytest.raises(ValueError, match="video has 2 frames, the model takes num_frames=3"):
        model(torch.randn(1, 3, 2, 16, 16))
    with pytest.raises(ValueError, match="rank 5"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 3, 16, 16))
    with pytest.raises(ValueError, match="frames are"):
        model(torch.randn(1, 3, 3, 24, 24))
    with pytest.raises(ValueError, match="multiple of kernel_size"):
        VideoMamba(**{**SMALL, "num_frames": 3, "kernel_size": 2})


def test_embed_is_the_only_tokenizer_hook():
    """A subclass that overrides only embed() changes the tokens the Mamba layers see."""

    class Shuffled(VideoMamba):
        def embed(self, x):
            tokens = super().embed(x)
            return torch.cat([tokens[:, :1], tokens[:, 1:].flip(1)], dim=1)

    torch.manual_seed(0)
    base = VideoMamba(**SMALL).eval()
    other = Shuffled(**SMALL).eval()
    other.load_state_dict(base.state_dict())
    x = torch.randn(1, 3, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(base(x), other(x))
        torch.testing.assert_close(other.forward_features(x), base.forward_layers(other.embed(x)))
