"""Import-time compatibility fixes, kept in one place.

torchvision 0.28.0 from PyPI is a CUDA build. On the CPU-only torch wheel its compiled
extension ``torchvision/_C.so`` fails to load, and ``import torchvision`` (hence
``import timm``) then dies in ``torchvision/_meta_registrations.py`` with
``operator torchvision::nms does not exist``. :func:`ensure_torchvision_importable`
defines the schemas of torchvision's custom ops, *only* when the extension cannot be
loaded, so torchvision's pure-Python parts (transforms, datasets) and timm work. The
ops themselves stay unavailable (calling ``torchvision.ops.nms`` raises), which dartok
never needs. On a healthy install it does nothing.

Graph capture (issue 12): eager dartok validates its inputs with data-dependent checks
(``bool(torch.isfinite(x).all())``) and picks some layouts from the data (the selective
scan's chunking, the anti-aliasing terms it skips). ``torch.fx.symbolic_trace`` (``Proxy``
objects), ``torch.export`` / ``torch.compile`` and ONNX export (values unknown) cannot follow
either; :func:`is_tracing` tells the code to skip the checks and take the static path there.
A plain ``torch.jit.trace`` records one eager run, and :func:`dartok.tools.flops.count_macs`
(fvcore) relies on that run's ops, so it is not a capture here.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import torch

# Schemas of the ops torchvision's C++ extension registers (torchvision/csrc/ops/*.cpp).
TORCHVISION_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)

_shim_library = None  # keeps the torch.library.Library alive (dropping it unregisters the ops)


def torchvision_extension_loads() -> bool:
    """True if torchvision is absent, already imported, or its ``_C`` extension loads."""
    if "torchvision" in sys.modules:
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True
    pkg_dir = list(spec.submodule_search_locations)[0]
    candidates = [f for f in os.listdir(pkg_dir) if f.startswith("_C.") and f.endswith((".so", ".pyd"))]
    if not candidates:
        return False
    try:
        torch.ops.load_library(os.path.join(pkg_dir, candidates[0]))
        return True
    except (OSError, RuntimeError, ImportError):
        return False


def ensure_torchvision_importable() -> bool:
    """Define torchvision's op schemas if its compiled extension cannot load.

    Returns:
        True if the shim was installed by this call, False if nothing was needed
        (healthy install, torchvision missing, or shim already installed).
    """
    global _shim_library
    if _shim_library is not None or torchvision_extension_loads():
        return False
    lib = torch.library.Library("torchvision", "DEF")
    for schema in TORCHVISION_OP_SCHEMAS:
        lib.define(schema)
    _shim_library = lib
    return True


def _forwarded(owner: types.ModuleType, name: str) -> property:
    """A data descriptor reading, writing and deleting ``owner.name``."""
    return property(lambda self: getattr(owner, name), lambda self, value: setattr(owner, name, value),
                    lambda self: delattr(owner, name))


def forward_attributes(module_name: str, *targets):
    """Make the module ``module_name`` a shim of ``targets``; returns its ``__getattr__`` (PEP 562).

    ``__getattr__ = forward_attributes(__name__, new_a, new_b)`` turns every name the targets
    define (the first target that has it wins; modules and dunder names excepted) into a
    property of the shim's class, so reading it gives the owner's current value and
    assigning or deleting it on the shim changes the owner:
    ``monkeypatch.setattr(dartok.mamba, "_CUDA_SCAN", ...)`` and its undo, or
    ``dartok.mamba._USE_CUDA_KERNEL = False``, reach the code that reads them. Names added
    to a target later resolve through the returned ``__getattr__``.

    Raises (from the returned function):
        AttributeError: no target has the name.
    """
    module = sys.modules[module_name]
    props: dict[str, property] = {}
    for target in targets:
        for name, value in vars(target).items():
            if name.startswith("__") and name.endswith("__") or isinstance(value, types.ModuleType):
                continue
            props.setdefault(name, _forwarded(target, name))
    module.__class__ = type(f"Shim_{module_name.replace('.', '_')}", (types.ModuleType,), props)

    def __getattr__(name: str):
        for target in targets:
            if hasattr(target, name):
                return getattr(target, name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


def _fx_tracing() -> bool:
    trace = getattr(torch.fx, "_symbolic_trace", None)
    check = getattr(trace, "is_fx_symbolic_tracing", None) or getattr(trace, "is_fx_tracing", None)
    return bool(check()) if check is not None else False


def is_tracing(*values, jit_trace: bool = False) -> bool:
    """True under ``torch.fx`` symbolic tracing, ``torch.export``, ``torch.compile`` (dynamo),
    ONNX export (the dynamo and the TorchScript-based exporter) or ``torch.jit.script``, or
    when any of ``values`` is an ``fx.Proxy``; False in eager mode and (unless ``jit_trace``)
    a plain ``torch.jit.trace``.

    Args:
        *values: the tensors about to be checked (an ``fx.Proxy`` among them means tracing).
        jit_trace: count a plain ``torch.jit.trace`` too, for a Python branch on shapes or
            settings that a trace would bake into its graph (the scorer's folded trunk, the
            split sampling of one image).
    """
    if any(isinstance(v, torch.fx.Proxy) for v in values):
        return True
    compiler = getattr(torch, "compiler", None)
    compiling = getattr(compiler, "is_compiling", None)
    if compiling is not None and compiling():  # first: dynamo folds it to a constant
        return True
    return bool(torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() or _fx_tracing()
                or (jit_trace and torch.jit.is_tracing()))
