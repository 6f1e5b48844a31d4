"""Probe (issue 11 item 6, session 13): the preset's DART row without its scorer.

    python benchmarks/probes/issue11_s13_scorer_free_motion.py CHECKPOINT_DIR OUT_DIR

At ``motion_prior=1`` the scorer's share of the pdf is 0, so its boxes are those of
``score_source="motion"`` (the motion map alone, no scorer: docs/method.md §6). This rebuilds the
trained ``motion_prior=1`` model of CHECKPOINT_DIR as ``score_source="motion"``, loads every
weight but the scorer's (strict: nothing else missing or left over), writes it as a checkpoint
in OUT_DIR/checkpoint, and evaluates both checkpoints on the run's own test set with
:func:`dartok.train.run.evaluate_checkpoint`, and counts both models' MACs (fvcore). Prints JSON.
"""
import json
import sys
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch

from dartok.models import create_model
from dartok.tools.bench import with_frames
from dartok.tools.flops import count_macs
from dartok.train.checkpoint import model_from_checkpoint, save_checkpoint
from dartok.train.run import evaluate_checkpoint

src, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)
model, config = model_from_checkpoint(src)
kwargs = dict(config["model_kwargs"])
if kwargs.get("motion_prior") != 1.0:
    sys.exit(f"Error: {src} was trained at motion_prior={kwargs.get('motion_prior')}; only at 1 does the scorer "
             "not move the boxes")
kwargs.pop("motion_prior")
kwargs["score_source"] = "motion"
free = create_model(config["model"], **kwargs)
state = {k: v for k, v in model.state_dict().items() if not k.startswith("patch_embed.scorer.")}
free.load_state_dict(state, strict=True)
cfg = {**config, "model_kwargs": kwargs, "train": {**config["train"], "model_kwargs": {
    **{k: v for k, v in config["train"]["model_kwargs"].items() if k != "motion_prior"}, "score_source": "motion"}},
       "derived_from": str(src)}
save_checkpoint(out / "checkpoint", free, cfg)
shape = with_frames(model, config["input_size"])
result = {"checkpoint": str(src), "scorer_free_checkpoint": str(out / "checkpoint")}
for name, path, m in (("motion_prior=1 (with scorer)", src, model), ("score_source=motion (no scorer)",
                                                                     out / "checkpoint", free.eval())):
    res = evaluate_checkpoint(path, batch_size=64)
    result[name] = {"top1": res["top1"], "top5": res["top5"], "loss": round(res["loss"], 6), "n": res["n"],
                    "gmacs": round(count_macs(m, shape).total / 1e9, 4),
                    "params_m": round(sum(p.numel() for p in m.parameters()) / 1e6, 3)}
print(json.dumps(result, indent=1))
