"""Before/after timing of the DART tokenizer stages for two source trees of dartok.

Usage (from the repository root)::

    mkdir -p /tmp/old && git archive <rev> src | tar -x -C /tmp/old
    .venv/bin/python benchmarks/compare_revisions.py --old-src /tmp/old/src --threads 2 \\
        --name optimisation_cpu

Each round runs the measurement once in a subprocess on the old tree (``PYTHONPATH``) and
once on the working tree, alternately, so that load from other processes hits both alike;
per stage the median over rounds of each run's median is reported. Only calls that exist
in both versions are timed: ``DART._check_images``, the whole scorer, ``sample_patches``,
``DART.project``, ``DART.position_embeddings``, ``DART.forward`` and the full model, plus
DeiT-Ti (interleaved with the DART model) for the throughput ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
import dartok, torch
torch.set_num_threads(int(sys.argv[1]))
batch, repeats = int(sys.argv[2]), int(sys.argv[3])
from dartok.models import create_model
from dartok.resample import sample_patches
from dartok.partition import mix_uniform
deit = create_model("deit_tiny_patch16_224").eval()
model = create_model("dart_deit_tiny_patch16_224").eval()
dart = model.patch_embed
g = torch.Generator().manual_seed(0)
x = torch.randn(batch, 3, 448, 448, generator=g)
x224 = torch.randn(batch, 3, 224, 224, generator=g)

def med(fn, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)

out = {"dartok": dartok.__file__}
with torch.inference_mode():
    pdf = mix_uniform(dart.scorer(x), dart.alpha)
    boxes = dart.partition(pdf)
    patches = sample_patches(x, boxes, 16)
    out["input check"] = med(lambda: dart._check_images(x))
    out["scorer (resize + trunk + head)"] = med(lambda: dart.scorer(x))
    out["sampling"] = med(lambda: sample_patches(x, boxes, 16))
    out["projection"] = med(lambda: dart.project(patches))
    out["position embeddings"] = med(lambda: dart.position_embeddings(boxes))
    out["tokenizer (whole)"] = med(lambda: dart(x))
    deit(x224); model(x)
    td, tm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); deit(x224); td.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); model(x); tm.append(time.perf_counter() - t0)
    out["DeiT-Ti model"] = 1e3 * statistics.median(td)
    out["DART-DeiT-Ti model"] = 1e3 * statistics.median(tm)
    out["throughput ratio"] = statistics.median(td) / statistics.median(tm)
print("RESULT " + json.dumps(out))
"""


def run_child(src: Path | None, threads: int, batch: int, repeats: int) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(batch), str(repeats)], env=env,
                          capture_output=True, text=True, check=True, cwd=ROOT)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    """Run the alternating rounds and write ``benchmarks/results/<name>.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-src", type=Path, required=True, help="the old tree's src/ folder")
    ap.add_argument("--old-label", default="before", help="label of the old tree (e.g. a commit)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", default="optimisation_cpu")
    ap.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import dartok  # noqa: F401  (the working tree, for the writer and machine info)
    from dartok.bench import finish_report, machine_info, script_command

    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for label, src in (("before", args.old_src.resolve()), ("after", None)):
            res = run_child(src, args.threads, args.batch_size, args.repeats)
            runs[label].append(res)
            print(f"round {r + 1} {label}: {res['dartok']}: tokenizer {res['tokenizer (whole)']:.1f} ms, "
                  f"ratio {res['throughput ratio']:.3f}", flush=True)
    keys = [k for k in runs["after"][0] if k != "dartok"]
    summary = {k: {lab: statistics.median(r[k] for r in runs[lab]) for lab in runs} for k in keys}
    result = {
        "suite": "compare_revisions",
        "command": script_command(),
        "machine": machine_info("cpu"),
        "settings": {"threads": args.threads, "batch_size": args.batch_size, "repeats": args.repeats,
                     "rounds": args.rounds, "old": args.old_label},
        "summary": summary,
        "runs": runs,
    }
    lines = [f"## DART-DeiT-Ti tokenizer, before ({args.old_label}) and after the optimisations "
             f"(CPU, batch {args.batch_size}, {args.threads} threads)", "",
             "| stage | before (ms) | after (ms) | after / before |", "|---|---|---|---|"]
    for k, v in summary.items():
        if k == "throughput ratio":
            continue
        lines.append(f"| {k} | {v['before']:.1f} | {v['after']:.1f} | {v['after'] / v['before']:.2f} |")
    tr = summary["throughput ratio"]
    lines += ["", f"DART-DeiT-Ti / DeiT-Ti throughput (interleaved, batch {args.batch_size}): "
              f"before {tr['before']:.3f}, after {tr['after']:.3f}.", "",
              f"Medians over {args.rounds} alternating rounds of {args.repeats} timed calls each."]
    finish_report(result, lines, args.output_dir, args.name)

if __name__ == "__main__":
    main()
