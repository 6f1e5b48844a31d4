import os

os.environ.setdefault("MPLBACKEND", "Agg")

import dartok  # noqa: E402,F401  (installs the torchvision shim before timm is imported)
import torch  # noqa: E402

# One intra-op thread: on a shared 2-core box two threads stall each other at every barrier.
torch.set_num_threads(1)
