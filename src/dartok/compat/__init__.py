"""Compatibility with other DART implementations' checkpoints (docs/method.md §4a).

:mod:`.hcplab`: the DART authors' tokenizer (github HCPLab-SYSU/DART), reproduced on purpose
for their released ImageNet weights (HF hub ``yinkx3/DART``).
"""
from .hcplab import (  # noqa: F401
    HCPLAB_CHECKPOINTS, HCPLAB_HUB_ID, HcplabCheckpoint, HcplabScorer, convert_hcplab_state_dict,
    load_hcplab_checkpoint,
)

__all__ = ["HCPLAB_CHECKPOINTS", "HCPLAB_HUB_ID", "HcplabCheckpoint", "HcplabScorer", "convert_hcplab_state_dict",
           "load_hcplab_checkpoint"]
