"""The regular-grid warp (paper App. C, docs/method.md §12): uniform = bilinear resize, monotone,
exact inverse, gradients, the patched model equals the backbone on the resized image."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import dartok
import timm
from dartok.models import DartWarp, create_model, is_dart, patch_warp
from dartok.models.warp import warp_layout
from dartok.partition import cuts_to_boxes, grid_cuts, interval_overlap, mix_uniform, normalize_pdf
from dartok.resample import sample_patches
from dartok.tokenizer import DART
from dartok.warp import (WarpDART, cuts_from_boxes, unwarp, unwarp_positions, warp_images, warp_matrix,
                         warp_positions)


def mixed_pdf(b, h, w, gen, alpha=0.1, peak=30.0):
    """A random pdf with a strong peak (so the cuts move far from uniform), mixed with alpha."""
    pdf = torch.rand(b, h, w, generator=gen, dtype=torch.float64)
    pdf[:, h // 3, w // 2] += peak
    return mix_uniform(normalize_pdf(pdf), alpha)


def stitched(patches, rows, cols):
    """``B×(R·C)×C×P×P`` patches laid out row by row into ``B×C×(R·P)×(C·P)``."""
    b, _, c, p, _ = patches.shape
    return patches.reshape(b, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, rows * p, cols * p)


# ------------------------------------------------------------------ the cuts


def test_grid_cuts_split_each_marginal_into_equal_masses():
    gen = torch.Generator().manual_seed(0)
    pdf = mixed_pdf(3, 7, 9, gen)
    ys, xs = grid_cuts(pdf, 4, 5)
    assert ys.shape == (3, 5) and xs.shape == (3, 6)
    assert (ys[:, 0] == 0).all() and (ys[:, -1] == 1).all() and (xs[:, 0] == 0).all() and (xs[:, -1] == 1).all()
    rows = torch.einsum("bri,bi->br", interval_overlap(ys[:, :-1], ys[:, 1:], 7), pdf.sum(2))
    cols = torch.einsum("bcj,bj->bc", interval_overlap(xs[:, :-1], xs[:, 1:], 9), pdf.sum(1))
    torch.testing.assert_close(rows, torch.full_like(rows, 1 / 4), atol=1e-12, rtol=0)
    torch.testing.assert_close(cols, torch.full_like(cols, 1 / 5), atol=1e-12, rtol=0)
    boxes = cuts_to_boxes(ys, xs)
    assert boxes.shape == (3, 20, 4)
    back = cuts_from_boxes(boxes, 4, 5)
    assert torch.equal(back[0], ys) and torch.equal(back[1], xs)
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).sum(-1)
    torch.testing.assert_close(area, torch.ones_like(area), atol=1e-12, rtol=0)


def test_grid_cuts_refuse_bad_layouts():
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="rows must be an integer"):
            grid_cuts(torch.ones(1, 2, 2), bad, 2)
    with pytest.raises(ValueError, match="uneven"):
        DART(num_tokens=10, bands=3, in_chans=1, embed_dim=4, pos_grid=0, partition="grid")
    with pytest.raises(ValueError, match="partition must be one of"):
        DART(num_tokens=4, in_chans=1, embed_dim=4, partition="regular")
    with pytest.raises(ValueError, match="does not tile|do not tile"):
        warp_layout(64, num_tokens=48)
    with pytest.raises(ValueError, match="does not divide"):
        warp_layout((64, 60), patch_size=16)
    with pytest.raises(ValueError, match="not patch_size=4"):
        warp_layout(64, num_tokens=64, patch_size=4)
    assert warp_layout(64, num_tokens=64) == (8, 8, 8) and warp_layout((64, 96), patch_size=16) == (4, 6, 16)
    assert warp_layout(224, num_tokens=196) == (14, 14, 16)
    with pytest.raises(ValueError, match="grid must be"):
        WarpDART(grid=(0, 4))


# ------------------------------------------------------------------ the warp


@pytest.mark.parametrize("size,grid,p", [((48, 48), (8, 8), 4), ((40, 30), (4, 6), 3), ((17, 23), (5, 3), 7)])
def test_uniform_pdf_warp_is_the_bilinear_resize(size, grid, p):
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ys, xs = grid_cuts(torch.full((2, 6, 6), 1 / 36, dtype=torch.float64), *grid)
    ref = F.interpolate(x, size=(grid[0] * p, grid[1] * p), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(warp_images(x, ys, xs, p), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("antialias", [False, True])
def test_warp_is_the_boxes_patches_stitched(antialias):
    """Block (a, b) of the warped image is sample_patches of box (a, b), anti-aliasing included."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 64, 48, dtype=torch.float64, generator=gen)
    ys, xs = grid_cuts(mixed_pdf(2, 8, 8, gen), 4, 5)
    ref = stitched(sample_patches(x, cuts_to_boxes(ys, xs), 6, antialias=antialias), 4, 5)
    torch.testing.assert_close(warp_images(x, ys, xs, 6, antialias=antialias), ref, atol=1e-10, rtol=0)


def test_warp_matrix_rows_are_filters():
    gen = torch.Generator().manual_seed(3)
    ys, _ = grid_cuts(mixed_pdf(2, 8, 8, gen), 4, 4)
    for antialias in (False, True):
        m = warp_matrix(ys, 100, 5, antialias=antialias)
        assert m.shape == (2, 20, 100) and (m >= 0).all()
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 20, dtype=torch.float64), atol=1e-12, rtol=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 9), alpha=st.sampled_from([0.0, 0.1, 0.5]))
def test_warp_is_monotone_and_its_inverse_exact(seed, rows, alpha):
    gen = torch.Generator().manual_seed(seed)
    pdf = torch.rand(2, 5, 6, generator=gen, dtype=torch.float64) ** 4
    ys, _ = grid_cuts(mix_uniform(normalize_pdf(pdf), alpha), rows, 1)
    assert (ys.diff(dim=1) >= 0).all()
    v = torch.linspace(0, 1, 301, dtype=torch.float64)
    f = warp_positions(ys, v)
    assert (f.diff(dim=1) >= -1e-15).all() and (f[:, 0] == 0).all() and (f[:, -1] - 1).abs().max() < 1e-12
    u = torch.rand(2, 200, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(warp_positions(ys, unwarp_positions(ys, u)), u, atol=1e-12, rtol=0)
    if alpha > 0:  # every band has a width: the warp is a bijection
        torch.testing.assert_close(unwarp_positions(ys, warp_positions(ys, v)), v.expand(2, -1), atol=1e-12,
                                   rtol=0)
        g = unwarp_positions(ys, u.sort(dim=1).values)
        assert (g.diff(dim=1) >= 0).all()


def test_unwarp_of_the_warp_gives_back_a_smooth_map():
    gen = torch.Generator().manual_seed(4)
    h, w = 48, 64
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64), torch.linspace(0, 1, w, dtype=torch.float64),
                            indexing="ij")
    smooth = torch.stack([torch.sin(3 * xx) * torch.cos(2 * yy), xx * yy])[None].expand(2, -1, -1, -1)
    ys, xs = grid_cuts(mixed_pdf(2, 6, 6, gen, alpha=0.3, peak=5.0), 6, 8)
    warped = warp_images(smooth, ys, xs, 16)  # 96×128: finer than the image everywhere
    back = unwarp(warped, ys, xs, (h, w))
    assert back.shape == smooth.shape
    err = (back - smooth).abs()
    assert err[..., 1:-1, 1:-1].max() < 2e-3  # inside: bilinear interpolation error only (h² f'' / 8, twice)
    assert err.max() < 1e-2  # the outer pixels: both samplers clamp at the border (no extrapolation)
    # where the two sample: the warp reads the image at f(v) of each warped pixel centre v (the
    # x-coordinate field, linear in x, comes out as f exactly, away from the clamped border) ...
    coord = (torch.arange(w, dtype=torch.float64) + 0.5).expand(2, 1, h, w) / w
    v = (torch.arange(128, dtype=torch.float64) + 0.5) / 128
    f = warp_positions(xs, v)
    inside = (f > 0.5 / w) & (f < 1 - 0.5 / w)
    got = warp_images(coord, ys, xs, 16)[:, 0, 0]
    torch.testing.assert_close(got[inside], f[inside], atol=1e-12, rtol=0)
    # ... and unwarp reads the warped map at f⁻¹(u) of each image pixel centre u (a map linear in v)
    vmap = v.expand(2, 1, 96, 128)
    u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    g = unwarp_positions(xs, u)
    inside = (g > 0.5 / 128) & (g < 1 - 0.5 / 128)
    got = unwarp(vmap, ys, xs, (h, w))[:, 0, 0]
    torch.testing.assert_close(got[inside], g[inside], atol=1e-12, rtol=0)
    torch.testing.assert_close(warp_positions(xs, g), u.expand(2, -1), atol=1e-12, rtol=0)  # f(f⁻¹(u)) = u


def test_unwarp_with_uniform_cuts_is_the_bilinear_resize():
    maps = torch.randn(2, 4, 5, 7, dtype=torch.float64)
    ys, xs = grid_cuts(torch.ones(2, 3, 3, dtype=torch.float64) / 9, 5, 7)
    ref = F.interpolate(maps, size=(30, 21), mode="bilinear", align_corners=False)
    torch.testing.assert_close(unwarp(maps, ys, xs, (30, 21)), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("antialias", [False, True])
def test_gradcheck_warp_and_unwarp_through_the_cuts(antialias):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 11, 9, dtype=torch.float64, generator=gen, requires_grad=True)
    logits = torch.randn(1, 4, 3, dtype=torch.float64, generator=gen, requires_grad=True)

    def cuts(logits):
        return grid_cuts(mix_uniform(torch.softmax(logits.flatten(1), 1).view(1, 4, 3), 0.1), 3, 2)

    assert torch.autograd.gradcheck(lambda x, lg: warp_images(x, *cuts(lg), 2, antialias=antialias), (x, logits))
    if not antialias:
        maps = torch.randn(1, 2, 6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
        assert torch.autograd.gradcheck(lambda m, lg: unwarp(m, *cuts(lg), (7, 5)), (maps, logits))


def test_warp_errors_are_clear():
    ys = torch.tensor([[0.0, 0.5, 1.0]])
    with pytest.raises(ValueError, match="B×C×H×W"):
        warp_images(torch.rand(2, 8, 8), ys, ys, 4)
    with pytest.raises(ValueError, match="floating"):
        warp_images(torch.zeros(1, 1, 8, 8, dtype=torch.long), ys, ys, 4)
    with pytest.raises(ValueError, match="batch sizes differ"):
        warp_images(torch.rand(2, 1, 8, 8), ys, ys, 4)
    with pytest.raises(ValueError, match="patch_size"):
        warp_images(torch.rand(1, 1, 8, 8), ys, ys, 0)
    with pytest.raises(ValueError, match="size must be"):
        unwarp(torch.rand(1, 1, 8, 8), ys, ys, (0, 4))


# ------------------------------------------------------------------ the module and the models


def test_warp_keeps_low_precision_inputs_in_their_dtype():
    dart = WarpDART(grid=(4, 4), patch_size=4, in_chans=3)
    x = torch.rand(2, 3, 32, 32)
    ref = dart(x).image
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dart(x.bfloat16())
    assert out.image.dtype == torch.bfloat16 and out.ys.dtype == torch.float32
    assert (out.image.float() - ref).abs().max() < 0.02


def test_patched_cnn_equals_the_cnn_on_the_resized_image():
    torch.manual_seed(0)
    cnn = timm.create_model("resnet10t", num_classes=3, in_chans=1).double().eval()
    model = dartok.patch_timm(cnn, scorer=None, warp_size=(32, 48), patch_size=8)
    assert isinstance(model, DartWarp) and model.backbone is cnn and is_dart(model)
    assert model.patch_embed.grid == (4, 6) and model.pretrained_cfg["input_size"] == (1, 96, 96)
    x = torch.rand(2, 1, 80, 72, dtype=torch.float64)
    resized = F.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), cnn(resized), atol=1e-10, rtol=0)
        feats = model.forward_dense(x)  # uniform: the feature map resized back to the input
        ref = F.interpolate(cnn.forward_features(resized), size=(80, 72), mode="bilinear", align_corners=False)
        torch.testing.assert_close(feats, ref, atol=1e-10, rtol=0)


def test_patch_timm_dispatches_tokens_and_warp():
    vit = create_model("vit_micro_patch8", num_tokens=16).eval()
    plain = create_model("vit_micro_patch8", num_tokens=16).eval()
    plain.load_state_dict(vit.state_dict())
    warped = dartok.patch_timm(vit, scorer=None, mode="warp", patch_size=8)  # a ViT taking a 32² image
    assert isinstance(warped, DartWarp) and warped.patch_embed.grid == (4, 4)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = plain(F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False))
        torch.testing.assert_close(warped(x), ref, atol=1e-5, rtol=0)
    tokens = dartok.patch_timm(create_model("vit_micro_patch8", num_tokens=16), scorer=None, partition="grid")
    assert type(tokens).__name__ == "DartVisionTransformer" and tokens.patch_embed.partition_mode == "grid"
    with pytest.raises(ValueError, match="mode must be"):
        dartok.patch_timm(create_model("vit_micro_patch8"), mode="image")
    with pytest.raises(ValueError, match="options of the warp"):
        dartok.patch_timm(create_model("vit_micro_patch8"), warp_size=32)
    with pytest.raises(ValueError, match="options of the token tokenizer"):
        dartok.patch_timm(timm.create_model("resnet10t"), bands=4)
    with pytest.raises(TypeError, match="patch_vim"):
        dartok.patch_timm(create_model("vim_micro_patch8"))
    with pytest.raises(TypeError, match="VisionTransformer"):
        dartok.patch_timm(timm.create_model("resnet10t"), mode="tokens")
    with pytest.raises(ValueError, match="already has a DART"):
        patch_warp(warped)
    with pytest.raises(ValueError, match="options of the warp"):
        dartok.patch_timm(create_model("vit_micro_patch8"), unwarp_features=True)
    # a ViT behind the warp: its NCHW maps unwarp, its NLC tokens cannot
    unwarped = dartok.patch_timm(plain, scorer=None, mode="warp", patch_size=8, unwarp_features=True)
    with torch.no_grad():
        (fmap,) = unwarped.forward_intermediates(x, indices=[-1], intermediates_only=True)
        assert fmap.shape == (2, plain.embed_dim, 4, 4)  # uniform cuts: the same map (bilinear at its own centres)
        torch.testing.assert_close(fmap, unwarped.forward_intermediates(x, indices=[-1], intermediates_only=True,
                                                                         unwarp=False)[0])
        with pytest.raises(ValueError, match="unwarp needs B×C×h×w maps.*'NLC'"):
            unwarped.forward_intermediates(x, indices=[-1], output_fmt="NLC")


def test_regular_grid_tokens_with_a_uniform_pdf_are_the_vit_grid():
    """partition='grid' on a DART ViT: same boxes as the bands for a uniform pdf, rows/columns of equal mass otherwise."""
    common = dict(num_tokens=16, in_chans=1, embed_dim=8, pos_grid=4)
    bands, grid = DART(**common), DART(**common, partition="grid")
    pdf = torch.ones(2, 8, 8) / 64
    assert torch.equal(bands.partition(pdf), grid.partition(pdf))
    gen = torch.Generator().manual_seed(6)
    pdf = mixed_pdf(2, 8, 8, gen).float()
    boxes = grid.partition(pdf)
    ys, xs = cuts_from_boxes(boxes, 4, 4)  # a regular grid: every row shares its cuts
    assert torch.equal(cuts_to_boxes(ys, xs), boxes)
    assert not torch.allclose(boxes, bands.partition(pdf))


def test_the_scorer_learns_through_the_warp_and_training_runs(tmp_path):
    """Gradients reach the scorer through the cut positions; a short training run of a warp model
    (learned scorer) and of its oracle saves, evaluates (localisation metric) and reloads."""
    from dartok.train import train
    from dartok.train.checkpoint import model_from_checkpoint

    model = create_model("dart_warp_resnet10t", num_tokens=16, warp_size=32, img_size=64, scorer_input_size=64,
                         in_chans=1, num_classes=4)
    model(torch.rand(2, 1, 64, 64)).logsumexp(-1).sum().backward()
    head = model.patch_embed.scorer.head.fc1.weight.grad
    assert head is not None and head.abs().sum() > 0
    kw = dict(model="dart_warp_resnet10t", num_tokens=16, canvas_size=64, epochs=1, train_samples=32,
              test_samples=16, batch_size=16, warmup_epochs=0, progress=False, threads=1,
              model_kwargs={"warp_size": 32, "scorer_input_size": 64, "antialias": True})
    for name, extra in (("learned", {}), ("oracle", {"score_source": "oracle"})):
        summary = train(**{**kw, "model_kwargs": {**kw["model_kwargs"], **extra}}, output=str(tmp_path / name))
        assert "object_mass" in summary["test"] and 0 <= summary["test"]["object_mass"] <= 1
        loaded, config = model_from_checkpoint(tmp_path / name / "checkpoint")
        assert isinstance(loaded, DartWarp) and loaded.patch_embed.out_size == (32, 32)
        assert loaded.patch_embed.score_source == ("oracle" if extra else "scorer")


def test_bench_counts_the_warp_like_the_tokenizer():
    from dartok.tools.bench import tokenizer_breakdown
    from dartok.tools.flops import count_macs

    model = create_model("dart_warp_resnet10t", num_tokens=16, warp_size=32, img_size=64, scorer=None,
                         num_classes=4)
    report = count_macs(model, (3, 64, 64))
    # the two dense products of Wy @ image @ Wxᵀ per channel: 64·64·32 (along x) + 32·64·32 (along y)
    assert report.tokenizer_by_operator["bmm"] == 3 * (64 * 64 * 32 + 32 * 64 * 32)
    assert report.by_part["tokenizer"] + report.by_part["backbone"] == report.total
    assert "aten::scatter_add" not in report.unsupported
    stages = [r["stage"] for r in tokenizer_breakdown(model, (3, 64, 64), batch_size=2, repeats=1, warmup=0)]
    assert "sampling" in stages and "projection" not in stages and stages[-1] == "model (whole)"
