"""The score map read at the cells' centres (``Scorer(align_cells=True)``, docs/method.md §3)."""
import pytest
import torch
from torch import nn

from dartok.scorer import Scorer, cell_centre_weights


def _receptive_centre(trunk: nn.Module, size: int, cell: tuple[int, int]) -> tuple[float, float]:
    """Centroid (pixel indices) of the receptive field of feature ``cell`` with every conv's
    weights positive and equal and the squeeze-excite gates constant: each layer is then
    symmetric about its window's centre, so the centroid is the feature's exact position."""
    trunk = trunk.eval()
    gates = {id(c) for m in trunk.modules() if "SqueezeExcite" in type(m).__name__ for c in m.modules()}
    with torch.no_grad():
        for m in trunk.modules():
            if id(m) in gates:
                if isinstance(m, nn.Conv2d):
                    m.weight.zero_()
            elif isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1.0), m.bias.data.fill_(0.0)
                m.running_mean.zero_(), m.running_var.fill_(1.0)
    x = torch.ones(1, trunk_in_chans(trunk), size, size, dtype=torch.float64, requires_grad=True)
    feats = trunk.double()(x)[-1]
    feats[0, :, cell[0], cell[1]].sum().backward()
    g = x.grad[0].abs().sum(0)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    return float((g * ys).sum() / g.sum()), float((g * xs).sum() / g.sum())


def trunk_in_chans(trunk: nn.Module) -> int:
    return next(m for m in trunk.modules() if isinstance(m, nn.Conv2d)).in_channels


@pytest.mark.parametrize("trunk,stage,size", [("mobilenetv3_small", 2, 128), ("mobilenetv3_small", None, 224),
                                              ("efficientnet_b0", 2, 128)])
def test_features_sit_at_the_cells_top_left_corner(trunk, stage, size):
    """The premise of :func:`cell_centre_weights`: feature ``i`` of a stride-``S`` trunk sees
    pixel ``i·S`` (not the cell's centre ``i·S + (S − 1)/2``), for the trunks we ship."""
    torch.manual_seed(0)
    s = Scorer(trunk=trunk, stage=stage, input_size=size)
    h = s.grid_size[0]
    # the trunk is fully convolutional: probe it on a 512 px input, far from its zero padding
    big = 512 // s.stride
    cell = (big // 2 - 1, big // 2 + 1)
    cy, cx = _receptive_centre(s.trunk, 512, cell)
    assert cy == pytest.approx(cell[0] * s.stride, abs=0.02)
    assert cx == pytest.approx(cell[1] * s.stride, abs=0.02)
    # so the aligned map reads feature position u_i = (centre_i) / S at every cell
    m = cell_centre_weights(h, size, s.stride, dtype=torch.float64)
    pos = m @ torch.arange(h, dtype=torch.float64)
    centres = ((torch.arange(h, dtype=torch.float64) + 0.5) * size / h - 0.5) / s.stride
    inside = centres <= h - 1
    assert torch.allclose(pos[inside], centres[inside])
    assert torch.allclose(pos[~inside], torch.full_like(pos[~inside], h - 1.0))


@pytest.mark.parametrize("cells,size,stride", [(16, 128, 8), (14, 224, 16), (7, 100, 16), (1, 16, 16)])
def test_cell_centre_weights_rows_are_interpolations(cells, size, stride):
    m = cell_centre_weights(cells, size, stride, dtype=torch.float64)
    assert m.shape == (cells, cells)
    assert (m >= 0).all()
    assert torch.allclose(m.sum(1), torch.ones(cells, dtype=torch.float64))
    assert ((m > 0).sum(1) <= 2).all()


def test_aligned_map_moves_half_a_cell_towards_the_origin():
    """A score peak on trunk feature (i, j) moves by (S − 1)/(2S) of a cell to the top-left: the
    aligned map's centre of mass, in feature units, is (i, j) − 7/16 at stride 8."""
    torch.manual_seed(0)
    s = Scorer(trunk="mobilenetv3_small", stage=2, input_size=128, align_cells=True)
    scores = torch.zeros(1, 16, 16, dtype=torch.float64)
    scores[0, 6, 9] = 1.0
    out = s.align(scores)
    ys = torch.arange(16, dtype=torch.float64)
    cy = float((out[0].sum(1) * ys).sum() / out.sum())
    cx = float((out[0].sum(0) * ys).sum() / out.sum())
    assert cy == pytest.approx(6 - 7 / 16)
    assert cx == pytest.approx(9 - 7 / 16)


def test_align_cells_changes_only_the_map_position_and_keeps_gradients():
    torch.manual_seed(0)
    kw = dict(trunk="mobilenetv3_small", stage=2, input_size=64, in_chans=1, cam_classes=4)
    plain, aligned = Scorer(**kw), Scorer(**kw, align_cells=True)
    aligned.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 64, 64)
    feats = plain.features(x)
    a, b = plain.scores_from_features(feats), aligned.scores_from_features(feats)
    assert torch.allclose(aligned.align(a), b, atol=1e-6)
    assert not torch.allclose(a, b)
    pdf = aligned(x)
    assert torch.allclose(pdf.sum((1, 2)), torch.ones(2), atol=1e-5)
    pdf[:, 0, 0].sum().backward()
    assert aligned.head.fc1.weight.grad.abs().sum() > 0
    assert "cell_centres" not in aligned.state_dict()


def test_align_cells_rejects_non_bools():
    with pytest.raises(ValueError, match="align_cells must be True or False"):
        Scorer(trunk="mobilenetv3_small", stage=2, input_size=64, align_cells=1)
