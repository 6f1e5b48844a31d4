"""The DART authors' tokenizer (compat="hcplab") and checkpoints (issue 14 §1), without a network.

``reference_*`` below re-state the authors' algorithm step by step as their code does it
(github HCPLab-SYSU/DART: ``dart/tools.py`` ``find_quantiles``, ``pdf_to_row_heights``,
``resample_tokens_by_heights``, ``get_edges_from_pdf``, ``resample_tokens_by_edges``,
``resample_image_by_heights`` and ``dynamic_image_patch_sample`` with ``version='v2'``;
``dart/spn.py`` ``ScorePredNetV1/V2``; ``dart/dart.py`` ``forward``): Python loops over rows
and cells, masks and ``grid_sample`` as theirs, 448 input, 224-scale row heights. dartok's
implementation (dartok.compat.hcplab) is vectorised with gathers and searchsorted instead.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dartok  # noqa: F401  (before timm)
import timm
import torchvision.models as tvm

from dartok import DART
from dartok.compat.hcplab import (HCPLAB_CHECKPOINTS, HcplabScorer, convert_hcplab_state_dict, hcplab_tokenize,
                                  load_hcplab_checkpoint)
from dartok.models import _pretrained

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "hcplab_keys.json").read_text())
MODEL_OF = {"darvit-tiny.pth": "dart_deit_tiny_patch16_224.hcplab_in1k",
            "darvit-tiny-v2.pth": "dart_deit_tiny_patch16_224.hcplab_v2_in1k",
            "darvit-sm.pth": "dart_deit_small_patch16_224.hcplab_in1k",
            "darvim-tiny.pth": "dart_vim_tiny_patch16_224.hcplab_in1k",
            "darvim-sm.pth": "dart_vim_small_patch16_224.hcplab_in1k"}
SCORER_PREFIX = "patch_embed.spn.spn.spn."


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty hub cache and no host reachable (as in test_timm_conventions)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(_pretrained, "_reachable", lambda host, *a, **k: False)


# ----------------------------------------------------------------------------- the reference

def reference_quantiles(levels, pdf, eps=1e-8):
    n, length = pdf.shape
    cum = torch.cumsum(pdf, 1)
    reached = cum.unsqueeze(-1) >= levels.view(1, 1, -1)  # n×L×K
    j = reached.int().argmax(1)
    j = torch.where(reached.sum(1) == 0, torch.full_like(j, length - 1), j)
    before = torch.gather(cum, 1, (j - 1).clamp(0, length - 1))
    before = torch.where(j == 0, torch.zeros_like(before), before)
    return j.to(pdf.dtype) + (levels.unsqueeze(0) - before) / (torch.gather(pdf, 1, j) + eps)


def reference_rows(pdf, total_height, target_h):
    n = pdf.shape[0]
    rows = pdf.shape[1] // 14
    row = pdf.view(n, rows, 14).sum(-1)
    row = row / (row.sum(-1, keepdim=True) + 1e-8)
    levels = torch.linspace(0, 1, target_h + 1, dtype=pdf.dtype)[1:-1]
    base = torch.linspace(0, rows, rows + 1, dtype=pdf.dtype).expand(n, -1)
    cuts = torch.cat([base[:, :1], reference_quantiles(levels, row), base[:, -1:]], 1)
    return (cuts[:, 1:] - cuts[:, :-1]) * (total_height / rows)


def reference_by_heights(tokens, heights):  # 224-scale heights, 16-pixel grid rows, 14 columns
    n, _, d = tokens.shape
    old = tokens.view(n, -1, 14, d)
    h = heights.clone()
    h[h < 0] = 0
    ends = h.cumsum(1)
    starts = torch.cat([torch.zeros(n, 1, dtype=h.dtype), ends[:, :-1]], 1)
    old_top = 16.0 * torch.arange(old.shape[1], dtype=h.dtype)
    out = torch.zeros(n, h.shape[1], 14, d, dtype=tokens.dtype)
    for b in range(n):
        for i in range(h.shape[1]):  # new row i: overlap with each old 16-pixel row, as a fraction of 16
            w = (torch.minimum(ends[b, i], old_top + 16) - torch.maximum(starts[b, i], old_top)).clamp(min=0) / 16.0
            w = w / w.sum().clamp(min=1e-6)
            out[b, i] = torch.einsum("j,jcd->cd", w, old[b])
    return out.view(n, -1, d)


def reference_edges(pdf, n_tokens):
    n, length = pdf.shape
    base = torch.linspace(0, length, length + 1, dtype=pdf.dtype).expand(n, -1)
    levels = torch.linspace(0, 1, n_tokens + 1, dtype=pdf.dtype)[1:-1]
    return torch.cat([base[:, :1], reference_quantiles(levels, pdf), base[:, -1:]], 1) / length * length


def reference_by_edges(tokens, edges):
    length = tokens.shape[1]
    edges = edges / edges.max() * length
    cell = torch.arange(length, dtype=edges.dtype)
    out = []
    for b in range(tokens.shape[0]):
        rows = []
        for k in range(edges.shape[1] - 1):  # token k: overlap with each unit cell of the strip
            w = (torch.minimum(edges[b, k + 1], cell + 1) - torch.maximum(edges[b, k], cell)).clamp(min=0)
            rows.append(w / (w.sum() + 1e-12) @ tokens[b])
        out.append(torch.stack(rows))
    return torch.stack(out)


def reference_patches(images, heights, edges, p=16):
    n, c, hgt, wid = images.shape
    ends = heights.cumsum(1)
    frac_rows = torch.arange(0, p, dtype=images.dtype) / p
    cols = torch.linspace(0, 1, wid, dtype=images.dtype)
    chunks = []
    for i in range(heights.shape[1]):  # each row resampled to p pixel rows
        top = torch.zeros(n, dtype=images.dtype) if i == 0 else ends[:, i - 1]
        y = (top.view(n, 1, 1) + heights[:, i].view(n, 1, 1) * frac_rows.view(1, p, 1)).expand(n, p, wid)
        grid = torch.stack([(cols * 2 - 1).view(1, 1, wid).expand(n, p, wid), y / (hgt - 1) * 2 - 1], -1)
        chunks.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True))
    strip = torch.cat(chunks, 3)  # n×c×p×(R·W)
    ww = strip.shape[3]
    k = edges.shape[1] - 1
    t = (torch.arange(0, p, dtype=images.dtype) / p).view(1, 1, p)
    xs = (edges[:, :-1, None] + (edges[:, 1:, None] - edges[:, :-1, None]) * t).reshape(n, 1, k * p).expand(n, p, -1)
    ys = torch.linspace(0, p - 1, p, dtype=images.dtype).view(1, p, 1).expand(n, p, k * p)
    grid = torch.stack([2 * xs / (ww - 1) - 1, 2 * ys / (p - 1) - 1], -1)
    wide = F.grid_sample(strip, grid, mode="bilinear", align_corners=True)  # zeros padding, as theirs
    return wide.reshape(n, c, p, k, p).permute(0, 3, 1, 2, 4)


def reference_tokenize(images, pdf, pos, n_tokens):
    """Their forward from the pdf on, 448 input (high_res: heights on the 224 scale, then ×2)."""
    n, _, hgt, _ = images.shape
    target_h = round(math.sqrt(n_tokens))
    pdf = pdf.flatten(1)
    heights = reference_rows(pdf, hgt / 2, target_h)
    pos = reference_by_heights(pos.repeat(n, 1, 1), heights)
    strip_pdf = reference_by_heights(pdf.unsqueeze(-1), heights).squeeze(-1)
    strip_pdf = strip_pdf / strip_pdf.sum(-1, keepdim=True)
    edges = reference_edges(strip_pdf, n_tokens)
    pos = reference_by_edges(pos, edges)
    edges = edges * hgt * heights.shape[1] / edges[0, -1].item()
    return reference_patches(images, heights * 2, edges), pos


def reference_scores(features, mlp, images, version):
    f = features(images)
    if version == "v1":
        s = mlp(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    else:
        n, d = f.shape[:2]
        shape = f.shape[2:]
        flat = f.view(n, d, -1).permute(0, 2, 1)
        s = (flat * torch.sigmoid(mlp(flat.mean(1, keepdim=True)))).sum(-1).view(n, 1, *shape)
    s = F.interpolate(s, size=(14, 14), mode="bilinear", align_corners=False)
    s = s - s.mean()
    s = s / (s.std() + 1e-8)
    s = torch.sigmoid(s) + 0.1 if version == "v1" else torch.sigmoid(2 * s)
    s = s.view(s.shape[0], -1)
    return s / s.sum(-1, keepdim=True)


def _pdfs(kind, n=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    if kind == "random":  # the v1 range: sigmoid(z) + 0.1
        p = torch.sigmoid(torch.randn(n, 14, 14, generator=g, dtype=dtype)) + 0.1
    else:  # peaked: most of the mass in a few cells, v2-like near-zero background
        yy, xx = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
        centres = torch.rand(n, 2, generator=g) * 13
        d2 = (yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2
        p = (torch.exp(-d2 / 1.5) + 1e-4).to(dtype)
    return p / p.sum((1, 2), keepdim=True)


# ----------------------------------------------------------------------------- the tokenizer

@pytest.mark.parametrize("kind,n_tokens", [("random", 196), ("peaked", 196), ("random", 121), ("peaked", 392)])
def test_compat_tokenizer_matches_their_algorithm(kind, n_tokens):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 448, 448, dtype=torch.float64)
    pdf = _pdfs(kind)
    pos = torch.randn(1, 196, 8, dtype=torch.float64)
    want_patches, want_pos = reference_tokenize(images, pdf, pos, n_tokens)
    patches, got_pos, boxes = hcplab_tokenize(images, pdf, pos, n_tokens, round(math.sqrt(n_tokens)), 16)
    assert patches.shape == (2, n_tokens, 3, 16, 16) and boxes.shape == (2, n_tokens, 4)
    torch.testing.assert_close(patches, want_patches, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_pos, want_pos, rtol=1e-9, atol=1e-9)


def test_compat_dart_module_float32_matches_the_reference():
    """Through ``DART(compat="hcplab")``: tokens = proj(their patches), positions = their positions."""
    torch.manual_seed(1)
    dart = DART(num_tokens=196, embed_dim=16, compat="hcplab").eval()
    images = torch.randn(2, 3, 448, 448)
    pdf = _pdfs("peaked", dtype=torch.float32)
    out = dart(images, pdf=pdf)
    want_patches, want_pos = reference_tokenize(images, pdf, dart.pos_embed.detach(), 196)
    want = F.conv2d(want_patches.reshape(-1, 3, 16, 16), dart.proj.weight, dart.proj.bias).view(2, 196, 16)
    # float32 strip coordinates reach R·W = 6272 px (rounding ~5e-4 px), so the two float32 roundings differ
    torch.testing.assert_close(out.tokens, want, rtol=0, atol=5e-3)
    torch.testing.assert_close(out.pos_embed, want_pos, rtol=1e-5, atol=1e-5)
    # approximate boxes: inside the unit square, each token's x-span within one row
    assert bool((out.boxes >= 0).all() and (out.boxes <= 1).all())
    assert bool((out.boxes[..., 2] >= out.boxes[..., 0]).all() and (out.boxes[..., 3] > out.boxes[..., 1]).all())


def test_tokens_straddle_rows_and_counts_per_row_vary():
    """Their defect, reproduced: one cut over all rows end to end (docs/method.md §4)."""
    from dartok.compat.hcplab import hcplab_edges, hcplab_resample_by_rows, hcplab_row_heights
    pdf = _pdfs("peaked", n=1)
    heights = hcplab_row_heights(pdf, 14)
    strip = hcplab_resample_by_rows(pdf.unsqueeze(-1), heights).squeeze(-1)
    edges = hcplab_edges(strip / strip.sum(), 196)[0]
    row_of_start = (edges[:-1] / 14).floor()
    row_of_end = ((edges[1:] - 1e-9) / 14).floor()
    assert bool((row_of_end > row_of_start).any())  # some token spans two rows
    counts = torch.bincount(row_of_start.long(), minlength=14)
    assert counts.max() > counts.min()


# ----------------------------------------------------------------------------- the scorer and trunk

def _randomise_batchnorm(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


class _Holder(torch.nn.Module):
    def __init__(self, dart):
        super().__init__()
        self.patch_embed = dart


@pytest.mark.parametrize("trunk,version", [("small", "v1"), ("small", "v2"), ("large", "v1")])
def test_trunk_transplant_and_scorer_match_torchvision_layout(trunk, version):
    """Their ``features`` (torchvision layout, eps 1e-3, drifted statistics) and MLP, through the converter."""
    torch.manual_seed(0)
    cut = {"small": {"v1": 11, "v2": 13}, "large": {"v1": 15}}[trunk][version]
    theirs = getattr(tvm, f"mobilenet_v3_{trunk}")(weights=None).features[:cut].eval()
    with torch.no_grad():
        _randomise_batchnorm(theirs)
    dart = DART(num_tokens=16, embed_dim=8, compat="hcplab",
                scorer=dict(trunk=f"mobilenet_v3_{trunk}", version=version))
    mlp_shapes = {k[len("mlp."):]: v.shape for k, v in dart.scorer.mlp.state_dict().items()}
    mlp = torch.nn.Sequential(*[torch.nn.Linear(s[1], s[0]) if len(s) == 2 else None
                                for k, s in mlp_shapes.items() if k.endswith("weight")])
    mlp = torch.nn.Sequential(mlp[0], torch.nn.GELU(), mlp[1])
    sd = {SCORER_PREFIX + "features." + k: v for k, v in theirs.state_dict().items()}
    sd.update({SCORER_PREFIX + "mlp.net." + k: v for k, v in mlp.state_dict().items()})
    holder = _Holder(dart)
    converted = convert_hcplab_state_dict({"model": sd, "epoch": 1}, holder)
    result = holder.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith(("patch_embed.proj", "patch_embed.pos_embed")) for k in result.missing_keys)
    bns = [m for m in dart.scorer.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)
    dart.train()  # the trunk stays in eval mode: the checkpoint's statistics, not the batch's
    images = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(dart.scorer.trunk(images), theirs(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dart.scorer(images).flatten(1), reference_scores(theirs, mlp, images, version),
                                   rtol=1e-5, atol=1e-6)
        # their batch standardisation: an image's pdf depends on the rest of its batch (reproduced)
        alone = dart.scorer(images[:1])
        assert not torch.allclose(alone, dart.scorer(images)[:1], atol=1e-6)


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("file", sorted(FIXTURE))
def test_their_state_dict_converts_with_no_missing_or_unexpected_keys(file):
    """Key names and shapes of their models (tests/fixtures/make_hcplab_keys.py) → the compat model's."""
    name = MODEL_OF[file]
    if "vim" in file:
        model = timm.create_model(name)
    else:
        with torch.device("meta"):
            model = timm.create_model(name)
    sd = {k: torch.empty(v, device="meta") for k, v in FIXTURE[file].items()}
    sd["pos_embed"] = torch.arange(197.0).view(1, 197, 1).expand(FIXTURE[file]["pos_embed"])
    out = convert_hcplab_state_dict(sd, model)
    own = model.state_dict()
    assert sorted(out) == sorted(own)
    assert [k for k in out if out[k].shape != own[k].shape] == []
    cls = 98 if "vim" in file else 0  # DeiT: first; Vim: their middle class token
    assert out["pos_embed"][0, 0, 0].item() == cls
    grid = out["patch_embed.pos_embed"][0, :, 0]
    assert grid.tolist() == [float(i) for i in range(197) if i != cls]
    assert model.patch_embed.num_tokens == HCPLAB_CHECKPOINTS[name].num_tokens


def test_tag_loads_their_container_from_a_file(tmp_path):
    """``pretrained_cfg_overlay=dict(file=...)``: their container (args included) → the compat model, exactly."""
    g = torch.Generator().manual_seed(0)
    keys = FIXTURE["darvit-tiny.pth"]
    sd = {k: (torch.rand(v, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v, generator=g) * 0.02)
          for k, v in keys.items() if not k.endswith("num_batches_tracked")}
    sd.update({k: torch.tensor(7) for k in keys if k.endswith("num_batches_tracked")})
    ema = {k: v + 1 for k, v in sd.items()}
    path = tmp_path / "darvit-tiny.pth"
    torch.save({"model": sd, "model_ema": ema, "optimizer": {"state": {}, "param_groups": []}, "epoch": 299,
                "args": argparse.Namespace(model="darvit_tiny", input_size=448)}, path)
    assert load_hcplab_checkpoint(path, use_ema=True)["norm.weight"].equal(ema["norm.weight"])
    model = timm.create_model("dart_deit_tiny_patch16_224.hcplab_in1k", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert "state_dict" not in model.pretrained_cfg
    assert model.pretrained_cfg["hf_hub_filename"] == "darvit-tiny.pth"
    assert model.patch_embed.compat == "hcplab" and model.patch_embed.num_tokens == 196
    torch.testing.assert_close(model.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.pos_embed, sd["pos_embed"][:, :1], rtol=0, atol=0)
    torch.testing.assert_close(model.patch_embed.pos_embed, sd["pos_embed"][:, 1:], rtol=0, atol=0)
    bn = "patch_embed.spn.spn.spn.features.9.block.1.1.running_var"
    torch.testing.assert_close(model.patch_embed.scorer.trunk[9].block[1][1].running_var, sd[bn], rtol=0, atol=0)
    torch.testing.assert_close(model.patch_embed.scorer.mlp.net[2].weight,
                               sd[SCORER_PREFIX + "mlp.net.2.weight"], rtol=0, atol=0)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 448, 448))
    assert logits.shape == (2, 1000) and bool(torch.isfinite(logits).all())


def test_tag_without_network_fails_fast_naming_the_model(no_network, tmp_path):
    with pytest.raises(RuntimeError, match="dart_deit_tiny_patch16_224 needs weights.*hf-hub:yinkx3/DART"):
        timm.create_model("dart_deit_tiny_patch16_224.hcplab_in1k", pretrained=True)
    from typer.testing import CliRunner

    from dartok.cli import app
    (tmp_path / "val" / "n0").mkdir(parents=True)
    res = CliRunner().invoke(app, ["eval", "--model", "dart_deit_tiny_patch16_224.hcplab_in1k",
                                   "--data-root", str(tmp_path / "val")])
    assert res.exit_code == 2 and "Error:" in res.output and "--weights FILE" in res.output
    assert "Traceback" not in res.output


def test_default_model_and_tokenizer_untouched():
    assert timm.models.get_pretrained_cfg("dart_deit_tiny_patch16_224").tag is None
    assert timm.models.get_pretrained_cfg("dart_vim_tiny_patch16_224").tag is None
    with torch.device("meta"):
        model = timm.create_model("dart_deit_tiny_patch16_224")
    assert model.patch_embed.compat is None
    tags = timm.list_pretrained("dart_deit_tiny_patch16_224*")
    assert "dart_deit_tiny_patch16_224.hcplab_in1k" in tags


def test_compat_refuses_what_it_does_not_reproduce():
    with pytest.raises(ValueError, match="compat must be None or one of"):
        DART(compat="theirs")
    with pytest.raises(ValueError, match="round.*14 rows"):
        DART(num_tokens=196, bands=7, compat="hcplab")
    with pytest.raises(ValueError, match="no uniform mix"):
        DART(alpha=0.3, compat="hcplab")
    with pytest.raises(ValueError, match="antialias=True"):
        DART(antialias=True, compat="hcplab")
    with pytest.raises(ValueError, match="pos_grid=7"):
        DART(pos_grid=7, compat="hcplab", scorer=dict(trunk="mobilenet_v3_small"))
    with pytest.raises(ValueError, match="HcplabScorer"):
        DART(compat="hcplab", scorer=torch.nn.Identity())
    dart = DART(num_tokens=16, embed_dim=8, compat="hcplab")
    with pytest.raises(ValueError, match="square images"):
        dart(torch.randn(1, 3, 448, 224))
    with pytest.raises(ValueError, match="14×14 score map"):
        dart(torch.randn(1, 3, 64, 64), pdf=torch.ones(1, 7, 7))
    with pytest.raises(ValueError, match="compat='hcplab'"):
        convert_hcplab_state_dict({}, _Holder(DART(num_tokens=16, embed_dim=8)))
    with pytest.raises(ValueError, match="pos_embed must be 1×197×D"):
        convert_hcplab_state_dict({"pos_embed": torch.zeros(1, 393, 8)}, _Holder(dart))
    with pytest.raises(NotImplementedError, match="DART.partition is dartok's step"):
        dart.partition(torch.full((1, 14, 14), 1 / 196))
    assert dart.alpha == 0.0
    with pytest.raises(ValueError, match="warp"):
        dartok.patch_timm(timm.create_model("vit_micro_patch8"), mode="warp", compat="hcplab")


# ----------------------------------------------------------------------------- dartok eval --model

def _their_file(path, head_class=None):
    g = torch.Generator().manual_seed(0)
    keys = FIXTURE["darvit-tiny.pth"]
    sd = {k: (torch.rand(v, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v, generator=g) * 0.02)
          for k, v in keys.items() if not k.endswith("num_batches_tracked")}
    sd.update({k: torch.tensor(1) for k in keys if k.endswith("num_batches_tracked")})
    if head_class is not None:  # every image predicted as this class
        sd["head.weight"].zero_()
        sd["head.bias"].zero_()
        sd["head.bias"][head_class] = 10.0
    torch.save({"model": sd, "args": argparse.Namespace(model="darvit_tiny")}, path)
    return path


def test_cli_eval_model_on_an_imagenet_style_folder(tmp_path):
    """``dartok eval --model TAG --weights FILE --data-root ROOT``: the class map is train/'s 1000 folders."""
    from PIL import Image
    from typer.testing import CliRunner

    from dartok.cli import app

    root = tmp_path / "imagenet"
    for c in range(1000):
        (root / "train" / f"n{c:08d}").mkdir(parents=True)
    img = Image.new("RGB", (40, 30), (120, 30, 200))
    for c in (0, 5):
        (root / "val" / f"n{c:08d}").mkdir(parents=True)
        img.save(root / "val" / f"n{c:08d}" / "a.png")
    weights = _their_file(tmp_path / "darvit-tiny.pth", head_class=5)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--model", "dart_deit_tiny_patch16_224.hcplab_in1k", "--weights", str(weights),
                              "--data-root", str(root), "--no-progress", "--json", str(tmp_path / "out.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["n"] == 2 and out["top1"] == 50.0 and out["split"] == "val"  # the n00000005 image, not n00000000
    bad = runner.invoke(app, ["eval", "--model", "dart_deit_tiny_patch16_224.hcplab_in1k", "--weights", str(weights),
                              "--data-root", str(root / "val")])
    assert bad.exit_code == 2 and "has 2 class folders" in bad.output and "Traceback" not in bad.output
    both = runner.invoke(app, ["eval", "--model", "x", "--checkpoint", str(tmp_path)])
    assert both.exit_code == 2 and "one of --checkpoint" in both.output


def test_compat_model_round_trips_through_save_for_hf(tmp_path, no_network):
    """A compat model saved in dartok's format reloads as one (``local-dir:``), not through their container."""
    from timm.models import save_for_hf
    model = timm.create_model("dart_deit_tiny_patch16_224.hcplab_121p_in1k", depth=2, num_classes=3).eval()
    save_for_hf(model, tmp_path / "saved")
    again = timm.create_model(f"local-dir:{tmp_path / 'saved'}", pretrained=True).eval()
    assert again.patch_embed.compat == "hcplab" and again.patch_embed.num_tokens == 121
    x = torch.randn(2, 3, 448, 448)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
