"""Issue 11's targets on the short recipe: grid, learned DART and the oracle per data, budget and seed.

Collects result files already written by ``benchmarks/scorer_remedies.py`` and
``benchmarks/preset_short.py`` (5 epochs, 8 000 / 2 000 images; the oracle on the same 16×16 cells)
into two tables, one per recipe of the from-scratch scorer: session 11's (``scratch_scorer()`` with
its map read at the cells' centres, pretrained 8 epochs at lr 3e-3) and session 10's (no alignment,
4 epochs). Per row the top-1 of each seed, DART − grid, the share of the oracle's gain DART keeps,
``(DART − grid) / (oracle − grid)``, and the object mass at the end. The grid and the oracle do not
use the scorer's recipe: both tables share their runs. Trains nothing.

    python benchmarks/short_recipe_table.py

Writes ``benchmarks/results/issue11_short_recipe.{json,md}``.
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# (data, N) -> {row: [(file, run name in it)]}; a row's seeds are the union over its files
SOURCES_S10: dict[tuple[str, int], dict[str, list[tuple[str, str]]]] = {
    ("cpu (default data)", 36): {
        "grid": [("scorer_remedies_try14_pretrain", "grid")],
        "dart": [("scorer_remedies_try18_pretrain_lr3e-3",
                  "dart (cam, stride-8 map, softmax, 3x3 pdf blur, trunk pretrained and frozen)")],
        "oracle": [("scorer_remedies_try15_oracle16", "oracle (16x16 map)")],
    },
    ("cpu (default data)", 16): {r: [("cpu_short_scratch_lr3e-3_n16", f"{r}@16")] for r in ("grid", "dart", "oracle")},
    ("cpu-small", 36): {
        "grid": [("cpu-small-36_short", "grid@36"), ("cpu-small-36_short_scratch_lr3e-3_seeds12", "grid@36")],
        **{r: [("cpu-small-36_short_scratch_lr3e-3", f"{r}@36"), ("cpu-small-36_short_scratch_lr3e-3_seeds12", f"{r}@36")]
           for r in ("dart", "oracle")},
    },
    ("cpu-clutter", 36): {
        "grid": [("cpu-clutter-36_short", "grid@36"), ("cpu-clutter-36_short_scratch_lr3e-3_seeds12", "grid@36")],
        **{r: [("cpu-clutter-36_short_scratch_lr3e-3", f"{r}@36"),
               ("cpu-clutter-36_short_scratch_lr3e-3_seeds12", f"{r}@36")] for r in ("dart", "oracle")},
    },
    ("cpu-clutter, scorer pretrained 8 epochs", 36): {
        "grid": [("cpu-clutter-36_short", "grid@36"), ("cpu-clutter-36_short_scratch_lr3e-3_seeds12", "grid@36")],
        "dart": [("cpu-clutter-36_short_scratch_lr3e-3_pre8_seed0", "dart@36"),
                 ("cpu-clutter-36_short_scratch_lr3e-3_pre8_seeds12", "dart@36")],
        "oracle": [("cpu-clutter-36_short_scratch_lr3e-3", "oracle@36"),
                   ("cpu-clutter-36_short_scratch_lr3e-3_seeds12", "oracle@36")],
    },
    ("cpu-small", 16): {r: [("cpu-small_short_scratch_lr3e-3", f"{r}@16")] for r in ("grid", "dart", "oracle")},
    ("cpu-clutter", 16): {r: [("cpu-clutter_short_scratch_lr3e-3", f"{r}@16")] for r in ("grid", "dart", "oracle")},
}


def _s11(stem: str, n: int) -> list[tuple[str, str]]:
    return [(f"{stem}_short_s11_align_pre8", f"dart@{n}")]


# session 11: the DART rows of `preset_short.py cpu cpu-36 --runs dart@16 dart@36 --merge --suffix _s11_align_pre8`
# (likewise cpu-small, cpu-clutter); the grid and oracle rows are session 10's
SOURCES_S11: dict[tuple[str, int], dict[str, list[tuple[str, str]]]] = {
    key: {**rows, "dart": _s11({"cpu (default data)": "cpu", "cpu-small": "cpu-small", "cpu-clutter": "cpu-clutter"}[key[0]],
                               key[1])}
    for key, rows in SOURCES_S10.items() if not key[0].startswith("cpu-clutter, ")
}


def compare_seed_rows(data: dict) -> list[dict]:
    """The per-seed rows of a ``dartok compare`` result (its JSON loaded): ``seed_rows``, or for a
    single-seed comparison (which writes none) its ``rows``, each given its one ``seed``."""
    return data.get("seed_rows") or [{**r, "seed": r["seeds"][0]} for r in data["rows"] if len(r.get("seeds", [])) == 1]


def per_seed(stem: str, name: str) -> dict[int, tuple[float, float | None]]:
    """``{seed: (top-1, object mass)}`` of run ``name`` in ``results/<stem>.json`` (compare's or scorer_remedies')."""
    path = RESULTS / f"{stem}.json"
    if not path.is_file():
        return {}
    d = json.loads(path.read_text())
    if "runs" in d:  # scorer_remedies.py
        run = d["runs"].get(name)
        if run is None:
            return {}
        seeds = [int(s) for s in str(d["settings"]["seeds"]).split()] if isinstance(d["settings"]["seeds"], str) \
            else list(d["settings"]["seeds"])
        masses = run.get("object_mass") or [None] * len(seeds)
        return {s: (t, m) for s, t, m in zip(seeds, run["top1"], masses)}
    rows = compare_seed_rows(d)
    return {int(r["seed"]): (r["test_top1"], r.get("test_object_mass")) for r in rows if r["name"] == name}


def table(sources: dict, out: list, lines: list) -> None:
    """Append one recipe's rows to ``out`` (records) and ``lines`` (markdown)."""
    lines += ["| data | N | grid | DART | oracle | DART − grid | share of the oracle's gain | DART spread | "
              "object mass (DART, end) |", "|---|---|---|---|---|---|---|---|---|"]
    for (data, n), rows in sources.items():
        vals = {}
        for row, files in rows.items():
            merged: dict[int, tuple[float, float | None]] = {}
            for stem, name in files:
                merged.update(per_seed(stem, name))
            vals[row] = merged
        seeds = sorted(set(vals["grid"]) & set(vals["dart"]) & set(vals["oracle"]))
        if not seeds:
            continue
        g, d, o = ([vals[r][s][0] for s in seeds] for r in ("grid", "dart", "oracle"))
        delta = [b - a for a, b in zip(g, d)]
        share = [(b - a) / (c - a) for a, b, c in zip(g, d, o)]
        mass = [vals["dart"][s][1] for s in seeds]
        rec = {"data": data, "num_tokens": n, "seeds": seeds, "grid": g, "dart": d, "oracle": o, "delta": delta,
               "share": share, "dart_spread": max(d) - min(d), "object_mass": mass}
        out.append(rec)
        f = lambda xs, p=2: " / ".join(f"{x:.{p}f}" if x is not None else "-" for x in xs)  # noqa: E731
        lines.append(f"| {data} | {n} | {f(g)} | {f(d)} | {f(o)} | {' / '.join(f'{x:+.2f}' for x in delta)} | "
                     f"{f(share)} | {rec['dart_spread']:.2f} | {f(mass)} |")
    lines += ["", "Seeds: " + "; ".join(f"{r['data']} N={r['num_tokens']}: {r['seeds']}" for r in out),
              "", "Sources: " + ", ".join(sorted({f'`{stem}`' for rows in sources.values() for fs in rows.values()
                                                   for stem, _ in fs})), ""]


def main() -> None:
    s11, s10 = [], []
    lines = ["# Issue 11 on the short recipe: grid, learned DART and the oracle, per seed", "",
             "5 epochs, 8 000 / 2 000 images, batch 64, lr 1e-3; the oracle cuts the same 16×16 cells as DART. "
             "Top-1 % per seed 0 / 1 / 2. Share: (DART − grid) / (oracle − grid). The grid and oracle runs are "
             "the same in both tables (neither uses the scorer's recipe).", "",
             "## Session 11 recipe: `scratch_scorer()` with `align_cells`, pretrained 8 epochs at lr 3e-3, then frozen", ""]
    table(SOURCES_S11, s11, lines)
    lines += ["## Session 10 recipe: no alignment, pretrained 4 epochs at lr 3e-3 (8 where the row says so)", ""]
    table(SOURCES_S10, s10, lines)
    (RESULTS / "issue11_short_recipe.json").write_text(json.dumps({"session11": s11, "session10": s10}, indent=1))
    (RESULTS / "issue11_short_recipe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
