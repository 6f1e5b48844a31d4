"""compare at several seeds (issue 11 item 4) and the harder Cluttered Fashion-MNIST presets (item 5)."""
from __future__ import annotations

import json

import pytest

from dartok.tools import compare as cmp

# ------------------------------------------------------------------ seeds: validation, folders, scheduling


def test_check_seeds_accepts_distinct_ints_and_refuses_the_rest():
    assert cmp.check_seeds([2, 0, 1]) == (2, 0, 1)  # order kept
    assert cmp.check_seeds((5,)) == (5,)
    for bad, match in (([], "at least one"), ([0, 1, 0], "distinct.*0 twice"), ([-1], ">= 0"),
                       ([1.5], "ints"), ([True], "ints"), ("012", "sequence"), (3, "sequence")):
        with pytest.raises(ValueError, match=match):
            cmp.check_seeds(bad)


def test_seed_run_dir_keeps_the_single_seed_layout(tmp_path):
    assert cmp.seed_run_dir(tmp_path, "dart@16", None, None) == tmp_path / "dart@16"
    assert cmp.seed_run_dir(tmp_path, "dart@16", 3, (3,)) == tmp_path / "dart@16"  # old results / resume
    assert cmp.seed_run_dir(tmp_path, "dart@16", 1, (0, 1, 2)) == tmp_path / "dart@16" / "seed1"


def _fake_checkpoint(run_dir, epoch):
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "config.json").write_text(json.dumps({"model": "vit_micro_patch8", "epoch": epoch}))


def test_run_specs_schedules_every_spec_at_every_seed_in_its_own_folder(tmp_path, monkeypatch):
    """Each (spec, seed) is one child run with the seed in its TrainConfig, its own folder and
    its own resume decision; all runs go through one pool, seed-major."""
    plans = []

    def fake_child(plan_path, prefix, echo):
        plans.append(json.loads(plan_path.read_text()))
        assert plans[-1]["name"] == prefix
        return 0

    monkeypatch.setattr(cmp, "_run_child", fake_child)
    specs = [cmp.RunSpec("grid@4", "vit_micro_patch8", 4), cmp.RunSpec("dart@4", "dart_vit_micro_patch8", 4)]
    train = {"epochs": 3, "canvas_size": 32, "seed": 7}  # the seeds replace train's seed
    _fake_checkpoint(tmp_path / "dart@4" / "seed1", epoch=1)  # an interrupted run at seed 1 only
    codes = cmp.run_specs(specs, tmp_path, train, jobs=1, snapshot_epochs=(2,), resume=True, seeds=(0, 1))
    assert list(codes) == ["grid@4/seed0", "dart@4/seed0", "grid@4/seed1", "dart@4/seed1"]
    assert set(codes.values()) == {0}
    got = {p["name"]: p for p in plans}
    for spec in specs:
        for seed in (0, 1):
            cfg = got[f"{spec.name}/seed{seed}"]["config"]
            assert cfg["seed"] == seed and cfg["output"] == str(tmp_path / spec.name / f"seed{seed}")
            assert cfg["model"] == spec.model and cfg["epochs"] == 3
    # resume is per run: only dart@4/seed1 holds a checkpoint (epoch 1), so only it resumes, and
    # it still takes its epoch-2 snapshot; dart@4/seed0 starts fresh
    assert [s["resume"] for s in got["dart@4/seed1"]["steps"]] == [True, True]
    assert got["dart@4/seed1"]["steps"][0]["stop_after"] == 2
    assert [s["resume"] for s in got["dart@4/seed0"]["steps"]] == [False, True]
    assert [s["resume"] for s in got["grid@4/seed0"]["steps"]] == [False]
    # one seed: the old layout and label, at that seed
    plans.clear()
    assert cmp.run_specs(specs[:1], tmp_path / "one", train, jobs=1, seeds=[4]) == {"grid@4": 0}
    assert plans[0]["config"]["seed"] == 4 and plans[0]["config"]["output"] == str(tmp_path / "one" / "grid@4")
    # no seeds: train's seed, old layout
    plans.clear()
    cmp.run_specs(specs[:1], tmp_path / "none", train, jobs=1)
    assert plans[0]["config"]["seed"] == 7 and plans[0]["config"]["output"] == str(tmp_path / "none" / "grid@4")
    with pytest.raises(ValueError, match="distinct"):
        cmp.run_specs(specs, tmp_path, train, seeds=(1, 1))


# ------------------------------------------------------------------ seeds: aggregation, tables, plots


def _row(name, seed, top1, top5, mass=None, model="dart_vit_micro_patch8", epochs=2, **extra):
    row = {"name": name, "model": model, "num_tokens": 16, "model_kwargs": {}, "group": "main", "seed": seed,
           "task": "classification", "best_metric": "top1", "input_size": [1, 128, 128], "epochs": epochs,
           "test_top1": top1, "test_top5": top5, "test_loss": 1.0, "train_images_per_s": 100.0 + seed,
           "train_time_s": 60.0 * (seed + 1), "top1_by_epoch": [top1 - 10, top1], "gmacs": 0.02, "params_m": 0.77,
           **extra}
    if mass is not None:
        row.update(test_object_mass=mass, test_object_tokens=4 * mass, object_mass_by_epoch=[mass / 2, mass],
                   object_tokens_by_epoch=[2 * mass, 4 * mass])
    return row


SEED_ROWS = [_row("grid@16", s, t, t + 40, model="vit_micro_patch8") for s, t in ((0, 50.0), (1, 52.0), (2, 45.0))] + \
    [_row("dart@16", s, t, 90.0, m) for s, t, m in ((0, 60.0, 0.1), (1, 54.0, 0.3), (2, 57.0, 0.2))]


def test_aggregate_seeds_gives_mean_min_max_and_the_seed_count():
    rows = {r["name"]: r for r in cmp.aggregate_seeds(SEED_ROWS)}
    assert list(rows) == ["grid@16", "dart@16"]  # order of first appearance
    d = rows["dart@16"]
    assert d["num_seeds"] == 3 and d["seeds"] == [0, 1, 2] and "seed" not in d
    assert d["test_top1"] == pytest.approx(57.0) and d["min"]["test_top1"] == 54.0 and d["max"]["test_top1"] == 60.0
    assert d["test_object_mass"] == pytest.approx(0.2)
    assert (d["min"]["test_object_mass"], d["max"]["test_object_mass"]) == (0.1, 0.3)
    assert d["train_images_per_s"] == pytest.approx(101.0) and d["train_time_s"] == pytest.approx(120.0)
    assert d["max"]["train_time_s"] == 180.0 and d["gmacs"] == pytest.approx(0.02)
    assert d["top1_by_epoch"] == pytest.approx([47.0, 57.0])  # epoch-wise mean curves
    assert d["object_mass_by_epoch"] == pytest.approx([0.1, 0.2])
    assert d["object_tokens_by_epoch"] == pytest.approx([0.4, 0.8])
    assert (d["model"], d["num_tokens"], d["input_size"], d["epochs"]) == ("dart_vit_micro_patch8", 16,
                                                                          [1, 128, 128], 2)
    g = rows["grid@16"]
    assert g["test_top1"] == pytest.approx(49.0) and (g["min"]["test_top1"], g["max"]["test_top1"]) == (45.0, 52.0)
    assert g["test_top5"] == pytest.approx(89.0) and "test_object_mass" not in g


def test_aggregate_seeds_one_seed_is_the_row_itself_and_odd_rows_are_handled():
    one = cmp.aggregate_seeds(SEED_ROWS[:1])[0]
    assert one["num_seeds"] == 1 and one["seeds"] == [0] and "min" not in one and "max" not in one
    assert one["test_top1"] == 50.0 and one["top1_by_epoch"] == [40.0, 50.0]
    # a metric only some seeds have is left out (no mean of a subset); epochs that differ are listed
    a, b = _row("x", 0, 50.0, 90.0, extra_metric=1.0), _row("x", 1, 52.0, 90.0, epochs=3)
    a["test_extra"] = 1.0
    b["top1_by_epoch"] = [1.0, 2.0, 3.0]
    x = cmp.aggregate_seeds([a, b])[0]
    assert "test_extra" not in x and x["epochs"] == [2, 3] and x["top1_by_epoch"] == pytest.approx([20.5, 26.0])
    with pytest.raises(ValueError, match="same seed"):
        cmp.aggregate_seeds([a, a])


def test_tables_and_plots_show_the_spread_over_seeds(tmp_path):
    rows = cmp.aggregate_seeds(SEED_ROWS)
    md = cmp.write_tables(rows, tmp_path / "t", {"seeds": [0, 1, 2]}, seed_rows=SEED_ROWS)
    assert "mean [min, max] over the seeds" in md
    assert "| run | model | tokens | input | epochs | seeds | test top-1 (%) |" in md
    dart = next(line for line in md.splitlines() if line.startswith("| dart@16 "))
    assert "| 2 | 3 | 57.00 [54.00, 60.00] | 90.00 [90.00, 90.00] | 0.20 [0.10, 0.30] |" in dart
    assert dart.endswith("| 101 | 2.0 |")  # mean img/s and mean train time (min) per run
    grid = next(line for line in md.splitlines() if line.startswith("| grid@16 "))
    assert "| 49.00 [45.00, 52.00] |" in grid and "| - | - |" in grid  # a grid has no score map
    saved = json.loads((tmp_path / "t.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["grid@16", "dart@16"]
    assert [(r["name"], r["seed"]) for r in saved["seed_rows"]] == [(r["name"], r["seed"]) for r in SEED_ROWS]
    assert saved["rows"][1]["min"]["test_top1"] == 54.0
    # single-seed tables are as before: no seeds column, no brackets, no seed_rows
    md1 = cmp.write_tables(cmp.aggregate_seeds(SEED_ROWS[:1]), tmp_path / "u", {})
    assert "seeds" not in md1 and "[" not in md1 and "| 50.00 | 90.00 |" in md1
    assert "seed_rows" not in json.loads((tmp_path / "u.json").read_text())
    png = cmp.plot_accuracy_vs_macs(rows, tmp_path / "t.png", title="t")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cmp.plot_localization(rows, tmp_path / "t_loc.png").read_bytes()[:4] == b"\x89PNG"


def test_a_dot_in_the_result_name_is_kept_not_read_as_a_suffix(tmp_path):
    # session 16: ``--name cpu-36_head_lr0.1`` wrote ``cpu-36_head_lr0.json`` / ``.md``, so two
    # names that differ after the dot (lr0.1, lr0.3) overwrote each other's tables
    rows = cmp.aggregate_seeds(SEED_ROWS[:1])
    cmp.write_tables(rows, tmp_path / "head_lr0.1", {"lr_scale": 0.1})
    cmp.write_tables(rows, tmp_path / "head_lr0.3", {"lr_scale": 0.3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head_lr0.1.json", "head_lr0.1.md",
                                                          "head_lr0.3.json", "head_lr0.3.md"]
    assert json.loads((tmp_path / "head_lr0.1.json").read_text())["meta"] == {"lr_scale": 0.1}
    assert cmp.publish_results(tmp_path, tmp_path / "pub", "head_lr0.1") == [tmp_path / "pub" / "head_lr0.1.json",
                                                                          tmp_path / "pub" / "head_lr0.1.md"]


def test_accuracy_plot_draws_min_max_error_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    bars = []
    real = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, yerr=None, **kw):
        bars.append((list(x), list(y), [list(e) for e in yerr]))
        return real(self, x, y, yerr=yerr, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    cmp.plot_accuracy_vs_macs(cmp.aggregate_seeds(SEED_ROWS), tmp_path / "t.png")
    assert len(bars) == 2  # the grid and the DART series
    dart = next(b for b in bars if b[1] == [pytest.approx(57.0)])
    assert dart[2] == [[pytest.approx(3.0)], [pytest.approx(3.0)]]  # mean - min, max - mean
    bars.clear()
    cmp.plot_accuracy_vs_macs(cmp.aggregate_seeds(SEED_ROWS[:1]), tmp_path / "u.png")
    assert not bars  # one seed: no bars


def test_compare_trains_two_seeds_into_one_row(tmp_path):
    """End to end (two tiny runs at once, ~10 s): per-seed folders, a mean row over them, per-seed
    rows in the JSON (resume per seed run: test_run_specs_schedules_every_spec_at_every_seed...)."""
    spec = cmp.RunSpec("grid@4", "vit_micro_patch8", 4, {"depth": 1})
    train = dict(canvas_size=32, data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 1}, train_samples=16,
                 test_samples=16, epochs=1, warmup_epochs=0, batch_size=16)
    res = cmp.compare(None, tmp_path, "t", specs=[spec], train=train, jobs=2, count_macs=False,
                      echo=lambda _line: None, seeds=(0, 1))
    for seed in (0, 1):
        saved = json.loads((tmp_path / "grid@4" / f"seed{seed}" / "checkpoint" / "config.json").read_text())
        assert saved["train"]["seed"] == seed
    assert not (tmp_path / "grid@4" / "checkpoint").exists()
    per_seed = {r["seed"]: r for r in res["seed_rows"]}
    assert sorted(per_seed) == [0, 1]
    (row,) = res["rows"]
    assert row["num_seeds"] == 2 and row["seeds"] == [0, 1]
    assert row["test_top1"] == pytest.approx((per_seed[0]["test_top1"] + per_seed[1]["test_top1"]) / 2)
    assert row["min"]["test_top1"] == min(r["test_top1"] for r in per_seed.values())
    assert res["meta"]["seeds"] == [0, 1]
    saved = json.loads((tmp_path / "t.json").read_text())
    assert len(saved["seed_rows"]) == 2 and saved["rows"][0]["num_seeds"] == 2


# ------------------------------------------------------------------ the CLI's --seeds


def test_cli_seeds_override_the_preset_and_bad_seeds_are_one_error(tmp_path, monkeypatch):
    from test_cli import assert_clean_error, invoke

    calls = []

    trains = []

    def fake_compare(preset, output, name, **kw):
        calls.append((preset, kw["seeds"]))
        trains.append(kw["train"])
        return {"markdown": "", "plot": None}

    monkeypatch.setattr(cmp, "compare", fake_compare)
    args = ["compare", "--preset", "cpu", "-o", tmp_path, "--results-dir", tmp_path / "res"]
    assert invoke(*args).exit_code == 0  # no --seeds: the preset's (compare reads PRESETS)
    assert invoke(*args, "--seeds", "0").exit_code == 0  # a quick single-seed run
    assert invoke(*args, "--seeds", " 3, 1,2 ", "--epochs", 1, "--train-samples", 64).exit_code == 0
    assert calls == [("cpu", None), ("cpu", [0]), ("cpu", [3, 1, 2])]
    assert trains[2] == {"epochs": 1, "train_samples": 64}  # only what was given overrides the preset
    assert invoke(*args, "--seeds", "0", "--test-samples", 32).exit_code == 0
    assert trains[3] == {"test_samples": 32}
    calls.pop(), trains.pop()
    assert_clean_error(invoke(*args, "--seeds", "a,b"), "--seeds", "comma-separated ints")
    assert_clean_error(invoke(*args, "--seeds", "0,1,0"), "--seeds", "distinct", "0 twice")
    assert_clean_error(invoke(*args, "--seeds", "-1"), "--seeds", ">= 0")
    assert_clean_error(invoke(*args, "--seeds", "0,,1"), "--seeds")
    assert len(calls) == 3  # nothing ran


# ------------------------------------------------------------------ presets: seeds and the harder data


CPU = sorted(p for p in cmp.PRESETS if p.startswith("cpu"))
HARDER = [p for p in CPU if p.split("-")[1:2] in (["small"], ["clutter"], ["large"])]


def test_every_cpu_preset_runs_three_seeds_and_gpu_presets_one():
    assert len(HARDER) == 6
    for name in CPU:
        assert tuple(cmp.PRESETS[name]["seeds"]) == cmp.CPU_SEEDS == (0, 1, 2), name
    for name in ("full", "full-vim", "full-video"):
        assert cmp.PRESETS[name].get("seeds") is None


def test_compare_takes_the_presets_seeds_unless_given(tmp_path, monkeypatch):
    got = []

    def fake_run_specs(specs, output, train, **kw):
        got.append(kw["seeds"])
        raise RuntimeError("stop here")  # nothing trains

    monkeypatch.setattr(cmp, "run_specs", fake_run_specs)
    for seeds in (None, [4]):
        with pytest.raises(RuntimeError, match="stop here"):
            cmp.compare("cpu", tmp_path, "t", seeds=seeds)
    assert got == [(0, 1, 2), (4,)]
    with pytest.raises(ValueError, match="distinct"):
        cmp.compare("cpu", tmp_path, "t", seeds=[2, 2])


@pytest.mark.parametrize("preset", HARDER)
def test_harder_presets_run_the_cpu_main_set_with_the_cpu_recipe(preset, tmp_path):
    n = 36 if preset.endswith("-36") else 16
    base = cmp.PRESETS["cpu-36" if n == 36 else "cpu"]
    entry = cmp.PRESETS[preset]
    def key(specs):  # the scorer follows the canvas (scratch_scorer(canvas)); everything else is the cpu preset's
        return [(s.name, s.model, s.num_tokens, {k: v for k, v in s.model_kwargs.items() if k != "scorer"}, s.group)
                for s in specs]

    assert key(entry["specs"]) == key(base["specs"])
    from dartok.tools.compare import scratch_scorer

    assert all(s.model_kwargs["scorer"] == scratch_scorer(entry["train"]["canvas_size"])
               for s in entry["specs"] if s.is_dart)
    assert [s.name for s in entry["specs"]] == [f"grid@{n}", f"dart@{n}", f"oracle@{n}", f"grid@{4 * n}",
                                                f"dart@{2 * n}"]
    for k in ("epochs", "train_samples", "test_samples", "batch_size", "lr"):
        assert entry["train"][k] == base["train"][k], k
    for spec in entry["specs"]:
        cfg = cmp.train_config(spec, entry["train"], tmp_path / spec.name, threads=1)
        assert cfg.data_kwargs == entry["train"]["data_kwargs"] and cfg.canvas_size == entry["train"]["canvas_size"]


def _scenes(preset, n=12):
    """The preset's test set: object side (px), canvas side, and ink outside the object box, per item."""
    import numpy as np

    from dartok.data import build_dataset

    entry = cmp.PRESETS[preset]
    spec = entry["specs"][0]
    ds = build_dataset(cmp.train_config(spec, entry["train"], "unused", threads=1), "test", num_samples=n)
    S = ds.canvas_size
    sides, outside = [], []
    for i in range(n):
        x0, y0, x1, y1 = ds.object_box(i)
        sides.append(round((x1 - x0) * S))
        assert round((y1 - y0) * S) == sides[-1]  # square objects
        canvas = ds.render(i).copy()
        canvas[round(y0 * S):round(y1 * S), round(x0 * S):round(x1 * S)] = 0
        outside.append(float((canvas > 0).mean()))
    return np.array(sides), S, np.array(outside)


def test_harder_datasets_are_what_their_presets_say():
    base_sides, base_S, base_clutter = _scenes("cpu")
    assert base_S == 128 and base_sides.min() >= 19 and base_sides.max() <= 38
    # small: the same draws at half the size (10-19 px, >= 8 and still a garment), same canvas
    sides, S, _ = _scenes("cpu-small")
    assert S == 128 and sides.min() >= 10 and sides.max() <= 19
    assert (abs(2 * sides - base_sides) <= 1).all()
    # clutter: far more ink off the object, object as in cpu
    sides, S, clutter = _scenes("cpu-clutter")
    assert S == 128 and (sides == base_sides).all()
    assert clutter.mean() > 3 * base_clutter.mean()
    # large: objects the same pixel size on a 1.5x canvas, so 2/3 as large relative to it;
    # fragments at about the same density
    sides, S, clutter = _scenes("cpu-large")
    assert S == 192 and (abs(sides - base_sides) <= 1).all()
    assert (sides / S).mean() == pytest.approx((base_sides / base_S).mean() * 2 / 3, rel=0.05)
    assert 0.5 < clutter.mean() / base_clutter.mean() < 2
    for preset in HARDER:  # the -36 presets draw the same data as their N = 16 twins
        twin = cmp.PRESETS[preset.removesuffix("-36")]["train"]
        assert cmp.PRESETS[preset]["train"] == twin


def test_large_canvas_dart_runs_see_the_whole_192_px_canvas():
    """dartok.train gives a DART model the canvas side as img_size; the micro models take 192 px."""
    import torch

    from dartok.models import create_model

    entry = cmp.PRESETS["cpu-large"]
    for spec in entry["specs"]:
        if not spec.is_dart:
            continue
        model = create_model(spec.model, num_tokens=spec.num_tokens, img_size=192, in_chans=1, num_classes=10,
                             **spec.model_kwargs).eval()
        assert model.pretrained_cfg["input_size"] == (1, 192, 192)
        x = torch.rand(2, 1, 192, 192)
        with torch.no_grad():
            if spec.is_oracle:
                boxes = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.6, 0.7, 0.8]])
                with model.patch_embed.given_pdf(model.patch_embed.oracle_pdf(boxes)):
                    assert model(x).shape == (2, 10)
            else:
                assert model(x).shape == (2, 10)
