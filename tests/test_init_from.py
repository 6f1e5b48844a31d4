"""A run started from another run's weights (``init_from``): image Vim -> VideoMamba inflated (issue 11 item 6)."""
from __future__ import annotations

import json

import dartok  # noqa: F401  (before timm)
import pytest
import torch
from typer.testing import CliRunner

from dartok.cli import app
from dartok.engine import TrainConfig, read_metrics, train
from dartok.models import create_model
from dartok.train.checkpoint import init_from, load_config, read_state_dict

SMALL = dict(train_samples=8, test_samples=4, epochs=1, warmup_epochs=0, batch_size=4, threads=1, progress=False)
VIDEO = dict(data="moving_fmnist", canvas_size=32, data_kwargs={"num_frames": 2, "task": "which_moves"})


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """One tiny epoch of a DART Vim on 32² Cluttered Fashion-MNIST (depth 1)."""
    out = tmp_path_factory.mktemp("image") / "run"
    train(TrainConfig(model="dart_vim_micro_patch8", num_tokens=8, canvas_size=32, output=str(out),
                      data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 1},
                      model_kwargs={"depth": 1, "scorer_input_size": 32}, **SMALL))
    return out


def test_video_run_starts_from_the_image_run(image_run, tmp_path):
    out = tmp_path / "video"
    # lr 1e-12: one epoch moves no weight measurably, so what the run holds is what it started from
    summary = train(TrainConfig(model="dart_videomamba_micro_patch8", num_tokens=8, output=str(out), lr=1e-12, min_lr=0.0,
                                init_from=str(image_run / "checkpoint"),
                                model_kwargs={"depth": 1, "scorer_input_size": 32}, **VIDEO, **SMALL))
    image = read_state_dict(image_run)  # a run folder works too
    video = summary["model"].state_dict()
    for key in ("norm_f.weight", "head.weight", "cls_token", "patch_embed.pos_embed", "patch_embed.proj.weight",
                "layers.0.mixer.in_proj.weight", "patch_embed.scorer.score_bias"):
        torch.testing.assert_close(video[key], image[key], atol=1e-8, rtol=0)
    torch.testing.assert_close(video["layers.0.mixer.out_proj.weight"], image["layers.0.mixer.out_proj.weight"] / 2,
                               atol=1e-8, rtol=0)  # Vim averages its two scan directions, VideoMamba adds them
    assert not video["patch_embed.temporal_pos_embedding"].abs().gt(1e-8).any()  # left at its zero init
    config = load_config(out / "checkpoint")
    assert config["epoch"] == 1 and config["train"]["init_from"] == str(image_run / "checkpoint")
    assert "test_object_mass" in read_metrics(out)[0]  # which_moves: the moving item's box


def test_resume_does_not_init_again(image_run, tmp_path):
    import shutil

    weights = tmp_path / "image"
    shutil.copytree(image_run / "checkpoint", weights)
    out = tmp_path / "video"
    cfg = TrainConfig(model="videomamba_micro_patch8", num_tokens=4, output=str(out), init_from=str(weights),
                      model_kwargs={"depth": 1}, **VIDEO, **{**SMALL, "epochs": 2})
    train(cfg, stop_after=1)
    shutil.rmtree(weights)  # a resumed run continues from its own checkpoint, not from init_from
    done = train(output=str(out), resume=True)
    assert done["epoch"] == 2 and len(read_metrics(out)) == 2


def test_same_architecture_loads_directly_and_a_new_head_is_dropped(tmp_path):
    src = create_model("vim_micro_patch8", num_classes=4, depth=1)
    torch.save({"model": src.state_dict()}, tmp_path / "w.pth")
    dst = create_model("vim_micro_patch8", num_classes=10, depth=1)
    report = init_from(dst, tmp_path / "w.pth")
    assert set(report.missing) == {"head.weight", "head.bias"} and any("head dropped" in n for n in report.notes)
    assert torch.equal(dst.layers[0].mixer.in_proj.weight, src.layers[0].mixer.in_proj.weight)
    from safetensors.torch import save_file

    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    assert init_from(create_model("vim_micro_patch8", num_classes=4, depth=1), tmp_path / "w.safetensors").missing == []


def test_mismatched_weights_are_refused_before_training(image_run, tmp_path):
    with pytest.raises(ValueError, match="do not fit VideoMamba: .*missing keys layers.1"):
        train(TrainConfig(model="videomamba_micro_patch8", num_tokens=4, output=str(tmp_path / "a"),
                          init_from=str(image_run), model_kwargs={"depth": 2}, **VIDEO, **SMALL))
    video = create_model("videomamba_micro_patch8", depth=1)
    torch.save(video.state_dict(), tmp_path / "video.pth")
    with pytest.raises(ValueError, match="are a video model's; VisionMamba is an image model"):
        init_from(create_model("vim_micro_patch8", depth=1), tmp_path / "video.pth")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        init_from(video, tmp_path / "nothing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="corrupt or not a torch state dict"):
        init_from(video, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="init_from must be a path"):
        TrainConfig(init_from="").validate()


def test_cli_init_from(image_run, tmp_path):
    runner = CliRunner()
    base = ["train", "--model", "videomamba_micro_patch8", "--num-tokens", "4", "--data", "moving_fmnist",
            "--canvas-size", "32", "--data-kwargs", json.dumps(VIDEO["data_kwargs"]), "--train-samples", "8",
            "--test-samples", "4", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--threads", "1",
            "--no-progress", "--model-kwargs", '{"depth": 1}']
    res = runner.invoke(app, [*base, "--init-from", str(image_run / "checkpoint"), "-o", str(tmp_path / "ok")])
    assert res.exit_code == 0, res.output
    assert "initialised from" in res.output and "temporal_pos_embedding" in res.output
    res = runner.invoke(app, [*base, "--init-from", str(tmp_path / "missing"), "-o", str(tmp_path / "bad")])
    assert res.exit_code == 2 and res.output.startswith("Error:") and "do not exist" in res.output, res.output


def test_compare_trains_the_image_run_first_and_starts_every_run_from_it(tmp_path):
    from dartok import compare as cmp

    shared = {k: v for k, v in SMALL.items() if k not in ("threads", "progress")}  # the harness sets those
    image = {"spec": cmp.RunSpec("image", "dart_vim_micro_patch8", 8, {"depth": 1, "scorer_input_size": 32}),
             "train": {"canvas_size": 32, "data_kwargs": {"object_scale": [0.3, 0.5], "num_clutter": 1}, **shared,
                       "epochs": 3, "train_samples": 64}}
    specs = [cmp.RunSpec("grid", "videomamba_micro_patch8", 4, {"depth": 1}),
             cmp.RunSpec("dart", "dart_videomamba_micro_patch8", 8, {"depth": 1, "scorer_input_size": 32})]
    train_opts = {**VIDEO, **shared}
    lines = []
    res = cmp.compare(None, tmp_path, "t", specs=specs, train=train_opts, jobs=1, count_macs=False,
                      echo=lines.append, image=image)
    ckpt = str(tmp_path / "image" / "checkpoint")
    assert (tmp_path / "image" / "checkpoint" / "model.safetensors").exists()
    # the comparison's own length options shorten the image run too (a smoke run stays one)
    image_cfg = load_config(tmp_path / "image" / "checkpoint")["train"]
    assert (image_cfg["epochs"], image_cfg["train_samples"]) == (shared["epochs"], shared["train_samples"])
    assert [r["name"] for r in res["rows"]] == ["grid", "dart"] and res["meta"]["image"]["spec"]["name"] == "image"
    for name in ("grid", "dart"):
        assert load_config(tmp_path / name / "checkpoint")["train"]["init_from"] == ckpt
        assert any(line.startswith(f"[{name}] initialised from") for line in lines), lines
    assert "test_object_mass" in res["rows"][1]
    with pytest.raises(ValueError, match="also a run of the comparison"):
        cmp.compare(None, tmp_path / "x", "t", specs=[cmp.RunSpec("image", "vim_micro_patch8", 4)], image=image)


def test_cli_image_first_needs_a_preset_with_an_image_run(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["compare", "--preset", "cpu-video", "--image-first", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "has no image run" in res.output and "cpu-video-which" in res.output, res.output
    res = runner.invoke(app, ["compare", "--preset", "cpu-video-which", "--image-first", "--init-from", "x",
                              "-o", str(tmp_path)])
    assert res.exit_code == 2 and "give one" in res.output, res.output
    assert not any(tmp_path.iterdir())  # nothing trained
