"""Every registered dartok model, forward and backward (timm's tests/test_models.py style; issue 10).

Parametrised over all names dartok registers with timm (DART and fixed-grid ViT, Vim,
VideoMamba): a new family's registrations are picked up here by themselves. Models are
built small (depth 2, narrow, 64² input, 16 tokens) so the file runs in seconds.
"""
import functools

import pytest
import torch

import dartok
import timm
from dartok.models import create_model, is_dart

MODELS = sorted(n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("dartok."))
WARP = [n for n in MODELS if n.startswith("dart_warp_")]  # a CNN behind the regular-grid warp: no tokens
FAMILIES = ("deit", "vit_micro", "vim", "videomamba", "warp")


def small_kwargs(name: str) -> dict:
    """Kwargs that shrink a registered model (the family decides which ones it takes)."""
    if name in WARP:  # the CNN as it is, the warp small: 64² input, 16 boxes of 8 px on a 32² warp
        return dict(num_classes=5, img_size=64, scorer_input_size=64, warp_size=32)
    kwargs = dict(depth=2, num_classes=5)
    if "micro" not in name:
        kwargs["embed_dim"] = 32
        if "vim" not in name and "videomamba" not in name:
            kwargs["num_heads"] = 2
    if "videomamba" in name:
        kwargs["num_frames"] = 2
    if name.startswith("dart_"):
        kwargs.update(img_size=64, scorer_input_size=64)
    return kwargs


@functools.lru_cache(maxsize=None)
def small_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_tokens=16, **small_kwargs(name))  # fixed grids: 4×4 patches (per frame)


def input_shape(model: torch.nn.Module, batch: int = 2) -> tuple[int, ...]:
    """``B×C×H×W``, or ``B×C×T×H×W`` for a video model, from the model's own cfg."""
    c, h, w = model.pretrained_cfg["input_size"]
    frames = getattr(model, "num_frames", None)
    return (batch, c, frames, h, w) if frames else (batch, c, h, w)


def test_every_family_is_registered():
    assert len(MODELS) == 20 and len(WARP) == 5
    for family in FAMILIES:
        assert any(family in n for n in MODELS if n.startswith("dart_")), family
        assert any(family in n for n in MODELS if not n.startswith("dart_")) or family in ("deit", "warp"), family


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16_autocast"])
@pytest.mark.parametrize("name", MODELS)
def test_model_forward_backward(name, amp):
    model = small_model(name).train()
    model.zero_grad(set_to_none=True)
    x = torch.rand(input_shape(model), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model(x)
    assert out.shape == (2, 5)
    assert out.dtype == (torch.bfloat16 if amp else torch.float32)
    assert torch.isfinite(out).all()
    out.float().logsumexp(-1).sum().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient: {bad}"
    if is_dart(model):  # the scorer is trained through the partition (paper §3.2)
        assert model.patch_embed.scorer.head.fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_model_cfg_and_no_weight_decay(name):
    """The recorded input size is what the model takes; a DART model's no-decay names are its parameters."""
    model = small_model(name)
    if name in WARP:  # the backbone's own no-decay set, its input the warp's
        assert model.no_weight_decay() <= {n for n, _ in model.named_parameters()}
        assert model.pretrained_cfg["input_size"][1:] == (64, 64) and model.patch_embed.num_tokens == 16
        out = model.eval().tokenize(torch.rand(input_shape(model)))
        assert out.image.shape == (2, 3, 32, 32) and out.boxes.shape == (2, 16, 4)
        return
    assert "pos_embed" in model.no_weight_decay()
    if is_dart(model):
        assert model.no_weight_decay() <= {n for n, _ in model.named_parameters()}
        assert model.pretrained_cfg["input_size"][1:] == (64, 64)
        assert model.patch_embed.num_tokens == 16
        assert "patch_embed.pos_embed" in model.no_weight_decay()
        assert not model.pretrained_cfg["fixed_input_size"]
        out = model.eval().tokenize(torch.rand(input_shape(model)))
        assert out.tokens.shape == out.pos_embed.shape == (2, 16, model.embed_dim) and out.boxes.shape == (2, 16, 4)
    else:
        assert model.patch_embed.num_patches == 16  # per frame for video: the budget rule of create_model


@pytest.mark.parametrize("name", [n for n in MODELS if not n.startswith("dart_")])
def test_create_model_fixed_grid_budget(name):
    """Fixed-grid models: N = n² gives an n·P input (each frame for video); other N raise."""
    kwargs = small_kwargs(name)
    model = create_model(name, num_tokens=9, **kwargs)
    patch = model.patch_embed.patch_size[0]
    assert model.patch_embed.num_patches == 9 and model.pretrained_cfg["input_size"][1:] == (3 * patch, 3 * patch)
    with torch.no_grad():
        assert model.eval()(torch.rand(input_shape(model))).shape == (2, 5)
    for bad in (8, 0, -4, 2.0, True):
        with pytest.raises(ValueError, match="square num_tokens"):
            create_model(name, num_tokens=bad, **kwargs)


def test_create_model_non_square_grid_is_explicit():
    """A non-square fixed grid is asked for with grid=(rows, cols); bench's 98/392 use it."""
    model = create_model("vit_micro_patch8", grid=(2, 3))
    assert model.patch_embed.grid_size == (2, 3) and model.pretrained_cfg["input_size"] == (1, 16, 24)
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 16, 24)).shape == (2, 10)
    assert create_model("vit_micro_patch8", num_tokens=6, grid=(2, 3)).patch_embed.num_patches == 6
    for bad, match in (((2, 3, 1), "rows, cols"), ((0, 3), "rows, cols"), ((2.0, 3), "rows, cols")):
        with pytest.raises(ValueError, match=match):
            create_model("vit_micro_patch8", grid=bad)
    with pytest.raises(ValueError, match="not num_tokens=7"):
        create_model("vit_micro_patch8", num_tokens=7, grid=(2, 3))
    with pytest.raises(ValueError, match="fixed-grid"):
        create_model("dart_vit_micro_patch8", grid=(2, 3))


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("dart_") and n not in WARP])
def test_create_model_dart_budget_and_uniform_scorer(name):
    """DART models take any N (per clip for video), and ``scorer=None`` means the uniform pdf."""
    model = create_model(name, num_tokens=7, scorer=None, **small_kwargs(name))
    assert model.patch_embed.num_tokens == 7 and model.patch_embed.scorer is None
    with torch.no_grad():
        assert model.eval()(torch.rand(input_shape(model))).shape == (2, 5)


def test_dartok_all_is_importable():
    assert all(hasattr(dartok, n) for n in dartok.__all__)


OLD_NAMES = {  # every top-level name of the modules issue 10 turned into re-export shims
    "dartok.models": "DartVisionTransformer dart_subclass adopt_projection set_input_cfg split_dart_kwargs "
                     "_num_prefix_pos make_scorer patch_timm is_dart convert_vit_state_dict load_vit_weights "
                     "_DART_KEYS _create_dart _cfg default_cfgs _DEIT_DEFAULTS dart_deit_tiny_patch16_224 "
                     "dart_deit_small_patch16_224 dart_deit_base_patch16_224 MICRO_VIT_ARGS vit_micro_patch8 "
                     "dart_vit_micro_patch8 _patch_size_from_name create_model _DART_CLASSES",
    "dartok.vim": "insert_token VisionMamba DartVisionMamba split_cls_pos patch_vim convert_vim_state_dict "
                  "load_vim_weights _vim_cfg _MICRO_DATA default_cfgs MICRO_VIM_ARGS _create_vim _create_dart_vim "
                  "_TI _S vim_tiny_patch16_224 vim_small_patch16_224 vim_micro_patch8 _DART_VIM_DEFAULTS "
                  "dart_vim_tiny_patch16_224 dart_vim_small_patch16_224 dart_vim_micro_patch8",
    "dartok.videomamba": "PatchEmbed3d VideoMamba default_cfgs MICRO_VIDEOMAMBA_ARGS _create_videomamba "
                         "videomamba_tiny_patch16_224 videomamba_micro_patch8",
    "dartok.video": "TEMPORAL_DIFF_MODES _check_num_frames _check_boxes stack_frames unstack_frames video_bands "
                    "token_frames frame_token_counts frame_boxes temporal_difference VideoDART DartVideoMamba "
                    "patch_videomamba _DART_VIDEOMAMBA_KEYS _create_dart_videomamba default_cfgs "
                    "dart_videomamba_tiny_patch16_224 dart_videomamba_micro_patch8",
    "dartok.mamba": "_USE_CUDA_KERNEL _CUDA_SCAN _cuda_selective_scan_fn cuda_kernel_available use_cuda_kernel "
                    "_BACKENDS _shape _check_scan_args _work_dtype selective_scan_ref _BUDGET _BLOCK_ELEMENTS "
                    "_chunk_layout _linear_scan _outer _scan_forward _scan_backward _batch_blocks _pad_time "
                    "_SelectiveScanFn selective_scan selective_scan_macs RMSNorm Mamba Block create_block "
                    "init_mamba_weights segm_init_weights build_blocks run_blocks",
}


@pytest.mark.parametrize("module", sorted(OLD_NAMES))
def test_old_module_paths_keep_every_name(module):
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in OLD_NAMES[module].split() if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
    assert all(hasattr(mod, n) for n in mod.__all__)  # so `from module import *` works
    with pytest.raises(AttributeError):
        getattr(mod, "no_such_name")
