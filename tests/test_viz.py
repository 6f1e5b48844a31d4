"""Tests of dartok.viz: display conversion, partition plot, atomic figure writing."""
from __future__ import annotations

import os

import dartok  # noqa: F401
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from dartok.viz import plot_partition, save_partition_figure, to_display_image  # noqa: E402


def test_to_display_image_ranges_and_layouts():
    chw = torch.linspace(-1, 1, 3 * 4 * 5).view(3, 4, 5)  # [-1, 1] tensor, C×H×W
    a = to_display_image(chw)
    assert a.shape == (4, 5, 3) and a.min() == 0.0 and a.max() == pytest.approx(1.0)
    gray = torch.rand(1, 6, 6) * 0.5 + 0.2
    g = to_display_image(gray)
    assert g.shape == (6, 6, 3) and g.min() == 0.0 and g.max() == pytest.approx(1.0)
    hwc = np.random.randint(0, 256, size=(7, 8, 3)).astype(np.uint8)
    assert to_display_image(hwc).shape == (7, 8, 3)
    rgba = np.random.rand(7, 8, 4)
    assert to_display_image(rgba).shape == (7, 8, 3)
    assert to_display_image(np.zeros((3, 3))).max() == 0.0  # constant image: no division by zero
    with pytest.raises(ValueError):
        to_display_image(np.zeros((2, 3, 4, 5)))


def test_plot_partition_draws_boxes_and_pdf():
    fig, ax = plt.subplots()
    img = torch.rand(1, 32, 48)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]])
    pdf = torch.rand(4, 4)
    plot_partition(ax, img, boxes, pdf, title="t")
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == 2
    assert rects[1].get_x() == pytest.approx(24.0) and rects[1].get_width() == pytest.approx(24.0)
    assert rects[0].get_height() == pytest.approx(32.0)
    assert len(ax.images) == 2  # image + heat map
    assert ax.images[1].get_alpha() == pytest.approx(0.45)
    assert ax.images[1].get_extent() == [0, 48, 32, 0]
    plt.close(fig)
    fig, ax = plt.subplots()
    plot_partition(ax, img, boxes, None)
    assert len(ax.images) == 1
    with pytest.raises(ValueError, match="pdf"):
        plot_partition(ax, img, boxes, torch.rand(2, 3, 4))
    plt.close(fig)


def test_save_partition_figure_writes_png_atomically(tmp_path, monkeypatch):
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    boxes = torch.rand(3, 5, 4).sort(-1).values
    pdfs = torch.rand(3, 4, 4)
    out = save_partition_figure(tmp_path / "sub" / "p.png", images, boxes, pdfs, titles=["a", "b", "c"], ncols=2)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # a failure while writing leaves the previous file untouched and no temp files
    from matplotlib.figure import Figure

    def boom(self, *a, **k):
        raise RuntimeError("render failed (simulated)")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        save_partition_figure(out, images, boxes)
    assert out.read_bytes() == data
    assert os.listdir(out.parent) == ["p.png"]


def test_save_partition_figure_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        save_partition_figure(tmp_path / "x.png", [], [])
    with pytest.raises(ValueError, match="box sets"):
        save_partition_figure(tmp_path / "x.png", [torch.rand(1, 4, 4)], [])
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------ visualize: the core functions, not a copy


@pytest.mark.parametrize("source", ["edges", "uniform"])
def test_visualize_score_source_boxes_are_quantile_boxes(tmp_path, monkeypatch, source):
    from PIL import Image

    import dartok.tools.viz as V
    from dartok.partition import quantile_boxes
    from dartok.scorer import edge_pdf, uniform_pdf

    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)).save(path)
    drawn = {}

    def capture(output, images, boxes, pdfs, titles=None, ncols=4):
        drawn.update(images=images, boxes=boxes, pdfs=pdfs)
        return output

    monkeypatch.setattr(V, "save_partition_figure", capture)
    out, n = V.visualize(tmp_path / "p.png", score_source=source, num_tokens=10, pdf_size=7, images=[path],
                         device="cpu")
    assert n == 1 and out == tmp_path / "p.png"
    x = V.load_image_file(path, 3)[None]
    pdf = edge_pdf(x, (7, 7)) if source == "edges" else uniform_pdf(1, (7, 7))
    torch.testing.assert_close(drawn["boxes"][0], quantile_boxes(pdf, 10)[0], atol=0, rtol=0)
    if source == "edges":
        torch.testing.assert_close(drawn["pdfs"][0], pdf[0], atol=0, rtol=0)
    else:
        assert drawn["pdfs"][0] is None
    out, _ = V.visualize(tmp_path / "a.png", score_source=source, num_tokens=10, pdf_size=7, alpha=0.3,
                         images=[path], device="cpu")
    torch.testing.assert_close(drawn["boxes"][0], quantile_boxes(pdf, 10, alpha=0.3)[0], atol=0, rtol=0)


def test_visualize_option_errors(tmp_path):
    from dartok.tools.viz import visualize

    with pytest.raises(ValueError, match="exactly one"):
        visualize(tmp_path / "x.png")
    with pytest.raises(ValueError, match="num-tokens"):
        visualize(tmp_path / "x.png", score_source="edges")
    with pytest.raises(ValueError, match=r"\.png"):
        visualize(tmp_path / "x.jpg", score_source="edges", num_tokens=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        visualize(tmp_path / "x.png", score_source="edges", num_tokens=4, images=[tmp_path / "missing.png"])
    assert not list(tmp_path.iterdir())
