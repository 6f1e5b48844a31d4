import os

os.environ.setdefault("MPLBACKEND", "Agg")

import dartok  # noqa: E402,F401  (installs the torchvision shim before timm is imported)
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
