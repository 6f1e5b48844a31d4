"""Old path of the Mamba code, kept so existing imports work (issue 10 moved it).

The selective scan is :mod:`dartok.ops.selective_scan`, the layers are
:mod:`dartok.layers.mamba`. Private names (``_chunk_layout``, ``_BUDGET``,
``_USE_CUDA_KERNEL``, ...) are looked up in the scan module on access, so they read its
current values; to change dispatch state use :func:`use_cuda_kernel`.
"""
from __future__ import annotations

from ._compat import forward_attributes
from .layers import mamba as _layers
from .layers.mamba import (  # noqa: F401
    Block, Mamba, RMSNorm, build_blocks, create_block, init_mamba_weights, run_blocks, segm_init_weights,
)
from .ops import selective_scan as _scan
from .ops.selective_scan import (  # noqa: F401
    cuda_kernel_available, selective_scan, selective_scan_macs, selective_scan_ref, use_cuda_kernel,
)

__all__ = [*_scan.__all__, *_layers.__all__]

__getattr__ = forward_attributes(__name__, _scan, _layers)
