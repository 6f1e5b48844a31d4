"""Your own images (issue 12, section 2): ImageFolder layouts, class maps, held-out splits, stratified
subsets, 16-bit and corrupt files, the run directory's lock and leftovers, up-front checks, predict."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dartok  # noqa: F401  (before timm)
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dartok.cli import app
from dartok.data import DataConfig, build_dataset, create_dataset
from dartok.data.folder import ImageReadError, holdout_split, load_image, stratified_indices

runner = CliRunner()
CLASSES = ("ant", "bee", "cat")
# a tiny DART model on 32x32 inputs: ~2 s for an epoch of 24 images
MODEL = ["--model", "dart_vit_micro_patch8", "--num-tokens", "9",
         "--model-kwargs", '{"depth": 1, "scorer_input_size": 32, "img_size": 32}']
FAST = ["--epochs", "1", "--batch-size", "8", "--no-progress", "--threads", "1"]


def make_folder(root: Path, splits=None, n: int = 8, size: int = 32, seed: int = 0) -> Path:
    """``root/<split>/<class>/<k>.png``: class c's images are bright in channel c."""
    splits = {"train": CLASSES, "val": CLASSES} if splits is None else splits
    rng = np.random.default_rng(seed)
    for split, classes in splits.items():
        for c, name in enumerate(classes):
            d = root / split / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                a = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                a[..., CLASSES.index(name) % 3 if name in CLASSES else c % 3] += 150
                Image.fromarray(a).save(d / f"{name}_{k}.png")
    return root


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(res, *fragments):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    flat = " ".join(res.output.split())
    assert flat.startswith("Error: ") or "\nError: " in res.output, res.output
    for f in fragments:
        assert f in flat, res.output


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A DART model trained 1 epoch on 3 classes x 8 images (train/ and val/), with a subset of 20
    training images and no --num-classes."""
    base = tmp_path_factory.mktemp("folder")
    root = make_folder(base / "data")
    run = base / "run"
    res = invoke("train", "--data", "folder", "--data-root", root, *MODEL, *FAST, "--train-samples", 20, "-o", run)
    assert res.exit_code == 0, res.output
    return root, run, res.output


# --------------------------------------------------------------------------------------------
# subsets and held-out splits
# --------------------------------------------------------------------------------------------
def test_stratified_indices_are_proportional_seeded_and_nested():
    targets = [0] * 10 + [1] * 6 + [2] * 4  # sorted by class, as a folder lists them
    idx = stratified_indices(targets, 10, seed=3)
    counts = Counter(targets[i] for i in idx)
    assert counts == {0: 5, 1: 3, 2: 2}  # 10 * (10, 6, 4) / 20
    assert idx == stratified_indices(targets, 10, seed=3) != stratified_indices(targets, 10, seed=4)
    assert set(stratified_indices(targets, 5, seed=3)) <= set(idx)  # a larger subset keeps a smaller one
    for n in range(1, 20):  # every class within one of its share
        c = Counter(targets[i] for i in stratified_indices(targets, n, seed=0))
        assert all(abs(c[k] - n * m / 20) < 1 for k, m in ((0, 10), (1, 6), (2, 4))), (n, c)
    assert stratified_indices(targets, 50) == list(range(20))
    kept, held = holdout_split(targets, 0.25, seed=0)
    assert sorted(kept + held) == list(range(20)) and len(held) == 5 and not set(kept) & set(held)
    c = Counter(targets[i] for i in held)
    assert all(abs(c[k] - 5 * m / 20) < 1 for k, m in ((0, 10), (1, 6), (2, 4))), c
    with pytest.raises(ValueError, match="holds out 0"):
        holdout_split(targets, 0.01)


def test_subset_of_a_sorted_folder_holds_every_class(tmp_path):
    """The first 20 files of 3 classes x 8 would be one class and a half; the subset is stratified."""
    root = make_folder(tmp_path)
    ds = build_dataset(DataConfig(data="folder", data_root=str(root)), "train", num_samples=12)
    assert len(ds) == 12 and ds.classes == list(CLASSES)
    assert Counter(ds.targets) == {0: 4, 1: 4, 2: 4}
    assert [ds[i][1] for i in range(12)] == ds.targets  # the items carry the labels listed
    again = build_dataset(DataConfig(data="folder", data_root=str(root)), "train", num_samples=12)
    other = build_dataset(DataConfig(data="folder", data_root=str(root), data_seed=1), "train", num_samples=12)
    assert again.indices == ds.indices != other.indices
    test = build_dataset(DataConfig(data="folder", data_root=str(root)), "test", num_samples=6)  # --test-samples
    assert test.source.endswith(": val/") and Counter(test.targets) == {0: 2, 1: 2, 2: 2}


def test_train_only_folder_needs_a_validation_split(tmp_path):
    root = make_folder(tmp_path / "d", {"train": CLASSES})
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "-o", tmp_path / "run")
    assert_clean_error(res, "has no validation split", "--val-split 0.1")
    assert not (tmp_path / "run").exists()  # nothing left behind by a run that never started
    make_folder(tmp_path / "d", {"holdout": CLASSES})  # an unrecognised name is named, not used
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "-o", tmp_path / "run")
    assert_clean_error(res, "has no validation split", "found: holdout/")
    flat = make_folder(tmp_path / "flat", {"": CLASSES})  # root/<class>/<image>
    res = invoke("train", "--data-root", flat, *MODEL, *FAST, "-o", tmp_path / "run")
    assert_clean_error(res, "has no validation split")

    # --val-split: a seeded, class-stratified held-out part of train/, said at start
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "--val-split", 0.25, "-o", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "train: 18 images: train/ less the 25% held out" in res.output
    assert "evaluated on: 6 images: 25% of train/ held out (--data-seed 0)" in res.output
    assert "(n=6," in res.output
    record = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["data"]
    assert record["val_split"] == 0.25 and record["classes"] == list(CLASSES)
    test = build_dataset(DataConfig(data="folder", data_root=str(root), val_split=0.25), "test")
    train = build_dataset(DataConfig(data="folder", data_root=str(root), val_split=0.25), "train")
    assert Counter(test.targets) == {0: 2, 1: 2, 2: 2} and not set(test.indices) & set(train.indices)
    res = invoke("eval", "-c", tmp_path / "run" / "checkpoint", "--no-progress")  # the same held-out images
    assert res.exit_code == 0 and "(n=6)" in res.output, res.output


# --------------------------------------------------------------------------------------------
# one class map
# --------------------------------------------------------------------------------------------
def test_validation_set_with_another_class_is_refused_before_training(tmp_path):
    root = make_folder(tmp_path / "d", {"train": CLASSES, "val": ("ant", "cat", "dog")})
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "-o", tmp_path / "run")
    assert_clean_error(res, "val", "not among the 3 classes of the training split: dog")
    assert "epoch" not in res.output


def test_validation_set_missing_a_class_is_scored_with_the_training_map(tmp_path):
    root = make_folder(tmp_path / "d", {"train": CLASSES, "val": ("ant", "cat")}, n=4)
    val = build_dataset(DataConfig(data="folder", data_root=str(root)), "test")
    assert val.classes == list(CLASSES) and val.missing_classes == ["bee"]
    assert sorted(set(val.targets)) == [0, 2]  # cat is class 2 as in train/, not 1 as its own folder order says
    assert [val[i][1] for i in range(len(val))] == val.targets


def test_class_names_in_checkpoint_eval_visualize_predict(folder_run, tmp_path):
    root, run, log = folder_run
    assert "dataset folder at" in log and "3 classes (ant, bee, cat)" in log
    assert "train: 20 images: class-stratified subset (--data-seed 0) of 24: train/" in log
    assert "evaluated on: 24 images: val/" in log
    record = json.loads((run / "checkpoint" / "config.json").read_text())["data"]
    assert record["classes"] == list(CLASSES) and record["num_classes"] == 3 and record["root"] == str(root)

    res = invoke("eval", "-c", run / "checkpoint", "--no-progress", "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    assert "classes: ant, bee, cat" in res.output and "(n=24)" in res.output
    assert json.loads((tmp_path / "e.json").read_text())["classes"] == list(CLASSES)

    out = tmp_path / "v.png"  # no --image, no --indices: validation images across the classes
    res = invoke("visualize", "-c", run / "checkpoint", "-o", out)
    assert res.exit_code == 0, res.output
    assert "8 images" in res.output and out.read_bytes()[:4] == b"\x89PNG"

    res = invoke("predict", "-c", run / "checkpoint", root / "val" / "bee" / "bee_0.png", root / "val" / "cat",
                 "--top-k", 2, "--json", tmp_path / "p.json")
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 9 and lines[0].startswith(str(root / "val" / "bee" / "bee_0.png"))
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["classes"] == list(CLASSES) and len(data["predictions"]) == 9
    for row in data["predictions"]:
        probs = [t["prob"] for t in row["top"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["class"] == CLASSES[t["index"]] for t in row["top"])
        assert f"{row['top'][0]['class']} {100 * probs[0]:.1f}%" in res.output
    # the model's evaluation view: same logits as eval's loader
    from dartok.tools.predict import predict

    top = predict(run / "checkpoint", [root / "val"], top_k=3)["predictions"]
    assert len(top) == 24 and all(len(r["top"]) == 3 for r in top)

    res = invoke("predict", "-c", run / "checkpoint", tmp_path / "nothing-here.png")
    assert_clean_error(res, "does not exist")
    res = invoke("predict", "-c", run / "checkpoint", root / "val", "--top-k", 0)
    assert res.exit_code == 2 and "--top-k" in res.output


def test_eval_on_another_folder_uses_the_checkpoint_classes(folder_run, tmp_path):
    _, run, _ = folder_run
    other = make_folder(tmp_path / "o", {"train": ("ant", "bee"), "val": ("bee", "cat")}, n=2)
    res = invoke("eval", "-c", run / "checkpoint", "--data-root", other, "--no-progress")
    assert res.exit_code == 0 and "(n=4)" in res.output, res.output  # cat keeps index 2 although train/ lacks it
    bad = make_folder(tmp_path / "b", {"train": CLASSES, "val": ("ant", "dog")}, n=2)
    res = invoke("eval", "-c", run / "checkpoint", "--data-root", bad, "--no-progress")
    assert_clean_error(res, "not among the 3 classes", "dog")


# --------------------------------------------------------------------------------------------
# files: 16-bit, corrupt, loose
# --------------------------------------------------------------------------------------------
def test_16_bit_png_is_scaled_not_white(tmp_path):
    a = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535 over 0 .. 255
    a[0, 0], a[0, 1], a[0, 2] = 30000, 65535, 0
    Image.fromarray(a).save(tmp_path / "g16.png")
    raw = (tmp_path / "g16.png").read_bytes()
    assert raw[24] == 16 and raw[25] == 0  # IHDR: 16-bit greyscale, a real 16-bit PNG
    im = load_image(tmp_path / "g16.png")
    assert im.mode == "L"
    b = np.asarray(im)
    assert b[0, 0] == 117 and b[0, 1] == 255 and b[0, 2] == 0 and b[1, 0] == 16  # round(v / 257)
    assert np.array_equal(b[1:], np.arange(16, 256).reshape(15, 16))
    # through the dataset: the same grey values, not a white image
    (tmp_path / "d" / "train" / "a").mkdir(parents=True)
    Image.fromarray(a).save(tmp_path / "d" / "train" / "a" / "x.png")
    img, label = create_dataset("folder", tmp_path / "d", "train")[0]
    assert label == 0 and np.array_equal(np.asarray(img), b)


def test_corrupt_image_is_refused_with_its_path(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    bad = root / "train" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(bad)
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "--num-workers", 1, "-o", tmp_path / "run")
    assert_clean_error(res, "cannot read image", str(bad))
    (root / "train" / "loose.png").write_bytes((root / "train" / "ant" / "ant_0.png").read_bytes())
    with pytest.raises(ValueError, match="outside class folders"):
        create_dataset("folder", root, "train")


# --------------------------------------------------------------------------------------------
# the run directory: absolute root, lock, stale metrics, leftovers
# --------------------------------------------------------------------------------------------
def test_relative_data_root_resumes_from_elsewhere_and_leftovers_go(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", n=4)
    monkeypatch.chdir(tmp_path)
    args = ["--data-root", "data", *MODEL, *FAST[2:], "--epochs", 2, "--stop-after", 1, "-o", tmp_path / "run"]
    res = invoke("train", *args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert cfg["train"]["data_root"] == str(tmp_path / "data") and cfg["train"]["data"] == "folder"
    assert cfg["train"]["warmup_epochs"] == 1
    leftover = tmp_path / "run" / ".checkpoint.tmp-abc123"  # a save killed half-way
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = invoke("train", "-o", tmp_path / "run", "--resume", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "epoch 2/2" in res.output and "removed 1 leftover" in res.output
    assert not leftover.exists()
    assert [r["epoch"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_resume_restores_a_metrics_line_lost_after_its_checkpoint(folder_run, tmp_path):
    from dartok.train.run import _complete_metrics

    _, run, _ = folder_run
    record = json.loads((run / "checkpoint" / "config.json").read_text())["metrics"]
    path = tmp_path / "metrics.jsonl"
    _complete_metrics(path, record, 1)  # killed between the checkpoint and its line
    assert [json.loads(x)["epoch"] for x in path.read_text().splitlines()] == [1]
    _complete_metrics(path, record, 1)  # complete already: nothing added
    assert len(path.read_text().splitlines()) == 1


def test_fresh_run_refuses_a_stale_metrics_file(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "test_top1": 99.0}\n')
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "-o", run)
    assert_clean_error(res, "holds the metrics.jsonl of another run", "choose another --output")
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1, "test_top1": 99.0}\n'  # untouched
    (run / "metrics.jsonl").write_text("")  # empty: nothing to lose, the run starts
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "-o", run)
    assert res.exit_code == 0, res.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_second_training_on_one_output_fails_while_the_first_runs(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    run = tmp_path / "run"
    src = Path(dartok.__file__).resolve().parents[1]
    holder = subprocess.Popen(  # another process that is training into run/ (holds its lock)
        [sys.executable, "-c", "import sys; from dartok.train.run import hold_run_dir\n"
         f"with hold_run_dir({str(run)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = invoke("train", "--data-root", root, *MODEL, *FAST, "-o", run)
        assert_clean_error(res, "is in use by another training", "choose another --output")
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoint").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    res = invoke("train", "--data-root", root, *MODEL, *FAST, "-o", run)  # released when it ends
    assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------------------------
# up-front checks, flags, defaults
# --------------------------------------------------------------------------------------------
def test_bad_inputs_are_one_error_line_before_any_epoch(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", n=4)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    run = ["-o", tmp_path / "run"]
    cases = [
        (["--data", "folder", "--data-root", tmp_path / "afile"], ["is a file, not a folder"]),
        (["--data", "folder", "--data-root", tmp_path / "empty"], ["holds no folders"]),
        (["--data-root", root, "-o", tmp_path / "afile" / "run"], ["cannot write to --output", "is a file"]),
        (["--data-root", root, "--lr", "inf"], ["--lr must be a finite number > 0, got inf"]),
        (["--data-root", root, "--num-tokens", 100000], ["--num-tokens 100000 is more tokens than the 1024 pixels"]),
        (["--data-root", root, "--epochs", 2, "--warmup-epochs", 2], ["--warmup-epochs (2) must be < --epochs (2)"]),
        (["--data-root", root, "--num-classes", 2], ["--num-classes 2 is less than the 3 classes", "ant, bee, cat"]),
        (["--data-root", root, "--val-split", 1.5], ["--val-split must be a fraction between 0 and 1"]),
        (["--data-root", root, "--json", tmp_path / "afile" / "s.json"], ["--json", "is a file, not a folder"]),
    ]
    for extra, fragments in cases:
        res = invoke("train", *MODEL, *FAST, *run, *extra)
        assert_clean_error(res, *fragments)
        assert "epoch 1/1" not in res.output
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # a read-only output (as root chmod does not refuse)
    res = invoke("train", "--data", "folder", "--data-root", tmp_path / "missing", *MODEL, *FAST, *run)
    assert_clean_error(res, "cannot write to --output", "Permission denied")  # before the data is even looked at


def test_eval_json_into_an_unwritable_place_fails_before_evaluating(folder_run, tmp_path, monkeypatch):
    import dartok.train.run as run_mod

    _, run, _ = folder_run
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(run_mod, "evaluate_checkpoint", lambda *a, **k: pytest.fail("evaluated first"))
    res = invoke("eval", "-c", run / "checkpoint", "--json", tmp_path / "afile" / "e.json")
    assert_clean_error(res, "--json", "is a file, not a folder")
    res = invoke("eval", "-c", run / "checkpoint", "--json", tmp_path)
    assert_clean_error(res, "is a folder")


def test_one_epoch_with_default_warmup_and_data_folder(tmp_path):
    from dartok.train.config import resolve_config

    root = make_folder(tmp_path / "d", n=4)
    assert resolve_config(epochs=1).warmup_epochs == 0 and resolve_config(epochs=5).warmup_epochs == 1
    assert resolve_config(epochs=1, warmup_epochs=0).warmup_epochs == 0
    assert resolve_config(data_root=str(root)).data == "folder"  # inferred from the layout
    fm = tmp_path / "fm"
    fm.mkdir()
    (fm / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert resolve_config(data_root=str(fm)).data == "cluttered_fmnist"  # Fashion-MNIST files, no image folders
    res = invoke("train", "--data", "folder", "--data-root", root, *MODEL, *FAST, "-o", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "epoch 1/1" in res.output
