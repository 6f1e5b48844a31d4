"""Throughput ratio of models, measured in several fresh processes (run-to-run spread).

On a small shared VM the speed of one model can differ by 10% from one process to the next
(memory placement, allocator state, neighbours), more than between the models compared.
This runs ``--processes`` independent Python processes; each builds the models, warms them
up and times them interleaved (:func:`dartok.bench.measure_speeds`), and reports the
paired ratio (:func:`dartok.bench.paired_speed_ratio`) of every model to the first. The
result lists every process's ratios and their median, min and max.

Usage (from the repository root)::

    .venv/bin/python benchmarks/ratio_runs.py --processes 5 --threads 2 --name ratio_cpu
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
import json, sys
import dartok, torch
torch.set_num_threads(int(sys.argv[1]))
from dartok.bench import make_model, measure_speeds, paired_speed_ratio
batch, warmup, repeats = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
names = sys.argv[5].split(",")
entries = [make_model(n) for n in names]
rows = measure_speeds(entries, batch, "cpu", warmup, repeats)
out = {"images_per_s": [r["images_per_s"] for r in rows],
       "paired_ratio": [paired_speed_ratio(rows[0], r) for r in rows],
       "times_s": [r["times_s"] for r in rows]}
print("RESULT " + json.dumps(out))
"""


def main() -> None:
    """Run the processes and write ``benchmarks/results/<name>.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="deit_tiny_patch16_224,dart_deit_tiny_patch16_224,"
                                        "dart_deit_tiny_patch16_224[scorer=none]")
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default="ratio_cpu")
    ap.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import dartok  # noqa: F401  (before timm)
    from dartok.bench import finish_report, machine_info, script_command

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    runs = []
    for p in range(args.processes):
        proc = subprocess.run([sys.executable, "-c", CHILD, str(args.threads), str(args.batch_size),
                               str(args.warmup), str(args.repeats), ",".join(names)],
                              capture_output=True, text=True, check=True, cwd=ROOT, env=dict(os.environ))
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        res = json.loads(line[len("RESULT "):])
        runs.append(res)
        print(f"process {p + 1}: img/s " + ", ".join(f"{v:.1f}" for v in res["images_per_s"])
              + " | paired ratio " + ", ".join(f"{v:.3f}" for v in res["paired_ratio"]), flush=True)
    summary = []
    for i, name in enumerate(names):
        ratios = [r["paired_ratio"][i] for r in runs]
        ips = [r["images_per_s"][i] for r in runs]
        summary.append({"model": name, "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                        "ratio_max": max(ratios), "ratios": ratios, "images_per_s_median": statistics.median(ips),
                        "images_per_s_min": min(ips), "images_per_s_max": max(ips)})
    result = {"suite": "ratio_runs", "command": script_command(),
              "machine": machine_info("cpu"), "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                           for k, v in vars(args).items()},
              "summary": summary, "runs": runs}
    lines = [f"## Throughput relative to {names[0]}, {args.processes} fresh processes "
             f"(CPU, batch {args.batch_size}, {args.threads} threads)", "",
             "| model | img/s median (min-max) | paired ratio median | min | max | per process |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['model']} | {s['images_per_s_median']:.1f} ({s['images_per_s_min']:.1f}-"
                     f"{s['images_per_s_max']:.1f}) | {s['ratio_median']:.3f} | {s['ratio_min']:.3f} | "
                     f"{s['ratio_max']:.3f} | {', '.join(f'{v:.3f}' for v in s['ratios'])} |")
    lines += ["", f"Each process: {args.warmup} warm-up calls per model, then {args.repeats} interleaved rounds; "
              "paired ratio = median over rounds of t(first model) / t(model)."]
    finish_report(result, lines, args.output_dir, args.name)


if __name__ == "__main__":
    main()
