"""DART-DeiT-Ti against DeiT-Ti as a new user runs them: one process, default settings, eval mode.

Issue 14 §3. No allocator tuning (glibc's default malloc: run this without the ``MALLOC_*``
variables of ``benchmarks/run_cpu.sh``), torch's default thread count, ``torch.inference_mode``.
For each batch size, DeiT-Ti, DART-DeiT-Ti and DART-DeiT-Ti without its scorer (the bound), and
any ``--extra-models`` (e.g. DART-DeiT-Ti with a cheaper scorer; the targets apply to them too), are
timed interleaved, one call each per round (:func:`dartok.bench.measure_speeds`), and the paired
ratio (:func:`dartok.bench.paired_speed_ratio`: the median over rounds of t(DeiT) / t(model))
reported, so the load of other processes on a shared machine hits all alike. Page faults per
call (``getrusage`` minor faults: what the default allocator costs) are counted after the timing.
``--compile`` repeats it with every model under ``torch.compile`` (default mode).

``--cpu-time`` measures work instead of wall time, for a machine too busy for wall-clock ratios:
one torch thread, and each call's thread CPU time (``time.thread_time``: user + system, page
faults included; a descheduled thread does not count), interleaved the same way.

    python benchmarks/overhead_cpu.py [--batch-sizes 64 1] [--rounds 15 60] [--compile] [--name overhead_cpu]
        [--extra-models 'dart_deit_tiny_patch16_224[scorer={"trunk": "mobilenetv3_small_050"}]']

Writes ``benchmarks/results/<name>.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
import torch

from dartok.bench import finish_report, machine_info, make_model, measure_speeds, paired_speed_ratio, script_command

MODELS = ("deit_tiny_patch16_224", "dart_deit_tiny_patch16_224", "dart_deit_tiny_patch16_224[scorer=none]")
TARGETS = {64: 0.95, 1: 0.85}


def page_faults(model: torch.nn.Module, shape, batch: int) -> int:
    """Minor page faults of one eval forward (after two untimed ones)."""
    x = torch.randn(batch, *shape)
    with torch.inference_mode():
        model(x), model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(x)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def cpu_time_speeds(entries, batch: int, warmup: int, rounds: int) -> list[dict]:
    """:func:`dartok.bench.measure_speeds`' rows from per-call thread CPU time (one thread, interleaved)."""
    xs = [torch.randn(batch, *shape) for _, shape in entries]
    times = [[] for _ in entries]
    with torch.inference_mode():
        for _ in range(warmup):
            for (m, _), x in zip(entries, xs):
                m(x)
        for _ in range(rounds):
            for k, ((m, _), x) in enumerate(zip(entries, xs)):
                t = time.thread_time()
                m(x)
                times[k].append(time.thread_time() - t)
    out = []
    for t in times:
        med = sorted(t)[len(t) // 2] if len(t) % 2 else sum(sorted(t)[len(t) // 2 - 1:len(t) // 2 + 1]) / 2
        out.append({"times_s": t, "images_per_s": batch / med, "latency_ms": 1e3 * med})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1])
    ap.add_argument("--rounds", type=int, nargs="+", default=[15, 60], help="timed rounds per batch size")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time the models under torch.compile")
    ap.add_argument("--cpu-time", action="store_true", help="one thread, per-call thread CPU time (a busy machine)")
    ap.add_argument("--extra-models", nargs="*", default=[],
                    help="more DART variants to time beside the three, as dartok bench model specs, e.g. "
                         "'dart_deit_tiny_patch16_224[scorer={\"trunk\": \"mobilenetv3_small_050\"}]'")
    ap.add_argument("--name", default="overhead_cpu")
    ap.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    if len(args.rounds) != len(args.batch_sizes):
        raise SystemExit("Error: --rounds needs one value per --batch-sizes entry")
    tuned = sorted(k for k in os.environ if k.startswith("MALLOC_") or k == "LD_PRELOAD")
    if args.cpu_time:
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_before = [round(v, 2) for v in os.getloadavg()]
    names = [*MODELS, *args.extra_models]
    built = [make_model(name) for name in names]
    modes = [("eager", [m for m, _ in built])]
    if args.compile:
        modes.append(("torch.compile", [torch.compile(m) for m, _ in built]))
    rows = []
    for mode, models in modes:
        for batch, rounds in zip(args.batch_sizes, args.rounds):
            entries = [(m, shape) for m, (_, shape) in zip(models, built)]
            speeds = (cpu_time_speeds(entries, batch, args.warmup, rounds) if args.cpu_time
                      else measure_speeds(entries, batch, "cpu", args.warmup, rounds))
            for name, (m, shape), sp in zip(names, entries, speeds):
                row = {"mode": mode, "clock": "thread CPU time" if args.cpu_time else "wall", "batch_size": batch, "model": name, "images_per_s": sp["images_per_s"],
                       "latency_ms": sp["latency_ms"], "paired_ratio": paired_speed_ratio(speeds[0], sp),
                       "rounds": rounds, "times_s": sp["times_s"]}
                if mode == "eager":
                    row["page_faults"] = page_faults(m, shape, batch)
                rows.append(row)
                print(f"[overhead] {mode} batch {batch}: {name}: {sp['images_per_s']:.1f} img/s, "
                      f"paired ratio {row['paired_ratio']:.3f}", flush=True)
    load_after = [round(v, 2) for v in os.getloadavg()]
    clock = ("per-call thread CPU time, 1 torch thread" if args.cpu_time
             else f"wall clock, {torch.get_num_threads()} torch threads (the default)")
    lines = ["# DART-DeiT-Ti / DeiT-Ti, one process, default settings (eval, CPU)", "",
             f"Clock: {clock}.", "",
             f"Allocator: {'glibc default' if not tuned else 'tuned: ' + ', '.join(tuned)}; "
             f"{torch.get_num_threads()} torch threads; load average (1, 5, 15 min) "
             f"{load_before} before, {load_after} after (the machine is shared: ratios are paired, "
             f"absolute img/s are not comparable between runs).", "",
             "| mode | batch | model | img/s | latency (ms) | paired ratio to DeiT-Ti | target | page faults / call |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = TARGETS.get(r["batch_size"]) if r["model"] in (MODELS[1], *args.extra_models) else None
        lines.append(f"| {r['mode']} | {r['batch_size']} | {r['model']} | {r['images_per_s']:.2f} | "
                     f"{r['latency_ms']:.1f} | {r['paired_ratio']:.3f} | "
                     f"{'≥ %.2f: %s' % (target, 'met' if r['paired_ratio'] >= target else '**missed**') if target else ''}"
                     f" | {r.get('page_faults', '-')} |")
    result = {"command": script_command(), "machine": machine_info("cpu"), "rows": rows,
              "load_before": load_before, "load_after": load_after,
              "settings": {"extra_models": args.extra_models, "batch_sizes": " ".join(map(str, args.batch_sizes)), "rounds": " ".join(map(str, args.rounds)),
                           "warmup": args.warmup, "compile": args.compile, "cpu_time": args.cpu_time, "allocator_env": " ".join(tuned) or "none",
                           "elapsed_min": round((time.perf_counter() - t0) / 60, 1)}}
    finish_report(result, lines, args.output_dir, args.name)


if __name__ == "__main__":
    main()
