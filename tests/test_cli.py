"""CLI smoke tests (typer CliRunner): train → eval → visualize, and error paths."""
from __future__ import annotations

import json

import dartok  # noqa: F401  (before timm)
import pytest
from typer.testing import CliRunner

from dartok.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(res, *fragments):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)
    flat = flatten(res.output)
    for f in fragments:
        assert f in flat, res.output


def flatten(text: str) -> str:
    """Output without rich's box drawing and line wrapping."""
    import re

    text = re.sub(r"[\u2500-\u257f]", " ", text)
    return re.sub(r"\s+", " ", text)


TRAIN_ARGS = [
    "--model", "dart_vit_micro_patch8", "--num-tokens", 9, "--canvas-size", 32,
    "--data-kwargs", '{"object_scale": [0.3, 0.5], "num_clutter": 2}',
    "--model-kwargs", '{"scorer_input_size": 32, "depth": 1}',
    "--train-samples", 24, "--test-samples", 16, "--epochs", 1, "--warmup-epochs", 0,
    "--batch-size", 8, "--no-progress",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    res = invoke("train", *TRAIN_ARGS, "-o", run, "--json", run.parent / "summary.json")
    assert res.exit_code == 0, res.output
    assert "final test top-1" in res.output.strip().splitlines()[-1]
    return run


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    import skimage.data
    import skimage.io
    import skimage.transform

    img = skimage.data.astronaut()[::4, ::4]  # 128×128 RGB, keeps the test fast
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    skimage.io.imsave(path, img)
    return path


def test_train_outputs(trained_run):
    assert (trained_run / "checkpoint" / "model.safetensors").is_file()
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    summary = json.loads((trained_run.parent / "summary.json").read_text())
    assert summary["epoch"] == 1 and 0 <= summary["test"]["top1"] <= 100


def test_eval_from_checkpoint(trained_run, tmp_path):
    out = tmp_path / "eval.json"
    res = invoke("eval", "--checkpoint", trained_run / "checkpoint", "--no-progress", "--json", out)
    assert res.exit_code == 0, res.output
    assert "top-1" in res.output and "top-5" in res.output
    data = json.loads(out.read_text())
    assert data["n"] == 16 and data["split"] == "test"
    summary = json.loads((trained_run.parent / "summary.json").read_text())
    assert data["top1"] == pytest.approx(summary["test"]["top1"])
    res = invoke("eval", "--checkpoint", trained_run / "checkpoint", "--split", "train", "--samples", 8,
                 "--no-progress")
    assert res.exit_code == 0, res.output
    assert "(n=8)" in res.output


def test_visualize_from_checkpoint(trained_run, tmp_path, astronaut_png):
    out = tmp_path / "part.png"
    res = invoke("visualize", "--checkpoint", trained_run / "checkpoint", "--indices", "0,1,2", "-o", out)
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == PNG
    # an RGB photo through a 1-channel model
    out2 = tmp_path / "astro_ck.png"
    res = invoke("visualize", "--checkpoint", trained_run / "checkpoint", "--image", astronaut_png, "-o", out2)
    assert res.exit_code == 0, res.output
    assert out2.read_bytes()[:8] == PNG


def test_predict_names_fashion_classes_of_a_photo(trained_run, astronaut_png):
    """A canvas-trained (tensor data, 1 channel) model takes an RGB photo: grey, normalised, resized."""
    from dartok.data import FASHION_MNIST_CLASSES

    res = invoke("predict", "-c", trained_run / "checkpoint", astronaut_png, "--top-k", 3)
    assert res.exit_code == 0, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(str(astronaut_png))
    named = [c for c in FASHION_MNIST_CLASSES if f"  {c} " in line]
    assert len(named) == 3, line


def test_eval_predict_visualize_at_another_budget(trained_run, tmp_path, astronaut_png):
    """--num-tokens runs the 9-token model at 16 tokens (the elastic budget); a bad N is one Error line."""
    import torch

    from dartok.train.checkpoint import model_from_checkpoint

    ck = trained_run / "checkpoint"
    out = tmp_path / "eval16.json"
    res = invoke("eval", "-c", ck, "--num-tokens", 16, "--no-progress", "--json", out)
    assert res.exit_code == 0, res.output
    assert "at 16 tokens" in res.output
    data = json.loads(out.read_text())
    assert data["num_tokens"] == 16 and data["n"] == 16 and 0 <= data["top1"] <= 100
    model, _ = model_from_checkpoint(ck, num_tokens=16)
    trained, _ = model_from_checkpoint(ck)
    assert model.patch_embed.num_tokens == 16 and trained.patch_embed.num_tokens == 9
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x), trained(x))  # another budget, another computation
    res = invoke("predict", "-c", ck, astronaut_png, "--num-tokens", 4, "--json", tmp_path / "p.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p.json").read_text())["num_tokens"] == 4
    res = invoke("visualize", "-c", ck, "--indices", "0", "--num-tokens", 25, "-o", tmp_path / "v.png")
    assert res.exit_code == 0, res.output
    for cmd in (["eval", "-c", ck, "--no-progress"], ["predict", "-c", ck, astronaut_png]):
        res = invoke(*cmd, "--num-tokens", 0)
        assert_clean_error(res, "num_tokens must be an integer >= 1, got 0")
    res = invoke("bench", "macs", "--models", "dart_vit_micro_patch8", "--num-tokens", 0, "-o", tmp_path)
    assert_clean_error(res, "num_tokens must be an integer >= 1, got 0")


def test_resume_conflict_via_cli(trained_run):
    res = invoke("train", "-o", trained_run, "--resume", "--lr", "0.5", "--no-progress")
    assert_clean_error(res, "conflict", "lr")
    res = invoke("train", "-o", trained_run, "--no-progress", *TRAIN_ARGS)
    assert_clean_error(res, "already holds a checkpoint")
    # resuming a finished run with the saved options is fine (nothing left to train)
    res = invoke("train", "-o", trained_run, "--resume", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "epoch 1/1" in res.output


def test_stop_and_resume_via_cli(tmp_path):
    args = [a if a != 1 else 2 for a in TRAIN_ARGS]  # --epochs 2 (and no other 1s in TRAIN_ARGS)
    assert args.count(2) == 1
    res = invoke("train", *args, "-o", tmp_path / "run", "--stop-after", 1)
    assert res.exit_code == 0, res.output
    assert "epoch 1/2" in res.output
    # only -o and --resume: every other option comes from the saved run; --stop-after does not
    res = invoke("train", "-o", tmp_path / "run", "--resume", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "resumed" in res.output and "epoch 2/2" in res.output
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_library_resume_merges_saved_options_as_the_cli_does(tmp_path):
    """train(output=..., resume=True) takes the options it is not given from the saved run, as
    'dartok train -o ... --resume' does: same resolved options, bit-identical weights and metrics."""
    import torch
    from safetensors.torch import load_file

    from dartok.checkpoint import load_config
    from dartok.engine import ResumeConflictError, TrainConfig, read_metrics, train
    from dartok.train.config import resolve_config

    args = [a if a != 1 else 2 for a in TRAIN_ARGS]  # --epochs 2
    for name in ("cli", "lib"):
        res = invoke("train", *args, "-o", tmp_path / name, "--stop-after", 1, "--seed", 3)
        assert res.exit_code == 0, res.output
    saved = load_config(tmp_path / "lib" / "checkpoint")["train"]
    resolved = resolve_config(output=str(tmp_path / "lib"), resume=True, progress=False)
    expected = TrainConfig.from_dict({**saved, "stop_after": None, "resume": True, "progress": False})
    assert resolved == expected and resolved.seed == 3 and resolved.epochs == 2 and resolved.canvas_size == 32
    # a given option that conflicts with the saved run is refused by both
    with pytest.raises(ResumeConflictError, match="lr: checkpoint 0.001 vs requested 0.5"):
        train(output=str(tmp_path / "lib"), resume=True, lr=0.5, progress=False)
    assert_clean_error(invoke("train", "-o", tmp_path / "cli", "--resume", "--lr", "0.5"), "lr: checkpoint 0.001")
    with pytest.raises(TypeError, match="unknown training options \\['lrr'\\]"):
        train(output=str(tmp_path / "lib"), resume=True, lrr=0.5)

    res = invoke("train", "-o", tmp_path / "cli", "--resume", "--no-progress")
    assert res.exit_code == 0, res.output
    summary = train(output=str(tmp_path / "lib"), resume=True, progress=False)
    assert summary["epoch"] == summary["epochs"] == 2
    cfg_cli = load_config(tmp_path / "cli" / "checkpoint")
    cfg_lib = load_config(tmp_path / "lib" / "checkpoint")
    assert {**cfg_cli["train"], "output": None} == {**cfg_lib["train"], "output": None}
    w_cli = load_file(str(tmp_path / "cli" / "checkpoint" / "model.safetensors"))
    w_lib = load_file(str(tmp_path / "lib" / "checkpoint" / "model.safetensors"))
    assert w_cli.keys() == w_lib.keys() and all(torch.equal(w_cli[k], w_lib[k]) for k in w_cli)
    timing = ("images_per_s", "epoch_time_s", "data_time_s", "compute_time_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "cli")) == strip(read_metrics(tmp_path / "lib"))


def test_visualize_score_sources_on_image_file(tmp_path, astronaut_png):
    for source in ("uniform", "edges"):
        out = tmp_path / f"{source}.png"
        res = invoke("visualize", "--score-source", source, "--num-tokens", 16, "--image", astronaut_png,
                     "--image", astronaut_png, "-o", out)
        assert res.exit_code == 0, res.output
        assert out.read_bytes()[:8] == PNG
        assert "2 images" in res.output


def test_visualize_score_source_on_dataset(tmp_path):
    out = tmp_path / "ds.png"
    res = invoke("visualize", "--score-source", "edges", "--num-tokens", 9, "--canvas-size", 64,
                 "--indices", "0-2", "-o", out)
    assert res.exit_code == 0, res.output
    assert "3 images" in res.output


def test_cli_error_paths(tmp_path, astronaut_png):
    assert_clean_error(invoke("visualize", "-o", tmp_path / "x.png"), "--checkpoint")
    assert_clean_error(invoke("visualize", "--score-source", "magic", "--num-tokens", 4), "uniform")
    assert_clean_error(invoke("visualize", "--score-source", "uniform"), "--num-tokens")
    assert_clean_error(invoke("visualize", "--score-source", "uniform", "--num-tokens", 4,
                              "--image", tmp_path / "missing.png"), "does not exist")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert_clean_error(invoke("visualize", "--score-source", "uniform", "--num-tokens", 4, "--image", bad,
                              "-o", tmp_path / "y.png"), "cannot read image")
    assert_clean_error(invoke("visualize", "--score-source", "uniform", "--num-tokens", 4,
                              "--indices", "a,b"), "--indices")
    assert_clean_error(invoke("visualize", "--score-source", "uniform", "--num-tokens", 4,
                              "--image", astronaut_png, "-o", tmp_path / "out.jpg"), ".png")
    assert_clean_error(invoke("eval", "--checkpoint", tmp_path / "nope"), "does not exist")
    assert_clean_error(invoke("train", "--model-kwargs", "{bad json", "-o", tmp_path / "r"), "--model-kwargs")
    assert_clean_error(invoke("train", "--model", "no_such_model_xyz", "-o", tmp_path / "r"), "unknown model")
    assert_clean_error(invoke("train", "--epochs", 0, "-o", tmp_path / "r"), "epochs")
    assert_clean_error(invoke("train", "--resume", "-o", tmp_path / "r2"), "--resume")
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()


def test_cli_error_bad_dataset_option(tmp_path):
    res = invoke("train", "--model", "vit_micro_patch8", "--num-tokens", 4, "--train-samples", 8,
                 "--data-kwargs", '{"bogus": 1}', "--epochs", 1, "--warmup-epochs", 0, "-o", tmp_path / "r",
                 "--no-progress")
    assert_clean_error(res, "bogus")
    res = invoke("eval", "--checkpoint", tmp_path / "r", "--split", "val")
    assert_clean_error(res, "--split")


def test_help_lists_commands():
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in ("train", "eval", "visualize"):
        assert cmd in res.output


def test_demo_trains_both_and_reports(tmp_path):
    out = tmp_path / "demo"
    res = invoke("demo", "-o", out, "--num-tokens", 9, "--canvas-size", 64, "--epochs", 1,
                 "--warmup-epochs", 0, "--train-samples", 48, "--test-samples", 24, "--batch-size", 16,
                 "--scorer-pretrain-epochs", 1)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == {"dart", "grid", "oracle"}  # the oracle beside them (issue 11)
    assert rows["grid"]["input_size"] == [1, 24, 24]  # 3×3 grid of 8-px patches
    assert rows["dart"]["input_size"] == [1, 64, 64] == rows["oracle"]["input_size"]  # DART sees the full canvas
    scorer = {"trunk": "mobilenetv3_small", "input_size": 64, "stage": 2, "activation": "softmax", "pdf_blur": 3,
              "cam_classes": 10, "align_cells": True}
    assert rows["oracle"]["model_kwargs"] == {"scorer": scorer, "score_source": "oracle"}
    assert rows["dart"]["model_kwargs"] == {"scorer": scorer}
    # the DART run pretrained its scorer (one epoch), the others skipped it
    assert len((out / "dart" / "scorer_pretrain.jsonl").read_text().splitlines()) == 1
    assert not (out / "grid" / "scorer_pretrain.jsonl").exists() and not (out / "oracle" / "scorer_pretrain.jsonl").exists()
    assert len(rows["oracle"]["object_mass_by_epoch"]) == 1 and "test_object_mass" not in rows["grid"]
    for name in ("dart", "grid", "oracle"):
        assert 0 <= rows[name]["test_top1"] <= 100 and len(rows[name]["top1_by_epoch"]) == 1
        assert (out / name / "checkpoint" / "model.safetensors").exists()
    assert (out / "partition.png").read_bytes()[:8] == PNG
    assert summary["meta"]["delta_top1"] == rows["dart"]["test_top1"] - rows["grid"]["test_top1"]
    assert summary["meta"]["delta_top1_oracle"] == rows["oracle"]["test_top1"] - rows["grid"]["test_top1"]
    assert (out / "results_localization.png").read_bytes()[:8] == PNG
    assert "DART - fixed grid" in res.output and "| dart | dart_vit_micro_patch8 |" in (out / "results.md").read_text()


def test_demo_rejects_non_square_budget(tmp_path):
    assert_clean_error(invoke("demo", "-o", tmp_path, "--num-tokens", 10), "square")


@pytest.mark.parametrize("option, value, field", [("--lr", -1, "lr"), ("--scorer-pretrain-lr", 0, "scorer_pretrain_lr")])
def test_demo_refuses_a_bad_option_before_it_announces_or_trains(tmp_path, option, value, field):
    res = invoke("demo", "-o", tmp_path / "d", option, value)
    assert_clean_error(res, f"Error: {field} must be a finite number > 0")
    assert "training" not in res.output and not (tmp_path / "d").exists()


def test_compare_preset_rows_tables_plot_and_snapshots(tmp_path, monkeypatch):
    from dartok import compare as cmp

    specs = [cmp.RunSpec("grid@4", "vit_micro_patch8", 4), cmp.RunSpec("dart@4", "dart_vit_micro_patch8", 4)]
    monkeypatch.setitem(cmp.PRESETS, "tiny", {"specs": specs, "train": {
        "canvas_size": 56, "epochs": 2, "warmup_epochs": 0, "train_samples": 32, "test_samples": 16,
        "batch_size": 16}})
    res = invoke("compare", "--preset", "tiny", "-o", tmp_path / "runs", "--results-dir", tmp_path / "results",
                 "--snapshot-epochs", "1,2")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "results" / "tiny.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["grid@4"]["input_size"] == [1, 16, 16] and rows["dart@4"]["input_size"] == [1, 56, 56]
    assert rows["dart@4"]["gmacs"] > rows["grid@4"]["gmacs"] > 0  # the scorer costs MACs
    assert len(rows["dart@4"]["top1_by_epoch"]) == 2
    assert (tmp_path / "results" / "tiny.png").read_bytes()[:8] == PNG
    for epoch in (1, 2):  # Fig. 7-style snapshots, taken by stopping and resuming exactly
        assert (tmp_path / "runs" / "tiny" / "dart@4" / f"partition_epoch{epoch}.png").exists()
    assert not (tmp_path / "runs" / "tiny" / "grid@4" / "partition_epoch1.png").exists()
    assert_clean_error(invoke("compare", "--preset", "nope"), "choose from")


def test_compare_dart_kwargs_and_resume_keeps_snapshots(tmp_path, monkeypatch):
    from dartok import compare as cmp
    from dartok.checkpoint import load_config

    specs = [cmp.RunSpec("dart@4", "dart_vit_micro_patch8", 4)]
    monkeypatch.setitem(cmp.PRESETS, "tiny", {"specs": specs, "train": {
        "canvas_size": 56, "epochs": 2, "warmup_epochs": 0, "train_samples": 16, "test_samples": 8,
        "batch_size": 8}})
    args = ["compare", "--preset", "tiny", "-o", tmp_path / "runs", "--results-dir", tmp_path / "results",
            "--snapshot-epochs", "1,2", "--no-macs", "--dart-kwargs", '{"alpha": 0.25, "antialias": false}']
    assert (res := invoke(*args)).exit_code == 0, res.output
    run = tmp_path / "runs" / "tiny" / "dart@4"
    saved = load_config(run / "checkpoint")["model_kwargs"]
    assert saved["alpha"] == 0.25 and saved["antialias"] is False
    assert json.loads((tmp_path / "results" / "tiny.json").read_text())["meta"]["dart_kwargs"]["alpha"] == 0.25
    snap = run / "partition_epoch1.png"
    before = snap.stat().st_mtime_ns
    # resuming a finished run neither retrains nor redraws an early snapshot from the final weights
    assert (res := invoke(*args, "--resume")).exit_code == 0, res.output
    assert snap.stat().st_mtime_ns == before
    assert_clean_error(invoke("compare", "--preset", "tiny", "--dart-kwargs", "{bad"), "not valid JSON")
    assert_clean_error(invoke("compare", "--preset", "tiny", "--dart-kwargs", "[1]"), "JSON object")


def test_compare_option_errors_before_and_during_training(tmp_path, monkeypatch):
    from dartok import compare as cmp

    specs = [cmp.RunSpec("grid@4", "vit_micro_patch8", 4)]
    # a preset key that is no TrainConfig field: refused before anything trains, exit 2
    monkeypatch.setitem(cmp.PRESETS, "typo", {"specs": specs, "train": {"epoch": 1}})
    res = invoke("compare", "--preset", "typo", "-o", tmp_path / "runs", "--results-dir", tmp_path / "res")
    assert_clean_error(res, "unknown training option", "'epoch'")
    assert not (tmp_path / "runs").exists()
    # an option the engine refuses in the child process: the run fails, its Error line is echoed
    monkeypatch.setitem(cmp.PRESETS, "baddata", {"specs": specs, "train": {
        "data": "cluttered_fmnist", "data_kwargs": {"bogus": 1}, "epochs": 1, "warmup_epochs": 0,
        "train_samples": 8, "test_samples": 8, "batch_size": 8}})
    res = invoke("compare", "--preset", "baddata", "-o", tmp_path / "runs", "--results-dir", tmp_path / "res",
                 "--jobs", 1, "--no-macs")
    assert res.exit_code == 1, res.output
    assert "[grid@4] Error:" in res.output and "bogus" in res.output
    assert "training failed for grid@4" in flatten(res.output)


def test_compare_runs_trains_only_the_named_rows(tmp_path, monkeypatch):
    from dartok import compare as cmp
    from dartok.tools.compare import select_runs

    specs = [cmp.RunSpec("grid@4", "vit_micro_patch8", 4), cmp.RunSpec("dart@4", "dart_vit_micro_patch8", 4)]
    monkeypatch.setitem(cmp.PRESETS, "tiny", {"specs": specs, "train": {
        "canvas_size": 56, "epochs": 1, "warmup_epochs": 0, "train_samples": 16, "test_samples": 8,
        "batch_size": 8}})
    res = invoke("compare", "--preset", "tiny", "--runs", "grid@4,nope", "-o", tmp_path / "runs",
                 "--results-dir", tmp_path / "res")
    assert_clean_error(res, "--runs", "'nope'", "grid@4, dart@4")
    with pytest.raises(ValueError, match="the runs: grid@4, dart@4"):
        select_runs(specs, ["dart@4", "x"])
    assert [s.name for s in select_runs(specs, ["dart@4", "grid@4"])] == ["grid@4", "dart@4"]  # the specs' order
    assert not (tmp_path / "runs").exists()
    res = invoke("compare", "--preset", "tiny", "--runs", " grid@4 ", "-o", tmp_path / "runs",
                 "--results-dir", tmp_path / "res", "--jobs", 1, "--no-macs")
    assert res.exit_code == 0, res.output
    assert [r["name"] for r in json.loads((tmp_path / "res" / "tiny.json").read_text())["rows"]] == ["grid@4"]
    assert not (tmp_path / "runs" / "tiny" / "dart@4").exists()


def test_compare_scratch_scorer_sets_the_dart_runs_and_the_pretraining(tmp_path, monkeypatch):
    """--scratch-scorer: every DART run gets the from-scratch scorer at the preset's canvas size, and
    the runs pretrain it 8 epochs at lr 3e-3 (--scorer-pretrain-epochs / --scorer-pretrain-lr override);
    nothing else changes."""
    import dartok.tools.compare as cmp

    seen = {}

    def fake_compare(preset, output, stem, **kw):
        seen.update(kw, preset=preset)
        return {"markdown": "table", "plot": None}

    monkeypatch.setattr(cmp, "compare", fake_compare)
    res = invoke("compare", "--preset", "cpu-36", "-o", tmp_path, "--scratch-scorer", "--dart-kwargs", '{"alpha": 0.2}')
    assert res.exit_code == 0, res.output
    assert seen["dart_kwargs"] == {"scorer": cmp.scratch_scorer(128), "alpha": 0.2}
    assert seen["train"] == {"scorer_pretrain_epochs": 8, "scorer_pretrain_lr": 3e-3}
    res = invoke("compare", "--preset", "cpu-large-36", "-o", tmp_path, "--scratch-scorer",
                 "--scorer-pretrain-epochs", 2, "--scorer-pretrain-lr", 1e-3)
    assert res.exit_code == 0, res.output
    assert seen["dart_kwargs"]["scorer"]["input_size"] == 192
    assert seen["train"] == {"scorer_pretrain_epochs": 2, "scorer_pretrain_lr": 1e-3}
    res = invoke("compare", "--preset", "cpu", "-o", tmp_path)
    assert res.exit_code == 0 and seen["dart_kwargs"] == {} and seen["train"] == {}


def test_train_num_tokens_option(tmp_path):
    """--train-num-tokens: trains at the drawn budgets, saves the run's; bad values are one clean error."""
    res = invoke("train", *TRAIN_ARGS, "--train-num-tokens", "4,9,16", "-o", tmp_path / "flexi")
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "flexi" / "checkpoint" / "config.json").read_text())
    assert cfg["train"]["train_num_tokens"] == [4, 9, 16] and cfg["model_kwargs"]["num_tokens"] == 9
    assert_clean_error(invoke("train", *TRAIN_ARGS, "--train-num-tokens", "4,x", "-o", tmp_path / "bad"),
                       "--train-num-tokens")
    assert_clean_error(invoke("train", *TRAIN_ARGS, "--train-num-tokens", ",", "-o", tmp_path / "bad2"),
                       "train-num-tokens must be a non-empty list")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()
