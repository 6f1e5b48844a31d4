"""Resampling of patches and area-averaged position embeddings (SPEC §1)."""
import pytest
import torch

from dartok.partition import quantile_boxes
from dartok.resample import box_average, sample_patches


def unfold_patches(x, p):
    b, c, h, w = x.shape
    return x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c, p, p)


def test_uniform_boxes_equal_unfold_exactly_in_float64():
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    boxes = quantile_boxes(torch.ones(2, 14, 14, dtype=torch.float64), 196)
    torch.testing.assert_close(sample_patches(x, boxes, 16), unfold_patches(x, 16), atol=1e-10, rtol=0)


def test_uniform_boxes_equal_unfold_float32_and_other_sizes():
    x = torch.rand(1, 1, 96, 64)
    boxes = quantile_boxes(torch.ones(1, 6, 8), 48, bands=12)  # 12 bands of 4 boxes of 8×16 px
    patches = sample_patches(x, boxes, 8)
    tiles = x.unfold(2, 8, 8).unfold(3, 16, 16)  # 12×4 tiles of 8×16 px
    ref = (tiles[..., ::2] + tiles[..., 1::2]) / 2  # 2-px sub-cells: centre between two pixels
    assert patches.shape == (1, 48, 1, 8, 8)
    torch.testing.assert_close(patches[0, :, 0], ref[0, 0].reshape(48, 8, 8), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the input checks' Python bools
@pytest.mark.parametrize("threads,pieces", [(2, 2), (3, 2), (4, 4)])  # 5 boxes × P = 4: 20 grid rows
def test_single_image_sampling_is_split_over_threads_bit_identically(monkeypatch, threads, pieces):
    """At batch 1 on CPU (no autograd) the grid rows are split over the threads; same bits as one call."""
    import torch.nn.functional as F

    import dartok.resample as resample

    torch.manual_seed(0)
    x = torch.randn(1, 3, 37, 53)
    boxes = quantile_boxes(torch.rand(1, 6, 6) + 0.1, 5, bands=2)
    seen = []
    real = F.grid_sample

    def spy(inp, grid, **kw):
        seen.append((inp.shape[0], inp.stride(0)))
        return real(inp, grid, **kw)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = sample_patches(x, boxes, 4)  # one thread: the plain call
        torch.set_num_threads(threads)
        monkeypatch.setattr(resample.F, "grid_sample", spy)
        with torch.no_grad():
            got = sample_patches(x, boxes, 4)
        assert seen == [(pieces, 0)]  # the split ran, over a stride-0 view of the image (no copy)
        assert torch.equal(got, ref) and got.shape == (1, 5, 3, 4, 4)
        seen.clear()
        xg = x.clone().requires_grad_(True)  # autograd: the plain call
        torch.testing.assert_close(sample_patches(xg, boxes, 4), ref, atol=0, rtol=0)
        assert seen == [(1, x.numel())]
        seen.clear()  # torch.jit.trace: the plain call, so the graph does not bake in the batch of 1
        traced = torch.jit.trace(lambda img: sample_patches(img, boxes, 4), (x,), check_trace=False)
        assert seen == [(1, x.numel())] and torch.equal(traced(x), ref)
    finally:
        torch.set_num_threads(old_threads)


def test_sampling_points_are_subcell_centres():
    # a linear ramp is reproduced exactly by bilinear sampling: check point positions
    h = w = 64
    ramp = torch.arange(w, dtype=torch.float64).expand(1, 1, h, w).clone()
    boxes = torch.tensor([[[0.25, 0.0, 0.75, 1.0]]], dtype=torch.float64)  # x in pixels [16, 48)
    patch = sample_patches(ramp, boxes, 4)[0, 0, 0]
    # sub-cells of width 8 px starting at 16: centres 20, 28, 36, 44 → pixel index centre - 0.5
    torch.testing.assert_close(patch[0], torch.tensor([19.5, 27.5, 35.5, 43.5], dtype=torch.float64))


def test_gradcheck_sampling_wrt_boxes_and_images():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(1, 2, 9, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[[0.13, 0.21, 0.58, 0.77], [0.41, 0.05, 0.93, 0.49]]], dtype=torch.float64,
                         requires_grad=True)
    assert torch.autograd.gradcheck(lambda i, b: sample_patches(i, b, 3), (img, boxes))


def test_gradient_reaches_pdf_through_sampling():
    pdf = (torch.rand(1, 5, 5, dtype=torch.float64) + 0.2).requires_grad_()
    img = torch.rand(1, 1, 20, 20, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: sample_patches(img, quantile_boxes(p, 6), 2), (pdf,),
                                    atol=1e-6)


def test_box_average_uniform_reproduces_grid_and_area_weights():
    g, d = 4, 3
    grid = torch.randn(1, g, g, d, dtype=torch.float64)
    boxes = quantile_boxes(torch.ones(1, g, g, dtype=torch.float64), g * g)
    torch.testing.assert_close(box_average(grid, boxes), grid.reshape(1, g * g, d))
    # a box covering [0, .375] × [0, .25] spans cell (0,0) fully and half of (0,1)
    box = torch.tensor([[[0.0, 0.0, 0.375, 0.25]]], dtype=torch.float64)
    expected = (grid[0, 0, 0] + 0.5 * grid[0, 0, 1]) / 1.5
    torch.testing.assert_close(box_average(grid, box)[0, 0], expected)
    # whole image → mean of the map
    whole = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(box_average(grid, whole)[0, 0], grid.mean((0, 1, 2)))


def test_box_average_degenerate_box_is_finite():
    grid = torch.randn(1, 4, 4, 2)
    boxes = torch.tensor([[[0.3, 0.3, 0.3, 0.3], [1.0, 1.0, 1.0, 1.0]]])
    out = box_average(grid, boxes)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 0], grid[0, 1, 1])
    torch.testing.assert_close(out[0, 1], grid[0, 3, 3])


@pytest.mark.parametrize("images, boxes, p, match", [
    (torch.rand(3, 8, 8), torch.rand(1, 2, 4), 4, "B×C×H×W"),
    (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 3), 4, "B×N×4"),
    (torch.rand(2, 3, 8, 8), torch.rand(1, 2, 4), 4, "batch sizes"),
    (torch.rand(1, 3, 8, 8), torch.rand(1, 2, 4), 0, "patch_size"),
])
def test_sample_patches_errors(images, boxes, p, match):
    with pytest.raises(ValueError, match=match):
        sample_patches(images, boxes, p)


def test_area_patches_are_exact_subcell_means():
    from dartok.resample import area_patches
    x = torch.rand(2, 3, 64, 64)
    boxes = quantile_boxes(torch.ones(2, 4, 4), 16, alpha=0.0)  # 16 px boxes, 4 px sub-cells
    means = x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2))  # B×C×16×16 sub-cell means
    ref = means.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 3, 16, 4, 4)
    torch.testing.assert_close(area_patches(x, boxes, 4), ref, atol=1e-6, rtol=0)
    # antialias=True uses them for large boxes, and changes nothing for exact-pixel boxes
    torch.testing.assert_close(sample_patches(x, boxes, 4, antialias=True), ref.permute(0, 2, 1, 3, 4),
                               atol=1e-6, rtol=0)
    exact = quantile_boxes(torch.ones(2, 16, 16), 256, alpha=0.0)
    torch.testing.assert_close(sample_patches(x, exact, 4, antialias=True), sample_patches(x, exact, 4))


def test_antialias_removes_aliasing_of_a_fine_pattern():
    # a 1-px checkerboard seen through 3×3-px sub-cells: point samples alias to ±1,
    # sub-cell means are ±1/9 (5 of one sign, 4 of the other)
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    board = (((yy + xx) % 2) * 2.0 - 1.0).expand(1, 1, 48, 48)
    boxes = quantile_boxes(torch.ones(1, 4, 4), 16, alpha=0.0)  # 12-px boxes, P = 4
    torch.testing.assert_close(sample_patches(board, boxes, 4).abs(), torch.ones(1, 16, 1, 4, 4))
    torch.testing.assert_close(sample_patches(board, boxes, 4, antialias=True).abs(),
                               torch.full((1, 16, 1, 4, 4), 1 / 9))


def test_gradcheck_antialiased_sampling():
    # corners kept off integer pixel positions, where the area integral has kinks
    boxes = torch.tensor([[[0.11, 0.23, 0.71, 0.87], [0.05, 0.52, 0.33, 0.97]]], dtype=torch.float64,
                         requires_grad=True)
    img = torch.rand(1, 2, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda i, b: sample_patches(i, b, 3, antialias=True), (img, boxes))


# --------------------------------------------------------------------------- tokens_to_map (issue 13 §1)
from dartok import tokens_to_map  # noqa: E402
from dartok.resample import grid_boxes  # noqa: E402
from dartok.video_tokenizer import frame_boxes, stack_frame_boxes  # noqa: E402


def _partition(bsz=2, n=13, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return quantile_boxes(torch.rand(bsz, 6, 7, generator=gen, dtype=dtype) ** 3, n)


def test_tokens_to_map_constant_tokens_give_a_constant_map():
    boxes = _partition()
    tokens = torch.full((2, 13, 3), 2.5, dtype=torch.float64) * torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    out = tokens_to_map(tokens, boxes, (17, 23))
    assert out.shape == (2, 3, 17, 23) and out.dtype == torch.float64
    torch.testing.assert_close(out, tokens[:, :1, :, None, None].squeeze(1).expand_as(out).contiguous())


def test_tokens_to_map_on_the_uniform_grid_is_a_reshape_and_nearest_upsampling():
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
        for rows, cols in ((3, 4), (14, 14), (7, 5)):
            tokens = torch.randn(2, rows * cols, 5, dtype=dtype, generator=torch.Generator().manual_seed(rows))
            boxes = grid_boxes(rows, cols, 2, dtype=dtype)
            grid = tokens.transpose(1, 2).reshape(2, 5, rows, cols)
            torch.testing.assert_close(tokens_to_map(tokens, boxes, (rows, cols)), grid, atol=tol, rtol=0)
            torch.testing.assert_close(tokens_to_map(tokens, boxes, (2 * rows, 3 * cols)),
                                       grid.repeat_interleave(2, -2).repeat_interleave(3, -1), atol=tol, rtol=0)
    # the fixed grid's boxes are the uniform partition's, in a timm ViT's row-major token order
    torch.testing.assert_close(grid_boxes(3, 4)[0], quantile_boxes(torch.ones(1, 3, 4), 12, bands=3, alpha=0.0)[0])


def test_tokens_to_map_is_the_adjoint_of_box_average():
    """<tokens_to_map(t), M> = h·w·Σ_n area_n·<t_n, box_average(M)_n> for boxes that tile the square."""
    boxes = _partition(seed=1)
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, 13, 4, generator=gen, dtype=torch.float64)
    grid = torch.randn(2, 9, 11, 4, generator=gen, dtype=torch.float64)
    left = (tokens_to_map(tokens, boxes, (9, 11)) * grid.permute(0, 3, 1, 2)).sum((1, 2, 3))
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    right = 9 * 11 * (area[..., None] * tokens * box_average(grid, boxes)).sum((1, 2))
    torch.testing.assert_close(left, right)
    # weights are area overlaps: each cell's weights sum to one (the boxes tile), so a round trip through
    # box_average on a map that is constant on every box gives the tokens back
    fine = grid_boxes(2, 2, 2, dtype=torch.float64)
    t = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(box_average(tokens_to_map(t, fine, (8, 6)).permute(0, 2, 3, 1), fine), t)


def test_tokens_to_map_gradcheck_in_tokens_and_boxes():
    boxes = _partition(bsz=1, n=5, seed=3).requires_grad_()
    tokens = torch.randn(1, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, b: tokens_to_map(t, b, (7, 9)), (tokens, boxes))
    # and through the partition, down to the score map that placed the boxes
    pdf = (torch.rand(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) + 0.2).requires_grad_()
    t = tokens.detach()
    assert torch.autograd.gradcheck(lambda p: tokens_to_map(t, quantile_boxes(p, 5), (7, 9)), (pdf,), atol=1e-6)


def test_tokens_to_map_video_one_map_per_frame():
    """Stacked-frame boxes (VideoDART's layout): frame t's map is made of the tokens in frame t,
    in that frame's coordinates; a box straddling two frames paints both."""
    t_frames, n = 3, 12
    pdf = torch.rand(2, t_frames * 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    boxes = quantile_boxes(pdf, n, bands=6)  # tall image, frames of 4 score rows each
    tokens = torch.randn(2, n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    maps = tokens_to_map(tokens, boxes, (8, 10), num_frames=t_frames)
    assert maps.shape == (2, 3, t_frames, 8, 10)
    clipped, share = frame_boxes(boxes, t_frames)  # B×N×T×4 in frame coordinates
    for f in range(t_frames):
        ref = tokens_to_map(tokens, clipped[:, :, f].contiguous(), (8, 10))
        torch.testing.assert_close(maps[:, :, f], ref)
    # per-frame object boxes stacked the same way land where tokens_to_map paints them
    assert stack_frame_boxes(torch.tensor([[[0.0, 0.0, 1.0, 1.0]] * t_frames])).shape == (1, t_frames, 4)


def test_tokens_to_map_dtypes_and_autocast():
    boxes = _partition(dtype=torch.float32)
    tokens = torch.randn(2, 13, 4).to(torch.bfloat16)
    out = tokens_to_map(tokens, boxes, (5, 5))
    assert out.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = tokens_to_map(tokens.float(), boxes, (5, 5))
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out.float(), out32, atol=0.05, rtol=0.02)


def test_tokens_to_map_cells_no_box_covers_are_zero():
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 1.0]]])
    out = tokens_to_map(torch.ones(1, 1, 2), boxes, (2, 4))
    assert torch.equal(out[0, 0], torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2))


@pytest.mark.parametrize("tokens, boxes, size, frames, match", [
    (torch.ones(2, 3), torch.zeros(1, 3, 4), (2, 2), None, "B×N×D"),
    (torch.ones(1, 3, 2, dtype=torch.long), torch.zeros(1, 3, 4), (2, 2), None, "floating"),
    (torch.ones(1, 3, 2), torch.zeros(1, 4, 4), (2, 2), None, "B×N = \\(1, 3\\)"),
    (torch.ones(1, 1, 2), torch.tensor([[[0.0, 0.0, float("nan"), 1.0]]]), (2, 2), None, "NaN"),
    (torch.ones(1, 1, 2), torch.tensor([[[0.5, 0.0, 0.2, 1.0]]]), (2, 2), None, "x0 <= x1"),
    (torch.ones(1, 1, 2), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), (0, 2), None, "size"),
    (torch.ones(1, 1, 2), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), (2, 2), 0, "num_frames"),
])
def test_tokens_to_map_errors(tokens, boxes, size, frames, match):
    with pytest.raises(ValueError, match=match):
        tokens_to_map(tokens, boxes, size, num_frames=frames)
