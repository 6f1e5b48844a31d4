"""The oracle score map and the localisation metric (issue 11 items 1-2; docs/method.md §8)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dartok.localization import box_coverage, box_pdf, object_mass, object_tokens, stack_frame_boxes
from dartok.partition import band_layout, mix_uniform, partition_pdf, unmix_uniform

ALPHA = 0.1


@st.composite
def boxes_and_size(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    x0 = draw(st.floats(0, 0.9)); y0 = draw(st.floats(0, 0.9))
    x1 = draw(st.floats(x0 + 0.05, 1.0)); y1 = draw(st.floats(y0 + 0.05, 1.0))
    return torch.tensor([[x0, y0, x1, y1]], dtype=torch.float64), (h, w)


@given(boxes_and_size())
@settings(max_examples=60, deadline=None)
def test_oracle_mass_is_one_up_to_cell_rounding_and_mixing_gives_the_formula(bs):
    box, (h, w) = bs
    pdf = box_pdf(box, (h, w))
    assert torch.allclose(pdf.sum(), torch.tensor(1.0, dtype=torch.float64))
    m = object_mass(pdf, box)[0]
    cover = box_coverage(box, (h, w))[0]
    partial = ((cover > 0) & (cover < 1)).double()
    # the mass lost is at most the share of mass on partly covered cells
    assert 1.0 - float((pdf[0] * partial).sum()) - 1e-12 <= float(m) <= 1.0 + 1e-12
    area = float((box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1]))
    mixed = object_mass(mix_uniform(pdf, ALPHA), box)[0]
    assert torch.isclose(mixed, (1 - ALPHA) * m + ALPHA * area, atol=1e-12)
    assert torch.isclose(object_mass(unmix_uniform(mix_uniform(pdf, ALPHA), ALPHA), box)[0], m, atol=1e-12)


@pytest.mark.parametrize("box", [(0.0, 0.0, 0.5, 0.5), (0.25, 0.5, 1.0, 0.75), (0.0, 0.0, 1.0, 1.0)])
def test_oracle_mass_is_exactly_one_on_cell_edges(box):
    b = torch.tensor([box], dtype=torch.float64)
    pdf = box_pdf(b, (4, 8))
    assert object_mass(pdf, b).item() == pytest.approx(1.0, abs=1e-15)
    area = (box[2] - box[0]) * (box[3] - box[1])
    assert object_mass(mix_uniform(pdf, ALPHA), b).item() == pytest.approx(1 - ALPHA + ALPHA * area, abs=1e-15)


def test_oracle_mass_below_one_off_cell_edges():
    b = torch.tensor([[0.1, 0.1, 0.4, 0.4]], dtype=torch.float64)  # 2×2 cells, each partly covered
    m = object_mass(box_pdf(b, (4, 4)), b).item()
    assert 0.0 < m < 0.99


def test_coverage_is_the_exact_area_overlap():
    b = torch.tensor([[0.125, 0.0, 0.5, 0.25]])
    c = box_coverage(b, (2, 2))[0]
    assert torch.allclose(c, torch.tensor([[0.75 * 0.5, 0.0], [0.0, 0.0]]))
    assert torch.isclose(c.sum() / 4, torch.tensor(0.375 * 0.25))


def test_object_tokens_counts_exactly_on_a_uniform_grid():
    pdf = torch.full((1, 4, 4), 1 / 16, dtype=torch.float64)
    boxes = partition_pdf(pdf, band_layout(16, 4))  # the regular 4×4 grid
    top_left = torch.tensor([[0.0, 0.0, 0.5, 0.5]], dtype=torch.float64)
    assert object_tokens(boxes, top_left).tolist() == [4]
    assert object_tokens(boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]])).tolist() == [16]
    assert object_tokens(boxes, torch.tensor([[0.3, 0.3, 0.32, 0.32]])).tolist() == [0]
    # two pieces, a centre counted once; a batch of two samples
    pieces = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.25, 0.25]],
                           [[0.5, 0.5, 1.0, 1.0], [0.0, 0.75, 0.25, 1.0]]], dtype=torch.float64)
    assert object_tokens(boxes.expand(2, -1, -1), pieces).tolist() == [4, 5]


def test_stack_frame_boxes_moves_frames_down_the_tall_map():
    fb = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])  # B=1, T=2
    tall = stack_frame_boxes(fb)
    assert torch.equal(tall, torch.tensor([[[0.0, 0.0, 0.5, 0.25], [0.5, 0.75, 1.0, 1.0]]]))
    pdf = box_pdf(tall, (8, 4))  # two frames of 4×4 cells
    assert object_mass(pdf, tall).item() == pytest.approx(1.0)
    assert pdf[0, :2, :2].sum().item() == pytest.approx(0.5) and pdf[0, 6:, 2:].sum().item() == pytest.approx(0.5)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 3), "B×4"), (torch.zeros(1, 4, dtype=torch.long), "floating"),
    (torch.tensor([[0.5, 0.0, 0.2, 1.0]]), "x0 <= x1"), (torch.tensor([[float("nan"), 0, 1, 1]]), "NaN"),
    (torch.tensor([[0.5, 0.5, 0.5, 1.0]]), "no area"), (torch.tensor([[1.2, 0.0, 1.5, 1.0]]), "no area"),
])
def test_bad_boxes_raise_one_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        box_pdf(bad, (4, 4))


def test_bad_sizes_and_batches_raise():
    with pytest.raises(ValueError, match="size"):
        box_pdf(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), (0, 4))
    with pytest.raises(ValueError, match="samples"):
        object_mass(torch.ones(2, 4, 4) / 16, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="B×N×4"):
        object_tokens(torch.zeros(1, 4), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="frame boxes"):
        stack_frame_boxes(torch.zeros(1, 4))


def test_object_mass_is_differentiable_in_the_pdf_and_the_box():
    pdf = torch.rand(2, 3, 5, dtype=torch.float64, requires_grad=True)
    box = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.3, 0.05, 0.65, 0.55]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, b: object_mass(p, b), (pdf, box))
