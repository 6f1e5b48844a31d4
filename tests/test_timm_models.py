"""timm's model conventions, checked on every registered dartok model (issue 12 §3).

One parametrised sweep: each test takes a registered model as ``timm.create_model`` builds it
(its registered defaults, input at ``pretrained_cfg["input_size"]``, batch 2) and checks one
convention a timm user relies on: forward / backward, the cfg, the classifier API,
``forward_intermediates`` and ``prune_intermediate_layers``, ``features_only``, FX feature
extraction, gradient checkpointing, layer-wise LR decay and TorchScript.

CI sweeps the CPU-sized ``*_micro_*`` models and ``dart_warp_resnet10t`` at the ``cpu-warp``
preset's size (128² warped to 64²); ``DARTOK_TIMM_TESTS=all`` sweeps every registered model at its
default size (about 9 CPU-minutes, most of it VideoMamba-Ti's 8×196 tokens). A
convention a dartok model does not keep is a strict xfail with the reason (README "timm
conventions"). What is particular to a family or to DART (save_for_hf round trips, offline
weights, export / compile / ONNX, the NCHW map of DART tokens) is in
``tests/test_timm_conventions.py``; shrunk models in float32 and bf16 are in ``tests/test_models.py``.
"""
import os

import pytest
import torch

import dartok  # noqa: F401  (registers dartok's models; before timm, see dartok._compat)
import timm
import timm.optim
from dartok.models import is_dart
from timm.models import PretrainedCfg, get_notrace_modules
from timm.models._input import get_model_input_config

MODELS = sorted(n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("dartok."))
_SWEEP = os.environ.get("DARTOK_TIMM_TESTS", "micro")
if _SWEEP not in ("micro", "all"):
    raise ValueError(f"DARTOK_TIMM_TESTS must be 'micro' (default) or 'all', got {_SWEEP!r}")
WARP = {n for n in MODELS if n.startswith("dart_warp_")}
"""A timm CNN behind DART's regular-grid warp (``DartWarp``): timm's API is its backbone's, under ``backbone.``."""
WARP_SMALL = dict(warp_size=64, num_tokens=64, scorer_input_size=64)
"""The size CI sweeps a warp model at (the ``cpu-warp`` preset's 128² input warped to 64², 8×8 boxes; the scorer
on a 64² copy, which keeps the sweep short)."""
SWEEP = MODELS if _SWEEP == "all" else [n for n in MODELS if "_micro_" in n] + ["dart_warp_resnet10t"]
"""The swept models: every registered one, or the micro models and the smallest warp model."""

SCRIPTABLE = {"vit_micro_patch8"}
"""The models that script; every other one refuses ``scriptable=True`` (DART tokenizer, Mamba scan)."""
MAMBA = {n for n in MODELS if "vim_" in n or "videomamba_" in n}
CAM_SCORER = {n for n in MODELS if n.startswith("dart_") and "videomamba" not in n}
"""DART image models: by default their scorer learns from scratch with an auxiliary CAM head."""

pytestmark = [
    pytest.mark.parametrize("name", SWEEP),
    pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing the model in eval mode:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]


def build(name: str, **kwargs) -> torch.nn.Module:
    """The registered model, seeded (two builds with the same kwargs have the same weights); a warp
    model at :data:`WARP_SMALL` in CI."""
    torch.manual_seed(0)
    if name in WARP and _SWEEP == "micro":
        kwargs = {**WARP_SMALL, **kwargs}
    return timm.create_model(name, **kwargs)


def example(model: torch.nn.Module, batch: int = 2, extra: int = 0) -> torch.Tensor:
    """A batch at the model's ``input_size`` (``B×C×T×H×W`` for video), ``extra`` pixels added to each side."""
    c, h, w = model.pretrained_cfg["input_size"]
    t = getattr(model, "num_frames", None)
    shape = (batch, c, t, h + extra, w + extra) if t else (batch, c, h + extra, w + extra)
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


def blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The block stack ``feature_info`` indexes (ViT ``blocks``, Mamba ``layers``)."""
    return model.layers if hasattr(model, "layers") else model.blocks


def first_block(model: torch.nn.Module) -> torch.nn.Module:
    """The first block gradient checkpointing recomputes: of the stack, or of a CNN's first stage
    after its stem (ResNet ``layer1.0``, ConvNeXt ``stages.0.blocks.0``, EfficientNet ``blocks.0.0``)."""
    if not hasattr(model, "backbone"):
        return blocks(model)[0]
    stage = model.get_submodule(model.feature_info[1]["module"])
    return stage.blocks[0] if hasattr(stage, "blocks") else stage[0]


def classifier_keys(model: torch.nn.Module) -> list[str]:
    """The state-dict keys of the classifier ``pretrained_cfg["classifier"]`` names."""
    head = model.pretrained_cfg["classifier"]
    return [f"{head}.weight", f"{head}.bias"]


def pixels(model: torch.nn.Module) -> int:
    """Input pixels per sample at ``input_size``, over all frames (T·H·W)."""
    _, h, w = model.pretrained_cfg["input_size"]
    return getattr(model, "num_frames", 1) * h * w


def map_size(model: torch.nn.Module, index: int = 0) -> tuple[int, int]:
    """The NCHW map of intermediate ``index``: a CNN's on the warped image (its size over the stage's
    stride), DART's token layout, or the patch grid (a clip's frames stacked)."""
    if name_is_warp(model):
        stride = model.backbone.feature_info[index]["reduction"]
        return tuple(side // stride for side in model.patch_embed.out_size)
    if is_dart(model):
        return tuple(model.patch_embed.grid_size)
    rows, cols = model.patch_embed.grid_size
    frames = getattr(model, "num_frames", 1) // getattr(model, "kernel_size", 1)
    return frames * rows, cols


def name_is_warp(model: torch.nn.Module) -> bool:
    return model.pretrained_cfg["architecture"] in WARP


def block_outputs(model: torch.nn.Module, x: torch.Tensor, modules: list[str]) -> dict:
    """Eager outputs of the named submodules on ``x`` (forward hooks), and the model's output."""
    seen = {}
    hooks = [model.get_submodule(m).register_forward_hook(lambda mod, i, o, m=m: seen.setdefault(m, o))
             for m in modules]
    try:
        with torch.no_grad():
            seen["out"] = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


# ----------------------------------------------------------------------------- forward, cfg, classifier

def test_forward_backward_at_input_size(name):
    model = build(name).train()
    x = example(model)
    out = model(x)
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert not no_grad, f"no gradient: {no_grad}"
    bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient: {bad}"
    model.eval()  # each sample's output is its own: the same alone as in a batch (to float rounding)
    with torch.no_grad():
        torch.testing.assert_close(model(x[1:]), model(x)[1:], rtol=1e-4, atol=1e-4)


def test_pretrained_cfg_describes_the_model(name):
    model = build(name)
    cfg = model.pretrained_cfg
    assert model.default_cfg == cfg
    PretrainedCfg(**cfg)  # loads as a saved config.json would (num_frames is a model arg, not a field)
    assert cfg["architecture"] == name and "num_frames" not in cfg
    chans, h, w = cfg["input_size"]
    assert len(cfg["mean"]) == len(cfg["std"]) == chans
    assert cfg["num_classes"] == model.num_classes
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, (torch.nn.Conv2d, torch.nn.Conv3d)) and first.in_channels == chans
    head = model.get_submodule(cfg["classifier"])
    assert head is model.get_classifier() and head.out_features == model.num_classes
    # timm's data config reads the model's traits: they agree with the cfg, and the cfg is true
    assert get_model_input_config(model)["input_size"] == (chans, h, w)
    assert get_model_input_config(model)["fixed_input_size"] == cfg["fixed_input_size"]
    assert timm.data.resolve_model_data_config(model)["input_size"] == (chans, h, w)
    bigger = example(model, batch=1, extra=model.patch_embed.patch_size[0])
    with torch.no_grad():
        if cfg["fixed_input_size"]:
            with pytest.raises((ValueError, AssertionError)):
                model.eval()(bigger)
        else:
            assert model.eval()(bigger).shape == (1, model.num_classes)


def test_classifier_reset_and_pre_logits(name):
    model = build(name).eval()
    x = example(model)
    with torch.no_grad():
        logits = model(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (2, model.head_hidden_size) and model.head_hidden_size == model.num_features
        torch.testing.assert_close(model.get_classifier()(pooled), logits)  # the head maps pre-logits to logits
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model.get_classifier().out_features == 3 and model(x).shape == (2, 3)


def test_num_classes_zero_is_the_model_without_its_head(name):
    model = build(name).eval()
    headless = build(name, num_classes=0).eval()
    x = example(model)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        missing, unexpected = headless.load_state_dict(model.state_dict(), strict=False)
        assert not missing and unexpected == classifier_keys(model)
        torch.testing.assert_close(headless(x), pooled)
    if name in CAM_SCORER:  # the scorer keeps its CAM head (the score map depends on it), of the cfg's classes
        assert headless.patch_embed.scorer.cam_classes == model.num_classes == model.pretrained_cfg["num_classes"]


def test_checkpoint_loads_without_its_head_or_with_another_class_count(name, tmp_path):
    """timm's offline route with num_classes=0 (the features of the trained model) or another class
    count (a new head; the scorer's CAM head, a classifier too, starts anew with it)."""
    model = build(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    x = example(model)
    overlay = dict(file=str(tmp_path / "weights.pth"))
    headless = build(name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0).eval()
    other = build(name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=3).eval()
    with torch.no_grad():
        torch.testing.assert_close(headless(x), model.forward_head(model.forward_features(x), pre_logits=True))
    assert other.num_classes == 3 and other.get_classifier().out_features == 3
    fresh = build(name, num_classes=3).state_dict()  # the same seed: the init the new heads keep
    new = {k for k in fresh if k.startswith((model.pretrained_cfg["classifier"] + ".", "patch_embed.scorer.cam."))}
    assert new == (set(classifier_keys(model)) | (
        {"patch_embed.scorer.cam.weight", "patch_embed.scorer.cam.bias"} if name in CAM_SCORER else set()))
    for k, v in other.state_dict().items():
        torch.testing.assert_close(v, fresh[k] if k in new else model.state_dict()[k], rtol=0, atol=0, msg=k)


# ----------------------------------------------------------------------------- intermediates and features

def warp_intermediates(model: torch.nn.Module, x: torch.Tensor) -> None:
    """A DartWarp's: its backbone's on the warped image (``unwarp=True``: each map back in image
    coordinates), ``stop_early`` and ``prune_intermediate_layers`` as the backbone's."""
    from dartok.warp import unwarp

    info, n = model.feature_info, len(model.feature_info)
    assert [i["module"] for i in info] == [f"backbone.{i['module']}" for i in model.backbone.feature_info]
    with torch.no_grad():
        out = model.tokenize(x)
        final, maps = model.forward_intermediates(x, indices=[0, -1])
        torch.testing.assert_close(final, model.forward_features(x))
        _, want = model.backbone.forward_intermediates(out.image, indices=[0, n - 1])
        for m, w, i in zip(maps, want, (0, n - 1)):
            assert m.shape == (2, info[i]["num_chs"], *map_size(model, i))
            torch.testing.assert_close(m, w)
        # reduction = input pixels per cell side: the map covers the whole input
        assert maps[-1].shape[-1] * info[-1]["reduction"] == model.pretrained_cfg["input_size"][-1]
        back = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True, unwarp=True)
        for b, m in zip(back, maps):
            torch.testing.assert_close(b, unwarp(m, out.ys, out.xs, tuple(m.shape[-2:])))
        assert not torch.allclose(back[0], maps[0])  # the learned scorer's cuts are not uniform
        model.unwarp_features = True  # what create_model(..., unwarp_features=True) sets: the default
        torch.testing.assert_close(model.forward_intermediates(x, indices=[0, -1], intermediates_only=True), back)
        model.unwarp_features = False
        every = model.forward_intermediates(x, intermediates_only=True)
        assert len(every) == n
        _, (second,) = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(second, every[1])
    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1] and model.num_classes == 0
    with torch.no_grad():
        torch.testing.assert_close(model.forward_intermediates(x, indices=kept, intermediates_only=True), every[:2])


def test_forward_intermediates(name):
    model = build(name).eval()
    x = example(model)
    if name in WARP:
        return warp_intermediates(model, x)
    depth = len(blocks(model))
    info = model.feature_info
    assert [i["module"] for i in info] == [f"{'layers' if name in MAMBA else 'blocks'}.{i}" for i in range(depth)]
    with torch.no_grad():
        features = model.forward_features(x)
        final, maps = model.forward_intermediates(x, indices=[0, -1])
        torch.testing.assert_close(final, features)
        for m, i in zip(maps, (0, depth - 1)):
            assert m.shape == (2, info[i]["num_chs"], *map_size(model))
        final_nlc, tokens = model.forward_intermediates(x, indices=2, output_fmt="NLC")  # the last two blocks
        torch.testing.assert_close(final_nlc, features)
        assert len(tokens) == 2
        n = tokens[0].shape[1]
        assert tokens[0].shape == (2, n, info[-1]["num_chs"])
        # reduction = input pixels per token side: N tokens of r×r pixels cover the input
        assert n * info[-1]["reduction"] ** 2 == pytest.approx(pixels(model))
        every = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
        assert isinstance(every, list) and len(every) == depth
        for got, want in zip(every[-2:], tokens):
            torch.testing.assert_close(got, want)

    ran = []
    hooks = [b.register_forward_hook(lambda *a, i=i: ran.append(i)) for i, b in enumerate(blocks(model))]
    with torch.no_grad():
        early, (first,) = model.forward_intermediates(x, indices=[1], stop_early=True, output_fmt="NLC")
    for h in hooks:
        h.remove()
    assert ran == [0, 1]  # nothing after the last block asked for
    torch.testing.assert_close(first, every[1])
    assert early.shape[0] == 2 and early.shape[2] == features.shape[2]

    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1] and len(blocks(model)) == 2 and model.num_classes == 0
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), early)  # stopping early = the pruned model
        torch.testing.assert_close(model(x), early)  # no head, no pooling left
        again = model.forward_intermediates(x, indices=kept, output_fmt="NLC", intermediates_only=True)
    torch.testing.assert_close(again, every[:2])


def test_features_only(name):
    model = build(name).eval()
    x = example(model)
    depth = len(model.feature_info)
    features = build(name, features_only=True, out_indices=(0, -1)).eval()
    missing, _ = features.model.load_state_dict(model.state_dict(), strict=False)  # pruned: no norm / head
    assert not missing
    info = [model.feature_info[0], model.feature_info[-1]]
    assert features.feature_info.channels() == [i["num_chs"] for i in info]
    assert features.feature_info.reduction() == [i["reduction"] for i in info]
    assert features.feature_info.module_name() == [i["module"] for i in info]
    with torch.no_grad():
        maps = features(x)
        _, want = model.forward_intermediates(x, indices=[0, depth - 1])
    assert len(maps) == 2
    for m, w, c, i in zip(maps, want, features.feature_info.channels(), (0, depth - 1)):
        assert m.shape == (2, c, *map_size(model, i))
        torch.testing.assert_close(m, w)
    last2 = build(name, features_only=True, out_indices=2)  # an int: the last n blocks
    assert last2.feature_info.module_name() == [i["module"] for i in model.feature_info[-2:]]


# ----------------------------------------------------------------------------- graph capture

def test_fx_feature_extraction_matches_eager(name):
    model = build(name).eval()
    x = example(model)
    leaves = get_notrace_modules()
    if is_dart(model):  # its input checks and the partition branch in Python: one FX leaf
        assert type(model.patch_embed) in leaves
    if name in MAMBA:  # the selective scan's data-dependent chunking: Block (and RMSNorm) are leaves
        assert type(blocks(model)[0]) in leaves and type(model.norm_f) in leaves
    train_nodes, eval_nodes = timm.models.get_graph_node_names(model)
    head = model.pretrained_cfg["classifier"]
    assert eval_nodes[-1] == head
    if is_dart(model):
        assert "patch_embed" in eval_nodes and not any(n.startswith("patch_embed.") for n in eval_nodes)
    first, last = model.feature_info[0]["module"], model.feature_info[-1]["module"]
    if name in MAMBA:  # a leaf: one node, not traced into
        assert first in eval_nodes and not any(n.startswith(first + ".") for n in eval_nodes)
    elif name in WARP:  # the CNN is traced: a module is a node (a leaf) or the name of its last node
        for m in (first, last):
            assert any(n == m or n.startswith(m + ".") for n in eval_nodes), m
    else:  # a ViT block is traced: a module name stands for its last node
        assert any(n.startswith(first + ".") for n in eval_nodes)
    extractor = timm.models.create_feature_extractor(model, return_nodes={first: "first", last: "last", head: "out"})
    with torch.no_grad():
        got = extractor(x)
    want = block_outputs(model, x, [first, last])
    torch.testing.assert_close(got["out"], want["out"])
    torch.testing.assert_close(got["first"], want[first])
    torch.testing.assert_close(got["last"], want[last])


@pytest.mark.parametrize("feature_cls", ["fx", "hook"])
def test_graph_and_hook_feature_nets_give_each_blocks_tokens(name, feature_cls):
    """timm's FeatureGraphNet / FeatureHookNet return the output of feature_info's modules:
    each block's tokens, NLC, prefix tokens included (as for timm's ViTs)."""
    if name in MAMBA:  # its block returns hustvl's (hidden, residual) pair, not its tokens (their sum)
        with pytest.raises(ValueError, match=f"{name}: features_only takes feature_cls='getter'"):
            timm.create_model(name, features_only=True, feature_cls=feature_cls)
        return
    model = build(name).eval()
    x = example(model)
    net = build(name, features_only=True, feature_cls=feature_cls, out_indices=(0, -1)).eval()  # the same weights
    if name in WARP:  # the backbone's stages on the warped image, NCHW, as forward_intermediates gives them
        with torch.no_grad():
            outs, want = net(x), model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert len(outs) == 2
        for o, w in zip(outs, want):
            torch.testing.assert_close(o, w)
        return
    with torch.no_grad():
        outs = net(x)
        tokens = model.forward_intermediates(x, indices=[0, -1], output_fmt="NLC", intermediates_only=True,
                                             return_prefix_tokens=True)
    assert all(isinstance(o, torch.Tensor) for o in outs), [type(o).__name__ for o in outs]
    for o, (patches, prefix), c in zip(outs, tokens, net.feature_info.channels()):
        at = model.cls_position(patches.shape[1]) if name in MAMBA else 0  # where the prefix tokens sit
        assert o.shape[-1] == c
        torch.testing.assert_close(o, torch.cat([patches[:, :at], prefix, patches[:, at:]], dim=1))


def test_torchscript(name):
    if name not in SCRIPTABLE:
        with pytest.raises(RuntimeError, match=f"{name} is not TorchScript-scriptable .*torch.export"):
            timm.create_model(name, scriptable=True)
        assert not timm.layers.is_scriptable()  # timm's layer config is restored after the refusal
        return
    model = build(name).eval()
    scripted = torch.jit.script(build(name, scriptable=True).eval())
    x = example(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


# ----------------------------------------------------------------------------- training helpers

def test_grad_checkpointing_same_outputs_and_gradients(name):
    model = build(name).train()
    x = example(model)
    runs, calls = [], []
    block = first_block(model)
    forward = block.forward

    def counted(*args, **kwargs):  # forward hooks do not fire when checkpointing recomputes
        calls.append(1)
        return forward(*args, **kwargs)

    block.forward = counted
    for checkpointing in (False, True):
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        calls.clear()
        torch.manual_seed(2)  # the same stochastic depth / dropout draws in both runs
        out = model(x)
        out.logsumexp(-1).sum().backward()
        runs.append((out.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                     len(calls)))
    del block.forward
    (plain, plain_grads, plain_calls), (ckpt, ckpt_grads, ckpt_calls) = runs
    assert (plain_calls, ckpt_calls) == (1, 2)  # the block is recomputed in the backward pass
    torch.testing.assert_close(ckpt, plain, rtol=1e-5, atol=1e-6)
    assert ckpt_grads.keys() == plain_grads.keys()
    for n in plain_grads:
        torch.testing.assert_close(ckpt_grads[n], plain_grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_layer_decay_groups(name):
    model = build(name)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert len(group_of) == len(params)  # every parameter in exactly one group
    scale = {n: group_of[id(p)]["lr_scale"] for n, p in params.items()}
    scorer = {s for n, s in scale.items() if n.startswith("patch_embed.scorer.")}
    assert scorer == ({1.0} if is_dart(model) else set())  # new (and often from scratch): the head's LR, not the stem's
    if name in WARP:  # the backbone's own groups, under backbone.
        alone = timm.optim.create_optimizer_v2(model.backbone, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
        own = {id(p): g["lr_scale"] for g in alone.param_groups for p in g["params"]}
        assert {n: s for n, s in scale.items() if n.startswith("backbone.")} == {
            f"backbone.{n}": own[id(p)] for n, p in model.backbone.named_parameters()}
        assert scale[model.pretrained_cfg["first_conv"] + ".weight"] == min(scale.values()) < 1
        assert scale[classifier_keys(model)[0]] == 1.0
        return
    stack, depth = ("layers", len(model.layers)) if name in MAMBA else ("blocks", len(model.blocks))
    assert scale["patch_embed.proj.weight"] == scale["cls_token"] == 0.5 ** (depth + 1)  # the stem
    for i in range(depth):
        assert {s for n, s in scale.items() if n.startswith(f"{stack}.{i}.")} == {0.5 ** (depth - i)}
    assert scale["head.weight"] == 1.0 and len(set(scale.values())) == depth + 2
    for n in model.no_weight_decay() & params.keys():  # timm's ViT also names tokens it may not have
        assert group_of[id(params[n])]["weight_decay"] == 0.0, n
    assert group_of[id(params["head.weight"])]["weight_decay"] == 0.05
