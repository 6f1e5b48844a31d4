"""Where does a trained scorer look? Its score maps against the true object box (issue 11, item 3).

For a checkpoint of an image DART model with a learned scorer, trained on Cluttered
Fashion-MNIST (a dataset with object boxes), on the first ``--samples`` test images:

* how often the score map's highest cell lies inside the object box (chance: the box's
  area share, about 0.05 on the 128 px canvas);
* the object mass (:func:`dartok.localization.object_mass`) the same raw scores would give under
  each normalisation of :func:`dartok.scorer.scores_to_pdf` (the paper's sigmoid with the
  checkpoint's learned contrast, softmax at γ = 1, the moment-matched box), for the scorer
  head's scores, the auxiliary class-activation map's (where the model has one) and their sum
  (what the model cuts);
* the auxiliary classifier's top-1 (with a CAM head) beside the model's;
* the model's top-1 with its normalisation swapped at test time (sigmoid → softmax at
  γ = 1 → moment box; the backbone was trained on the first).

It separates "the scorer does not know where the object is" from "it knows, but its
normalisation does not put the mass there".

    python benchmarks/scorer_maps.py CHECKPOINT_DIR [--samples 1000] [--name scorer_maps]

Writes ``benchmarks/results/<name>.{json,md}``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch

from dartok.bench import finish_report, machine_info, script_command
from dartok.localization import object_mass
from dartok.scorer import scores_to_pdf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--name", default="scorer_maps")
    args = ap.parse_args()
    from dartok.data.registry import create_dataset
    from dartok.train.checkpoint import load_config, model_from_checkpoint

    torch.manual_seed(0)
    cfg = load_config(args.checkpoint)
    model = model_from_checkpoint(args.checkpoint)
    model = (model[0] if isinstance(model, tuple) else model).eval()
    scorer = model.patch_embed.scorer
    data = cfg["data"]
    ds = create_dataset(data["name"], data.get("root"), "test", canvas_size=data["canvas_size"], return_box=True,
                        **data.get("kwargs", {}))
    n = min(args.samples, len(ds))
    items = [ds[i] for i in range(n)]
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([it[1]["label"] for it in items])
    boxes = torch.stack([torch.as_tensor(it[1]["box"], dtype=torch.float32) for it in items])
    rows = []
    with torch.no_grad():
        feats = scorer.features(x)
        maps = {"head": scorer.head(feats)}
        aux_top1 = None
        if scorer.cam is not None:
            cam = scorer.cam(feats)
            from dartok.scorer import cam_pool_logits

            logits = cam_pool_logits(cam, getattr(scorer, "cam_pool", "avg"), getattr(scorer, "cam_pool_r", 5.0))
            aux_top1 = 100 * (logits.argmax(1) == y).float().mean().item()
            maps["cam"] = torch.einsum("bkhw,bk->bhw", cam, torch.softmax(logits, 1))
            maps["head + cam (the model's)"] = maps["head"] + maps["cam"]
        top1 = 100 * (model(x).argmax(1) == y).float().mean().item()
        swapped = {}
        trained = (scorer.activation, scorer.score_scale.detach().clone(), scorer.score_bias.detach().clone())
        for act in ("softmax", "box"):
            scorer.activation = act
            scorer.score_scale.data.fill_(1.0)
            scorer.score_bias.data.fill_(0.0)
            swapped[act] = 100 * (model(x).argmax(1) == y).float().mean().item()
        scorer.activation = trained[0]
        scorer.score_scale.data.copy_(trained[1])
        scorer.score_bias.data.copy_(trained[2])
        h, w = maps["head"].shape[-2:]
        for name, scores in maps.items():
            idx = scores.flatten(1).argmax(1)
            cy, cx = (idx // w + 0.5) / h, (idx % w + 0.5) / w
            inside = ((cx >= boxes[:, 0]) & (cx <= boxes[:, 2]) & (cy >= boxes[:, 1]) & (cy <= boxes[:, 3]))
            row = {"map": name, "argmax_in_box": inside.float().mean().item()}
            for act, scale, bias in [("sigmoid", scorer.score_scale, scorer.score_bias), ("softmax", 1.0, 0.0),
                                     ("box", 1.0, 0.0)]:
                pdf = scores_to_pdf(scores, scale=scale, bias=bias, activation=act)
                row[f"object_mass_{act}"] = object_mass(pdf, boxes).mean().item()
            rows.append(row)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean().item()
    lines = [f"# Where the scorer of `{args.checkpoint}` looks ({n} test images)", "",
             f"Model top-1 {top1:.2f} %" + (f"; auxiliary classifier top-1 {aux_top1:.2f} %" if aux_top1 is not None
                                             else "; no auxiliary CAM head")
             + f"; the object box covers {area:.3f} of the canvas on average (chance for the argmax cell).", "",
             f"Top-1 with the normalisation swapped at test time: softmax γ=1 {swapped['softmax']:.2f} %, "
             f"moment box {swapped['box']:.2f} % (trained with {trained[0]}).", "",
             f"| map | argmax cell in the box | object mass, sigmoid (learned contrast {float(trained[1]):.2f}) "
             "| object mass, softmax γ=1 | object mass, moment box |", "|---|---|---|---|---|",
             *[f"| {r['map']} | {r['argmax_in_box']:.3f} | {r['object_mass_sigmoid']:.3f} | "
               f"{r['object_mass_softmax']:.3f} | {r['object_mass_box']:.3f} |" for r in rows]]
    result = {"command": script_command(), "machine": machine_info("cpu"), "rows": rows,
              "settings": {"checkpoint": args.checkpoint, "samples": n, "model_top1": top1, "aux_top1": aux_top1,
                           "swapped_top1": swapped,
                           "box_area": area}}
    finish_report(result, lines, Path(__file__).resolve().parent / "results", args.name)


if __name__ == "__main__":
    main()
