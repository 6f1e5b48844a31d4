"""Numerics that must hold in every precision (issue 10, §1; docs/method.md §7).

Each test here failed on the code before the fix it names and passes after it.
"""
from __future__ import annotations

import pytest
import torch

import dartok
from dartok.partition import normalize_pdf, quantile_boxes
from dartok.resample import area_patches, box_average, sample_patches
from dartok.scorer import Scorer, uniform_pdf
from dartok.tokenizer import DART


def _cut_jacobian(pdf: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """d boxes / d pdf for one sample: ``N×4×h×w``."""
    return torch.autograd.functional.jacobian(lambda p: quantile_boxes(p, num_tokens, alpha=0.0)[0], pdf)[:, :, 0]


# 2. a cut exactly on a cell edge keeps its gradient ------------------------------------


@pytest.mark.parametrize("side,num_tokens", [(12, 16), (14, 196), (7, 49)])
def test_every_cut_of_a_uniform_pdf_gets_a_gradient(side, num_tokens):
    pdf = uniform_pdf(1, (side, side), dtype=torch.float64)
    jac = _cut_jacobian(pdf, num_tokens)  # N×4×h×w
    counts = dartok.band_layout(num_tokens)
    starts = [sum(counts[:a]) for a in range(len(counts))]
    y_cuts = [jac[s, 1] for s in starts[1:]]  # top edge of each band after the first
    x_cuts = [jac[s + k, 2] for s, c in zip(starts, counts) for k in range(c - 1)]  # inner right edges
    assert len(y_cuts) == len(counts) - 1 and len(x_cuts) == num_tokens - len(counts)
    dead_y = [i for i, g in enumerate(y_cuts) if float(g.abs().sum()) == 0.0]
    dead_x = [i for i, g in enumerate(x_cuts) if float(g.abs().sum()) == 0.0]
    assert dead_y == [] and dead_x == []


def test_gradient_at_a_cell_edge_matches_the_one_sided_derivative():
    # 1-D pdf with a cut exactly on a cell edge: the y-cut of 2 bands over [0.25,0.25,0.25,0.25]
    # rows sits at 0.5. Moving mass into row 0 moves the cut up: d cut / d p_0 < 0.
    pdf = torch.full((1, 4, 1), 0.25, dtype=torch.float64, requires_grad=True)
    boxes = quantile_boxes(pdf, 2, bands=2, alpha=0.0)
    assert float(boxes[0, 1, 1].detach()) == pytest.approx(0.5, abs=1e-15)
    (g,) = torch.autograd.grad(boxes[0, 1, 1], pdf)
    assert float(g[0, 0, 0]) < 0 and float(g[0, 3, 0]) > 0
    assert torch.all((boxes >= 0) & (boxes <= 1))  # the value is still clamped


# 3. normalisation cannot overflow -------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_huge_finite_pdf_gives_the_same_boxes_as_its_scaled_copy(alpha):
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(2, 14, 14, generator=gen) + 0.05
    huge = base * 3e37  # finite in float32; its sum is not
    assert torch.isfinite(huge).all() and not torch.isfinite(huge.sum())
    got = quantile_boxes(huge, 49, alpha=alpha)
    ref = quantile_boxes(base, 49, alpha=alpha)
    assert torch.allclose(got, ref, atol=1e-6)
    assert float((got[..., 2] - got[..., 0]).min()) > 0
    assert torch.allclose(normalize_pdf(huge).sum((1, 2)), torch.ones(2))


# 4. a float16 pdf is promoted before it is normalised ----------------------------------


def test_fp16_pdf_with_a_large_sum_gives_the_float32_boxes():
    gen = torch.Generator().manual_seed(1)
    pdf16 = (torch.rand(2, 14, 14, generator=gen) * 2000 + 10).half()
    assert float(pdf16.float().sum((1, 2)).min()) > 65504  # its fp16 sum overflows
    dart = DART(num_tokens=49, patch_size=8, in_chans=3, embed_dim=16, pos_grid=7, scorer=None)
    images = torch.rand(2, 3, 112, 112, generator=gen)
    got = dart(images, pdf=pdf16).boxes
    ref = dart(images, pdf=pdf16.float()).boxes
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-6)


# 5. quantile_boxes computes in at least float32 ------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_pdf_gives_float32_boxes(dtype):
    gen = torch.Generator().manual_seed(2)
    pdf = (torch.rand(3, 14, 14, generator=gen) ** 4).to(dtype)
    got = quantile_boxes(pdf, 196)
    ref = quantile_boxes(pdf.float(), 196)
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-6)


def test_quantile_boxes_ignores_an_enclosing_bf16_autocast():
    gen = torch.Generator().manual_seed(3)
    pdf = torch.rand(2, 14, 14, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = quantile_boxes(pdf, 196)
    assert got.dtype == torch.float32
    assert torch.allclose(got, quantile_boxes(pdf, 196), atol=0)


# 6. boxes are not rounded to the images' dtype; sampling in float32 ----------------------


def test_bf16_images_are_sampled_from_unrounded_boxes_in_float32():
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(1, 3, 448, 448, generator=gen).bfloat16()
    boxes = quantile_boxes(torch.rand(1, 14, 14, generator=gen) ** 3, 196)
    got = sample_patches(images, boxes, 16)
    ref = sample_patches(images.float(), boxes, 16).bfloat16()
    assert got.dtype == torch.bfloat16
    assert torch.isfinite(got.float()).all()
    assert torch.equal(got, ref)


def _micro_dart_deit(**kwargs):
    import timm

    return timm.create_model("dart_deit_tiny_patch16_224", pretrained=False, depth=2, num_classes=10,
                             num_tokens=49, img_size=224, scorer_input_size=112, **kwargs)


@pytest.mark.parametrize("name", ["dart_deit_tiny_patch16_224", "dart_vit_micro_patch8"])
def test_model_cast_to_bf16_gives_finite_outputs_close_to_float32(name):
    import timm

    torch.manual_seed(0)
    if name == "dart_vit_micro_patch8":
        model = timm.create_model(name, pretrained=False)
        shape = (2, 1, 128, 128)
    else:
        model = _micro_dart_deit()
        shape = (2, 3, 320, 320)  # > 256 px: CPU bf16 grid_sample went non-finite there
    model.eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)
        model.to(torch.bfloat16)
        out = model(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    scale = float(ref.abs().max()) + 1e-3
    assert float((out.float() - ref).abs().max()) < 0.1 * scale


# 7. anti-aliasing blends per axis ----------------------------------------------------------


def test_long_thin_subcell_is_averaged_along_its_length():
    # 1-px vertical stripes 1,0,1,0,...; one box whose P=2 sub-cells are 4 px wide and
    # 0.25 px tall (area 1 px²), starting half a pixel in. Along x the true mean of each
    # sub-cell is 0.5; along y the image is constant. The old per-area weight
    # (area − 1 = 0) point-sampled it: 1.0 or 0.0.
    w = h = 16
    img = (torch.arange(w) % 2 == 0).double().expand(h, w).reshape(1, 1, h, w).contiguous()
    x0 = 0.5 / w
    box = torch.tensor([[[x0, 4 / h, x0 + 8 / w, 4.5 / h]]], dtype=torch.float64)
    got = sample_patches(img, box, patch_size=2, antialias=True)
    assert torch.allclose(got, torch.full_like(got, 0.5), atol=1e-12)


def test_per_axis_filter_is_exact_for_large_subcells_and_a_point_sample_for_small():
    gen = torch.Generator().manual_seed(6)
    img = torch.rand(1, 2, 32, 32, generator=gen, dtype=torch.float64)
    big = torch.tensor([[[0.0, 0.0, 0.5, 0.5]]], dtype=torch.float64)  # 16 px / P=4 = 4 px sub-cells
    exact = area_patches(img, big, 4).permute(0, 2, 1, 3, 4)
    assert torch.allclose(sample_patches(img, big, 4, antialias=True), exact, atol=1e-12)
    small = torch.tensor([[[0.1, 0.2, 0.1 + 3 / 32, 0.2 + 3 / 32]]], dtype=torch.float64)  # 0.75 px sub-cells
    assert torch.equal(sample_patches(img, small, 4, antialias=True), sample_patches(img, small, 4))


def test_antialias_is_differentiable_in_the_boxes():
    gen = torch.Generator().manual_seed(7)
    img = torch.rand(1, 1, 12, 12, generator=gen, dtype=torch.float64)
    # sub-cells 2.4×1.12 px and 1.08×2.2 px (every blend weight strictly inside its ramp or
    # saturated), edges off the pixel grid: away from the kinks of the piecewise-linear maps
    boxes = torch.tensor([[[0.11, 0.05, 0.71, 0.33], [0.2, 0.41, 0.47, 0.96]]], dtype=torch.float64,
                         requires_grad=True)
    assert torch.autograd.gradcheck(lambda b: sample_patches(img, b, 3, antialias=True), (boxes,), atol=1e-6)


# 8. summed-area tables in float64 on every device ------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "cuda", "xpu"])
def test_summed_area_table_is_float64_on_every_device_that_has_it(device):
    from dartok.resample import summed_area_dtype

    assert summed_area_dtype(device) == torch.float64
    assert summed_area_dtype("mps") == torch.float32  # no float64 there


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_area_patches_on_cuda_match_the_cpu_float64_result():  # pragma: no cover - GPU only
    gen = torch.Generator().manual_seed(8)
    img = (torch.rand(1, 3, 448, 448, generator=gen) > 0.5).float() * 255
    boxes = quantile_boxes(torch.rand(1, 14, 14, generator=gen) ** 3, 196)
    ref = area_patches(img, boxes, 16)
    got = area_patches(img.cuda(), boxes.cuda(), 16).cpu()
    assert float((got - ref).abs().max()) < 1e-3


# 9. a NaN score map from the scorer is an error -----------------------------------------------


@pytest.mark.parametrize("check_inputs", [True, False])
def test_nan_from_the_scorer_raises(check_inputs):
    scorer = Scorer(trunk="mobilenetv3_small", input_size=32, in_chans=3)
    with torch.no_grad():
        scorer.head.fc2.bias.fill_(float("nan"))
    dart = DART(num_tokens=16, patch_size=8, embed_dim=16, pos_grid=4, scorer=scorer, img_size=64,
                check_inputs=check_inputs)
    with pytest.raises(ValueError, match="scorer"):
        dart(torch.rand(2, 3, 64, 64))


# also: box_average with a bf16 map -------------------------------------------------------------


def test_box_average_of_a_bf16_map_is_finite_for_a_box_at_the_right_edge():
    grid = torch.randn(1, 4, 4, 8).bfloat16()
    boxes = torch.tensor([[[1.0, 0.2, 1.0, 0.6], [0.0, 0.0, 0.25, 0.25]]])
    out = box_average(grid, boxes)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()
    # a box equal to one cell gets that cell's value
    assert torch.equal(out[0, 1], grid[0, 0, 0])


@pytest.mark.parametrize("px", [1.0, 2.0])
def test_constant_image_gives_no_box_gradient_at_the_ends_of_the_antialias_ramp(px):
    # sub-cells exactly 1 px or 2 px wide sit on the ends of the per-axis blend ramp, where a
    # term is skipped for a zero weight: its weight's gradient must not leak (found in review)
    size, patch = 32, 8
    img = torch.full((1, 2, size, size), 5.0, dtype=torch.float64)
    side = px * patch / size
    boxes = torch.tensor([[[0.0, 0.0, side, side], [side, side, 2 * side, 2 * side]]], dtype=torch.float64,
                         requires_grad=True)
    out = sample_patches(img, boxes, patch, antialias=True)
    assert torch.allclose(out, torch.full_like(out, 5.0))
    (g,) = torch.autograd.grad(out.sum(), boxes)
    assert float(g.abs().max()) < 1e-9


def test_nan_from_a_video_scorer_names_the_scorer():
    import timm

    model = timm.create_model("dart_videomamba_micro_patch8", pretrained=False, depth=1, num_classes=4)
    with torch.no_grad():
        model.patch_embed.scorer.head.fc2.bias.fill_(float("nan"))
    frames = model.patch_embed.num_frames
    with pytest.raises(ValueError, match="scorer"):
        model(torch.rand(2, 1, frames, 64, 64))
