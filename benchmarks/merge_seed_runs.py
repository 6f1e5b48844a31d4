"""One compare table from finished runs that trained in different folders (e.g. seed 0 in one
session, seeds 1 and 2 in another), after checking that every seed of a row had the same recipe.

    python benchmarks/merge_seed_runs.py --name cpu-video-which_3seeds --output runs/which3 \\
        --row "grid 16x4" 0 "runs/a/cpu-video-which/grid 16x4" \\
        --row "grid 16x4" 1 "runs/b/cpu-video-which/grid 16x4/seed1" ...

Each ``--row NAME SEED DIR`` names a finished run folder (with ``checkpoint/``). The runs are
linked into ``<output>/<NAME>/seed<SEED>`` (a row with one seed: ``<output>/<NAME>``) and read by
:func:`dartok.tools.compare.collect` as ``dartok compare`` reads its own, so the table, JSON
(with ``seed_rows``) and localisation plot are compare's. A row's spec (model, tokens, model
kwargs) comes from its checkpoints. Refused with one ``Error:`` line: a seed given twice for a
row, a run whose checkpoint records another seed than given, or seeds of a row whose training
options differ in anything but the run's mechanics (seed, output folder, threads, resume,
progress, loader workers) and the path of ``init_from`` (compared after resolving links).
Writes ``benchmarks/results/<name>.{json,md}`` and ``<name>_localization.png``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dartok  # noqa: F401  (before timm: torchvision shim)
from dartok.tools.compare import RunSpec, aggregate_seeds, collect, plot_localization, publish_results, write_tables
from dartok.train.checkpoint import load_config

MECHANICS = {"seed", "output", "init_from", "threads", "resume", "progress", "stop_after", "num_workers",
             "pin_mem", "persistent_workers"}
"""Training options that say how a run was executed, not what it trained: they may differ by seed."""


def recipe(config: dict) -> dict:
    """The checkpoint's training options without :data:`MECHANICS`, and ``init_from`` resolved."""
    train = config["train"]
    init = train.get("init_from")
    return {**{k: v for k, v in train.items() if k not in MECHANICS},
            "init_from": None if init is None else str(Path(init).resolve())}


def merged_table(rows: dict[str, dict[int, Path]], out: Path, name: str, meta: dict | None = None,
                 group: str = "main") -> str:
    """Check, link and tabulate finished runs: ``rows`` maps a row name to ``{seed: run folder}``
    (rows in table order). Writes ``<out>/<name>.{json,md}``, the localisation plot, and copies them
    to ``benchmarks/results``; returns the markdown.

    Raises:
        SystemExit: with an ``Error:`` line, for a run that trained at another seed than given or
            seeds of a row trained with different options.
    """
    specs: list[tuple[RunSpec, list[int] | None]] = []
    for row, by_seed in rows.items():
        configs = {k: load_config(p / "checkpoint") for k, p in by_seed.items()}
        for k, cfg in configs.items():
            if cfg["train"].get("seed") != k:
                sys.exit(f"Error: --row {row!r}: {str(by_seed[k])!r} trained at seed {cfg['train'].get('seed')}, "
                         f"not {k}")
        first = min(configs)
        base = recipe(configs[first])
        for k, cfg in configs.items():
            other = recipe(cfg)
            diff = sorted(key for key in set(base) | set(other) if base.get(key) != other.get(key))
            if diff:
                sys.exit(f"Error: --row {row!r}: seeds {first} and {k} trained with different options: "
                         f"{', '.join(diff)}")
        seeds = sorted(by_seed) if len(by_seed) > 1 else None
        for k, p in by_seed.items():
            link = out / row / f"seed{k}" if seeds else out / row
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            os.symlink(Path(p).resolve(), link)
        cfg = configs[first]
        spec = RunSpec(row, cfg["model"], int(cfg["train"]["num_tokens"]),
                       dict(cfg["train"].get("model_kwargs") or {}), group=group)
        specs.append((spec, seeds))
    seed_rows = [r for spec, seeds in specs for r in collect([spec], out, count_macs=True, seeds=seeds)]
    table = aggregate_seeds(seed_rows)
    meta = {**(meta or {}), "rows_from": {n: {str(k): str(p) for k, p in s.items()} for n, s in rows.items()},
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    md = write_tables(table, out / name, meta, seed_rows=seed_rows)
    plot_localization(table, out / f"{name}_localization.png", title=name)
    publish_results(out, Path(__file__).resolve().parent / "results", name)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", nargs=3, action="append", required=True, metavar=("NAME", "SEED", "DIR"))
    ap.add_argument("--name", required=True, help="result file stem")
    ap.add_argument("--output", required=True, help="folder of the links and the result files")
    ap.add_argument("--group", default="main", help="the rows' table group")
    args = ap.parse_args()
    rows: dict[str, dict[int, Path]] = {}
    for name, seed, path in args.row:
        try:
            k = int(seed)
        except ValueError:
            sys.exit(f"Error: --row {name!r}: SEED must be an integer, got {seed!r}")
        if k in rows.setdefault(name, {}):
            sys.exit(f"Error: --row {name!r} gives seed {k} twice")
        if not (Path(path) / "checkpoint").is_dir():
            sys.exit(f"Error: --row {name!r} seed {k}: {path!r} has no checkpoint/ (a finished run folder)")
        rows[name][k] = Path(path)
    print(merged_table(rows, Path(args.output), args.name, group=args.group))


if __name__ == "__main__":
    main()
