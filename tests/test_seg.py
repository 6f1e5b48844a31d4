"""Segmentation as a second task (issue 13 §2): data, task, model, and train → resume → eval → visualize."""
from __future__ import annotations

import json

import dartok  # noqa: F401  (before timm)
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dartok.cli import app
from dartok.data import (ClutteredFashionMNIST, ClutteredFashionMNISTSegmentation, create_dataset, dataset_info,
                         infer_dataset)
from dartok.data.seg_folder import SegmentationFolder
from dartok.models import Segmenter, create_model, patch_timm, patch_vim
from dartok.resample import grid_boxes
from dartok.train.task import Segmentation, SegmentationMetrics, create_task

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- the generated data
def test_cluttered_segmentation_is_the_classification_scene_with_a_mask():
    kw = dict(canvas_size=64, object_scale=(0.3, 0.5), num_samples=6, seed=3)
    seg = ClutteredFashionMNISTSegmentation("test", **kw)
    cls = ClutteredFashionMNIST("test", **kw)
    assert seg.classes[0] == "background" and seg.classes[1:] == cls.classes
    assert dataset_info("cluttered_fmnist_seg").task == "segmentation"
    for i in range(6):
        x, mask = seg[i]
        x_cls, label = cls[i]
        assert torch.equal(x, x_cls)  # same generator, same scene
        assert mask.dtype == torch.int64 and mask.shape == (64, 64)
        assert set(mask.unique().tolist()) == {0, label + 1} and int(seg.targets[i]) == label + 1
        x0, y0, x1, y1 = (round(v * 64) for v in seg.object_box(i))  # object pixels inside its box
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert not mask[~inside].any()
        # above the threshold on the resized item: the canvas is at least that bright there (max paste)
        assert (x[0][mask > 0] > 0.1).all()
        assert torch.equal(mask, seg[i][1])  # deterministic per index
    boxed = ClutteredFashionMNISTSegmentation("test", return_box=True, **kw)
    _, target = boxed[2]
    assert torch.equal(target["mask"], seg[2][1]) and torch.allclose(target["box"], torch.tensor(seg.object_box(2)))
    # a higher threshold keeps fewer pixels, never others
    strict = ClutteredFashionMNISTSegmentation("test", mask_threshold=0.6, **kw)
    assert ((strict.mask(1) > 0) <= (seg.mask(1) > 0)).all() and (strict.mask(1) > 0).sum() < (seg.mask(1) > 0).sum()
    with pytest.raises(ValueError, match="mask_threshold"):
        ClutteredFashionMNISTSegmentation("test", mask_threshold=1.0, **kw)


# --------------------------------------------------------------------------- your own data
def make_seg_folder(root, n_train=6, n_val=3, side=20, classes=("bg", "square", "bar"), listed=True):
    """images/{train,val}/*.png RGB and annotations/{train,val}/*.png: a square (1) and a bar (2), 255 border."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 40, (side, side, 3), dtype=np.uint8)
            lab = np.zeros((side, side), np.uint8)
            img[4:10, 4:10] = 220
            lab[4:10, 4:10] = 1
            img[12:15, 2:18, 0] = 250
            lab[12:15, 2:18] = 2
            lab[0, :] = 255
            Image.fromarray(img).save(root / "images" / split / f"im{i}.jpg" if i % 2 else
                                      root / "images" / split / f"im{i}.png")
            Image.fromarray(lab, mode="L").save(root / "annotations" / split / f"im{i}.png")
    if listed:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_seg_folder_reads_the_common_layout(tmp_path):
    root = make_seg_folder(tmp_path / "seg")
    assert infer_dataset(root) == "seg_folder"
    ds = create_dataset("seg_folder", root, "train", image_size=10, hflip=0.0)
    assert ds.classes == ["bg", "square", "bar"] and len(ds) == 6
    x, mask = ds[0]
    assert x.shape == (3, 10, 10) and x.dtype == torch.float32
    assert mask.shape == (10, 10) and set(mask.unique().tolist()) <= {0, 1, 2, 255}
    assert (mask[0] == 255).all() and mask[3, 3] == 1  # nearest resize keeps labels, 20 -> 10 px
    val = create_dataset("seg_folder", root, "val", image_size=10, hflip=1.0)  # evaluation never flips
    assert len(val) == 3 and torch.equal(val[0][1], ds[0][1])
    flipped = create_dataset("seg_folder", root, "train", image_size=10, hflip=1.0)
    assert torch.equal(flipped[0][1], ds[0][1].flip(-1)) and torch.allclose(flipped[0][0], ds[0][0].flip(-1))
    # without classes.txt: one more class than the largest label of the training annotations
    (root / "classes.txt").unlink()
    assert SegmentationFolder(root, "train").classes == ["class0", "class1", "class2"]


def test_seg_folder_errors_name_the_files(tmp_path):
    root = make_seg_folder(tmp_path / "seg", listed=False)
    (root / "annotations" / "train" / "im3.png").unlink()
    with pytest.raises(ValueError, match="im3"):
        SegmentationFolder(root, "train")
    root2 = make_seg_folder(tmp_path / "seg2", classes=("bg", "square"))  # label 2 is not a class
    with pytest.raises(ValueError, match="label 2, but there are 2 classes"):
        SegmentationFolder(root2, "train")[0]
    with pytest.raises(FileNotFoundError, match="no train folder"):
        SegmentationFolder(tmp_path, "train")


# --------------------------------------------------------------------------- the task
def test_segmentation_metrics_match_a_hand_count():
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 0]]])
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float() * 5
    m = SegmentationMetrics(4)
    m.update(logits, target)
    out = m.compute()
    # class 0: inter 2, union 4; class 1: inter 2, union 3; class 2: inter 1, union 2; class 3: absent
    assert out["class_iou"][:3] == pytest.approx([50.0, 200 / 3, 50.0]) and out["class_iou"][3] is None
    assert out["miou"] == pytest.approx((50 + 200 / 3 + 50) / 3)
    assert out["pixel_acc"] == pytest.approx(100 * 5 / 7) and out["n"] == 1  # the 255 pixel is not scored
    # summed over batches and ranks like the others: two halves give the whole
    a, b = SegmentationMetrics(4), SegmentationMetrics(4)
    a.update(logits[..., :2], target[..., :2])
    b.update(logits[..., 2:], target[..., 2:])
    assert a.merge(b).compute()["miou"] == pytest.approx(out["miou"])


def test_segmentation_loss_ignores_255_and_resizes_logits_to_the_masks():
    task = Segmentation(3)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    up = torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(task.loss(logits, target), torch.nn.functional.cross_entropy(up, target))
    ignored = target.clone()
    ignored[:, :4] = 255
    torch.testing.assert_close(task.loss(logits, ignored),
                               torch.nn.functional.cross_entropy(up, ignored, ignore_index=255))
    assert task.loss(logits, torch.full_like(target, 255)).item() == 0.0  # nothing labelled: no NaN
    with pytest.raises(ValueError, match="label 3, outside the model's 3 classes"):
        task.loss(logits, torch.full_like(target, 3))
    assert create_task("segmentation").best_metric == "miou"


# --------------------------------------------------------------------------- the model
def test_segmenter_on_the_grid_and_on_dart_with_a_uniform_pdf_are_the_same_model():
    """The fixed grid's decoder is DART's on the grid: patching the backbone with a uniform pdf (the
    grid boxes) changes nothing."""
    torch.manual_seed(0)
    model = create_model("vit_micro_patch8", 16, task="segmentation", num_classes=5, in_chans=1, depth=1,
                         output_size=(40, 40)).eval()
    assert isinstance(model, Segmenter) and model.pretrained_cfg["input_size"] == (1, 32, 32)
    x = torch.rand(2, 1, 32, 32)
    ref = model(x)
    assert ref.shape == (2, 5, 40, 40)
    tokens, boxes = model.forward_tokens(x)
    assert tokens.shape == (2, 16, 5) and torch.equal(boxes, grid_boxes(4, 4, 2))
    patch_timm(model.backbone, scorer=None, img_size=32)
    assert dartok.is_dart(model)
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)


def test_vim_segmenter_on_the_grid_is_the_uniform_dart_one_and_clips_are_refused():
    """Vim's class token sits mid-sequence: forward_intermediates leaves it out, so the grid order holds."""
    torch.manual_seed(0)
    model = create_model("vim_micro_patch8", 16, task="segmentation", num_classes=3, in_chans=1, depth=1).eval()
    x = torch.rand(2, 1, 32, 32)
    ref = model(x)
    patch_vim(model.backbone, scorer=None, img_size=32)
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="takes clips"):
        create_model("videomamba_micro_patch8", 16, task="segmentation", num_classes=3, depth=1)


def test_dart_segmenter_trains_its_scorer_through_the_boxes():
    torch.manual_seed(0)
    model = create_model("dart_vit_micro_patch8", 9, task="segmentation", num_classes=3, in_chans=1, depth=1,
                         img_size=32, scorer_input_size=32)
    assert "backbone.patch_embed.pos_embed" in model.no_weight_decay()
    assert model.backbone.num_classes == 0 and model.patch_embed.scorer.cam_classes == 0
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    Segmentation(3).loss(out, torch.randint(0, 3, (2, 32, 32))).backward()
    assert model.patch_embed.scorer.head.fc1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="output_size"):
        create_model("vit_micro_patch8", 16, output_size=(8, 8))
    with pytest.raises(ValueError, match="task"):
        create_model("vit_micro_patch8", 16, task="detection")


# --------------------------------------------------------------------------- train, resume, eval, visualize
SEG_ARGS = ["--task", "segmentation", "--num-tokens", 9, "--canvas-size", 32,
            "--data-kwargs", '{"object_scale": [0.3, 0.5], "num_clutter": 2}',
            "--train-samples", 16, "--test-samples", 8, "--warmup-epochs", 0, "--batch-size", 8,
            "--smoothing", 0, "--no-progress"]
DART_KW = ["--model-kwargs", '{"scorer_input_size": 32, "depth": 1}']


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """2 epochs straight, and the same run stopped after 1 and resumed."""
    root = tmp_path_factory.mktemp("seg")
    res = invoke("train", *SEG_ARGS, *DART_KW, "--epochs", 2, "-o", root / "straight")
    assert res.exit_code == 0, res.output
    res2 = invoke("train", *SEG_ARGS, *DART_KW, "--epochs", 2, "--stop-after", 1, "-o", root / "split")
    assert res2.exit_code == 0, res2.output
    res3 = invoke("train", "-o", root / "split", "--resume", "--no-progress")
    assert res3.exit_code == 0, res3.output
    return root, res.output, res3.output


def test_segmentation_trains_resumes_exactly_and_keeps_the_best_miou(seg_run):
    root, out, resumed = seg_run
    assert "final test mIoU" in out and "per-class IoU (%): background" in out
    rows = [json.loads(x) for x in (root / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"test_miou", "test_pixel_acc", "test_class_iou", "train_pixel_acc", "test_object_mass"} <= set(rows[0])
    assert len(rows[0]["test_class_iou"]) == 11
    config = json.loads((root / "straight" / "checkpoint" / "config.json").read_text())
    assert config["task"] == "segmentation" and config["train"]["task"] == "segmentation"
    assert config["best_miou"] == max(r["test_miou"] for r in rows)
    assert config["model_kwargs"]["task"] == "segmentation" and config["model_kwargs"]["output_size"] == [32, 32]
    best = json.loads((root / "straight" / "checkpoint_best" / "config.json").read_text())
    best_epoch = max(rows, key=lambda r: r["test_miou"])["epoch"]  # the first epoch with the best mIoU
    assert best["epoch"] == min(r["epoch"] for r in rows if r["test_miou"] == config["best_miou"]) == best_epoch
    assert not (root / "straight" / "checkpoint_best" / "train_state.pt").exists()
    # stop after 1 + --resume == 2 epochs straight
    assert "resumed" in resumed
    split = [json.loads(x) for x in (root / "split" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows, split):
        assert a["test_miou"] == pytest.approx(b["test_miou"], abs=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_segmentation_eval_prints_miou_and_per_class_iou(seg_run, tmp_path):
    root, _, _ = seg_run
    res = invoke("eval", "-c", root / "straight" / "checkpoint", "--no-progress", "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    assert "mIoU" in res.output and "pixel acc" in res.output
    assert "per-class IoU (%): background" in res.output and "Ankle boot" in res.output
    data = json.loads((tmp_path / "e.json").read_text())
    last = json.loads((root / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
    assert data["task"] == "segmentation" and data["miou"] == pytest.approx(last["test_miou"])
    res = invoke("eval", "-c", root / "straight" / "checkpoint_best", "--no-progress")
    assert res.exit_code == 0, res.output


def test_segmentation_visualize_draws_masks_and_predict_refuses(seg_run, tmp_path):
    root, _, _ = seg_run
    out = tmp_path / "masks.png"
    res = invoke("visualize", "-c", root / "straight" / "checkpoint", "--indices", "0-3", "-o", out)
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(img)
    res = invoke("predict", "-c", root / "straight" / "checkpoint", img)
    assert res.exit_code == 2 and "segmentation model" in res.output


def test_task_and_data_must_agree(tmp_path):
    res = invoke("train", "--task", "segmentation", "--data", "cluttered_fmnist", "-o", tmp_path / "r",
                 "--no-progress")
    assert res.exit_code == 2 and "is for classification" in res.output and "cluttered_fmnist_seg" in res.output
    res = invoke("train", "--task", "detection", "-o", tmp_path / "r", "--no-progress")
    assert res.exit_code == 2 and "--task must be one of" in res.output


def test_seg_folder_trains_through_the_cli(tmp_path):
    root = make_seg_folder(tmp_path / "seg", n_train=8, n_val=4)
    res = invoke("train", "--task", "segmentation", "--data-root", root, "--model", "vit_micro_patch8",
                 "--num-tokens", 4, "--data-kwargs", '{"image_size": 16}', "--model-kwargs", '{"depth": 1}',
                 "--epochs", 1, "--batch-size", 4, "--no-progress", "-o", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "seg_folder" in res.output and "per-class IoU (%): bg" in res.output
    config = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert config["data"]["name"] == "seg_folder" and config["data"]["classes"] == ["bg", "square", "bar"]
    assert config["data"]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # the folder's normalisation


def test_segmenter_under_bf16_autocast():
    torch.manual_seed(0)
    model = create_model("dart_vit_micro_patch8", 9, task="segmentation", num_classes=4, in_chans=1, depth=1,
                         img_size=32, scorer_input_size=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 1, 32, 32))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    loss = Segmentation(4).loss(out.float(), torch.randint(0, 4, (2, 32, 32)))
    loss.backward()
    assert torch.isfinite(loss) and model.decode_head.weight.grad.abs().sum() > 0


def test_two_processes_match_one_process_for_segmentation(tmp_path):
    """DDP (gloo, 2 processes, uneven last step) with EMA == 1 process: weights and the summed mIoU."""
    from test_distributed import _cli_args, _weights, assert_same_weights, torchrun_train

    from dartok.train import TrainConfig, read_metrics, train

    run = dict(model="vit_micro_patch8", task="segmentation", data="cluttered_fmnist_seg", num_tokens=16,
               canvas_size=32, train_samples=23,
               test_samples=9, data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2},
               model_kwargs={"depth": 1}, epochs=1, warmup_epochs=0, batch_size=16, lr=2e-3, label_smoothing=0.0,
               model_ema=True, model_ema_decay=0.5, device="cpu", threads=1, progress=False)
    train(TrainConfig(**run, output=str(tmp_path / "one")))
    torchrun_train(_cli_args({**run, "output": tmp_path / "two"}))
    assert_same_weights(_weights(tmp_path / "two"), _weights(tmp_path / "one"))
    assert_same_weights(_weights(tmp_path / "two", "model_ema.safetensors"),
                        _weights(tmp_path / "one", "model_ema.safetensors"))
    m1, m2 = read_metrics(tmp_path / "one")[0], read_metrics(tmp_path / "two")[0]
    assert m2["world_size"] == 2
    for key in ("train_loss", "test_loss", "test_miou", "test_pixel_acc", "test_miou_ema"):
        assert m2[key] == pytest.approx(m1[key], abs=1e-4), key
    assert [v is None for v in m2["test_class_iou"]] == [v is None for v in m1["test_class_iou"]]
