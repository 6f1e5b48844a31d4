"""Video clips through the training engine and the CLI: B×C×T×H×W batches end to end (issue 4 §3)."""
from __future__ import annotations

import json
import re

import dartok  # noqa: F401  (before timm)
import pytest
import torch
from typer.testing import CliRunner

from dartok.cli import app
from dartok.engine import TrainConfig, build_dataset, prepare_images

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_prepare_images_converts_clips_frame_by_frame():
    clip = torch.rand(2, 1, 3, 20, 20)
    out = prepare_images(clip, (3, 10, 10))
    assert out.shape == (2, 3, 3, 10, 10)
    for t in range(3):  # each frame as prepare_images would treat it alone
        torch.testing.assert_close(out[:, :, t], prepare_images(clip[:, :, t], (3, 10, 10)))
    same = prepare_images(clip, (1, 20, 20))
    assert torch.equal(same, clip)
    with pytest.raises(ValueError, match="B×C×T×H×W"):
        prepare_images(torch.rand(1, 2, 3), (1, 4, 4))


def test_build_dataset_video_options():
    cfg = TrainConfig(data="moving_fmnist", canvas_size=40, data_kwargs={"num_frames": 3})
    ds = build_dataset(cfg, "test", num_samples=5)
    x, y = ds[0]
    assert len(ds) == 5 and x.shape == (1, 3, 40, 40) and 0 <= int(y) < len(ds.classes)
    with pytest.raises(ValueError, match="canvas_size"):
        build_dataset(TrainConfig(data="video_folder", data_root="/nonexistent", canvas_size=40), "train")


@pytest.mark.parametrize("model,extra", [
    ("dart_videomamba_micro_patch8", ["--model-kwargs", '{"depth": 1, "scorer_input_size": 32}']),
    ("videomamba_micro_patch8", ["--num-tokens", 4, "--model-kwargs", '{"depth": 1}']),
])
def test_train_eval_visualize_clips(tmp_path, model, extra):
    run = tmp_path / "run"
    args = ["train", "--model", model, "--data", "moving_fmnist", "--canvas-size", 40,
            "--data-kwargs", '{"num_frames": 2}', "--train-samples", 8, "--test-samples", 4, "--epochs", 1,
            "--warmup-epochs", 0, "--batch-size", 4, "--threads", 1, "--no-progress", "-o", run, *extra]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["model_kwargs"]["num_frames"] == 2  # the model takes the clip length from the data
    res = invoke("eval", "--checkpoint", run / "checkpoint", "--json", tmp_path / "eval.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "eval.json").read_text())["n"] == 4
    res = invoke("visualize", "--checkpoint", run / "checkpoint", "--indices", "0,1", "-o", tmp_path / "v.png")
    if model.startswith("dart_"):
        assert res.exit_code == 0, res.output
        assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert res.exit_code == 2 and "DART video models only" in " ".join(re.sub(r"[\u2500-\u257f]", " ", res.output).split()), res.output


def test_compare_video_preset_counts_clip_macs(tmp_path, monkeypatch):
    """The compare harness counts a video model's MACs on a C×T×H×W clip (it used to trace a frame)."""
    from dartok import compare as cmp

    specs = [cmp.RunSpec("grid 4x2", "videomamba_micro_patch8", 4, {"depth": 1}),
             cmp.RunSpec("dart 4x1", "dart_videomamba_micro_patch8", 4, {"depth": 1, "scorer_input_size": 32})]
    monkeypatch.setitem(cmp.PRESETS, "tiny-video", {"specs": specs, "train": {
        "data": "moving_fmnist", "data_kwargs": {"num_frames": 2}, "canvas_size": 40, "epochs": 1,
        "warmup_epochs": 0, "train_samples": 8, "test_samples": 4, "batch_size": 4}})
    res = invoke("compare", "--preset", "tiny-video", "-o", tmp_path / "runs", "--results-dir", tmp_path / "res",
                 "--jobs", 1)
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "res" / "tiny-video.json").read_text())["rows"]}
    from dartok.bench import count_macs, make_model

    for name, spec in (("grid 4x2", "videomamba_micro_patch8[num_tokens=4;depth=1;num_frames=2;num_classes=4]"),
                       ("dart 4x1", "dart_videomamba_micro_patch8[num_tokens=4;depth=1;num_frames=2;num_classes=4;"
                                    "scorer_input_size=32;img_size=40]")):
        model, shape = make_model(spec)
        assert len(shape) == 4 and shape[1] == 2
        assert rows[name]["gmacs"] == pytest.approx(count_macs(model, shape).total / 1e9, rel=1e-6)
