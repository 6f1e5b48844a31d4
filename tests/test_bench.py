"""Counting logic of ``dartok.bench`` (MACs, op listing, result files) and the ``bench`` CLI.

No timing assertions: the timed code paths only run, with one call each, on tiny models.
"""
from __future__ import annotations

import copy
import json

import dartok  # noqa: F401  (before timm)
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from dartok import DART
from dartok.bench import (
    count_macs,
    finish_report,
    fixed_grid_shape,
    machine_info,
    script_command,
    make_model,
    render_markdown,
    run_compute,
    run_scaling,
    unfused_attention,
    write_results,
)
from dartok.cli import app


class TokensOnly(nn.Module):
    """A bare DART returning one tensor, so fvcore can trace it."""

    def __init__(self, dart: DART):
        super().__init__()
        self.patch_embed = dart

    def forward(self, x):
        out = self.patch_embed(x)
        return out.tokens + out.pos_embed


@pytest.fixture(scope="module")
def deit_report():
    model, shape = make_model("deit_tiny_patch16_224")
    return model, count_macs(model, shape)


def test_deit_tiny_macs_match_paper(deit_report):
    _, rep = deit_report
    assert shape_ok(rep.input_shape, [3, 224, 224])
    assert abs(rep.total / 1.258e9 - 1) < 0.02
    # the attention matmuls are counted (fused attention switched off): 12 blocks × 2 × 197² × 192
    assert rep.by_operator["matmul"] == 12 * 2 * 197 * 197 * 192
    assert rep.unfused_attention_modules == 12
    assert rep.params == 5_717_416


def shape_ok(a, b):
    return list(a) == list(b)


def test_unsupported_ops_listed_not_hidden(deit_report):
    _, rep = deit_report
    assert {"aten::softmax", "aten::gelu", "aten::add"} <= set(rep.unsupported)
    assert "aten::scaled_dot_product_attention" not in rep.unsupported
    assert not rep.hand_counted  # a plain ViT has none of the tokenizer's ops


def test_fused_attention_restored(deit_report):
    model, _ = deit_report
    from timm.layers import config as timm_config

    before_global = timm_config._USE_FUSED_ATTN
    before = [b.attn.fused_attn for b in model.blocks]
    with unfused_attention(model) as n:
        assert n == 12
        assert not any(b.attn.fused_attn for b in model.blocks)
        assert timm_config._USE_FUSED_ATTN == 0
    assert [b.attn.fused_attn for b in model.blocks] == before
    assert timm_config._USE_FUSED_ATTN == before_global


def test_tiny_dart_hand_counts():
    """N=4 boxes of P=4 on a 16×16 RGB image, D=8, 2×2 position map, uniform pdf."""
    torch.manual_seed(0)
    dart = DART(num_tokens=4, patch_size=4, in_chans=3, embed_dim=8, pos_grid=2, scorer=None, img_size=16)
    rep = count_macs(TokensOnly(dart), (3, 16, 16))
    n, c, p, d, g = 4, 3, 4, 8, 2
    assert rep.by_operator["grid_sampler"] == 4 * n * c * p * p  # bilinear: 4 per output value per channel
    assert rep.hand_counted["grid_sampler"] == 4 * n * c * p * p
    assert rep.by_operator["baddbmm"] == n * (c * p * p) * d  # projection with the conv weights
    assert rep.by_operator["matmul"] == n * g * g * d  # position embeddings: box weights @ map
    assert rep.by_operator["bmm"] == 2 * 2 * 2  # partition: band row weights (R×h) @ pdf (h×w)
    assert rep.hand_counted["searchsorted"] == 0  # met, counted as zero
    assert rep.hand_counted["cumsum"] > 0
    assert rep.total == sum(rep.by_operator.values())
    assert rep.by_part["tokenizer"] == rep.total and rep.by_part["backbone"] == 0


def test_tiny_dart_scorer_resize_counted():
    torch.manual_seed(0)
    dart = DART(num_tokens=4, patch_size=4, in_chans=3, embed_dim=8, pos_grid=2, img_size=64,
                scorer=dict(trunk="mobilenetv3_small", input_size=32))
    rep = count_macs(TokensOnly(dart), (3, 64, 64))
    # anti-aliased 64 → 32, 4 taps per axis: horizontal pass 64×32, vertical 32×32, per channel
    assert rep.hand_counted["_upsample_bilinear2d_aa"] == 3 * (64 * 32 * 4 + 32 * 32 * 4)
    assert rep.by_part["scorer"] == rep.by_part["scorer trunk"] + rep.by_part["scorer head"] \
        + rep.hand_counted["_upsample_bilinear2d_aa"]
    assert "grid_sampler" in rep.tokenizer_by_operator
    assert "_upsample_bilinear2d_aa" not in rep.tokenizer_by_operator  # belongs to the scorer


def test_dart_deit_tiny_macs():
    model, shape = make_model("dart_deit_tiny_patch16_224")
    assert shape == (3, 448, 448)
    rep = count_macs(model, shape)
    assert rep.gmacs <= 1.32
    assert rep.by_operator["grid_sampler"] == 4 * 196 * 3 * 16 * 16
    assert rep.tokenizer_by_operator["baddbmm"] == 196 * 768 * 192  # projection = DeiT's patch-embed conv
    assert rep.by_part["backbone"] == 1_258_411_200 - 196 * 768 * 192  # DeiT-Ti without its patch embed
    assert rep.trainable_params == rep.params  # no pretrained weights: the trunk trains from scratch
    frozen, _ = make_model("dart_deit_tiny_patch16_224[trainable_scorer_trunk=false]")
    trunk = sum(p.numel() for p in frozen.patch_embed.scorer.trunk.parameters())
    frozen_rep = count_macs(frozen, shape)
    assert frozen_rep.trainable_params == frozen_rep.params - trunk
    # a trunk learned from scratch gets the auxiliary CAM head (docs/method.md §10), a frozen one
    # does not: a 1×1 conv 48 → 1000 classes, applied to the pooled features (linear) and, for the
    # prediction-weighted map, folded into one 48-vector per image (matmul) then one map (einsum),
    # never as the 1000×14×14 map (which was 48·1000·196 + 1000·196 MACs)
    assert rep.params - frozen_rep.params == 48 * 1000 + 1000
    extra = {k: rep.by_operator.get(k, 0) - frozen_rep.by_operator.get(k, 0) for k in rep.by_operator}
    assert extra["linear"] == 48 * 1000 and extra["matmul"] == 1000 * 48 + 1000
    assert extra["einsum"] == pytest.approx(48 * 196, abs=2)
    assert rep.total - frozen_rep.total == sum(extra.values()) < 48 * 1000 * 196 / 50
    assert rep.by_operator["batch_norm"] > 0  # the trunk is counted as defined (no BN folding while tracing)


def test_fixed_grid_shape_and_models():
    assert fixed_grid_shape(98) == (7, 14)
    assert fixed_grid_shape(392) == (14, 28)
    assert fixed_grid_shape(49) == (7, 7)
    model, shape = make_model("vit_micro_patch8", num_tokens=12)
    assert shape == (1, 24, 32)
    assert model.patch_embed.num_patches == 12
    with pytest.raises(ValueError):
        fixed_grid_shape(0)


def test_write_results_atomic(tmp_path):
    result = {"suite": "x", "value": 1.5, "t": torch.tensor(2.0), "path": tmp_path}
    jp, mp = write_results(result, tmp_path / "out", "r", markdown="# hi")
    assert json.loads(jp.read_text()) == {"suite": "x", "value": 1.5, "t": 2.0, "path": str(tmp_path)}
    assert mp.read_text() == "# hi\n"
    # a result that cannot be serialised leaves the old files untouched and no temp files behind
    with pytest.raises(TypeError):
        write_results({"bad": object()}, tmp_path / "out", "r", markdown="# new")
    with pytest.raises(ValueError):
        write_results({"nan": float("nan")}, tmp_path / "out", "r", markdown="# new")
    assert json.loads(jp.read_text())["value"] == 1.5
    assert mp.read_text() == "# hi\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.json", "r.md"]
    assert jp.stat().st_mode & 0o044  # readable by others (mkstemp's 0600 is not kept), umask permitting


def test_finish_report_adds_footer_and_writes(tmp_path):
    result = {"suite": "s", "command": script_command(["bench.py", "--x", "a b"]), "machine": machine_info("cpu"),
              "settings": {"threads": 1, "batch_size": 8}}
    echoed = []
    jp, mp = finish_report(result, ["## Table", "", "| a |"], tmp_path, "rep", echo=echoed.append)
    md = mp.read_text()
    assert md.startswith("## Table\n\n| a |\n\nMachine: ")
    assert "Command: `" in md and "bench.py --x 'a b'`" in md
    assert "Settings: threads=1, batch_size=8." in md
    assert json.loads(jp.read_text())["settings"] == {"threads": 1, "batch_size": 8}
    assert echoed[-1] == f"written: {jp} and {mp}"
    with pytest.raises(KeyError):
        finish_report({"command": "x", "settings": {}}, [], tmp_path, "bad", echo=echoed.append)
    assert not (tmp_path / "bad.json").exists()


def test_run_compute_and_scaling_tiny(tmp_path):
    """The whole pipeline on the micro ViT, one timed call per measurement."""
    logs = []
    res = run_compute(models=["vit_micro_patch8", "dart_vit_micro_patch8"], batch_size=2, warmup=0, repeats=1,
                      latency_repeats=1, log=logs.append, command="test")
    names = [r["model"] for r in res["models"]]
    assert names == ["vit_micro_patch8", "dart_vit_micro_patch8"]
    dart_row = res["models"][1]
    stages = [r["stage"] for r in dart_row["breakdown"]]
    for s in ("scorer: trunk", "partition", "sampling", "projection", "position embeddings", "model (whole)"):
        assert s in stages
    assert dart_row["throughput"]["images_per_s"] > 0
    md = render_markdown(res)
    assert "GMACs" in md and "Not counted" in md and "grid_sampler" in md
    jp, _ = write_results(res, tmp_path, "compute_test", md)
    assert json.loads(jp.read_text())["machine"]["torch"] == torch.__version__

    sc = run_scaling(model="dart_vit_micro_patch8", baseline="vit_micro_patch8", resolutions=[64, 128],
                     budgets=[9, 12], resolution_tokens=9, budget_input=64, batch_size=2, warmup=0, repeats=1,
                     log=logs.append, command="test")
    assert [r["input"] for r in sc["resolution"]] == [64, 128]
    assert [r["grid"]["input"] for r in sc["budget"]] == [[1, 24, 24], [1, 24, 32]]
    assert sc["resolution"][0]["resize_macs"] > 0  # 64 → the scorer's 128
    assert sc["resolution"][1]["resize_macs"] == 0  # 128 is the scorer's own size: no resize
    assert "Throughput vs token budget" in render_markdown(sc)


def test_cli_bench_macs_and_errors(tmp_path):
    runner = CliRunner()
    scorer = '{"trunk": "mobilenetv3_small", "input_size": 64}'  # a JSON value with a comma in it
    res = runner.invoke(app, ["bench", "macs", "--models", f"vit_micro_patch8,dart_vit_micro_patch8,"
                              f"dart_vit_micro_patch8[scorer={scorer}]", "-o", str(tmp_path), "--name", "m"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["suite"] == "macs" and "throughput" not in data["models"][0]
    assert len(data["models"]) == 3  # the cheaper scorer (64 px copy) costs fewer MACs than the default
    assert data["models"][2]["gmacs"] < data["models"][1]["gmacs"]
    assert (tmp_path / "m.md").read_text().startswith("## Compute")
    bad = runner.invoke(app, ["bench", "nope"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["bench", "macs", "--models", "no_such_model_xyz"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["bench", "macs", "--models", "dart_vit_micro_patch8[scorer=none"])
    assert bad.exit_code == 2 and "unbalanced" in bad.output
    if not torch.cuda.is_available():
        bad = runner.invoke(app, ["bench", "macs", "--models", "vit_micro_patch8", "--device", "cuda",
                                  "-o", str(tmp_path)])
        assert bad.exit_code == 2 and "cuda" in bad.output.lower()


# ------------------------------------------------------------------ the speed-ups keep the numbers


def test_project_channel_bmm_equals_linear():
    torch.manual_seed(0)
    dart = DART(num_tokens=6, patch_size=4, in_chans=3, embed_dim=8, pos_grid=2).double()
    chw = torch.randn(2, 3, 6, 4, 4, dtype=torch.float64)
    patches = chw.permute(0, 2, 1, 3, 4)  # the layout sample_patches returns
    assert patches.transpose(1, 2).is_contiguous()
    ref = torch.nn.functional.linear(patches.reshape(2, 6, -1), dart.proj.weight.flatten(1), dart.proj.bias)
    torch.testing.assert_close(dart.project(patches), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(dart.project(patches.contiguous()), ref, atol=1e-12, rtol=0)  # linear path
    dart_nb = DART(num_tokens=6, patch_size=4, in_chans=3, embed_dim=8, pos_grid=2, bias=False).double()
    ref = torch.nn.functional.linear(patches.reshape(2, 6, -1), dart_nb.proj.weight.flatten(1))
    torch.testing.assert_close(dart_nb.project(patches), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_image_check_finds_any_non_finite(bad, dtype):
    dart = DART(num_tokens=4, patch_size=4, embed_dim=8, pos_grid=2)
    x = torch.rand(2, 3, 16, 16, dtype=dtype)
    dart._check_images(x)  # finite: passes
    x[1, 2, 15, 0] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        dart._check_images(x)


def test_scorer_channels_last_trunk_same_features():
    torch.manual_seed(0)
    from dartok import Scorer

    scorer = Scorer("mobilenetv3_small", input_size=64).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref = scorer.trunk(x)[-1]
        got = scorer.features(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_patch_grid_values():
    from dartok.resample import patch_grid

    boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.9]]], dtype=torch.float64)
    grid = patch_grid(boxes, 2)
    xs = 0.1 + torch.tensor([0.25, 0.75], dtype=torch.float64) * 0.4
    ys = 0.2 + torch.tensor([0.25, 0.75], dtype=torch.float64) * 0.7
    assert grid.shape == (1, 1, 2, 2, 2)
    torch.testing.assert_close(grid[0, 0, :, :, 0], (xs * 2 - 1).expand(2, 2), atol=1e-15, rtol=0)
    torch.testing.assert_close(grid[0, 0, :, :, 1], (ys * 2 - 1)[:, None].expand(2, 2), atol=1e-15, rtol=0)


def test_split_model_specs_only_at_top_level_commas():
    from dartok.tools.bench import split_model_specs

    assert split_model_specs(" a, b ,,") == ["a", "b"]
    assert split_model_specs('a[x=1;s={"t": "m", "i": 2}],b[s=none]') == ['a[x=1;s={"t": "m", "i": 2}]', "b[s=none]"]
    for bad in ("a[x=1", "a]x[", "a[[x]"):
        with pytest.raises(ValueError, match="unbalanced"):
            split_model_specs(bad)


def test_parse_model_spec():
    from dartok.bench import parse_model_spec

    assert parse_model_spec("deit_tiny_patch16_224") == ("deit_tiny_patch16_224", {})
    assert parse_model_spec("dart_x[scorer=none; alpha=0.2;bands=7;antialias=true;scorer_head=v2]") == (
        "dart_x", {"scorer": None, "alpha": 0.2, "bands": 7, "antialias": True, "scorer_head": "v2"})
    model, shape = make_model("dart_vit_micro_patch8[num_tokens=10;img_size=64]", num_tokens=36)
    assert model.patch_embed.num_tokens == 10 and shape == (1, 64, 64)
    assert model.patch_embed.scorer is not None
    model, _ = make_model("dart_vit_micro_patch8[scorer=none]")
    assert model.patch_embed.scorer is None
    with pytest.raises(ValueError):
        parse_model_spec("dart_x[scorer]")
    with pytest.raises(ValueError):
        parse_model_spec("dart_x[a=1")
    # a dict kwarg as a JSON object, e.g. a cheaper scorer; a malformed one is a ValueError
    name, kw = parse_model_spec('dart_x[scorer={"trunk": "mobilenetv3_small_050", "input_size": 112}; alpha=0.1]')
    assert (name, kw) == ("dart_x", {"scorer": {"trunk": "mobilenetv3_small_050", "input_size": 112}, "alpha": 0.1})
    model, _ = make_model('dart_vit_micro_patch8[scorer={"trunk": "mobilenetv3_small", "input_size": 64}]')
    assert model.patch_embed.scorer.input_size == 64
    with pytest.raises(ValueError, match="JSON object"):
        parse_model_spec('dart_x[scorer={"trunk": }]')


def test_scorer_batchnorm_folding_same_features_and_state():
    from dartok import Scorer

    torch.manual_seed(0)
    scorer = Scorer("mobilenetv3_small", input_size=64).eval()
    # non-trivial BN statistics, so that folding has something to fold
    for m in scorer.trunk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    keys = set(scorer.state_dict())
    n_params = sum(p.numel() for p in scorer.parameters())
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref = scorer.trunk(x)[-1]
        got = scorer.features(x)
    folded = scorer.__dict__["_folded_trunk"][1]
    assert folded is not None and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    # the scorer's own module tree, parameters and state dict are untouched
    assert set(scorer.state_dict()) == keys and sum(p.numel() for p in scorer.parameters()) == n_params
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in scorer.trunk.modules())
    # new trunk weights → the folded copy is rebuilt
    other = Scorer("mobilenetv3_small", input_size=64, trainable_trunk=False)
    scorer.trunk.load_state_dict(other.trunk.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(scorer.features(x), other.trunk(x)[-1], atol=1e-5, rtol=1e-4)
    assert scorer.__dict__["_folded_trunk"][1] is not folded
    # off switch
    scorer.fold_batchnorm = False
    assert scorer._inference_trunk() is scorer.trunk
    # a trainable trunk: the real trunk while training or when a gradient is wanted, the
    # folded copy in eval mode without gradient (rebuilt after an optimizer step)
    trainable = Scorer("mobilenetv3_small", input_size=64, trainable_trunk=True)
    assert trainable._inference_trunk() is trainable.trunk  # train mode: batch statistics
    trainable.eval()
    assert trainable.features(x).requires_grad  # eval with grad: the real trunk
    with torch.no_grad():
        before = trainable.features(x)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trainable._inference_trunk().modules())
        torch.testing.assert_close(before, trainable.trunk(x)[-1], atol=1e-5, rtol=1e-4)
    opt = torch.optim.SGD(trainable.trunk.parameters(), lr=0.1)
    trainable.features(x).square().mean().backward()
    opt.step()
    with torch.no_grad():
        after = trainable.features(x)
        torch.testing.assert_close(after, trainable.trunk(x)[-1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(before, after)


def test_folded_trunk_rebuilt_whenever_the_trunk_changes():
    """The folded copy's cheap validity check (``_TreeStamp``) sees every kind of change to the trunk."""
    from dartok import Scorer

    torch.manual_seed(0)
    scorer = Scorer("mobilenetv3_small", input_size=32).eval()
    x = torch.rand(2, 3, 32, 32)

    def features_match_trunk():
        xs = x.to(scorer.trunk.conv_stem.weight.dtype)
        with torch.no_grad():
            torch.testing.assert_close(scorer.features(xs), scorer.trunk(xs)[-1], atol=1e-5, rtol=1e-4)
        return scorer.__dict__["_folded_trunk"][1]

    first = features_match_trunk()
    assert features_match_trunk() is first  # nothing changed: the copy is reused
    with torch.no_grad():
        next(m for m in scorer.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean.add_(0.5)
    second = features_match_trunk()  # a buffer written in place
    assert second is not first
    conv = scorer.trunk.conv_stem
    conv.weight = torch.nn.Parameter(torch.randn_like(conv.weight), requires_grad=False)
    third = features_match_trunk()  # a parameter replaced by another object
    assert third is not second
    conv.weight.data = torch.randn_like(conv.weight)  # new storage under the same object (version 0 again)
    assert features_match_trunk() is not third
    scorer.trunk.blocks[0] = torch.nn.Sequential(*scorer.trunk.blocks[0])  # same layers, new container
    scorer.trunk.bn1 = torch.nn.BatchNorm2d(16).eval()  # a submodule replaced
    fourth = features_match_trunk()
    assert fourth is not third and fourth is not None
    scorer.trunk.blocks.append(torch.nn.Identity())  # a submodule added
    fifth = features_match_trunk()
    assert fifth is not fourth and len(fifth.blocks) == len(scorer.trunk.blocks)
    scorer.double()  # new storage (.to, .double): the copy follows the dtype
    assert features_match_trunk().conv_stem.weight.dtype == torch.float64
    scorer.trunk = copy.deepcopy(scorer.trunk)  # another trunk object with equal tensors
    assert features_match_trunk() is not None and scorer.__dict__["_folded_trunk"][0].root is scorer.trunk


def test_fold_refuses_a_conv_output_used_twice():
    from dartok.scorer import fold_trunk_batchnorm

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return [self.bn(y) + y]  # the raw conv output is used too: folding would change it

    net = Branchy().eval()
    net.bn.running_mean.fill_(0.3)
    net.bn.running_var.fill_(2.0)
    assert fold_trunk_batchnorm(net, 16, 3) is None


def test_mamba_scan_macs_counted_by_hand():
    from dartok.mamba import selective_scan_macs

    model, shape = make_model("vim_micro_patch8", 16)
    assert shape == (1, 32, 32)
    rep = count_macs(model, shape)
    assert "prim::PythonOp._SelectiveScanFn" not in rep.unsupported
    # 6 layers × 2 directions, d_inner 192, d_state 8, 16 tokens + the class token
    assert rep.hand_counted["PythonOp._SelectiveScanFn"] == 12 * selective_scan_macs(1, 192, 8, 17)
    video, vshape = make_model("videomamba_micro_patch8[depth=1]", 4)
    assert vshape == (1, 4, 16, 16)  # clips: C×T×H×W
    vrep = count_macs(video, vshape)
    assert vrep.hand_counted["PythonOp._SelectiveScanFn"] == 2 * selective_scan_macs(1, 192, 8, 4 * 4 + 1)


# ------------------------------------------------------------------ the breakdown times DART's own steps


FORWARD_STEPS = ["DART._check_images", "DART.score", "DART.density", "DART.partition", "DART.sample", "DART.project",
                 "DART.position_embeddings"]


def test_tokenizer_breakdown_times_darts_own_methods(monkeypatch):
    """Each row calls the DART method it names (a wrapped method is what gets timed), the
    top-level rows are forward's steps in forward's order, and the scorer rows refine score."""
    import time as _time
    from collections import Counter

    from dartok.tools.bench import tokenizer_breakdown

    model, shape = make_model("dart_vit_micro_patch8[num_tokens=9;img_size=32;scorer_input_size=32]")
    calls: Counter = Counter()
    for call in FORWARD_STEPS:
        method = call.split(".", 1)[1]
        original = getattr(DART, method)

        def wrapped(self, *args, _original=original, _method=method, **kwargs):
            calls[_method] += 1
            if _method == "sample":
                _time.sleep(0.02)  # a slow sampler shows in the sampling row and in the whole tokenizer
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(DART, method, wrapped)
    rows = tokenizer_breakdown(model, shape, batch_size=2, warmup=0, repeats=2)
    by_stage = {r["stage"]: r for r in rows}
    top = [r["call"] for r in rows if r["part_of"] is None]
    assert top == [*FORWARD_STEPS, "DART.forward", "model.forward"]
    assert [r["call"] for r in rows if r["part_of"] == "score"] == [
        "Scorer.resize", "Scorer.trunk_features", "Scorer.pdf_from_features"]
    # each step: timed twice on its own and inside both whole forwards (2 rounds each); the steps whose
    # output feeds the next one, once more to make that input
    feeds = {"score": 1, "density": 1, "partition": 1, "sample": 1, "_check_images": 0, "project": 0,
             "position_embeddings": 0}
    assert dict(calls) == {m: 2 + 2 * 2 + k for m, k in feeds.items()}
    assert by_stage["sampling"]["median_ms"] >= 20
    assert by_stage["tokenizer (whole)"]["median_ms"] >= 20 and by_stage["model (whole)"]["median_ms"] >= 20
    assert by_stage["partition"]["median_ms"] < 20


def test_tokenizer_breakdown_uniform_and_fixed_grid():
    from dartok.tools.bench import tokenizer_breakdown

    model, shape = make_model("dart_vit_micro_patch8[num_tokens=9;img_size=32;scorer=none]")
    rows = tokenizer_breakdown(model, shape, batch_size=2, warmup=0, repeats=1, include_model=False)
    assert [r["stage"] for r in rows][:2] == ["input check", "score (uniform)"]
    assert not any(r["part_of"] for r in rows) and rows[-1]["call"] == "DART.forward"
    grid, gshape = make_model("vit_micro_patch8", num_tokens=9)
    assert [r["call"] for r in tokenizer_breakdown(grid, gshape, batch_size=2, warmup=0, repeats=1)] == [
        "patch_embed", "model.forward"]
