"""timm's conventions where dartok's models are particular (issue 12 §3).

``tests/test_timm_models.py`` sweeps every registered model through timm's model API (forward /
backward, cfg, classifier, intermediates, features_only, FX, checkpointing, layer decay,
TorchScript); this file covers what is particular to a family or to DART: the registered
``pretrained_cfg`` of each name and the ``save_for_hf`` → ``local-dir:`` / ``hf-hub:`` round
trip, timm's offline weights route (``pretrained_cfg_overlay=dict(file=...)``),
``pretrained=True`` without a network, the NCHW maps of DART tokens, the Vim / VideoMamba
heads, ``torch.export``, ``torch.compile(fullgraph=True)`` and ONNX against eager, and the
static selective scan. Models are two blocks deep with 16 tokens and 64² inputs; the warp model
(``dart_warp_resnet10t``) warps 128² to 64² (16 boxes).
"""
import logging
import time

import pytest
import torch

import dartok
import timm
from dartok.models import _pretrained, tokens_to_feature_map
from dartok.ops.selective_scan import selective_scan_ref, selective_scan_static
from timm.models import save_for_hf

MODELS = sorted(n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("dartok."))
MICRO = [n for n in MODELS if "_micro_" in n]
DART_MODELS = [n for n in MODELS if n.startswith("dart_")]
WARP = "dart_warp_resnet10t"


def small(name: str, **kwargs) -> torch.nn.Module:
    """A two-block version of a registered model (16 tokens, 64² for DART), eval mode, seeded."""
    torch.manual_seed(0)
    kw = dict(depth=2)
    if name.startswith("dart_warp_"):  # the CNN as it is: no depth
        kw = dict(warp_size=64, num_tokens=16, scorer_input_size=64)
    elif name.startswith("dart_"):
        kw.update(num_tokens=16, img_size=64, scorer_input_size=64)
    return timm.create_model(name, **{**kw, **kwargs}).eval()


def example(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    c, h, w = model.pretrained_cfg["input_size"]
    frames = getattr(model, "num_frames", None)
    shape = (batch, c, frames, h, w) if frames else (batch, c, h, w)
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty hub / torch-hub cache and no host reachable (a check that a test never touches the net)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(_pretrained, "_reachable", lambda host, *a, **k: False)


# ----------------------------------------------------------------------------- cfg and round trips

@pytest.mark.parametrize("name", MODELS)
def test_registered_cfg_is_the_models_own(name):
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.architecture == name
    if name.startswith("dart_"):  # no backbone weights behind the DART name (DeiT's hub id was there)
        assert not cfg.has_weights


@pytest.mark.parametrize("name", MICRO + [WARP])
def test_save_for_hf_local_dir_round_trip(name, tmp_path, no_network):
    """save_for_hf → create_model('local-dir:...'): the same class, options, weights and outputs."""
    kwargs = dict(num_classes=3)
    if name == WARP:
        kwargs.update(num_tokens=64, unwarp_features=True, antialias=True)
    elif name.startswith("dart_"):
        kwargs.update(num_tokens=12, antialias=False)
    model = small(name, **kwargs)
    save_for_hf(model, tmp_path / "saved")
    again = timm.create_model(f"local-dir:{tmp_path / 'saved'}", pretrained=True).eval()
    assert type(again) is type(model) and again.pretrained_cfg["architecture"] == name
    assert again.state_dict().keys() == model.state_dict().keys()
    if name == WARP:
        assert again.patch_embed.grid == (8, 8) and again.patch_embed.antialias and again.unwarp_features
    elif name.startswith("dart_"):
        assert again.patch_embed.num_tokens == 12 and not again.patch_embed.antialias
    x = example(model)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    fresh = timm.create_model(f"local-dir:{tmp_path / 'saved'}")  # the architecture alone, no weights
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_uniform_dart_model_round_trips_without_a_scorer(tmp_path, no_network):
    """dartok.create_model(..., scorer=None) (timm drops None kwargs) is saved and rebuilt scorer-less."""
    model = dartok.create_model("dart_vit_micro_patch8", num_tokens=16, scorer=None, depth=2).eval()
    save_for_hf(model, tmp_path / "saved")
    again = timm.create_model(f"local-dir:{tmp_path / 'saved'}", pretrained=True).eval()
    assert again.patch_embed.scorer is None
    x = torch.rand(2, 1, 80, 80)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_save_for_hf_hf_hub_round_trip(tmp_path, monkeypatch):
    """create_model('hf-hub:...') of a saved DART model, served from a (pre-filled, offline) hub cache."""
    from huggingface_hub import constants
    model = small("dart_vim_micro_patch8", num_classes=4)
    save_for_hf(model, tmp_path / "saved", safe_serialization=True)
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--someone--dart-vim-micro"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots").mkdir()
    (tmp_path / "saved").rename(repo / "snapshots" / revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    again = timm.create_model("hf-hub:someone/dart-vim-micro", pretrained=True).eval()
    assert type(again) is type(model) and again.num_classes == 4
    x = example(model)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["dart_vit_micro_patch8", "dart_videomamba_micro_patch8"])
def test_pretrained_cfg_overlay_file_loads_offline(name, tmp_path, no_network):
    """timm's offline weights route: pretrained=True with pretrained_cfg_overlay=dict(file=...)."""
    model = small(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    loaded = small(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "weights.pth")))
    assert loaded.pretrained_cfg["architecture"] == name
    x = example(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_overlay_file_with_a_plain_backbone_checkpoint(tmp_path, no_network, caplog):
    """A plain ViT checkpoint through the file route: mapped onto the DART layout, the scorer kept at init."""
    vit = small("vit_micro_patch8")
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    with caplog.at_level(logging.WARNING):
        dart = small("dart_vit_micro_patch8", pretrained=True,
                     pretrained_cfg_overlay=dict(file=str(tmp_path / "vit.pth")))
    assert "patch_embed.scorer" in caplog.text
    torch.testing.assert_close(dart.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    torch.testing.assert_close(dart.patch_embed.pos_embed, vit.pos_embed[:, 1:])  # the 6×6 grid, as the ViT's
    torch.testing.assert_close(dart.pos_embed, vit.pos_embed[:, :1])


@pytest.mark.parametrize("name", ["dart_deit_tiny_patch16_224", "dart_vim_tiny_patch16_224", "vim_tiny_patch16_224"])
def test_pretrained_without_network_fails_fast_naming_the_model(name, no_network):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=f"{name} needs weights that are not in the local cache.*cannot be reached"):
        timm.create_model(name, pretrained=True)
    assert time.perf_counter() - start < 10  # huggingface_hub's retries took 23-47 s


def test_pretrained_offline_mode_and_missing_weights(no_network, monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="dart_deit_tiny_patch16_224 needs weights.*HF_HUB_OFFLINE"):
        timm.create_model("dart_deit_tiny_patch16_224", pretrained=True)
    with pytest.raises(RuntimeError, match="No pretrained weights exist for dart_vit_micro_patch8"):
        timm.create_model("dart_vit_micro_patch8", pretrained=True)
    with pytest.raises(RuntimeError, match="dart_vit_micro_patch8.*does not exist"):
        timm.create_model("dart_vit_micro_patch8", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "missing.pth")))


def test_reachable_gives_up_within_its_timeout():
    import socket
    with socket.socket() as s:  # a port that was free a moment ago: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not _pretrained._reachable("127.0.0.1", port, timeout=1.0)


# ----------------------------------------------------------------------------- features

def test_tokens_to_feature_map_takes_the_box_over_each_cell_centre():
    # two bands: top band one wide box, bottom band two boxes split at x = 0.25
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 0.6], [0.0, 0.6, 0.25, 1.0], [0.25, 0.6, 1.0, 1.0]]])
    tokens = torch.tensor([[[1.0], [2.0], [3.0]]])
    fmap = tokens_to_feature_map(tokens, boxes, (2, 2))  # centres at y 0.25, 0.75 and x 0.25, 0.75
    assert fmap.shape == (1, 1, 2, 2)
    assert fmap[0, 0].tolist() == [[1.0, 1.0], [3.0, 3.0]]  # x = 0.25 starts the third box (half-open)
    assert tokens_to_feature_map(tokens, boxes, (5, 4))[0, 0, :, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("name", ["dart_vit_micro_patch8", "dart_vim_micro_patch8"])
def test_uniform_dart_intermediates_are_the_token_grid(name):
    """With a uniform pdf and N = R·C the NCHW map is the NLC tokens on their R×C grid."""
    model = small(name, scorer=None)
    x = example(model)
    with torch.no_grad():
        final, nchw = model.forward_intermediates(x, indices=[0, 1])
        nlc = model.forward_intermediates(x, indices=[0, 1], output_fmt="NLC", intermediates_only=True)
        torch.testing.assert_close(final, model.forward_features(x))
    for m, t in zip(nchw, nlc):
        assert m.shape == (2, model.embed_dim, 4, 4) and t.shape == (2, 16, model.embed_dim)
        torch.testing.assert_close(m, t.transpose(1, 2).reshape(2, -1, 4, 4))
    features = timm.create_model(name, features_only=True, out_indices=(-1,), depth=2, num_tokens=16, img_size=64,
                                 scorer_input_size=64)
    assert features.feature_info.channels() == [model.embed_dim]
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", ["vim_micro_patch8", "videomamba_micro_patch8"])
def test_mamba_last_normed_intermediate_is_the_final_feature(name):
    model = small(name)
    x = example(model)
    with torch.no_grad():
        final, (last,) = model.forward_intermediates(x, indices=1, norm=True, output_fmt="NLC",
                                                     return_prefix_tokens=True)
    cls = model.cls_position(final.shape[1] - 1)
    torch.testing.assert_close(last[1], final[:, cls:cls + 1])
    torch.testing.assert_close(last[0], torch.cat([final[:, :cls], final[:, cls + 1:]], dim=1))


@pytest.mark.parametrize("name", ["vim_micro_patch8", "dart_videomamba_micro_patch8"])
def test_mamba_global_pool_and_head_hidden_size(name):
    model = small(name, global_pool="avg")
    x = example(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    cls = model.cls_position(feats.shape[1] - 1)
    torch.testing.assert_close(pooled, torch.cat([feats[:, :cls], feats[:, cls + 1:]], dim=1).mean(1))
    assert model.head_hidden_size == pooled.shape[-1] == model.num_features
    model.reset_classifier(0, "")
    assert model(x).shape == feats.shape
    with pytest.raises(ValueError, match="global_pool must be one of"):
        small(name, global_pool="max")


# ----------------------------------------------------------------------------- graph capture

@pytest.mark.parametrize("name", ["dart_vit_micro_patch8", "dart_vim_micro_patch8", "dart_videomamba_micro_patch8", WARP])
def test_torch_export_matches_eager(name):
    """Export (the scorer, the partition and the selective scan included), run the program, compare."""
    model = small(name)
    x = example(model)
    with torch.no_grad():
        expected = model(x)
        program = torch.export.export(model, (x,))
        torch.testing.assert_close(program.module()(x), expected, rtol=1e-4, atol=1e-5)
        other = example(model, batch=2) * 0.5  # a second batch through the same program
        torch.testing.assert_close(program.module()(other), model(other), rtol=1e-4, atol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    model = small("dart_vim_micro_patch8")
    x = example(model)
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True, backend="eager")  # graph capture, no codegen
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_eager_keeps_its_checks():
    model = small("dart_vit_micro_patch8")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(torch.full((1, 1, 64, 64), float("nan")))


def test_static_scan_matches_the_reference_in_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    b, d, n, length = 2, 3, 4, 37  # 37: a ragged last chunk

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()

    # u, delta, A (< 0), B, C, D, z, delta_bias
    args = [rand(b, d, length), rand(b, d, length, scale=2.0), (-5 * torch.rand(d, n, generator=g,
            dtype=torch.float64)).requires_grad_(), rand(b, n, length), rand(b, n, length), rand(d), rand(b, d, length),
            rand(d)]
    ref = selective_scan_ref(*args, delta_softplus=True)
    out = selective_scan_static(*args, delta_softplus=True, chunk_size=8)
    torch.testing.assert_close(out, ref)
    weights = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad((ref * weights).sum(), args)
    for got, want in zip(torch.autograd.grad((out * weights).sum(), args), expected):
        torch.testing.assert_close(got, want)


def test_onnx_export_matches_eager():
    """ONNX (torch's dynamo exporter) under onnxruntime; runs only where onnx, onnxscript and
    onnxruntime are installed (not CI dependencies; benchmarks/export_check.py does the Ti models)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)
    import onnxruntime
    model = small("dart_vim_micro_patch8")
    x = example(model)
    proto = torch.onnx.export(model, (x,), dynamo=True).model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(proto, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(got), model(x), rtol=1e-4, atol=1e-5)
