"""Partition: exact 1/N mass, exact tiling, any budget, gradients, clear errors (SPEC §2)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dartok.partition import (
    band_layout, interval_overlap, mix_uniform, normalize_pdf, quantile_1d, quantile_boxes,
)


def box_masses(pdf, boxes):
    """Mass of each box under the piecewise-constant pdf (B×h×w summing to 1) → B×N."""
    _, h, w = pdf.shape
    wy = interval_overlap(boxes[..., 1], boxes[..., 3], h)
    wx = interval_overlap(boxes[..., 0], boxes[..., 2], w)
    return torch.einsum("bni,bnj,bij->bn", wy, wx, pdf)


def assert_tiles_unit_square(boxes, counts, atol=1e-9):
    """Boxes form bands: shared y-edges inside a band, contiguous x-edges, bands stacked."""
    assert (boxes[..., 2] >= boxes[..., 0] - atol).all() and (boxes[..., 3] >= boxes[..., 1] - atol).all()
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).sum(-1)
    torch.testing.assert_close(area, torch.ones_like(area), atol=1e-9, rtol=0)
    start, prev_y1 = 0, torch.zeros(boxes.shape[0], dtype=boxes.dtype)
    for c in counts:
        band = boxes[:, start:start + c]
        assert torch.equal(band[..., 1], band[:, :1, 1].expand(-1, c)), "a band has one top edge"
        assert torch.equal(band[..., 3], band[:, :1, 3].expand(-1, c)), "a band has one bottom edge"
        torch.testing.assert_close(band[:, 0, 1], prev_y1, atol=atol, rtol=0)
        assert (band[:, 0, 0] == 0).all() and (band[:, -1, 2] == 1).all()
        assert torch.equal(band[:, 1:, 0], band[:, :-1, 2]), "boxes in a band are contiguous"
        prev_y1 = band[:, 0, 3]
        start += c
    assert (prev_y1 == 1).all()


def random_pdf(kind, b, h, w, gen):
    if kind == "random":
        return torch.rand(b, h, w, generator=gen, dtype=torch.float64)
    if kind == "peaked":
        pdf = torch.full((b, h, w), 1e-3, dtype=torch.float64)
        for i in range(b):
            y, x = torch.randint(h, (1,), generator=gen).item(), torch.randint(w, (1,), generator=gen).item()
            pdf[i, y, x] = 1000.0
        return pdf
    if kind == "sparse":  # most cells exactly zero
        pdf = torch.rand(b, h, w, generator=gen, dtype=torch.float64)
        pdf = pdf * (torch.rand(b, h, w, generator=gen) < 0.15)
        pdf[:, 0, 0] += 0.5  # never all zero
        return pdf
    raise ValueError(kind)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["random", "peaked", "sparse"]),
    h=st.integers(1, 17), w=st.integers(1, 17),
    n=st.integers(1, 60),
    alpha=st.sampled_from([0.0, 0.05, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_equal_mass_and_exact_tiling(kind, h, w, n, alpha, seed):
    gen = torch.Generator().manual_seed(seed)
    pdf = random_pdf(kind, 3, h, w, gen)
    boxes = quantile_boxes(pdf, n, alpha=alpha)
    assert boxes.shape == (3, n, 4)
    assert boxes.min() >= 0 and boxes.max() <= 1
    mixed = mix_uniform(normalize_pdf(pdf), alpha)
    torch.testing.assert_close(box_masses(mixed, boxes), torch.full((3, n), 1.0 / n, dtype=torch.float64),
                               atol=1e-9, rtol=0)
    assert_tiles_unit_square(boxes, band_layout(n))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 13, 97, 196, 199, 392])
def test_any_budget_including_primes(n):
    pdf = torch.rand(2, 14, 14, dtype=torch.float64) + 0.01
    boxes = quantile_boxes(pdf, n)
    counts = band_layout(n)
    assert sum(counts) == n and max(counts) - min(counts) <= 1
    mixed = mix_uniform(normalize_pdf(pdf), 0.1)
    torch.testing.assert_close(box_masses(mixed, boxes), torch.full((2, n), 1.0 / n, dtype=torch.float64),
                               atol=1e-10, rtol=0)
    assert_tiles_unit_square(boxes, counts)


def test_band_layout_examples():
    assert band_layout(196) == (14,) * 14
    assert sorted(band_layout(392)) == [19] * 8 + [20] * 12
    assert band_layout(6, bands=2) == (3, 3)
    assert band_layout(7, bands=7) == (1,) * 7


def test_uniform_pdf_gives_regular_grid():
    boxes = quantile_boxes(torch.ones(1, 14, 14, dtype=torch.float64), 196)
    edges = torch.arange(15, dtype=torch.float64) / 14
    ys, xs = torch.meshgrid(edges[:-1], edges[:-1], indexing="ij")
    expected = torch.stack([xs, ys, xs + 1 / 14, ys + 1 / 14], -1).reshape(1, 196, 4)
    torch.testing.assert_close(boxes, expected, atol=1e-12, rtol=0)
    # non-square grid and R×C layout
    boxes = quantile_boxes(torch.ones(1, 3, 5, dtype=torch.float64), 12, bands=3)
    torch.testing.assert_close(boxes[0, :4, 0], torch.tensor([0, .25, .5, .75], dtype=torch.float64))
    torch.testing.assert_close(boxes[0, ::4, 1], torch.tensor([0, 1 / 3, 2 / 3], dtype=torch.float64))


def test_peak_gets_small_boxes():
    pdf = torch.full((1, 14, 14), 1.0)
    pdf[0, 3, 10] = 200.0
    boxes = quantile_boxes(pdf, 196, alpha=0.1)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    cx, cy = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    near = ((cx - 10.5 / 14).abs() < 1 / 14) & ((cy - 3.5 / 14).abs() < 1 / 14)
    assert area[near].mean() < 0.25 * area[~near].mean()


def test_all_zero_pdf_is_uniform():
    b1 = quantile_boxes(torch.zeros(1, 14, 14), 196)
    b2 = quantile_boxes(torch.ones(1, 14, 14), 196)
    torch.testing.assert_close(b1, b2)


def test_batch_samples_independent():
    pdf = torch.rand(4, 9, 11, dtype=torch.float64)
    full = quantile_boxes(pdf, 30)
    for i in range(4):
        torch.testing.assert_close(quantile_boxes(pdf[i:i + 1], 30), full[i:i + 1], atol=1e-14, rtol=0)


def test_quantile_1d_matches_inverse_cdf():
    pdf = torch.tensor([[0.1, 0.0, 0.3, 0.6]], dtype=torch.float64)
    q = torch.tensor([[0.05, 0.1, 0.25, 0.4, 0.7]], dtype=torch.float64)
    x = quantile_1d(pdf, q)
    # cell 0 holds [0, .1), cell 1 is empty, cell 2 holds [.1, .4), cell 3 [.4, 1]
    expected = torch.tensor([[0.5 / 4, 2 / 4, (2 + 0.5) / 4, 3 / 4, (3 + 0.5) / 4]], dtype=torch.float64)
    torch.testing.assert_close(x, expected)


def test_gradcheck_partition():
    gen = torch.Generator().manual_seed(0)
    pdf = (torch.rand(2, 5, 6, generator=gen, dtype=torch.float64) + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: quantile_boxes(p, 7, alpha=0.1), (pdf,), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradcheck(lambda p: quantile_boxes(p, 12, bands=3, alpha=0.0), (pdf,), eps=1e-7, atol=1e-6)


def test_gradcheck_quantile_1d():
    pdf = (torch.rand(3, 8, dtype=torch.float64) + 0.1).requires_grad_()
    q = (torch.rand(3, 5, dtype=torch.float64) * 0.9).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, t: quantile_1d(p, t * p.sum(-1, keepdim=True)), (pdf, q))


@pytest.mark.parametrize("bad, match", [
    (torch.full((1, 4, 4), float("nan")), "NaN"),
    (torch.tensor([[[1.0, float("inf")]]]), "NaN or Inf"),
    (-torch.ones(1, 4, 4), "non-negative"),
    (torch.ones(4, 4), "B×h×w"),
    (torch.ones(1, 0, 4), "at least 1×1"),
])
def test_bad_pdf_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        quantile_boxes(bad, 4)


@pytest.mark.parametrize("n, bands", [(0, None), (-3, None), (4, 5), (4, 0), (2.5, None)])
def test_bad_budget_errors(n, bands):
    with pytest.raises(ValueError, match="num_tokens|bands"):
        quantile_boxes(torch.ones(1, 4, 4), n, bands=bands)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_alpha_errors(alpha):
    with pytest.raises(ValueError, match="alpha"):
        quantile_boxes(torch.ones(1, 4, 4), 4, alpha=alpha)


def test_alpha_bounds_box_area():
    pdf = torch.zeros(1, 14, 14)
    pdf[0, 7, 7] = 1.0
    n, alpha = 49, 0.2
    boxes = quantile_boxes(pdf, n, alpha=alpha)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    assert area.max() <= 1.0 / (alpha * n) + 1e-6
    assert math.isclose(area.sum().item(), 1.0, rel_tol=1e-5)
