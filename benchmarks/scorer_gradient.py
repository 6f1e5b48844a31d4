"""How much gradient does DART's scorer get, at initialisation and as training starts? (issue 11, item 3)

Trains ``dart_vit_micro_patch8`` on Cluttered Fashion-MNIST with ``dartok train``'s own recipe
(``dartok.engine.build_optimization``, the ``TrainConfig`` defaults, the ``cpu`` preset's lr
and batch) for a few hundred updates and, at chosen steps, measures on one fixed batch:

* the gradient norm ``‖∂L/∂θ‖`` of each parameter group (scorer trunk, scorer head, the
  learned contrast, the patch projection, the position map, the transformer blocks, the
  classifier head) and the same relative to the group's weight norm;
* ``‖∂L/∂boxes‖``, the gradient that reaches the box coordinates, the only path from the
  loss to the scorer;
* the score map's object mass (its share inside the true object box, before uniform mixing;
  :func:`dartok.localization.object_mass`), and the oracle's at the same grid for scale.

    python benchmarks/scorer_gradient.py [--steps 200] [--num-tokens 36] [--threads 1]

Writes ``benchmarks/results/scorer_gradient.{json,md}``.
"""
from __future__ import annotations

import argparse
import time

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch

from dartok.bench import finish_report, machine_info, script_command
from dartok.data import create_dataset
from dartok.engine import TrainConfig, build_optimization, prepare_images
from dartok.localization import box_pdf, object_mass
from dartok.models import create_model
from dartok.partition import unmix_uniform

GROUPS = (
    ("scorer trunk", "patch_embed.scorer.trunk."),
    ("scorer head", "patch_embed.scorer.head."),
    ("scorer contrast", "patch_embed.scorer.score_"),
    ("patch projection", "patch_embed.proj."),
    ("position map", "patch_embed.pos_embed"),
    ("blocks", "blocks."),
    ("classifier head", "head."),
)


def group_norms(model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    """``{group: (‖grad‖, ‖grad‖ / ‖weight‖)}`` over the parameters whose names start with the group's prefix."""
    out = {}
    for name, prefix in GROUPS:
        g2 = w2 = 0.0
        for pname, p in model.named_parameters():
            if pname.startswith(prefix) and p.grad is not None:
                g2 += float(p.grad.double().pow(2).sum())
                w2 += float(p.detach().double().pow(2).sum())
        out[name] = (g2 ** 0.5, (g2 ** 0.5) / max(w2 ** 0.5, 1e-12))
    return out


def probe(model, loss_fn, x, y, boxes) -> dict:
    """Gradients and localisation on one batch (model in train mode, no update)."""
    model.zero_grad(set_to_none=True)
    dart = model.patch_embed
    captured = {}

    def keep(module, inputs, output):
        output.boxes.retain_grad()
        captured["out"] = output

    handle = dart.register_forward_hook(keep)
    try:
        loss = loss_fn(model(x), y)
        loss.backward()
    finally:
        handle.remove()
    out = captured["out"]
    pdf = unmix_uniform(out.pdf.detach(), dart.alpha)
    norms = group_norms(model)
    return {
        "loss": float(loss),
        "grad": {k: v[0] for k, v in norms.items()},
        "rel_grad": {k: v[1] for k, v in norms.items()},
        "box_grad": float(out.boxes.grad.norm()) if out.boxes.grad is not None else 0.0,
        "object_mass": float(object_mass(pdf, boxes).mean()),
        "contrast": (float(dart.scorer.score_scale), float(dart.scorer.score_bias)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="updates to train")
    ap.add_argument("--probe-steps", default="0,10,25,50,100,200", help="steps at which to measure")
    ap.add_argument("--num-tokens", type=int, default=36)
    ap.add_argument("--train-samples", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    probes = sorted({int(s) for s in args.probe_steps.split(",") if int(s) <= args.steps})

    torch.manual_seed(args.seed)
    model = create_model("dart_vit_micro_patch8", num_tokens=args.num_tokens).train()
    data = create_dataset("cluttered_fmnist", None, "train", canvas_size=128, num_samples=args.train_samples,
                          seed=args.seed, return_box=True)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    cfg = TrainConfig(model="dart_vit_micro_patch8", lr=args.lr, batch_size=args.batch_size, epochs=8)
    optimizer, scheduler, loss_fn = build_optimization(model, cfg, len(loader))
    input_size = (1, 128, 128)

    fixed = next(iter(torch.utils.data.DataLoader(data, batch_size=args.batch_size)))
    fx, fy, fboxes = prepare_images(fixed[0], input_size), fixed[1]["label"], fixed[1]["box"].float()
    oracle = float(object_mass(box_pdf(fboxes, model.patch_embed.score_grid()), fboxes).mean())

    rows, step, t0 = [], 0, time.perf_counter()
    it = iter(loader)
    while True:
        if step in probes:
            r = probe(model, loss_fn, fx, fy, fboxes)
            r["step"] = step
            rows.append(r)
            print(f"step {step:4d}  loss {r['loss']:.3f}  |dL/dboxes| {r['box_grad']:.2e}  "
                  f"trunk {r['grad']['scorer trunk']:.2e}  head {r['grad']['scorer head']:.2e}  "
                  f"blocks {r['grad']['blocks']:.2e}  object mass {r['object_mass']:.3f}", flush=True)
        if step >= args.steps:
            break
        try:
            x, t = next(it)
        except StopIteration:
            it = iter(loader)
            x, t = next(it)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(prepare_images(x, input_size)), t["label"])
        loss.backward()
        optimizer.step()
        step += 1
        scheduler.step_update(step)

    names = [g for g, _ in GROUPS]
    lines = [f"# Scorer gradient at initialisation and early training (dart_vit_micro_patch8, N={args.num_tokens})",
             "", f"Gradient norms on one fixed batch of {args.batch_size} training images; object mass of the "
             f"learned score map before uniform mixing (the oracle's at the same grid: {oracle:.3f}; a uniform "
             "map scores the box area).", "",
             "| step | loss | ‖∂L/∂boxes‖ | " + " | ".join(f"‖∂L/∂{n}‖" for n in names) + " | object mass |",
             "|---" * (4 + len(names)) + "|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['loss']:.3f} | {r['box_grad']:.2e} | "
                     + " | ".join(f"{r['grad'][n]:.2e}" for n in names) + f" | {r['object_mass']:.3f} |")
    lines += ["", "Relative to the weights (‖∂L/∂θ‖ / ‖θ‖):", "",
              "| step | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for r in rows:
        lines.append(f"| {r['step']} | " + " | ".join(f"{r['rel_grad'][n]:.2e}" for n in names) + " |")
    result = {"rows": rows, "oracle_object_mass": oracle, "machine": machine_info("cpu"), "command": script_command(),
              "settings": {**vars(args), "elapsed_s": round(time.perf_counter() - t0, 1)}}
    finish_report(result, lines, args.out, "scorer_gradient")


if __name__ == "__main__":
    main()
