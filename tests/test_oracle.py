"""The oracle score source end to end: dataset boxes -> Task.unpack -> DART.oracle_pdf -> metrics (issue 11)."""
from __future__ import annotations

import math

import dartok  # noqa: F401  (before timm: torchvision shim)
import pytest
import torch

from dartok.data import ClutteredFashionMNIST
from dartok.data.registry import build_dataset
from dartok.data.video import MovingClutteredFashionMNIST, torus_pieces
from dartok.engine import TrainConfig, build_loader, evaluate, read_metrics, train
from dartok.localization import box_pdf, object_mass, stack_frame_boxes
from dartok.models import create_model
from dartok.train.task import Classification


def _cfg(tmp_path, name, **kw) -> TrainConfig:
    base = dict(model="dart_vit_micro_patch8", num_tokens=16, canvas_size=64,
                data_kwargs={"object_scale": [0.2, 0.4], "num_clutter": 2},
                model_kwargs={"scorer_input_size": 64, "depth": 1}, train_samples=64, test_samples=32,
                epochs=1, warmup_epochs=0, batch_size=16, progress=False, output=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def test_oracle_model_builds_no_scorer_and_keeps_the_scorers_grid():
    learned = create_model("dart_vit_micro_patch8", 16, in_chans=1, num_classes=10, scorer_input_size=64)
    oracle = create_model("dart_vit_micro_patch8", 16, in_chans=1, num_classes=10, scorer_input_size=64,
                          score_source="oracle")
    assert oracle.patch_embed.scorer is None and learned.patch_embed.scorer is not None
    assert oracle.patch_embed.score_grid() == learned.patch_embed.score_grid()
    n_oracle = sum(p.numel() for p in oracle.parameters())
    assert n_oracle < sum(p.numel() for p in learned.parameters())
    with pytest.raises(ValueError, match="score_source='oracle'"):
        oracle(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="score_source"):
        create_model("dart_vit_micro_patch8", 16, score_source="boxes")


def test_oracle_pdf_is_what_the_tokenizer_partitions():
    m = create_model("dart_vit_micro_patch8", 16, in_chans=1, num_classes=10, scorer_input_size=64,
                     score_source="oracle").eval()
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 0.75]])
    dart = m.patch_embed
    with dart.given_pdf(dart.oracle_pdf(box)):
        out = m.tokenize(torch.rand(2, 1, 64, 64))
    assert torch.allclose(out.pdf, dart.density(torch.rand(2, 1, 64, 64), box_pdf(box, dart.score_grid())))
    assert dart._given_pdf is None  # the context restores
    mass = object_mass(out.pdf, box)  # after mixing: (1 − α) + α·area on cell edges
    area = torch.tensor([0.25, 0.375])
    assert torch.allclose(mass, (1 - dart.alpha) + dart.alpha * area, atol=1e-6)


def test_datasets_return_boxes_as_part_of_the_target():
    ds = ClutteredFashionMNIST("test", canvas_size=64, num_samples=3, num_clutter=1, return_box=True)
    plain = ClutteredFashionMNIST("test", canvas_size=64, num_samples=3, num_clutter=1)
    x, t = ds[1]
    assert torch.equal(x, plain[1][0]) and t["label"] == plain[1][1]
    assert t["box"].dtype == torch.float32 and t["box"].tolist() == pytest.approx(ds.object_box(1))
    clips = MovingClutteredFashionMNIST("test", num_frames=3, canvas_size=32, num_samples=2, return_box=True)
    c, t = clips[0]
    assert t["box"].shape == (3, 4, 4) and t["label"] == clips.targets[0]
    side = clips.object_boxes(0)[0, 0, 2] - clips.object_boxes(0)[0, 0, 0]
    areas = ((t["box"][..., 2] - t["box"][..., 0]) * (t["box"][..., 3] - t["box"][..., 1])).sum(-1)
    assert torch.allclose(areas, torch.full((3,), float(side) ** 2))  # pieces keep the item's area


def test_torus_pieces_split_a_wrapped_box():
    p = torus_pieces([0.75, 0.5, 1.25, 0.75])
    assert p.tolist() == [[0.75, 0.5, 1.0, 0.75], [0.0, 0.5, 0.25, 0.75], [0.75, 0.0, 1.0, 0.0], [0.0, 0.0, 0.25, 0.0]]


def test_build_dataset_refuses_boxes_for_a_dataset_without(tmp_path):
    cfg = _cfg(tmp_path, "x", data="fashion_mnist", canvas_size=None, data_kwargs={})
    with pytest.raises(ValueError, match="provides no object boxes"):
        build_dataset(cfg, "test", num_samples=2, boxes=True)


def test_task_unpack_keeps_plain_targets_and_splits_mappings():
    task = Classification()
    labels = torch.tensor([1, 2])
    assert task.unpack(labels)[0] is labels and task.unpack(labels)[1] is None
    box = torch.zeros(2, 4)
    assert task.unpack({"label": labels, "box": box}) == (labels, box)
    with pytest.raises(ValueError, match="'label'"):
        task.unpack({"box": box})


def test_oracle_run_trains_end_to_end_and_logs_the_localisation_metric(tmp_path):
    out = train(_cfg(tmp_path, "oracle", model_kwargs={"scorer_input_size": 64, "depth": 1,
                                                         "score_source": "oracle"}))
    rows = read_metrics(tmp_path / "oracle")
    assert len(rows) == 1
    r = rows[0]
    assert {"test_object_mass", "test_object_tokens", "test_top1"} <= set(r)
    # the oracle's own map: its mass is 1 up to cell rounding, exactly Σc²/Σc of each box's coverage
    # c on the 4×4 grid (scorer input 64 / stride 16), averaged over the test set
    test = build_dataset(_cfg(tmp_path, "x"), "test", num_samples=32, boxes=True)
    boxes = torch.stack([test[i][1]["box"] for i in range(len(test))])
    expected = object_mass(box_pdf(boxes, (4, 4)), boxes).mean().item()
    assert r["test_object_mass"] == pytest.approx(expected, abs=1e-5) and expected < 1
    assert 0 <= r["test_object_tokens"] <= 16 and math.isfinite(r["train_loss"])
    # the checkpoint evaluates the same way (boxes come with its test set)
    from dartok.train.run import evaluate_checkpoint

    res = evaluate_checkpoint(out["checkpoint"])
    assert res["object_mass"] == pytest.approx(r["test_object_mass"])
    assert res["top1"] == pytest.approx(r["test_top1"])


def test_learned_dart_logs_the_metric_and_grid_runs_are_unchanged(tmp_path):
    train(_cfg(tmp_path, "dart"))
    r = read_metrics(tmp_path / "dart")[0]
    assert 0.0 <= r["test_object_mass"] <= 1.0 and 0 <= r["test_object_tokens"] <= 16
    train(_cfg(tmp_path, "grid", model="vit_micro_patch8", model_kwargs={"depth": 1}))
    g = read_metrics(tmp_path / "grid")[0]
    assert not any("object" in k for k in g)
    assert set(r) - set(g) == {"test_object_mass", "test_object_tokens"}  # DART rows only extended


def test_oracle_needs_a_dataset_with_boxes(tmp_path):
    cfg = _cfg(tmp_path, "x", data="fashion_mnist", canvas_size=None, data_kwargs={},
               model_kwargs={"score_source": "oracle", "depth": 1})
    with pytest.raises(ValueError, match="has none"):
        train(cfg)


def test_video_oracle_forward_and_metric():
    clips = MovingClutteredFashionMNIST("test", num_frames=4, canvas_size=32, num_samples=4, return_box=True)
    m = create_model("dart_videomamba_micro_patch8", 8, in_chans=1, num_classes=4, num_frames=4, img_size=32,
                     scorer_input_size=32, score_source="oracle", depth=1)
    res = evaluate(m, build_loader(clips, 4, shuffle=False), "cpu")
    assert m.patch_embed.pdf_size() == (8, 2)  # 4 frames of the scorer's 2×2 grid, stacked
    boxes = stack_frame_boxes(torch.stack([clips[i][1]["box"] for i in range(4)]))
    expected = object_mass(box_pdf(boxes, (8, 2)), boxes).mean().item()
    assert res["object_mass"] == pytest.approx(expected, abs=1e-5) and 0 <= res["object_tokens"] <= 8
    assert res["top1"] >= 0  # classification metrics unchanged beside them


def test_compare_shows_the_oracle_row_and_the_localisation_metric(tmp_path):
    from dartok.tools.compare import ORACLE, RunSpec, compare

    specs = [RunSpec("grid@4", "vit_micro_patch8", 4, {"depth": 1}),
             RunSpec("dart@4", "dart_vit_micro_patch8", 4, {"depth": 1, "scorer_input_size": 32}),
             RunSpec("oracle@4", "dart_vit_micro_patch8", 4, {"depth": 1, "scorer_input_size": 32, **ORACLE})]
    train_opts = dict(canvas_size=32, data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 1}, train_samples=32,
                      test_samples=16, epochs=2, warmup_epochs=0, batch_size=16)
    res = compare(None, tmp_path, "t", specs=specs, train=train_opts, jobs=1, snapshot_epochs=(2,),
                  count_macs=False, echo=lambda _line: None)
    rows = {r["name"]: r for r in res["rows"]}
    assert "test_object_mass" not in rows["grid@4"] and "object_mass_by_epoch" not in rows["grid@4"]
    for name in ("dart@4", "oracle@4"):
        assert len(rows[name]["object_mass_by_epoch"]) == 2 and len(rows[name]["object_tokens_by_epoch"]) == 2
        assert rows[name]["test_object_mass"] == rows[name]["object_mass_by_epoch"][-1]
    assert "| object mass | object tokens |" in res["markdown"]
    grid_line = next(line for line in res["markdown"].splitlines() if line.startswith("| grid@4"))
    assert "| - | - |" in grid_line  # a fixed grid has no score map: no value, not a made-up one
    assert res["localization_plot"] and (tmp_path / "t_localization.png").stat().st_size > 0
    assert (tmp_path / "oracle@4" / "partition_epoch2.png").exists()  # drawn with the dataset's boxes


def test_video_oracle_run_trains_end_to_end(tmp_path):
    cfg = _cfg(tmp_path, "video", model="dart_videomamba_micro_patch8", num_tokens=8, canvas_size=32, data="moving_fmnist",
               data_kwargs={"num_frames": 2, "speed": [2, 4]}, train_samples=16, test_samples=8, batch_size=8,
               model_kwargs={"scorer_input_size": 32, "depth": 1, "score_source": "oracle"})
    train(cfg)
    r = read_metrics(tmp_path / "video")[0]
    assert 0 < r["test_object_mass"] <= 1 + 1e-6 and 0 <= r["test_object_tokens"] <= 8


def test_macs_of_an_oracle_model_are_the_dart_model_without_its_scorer():
    from dartok.models import create_model
    from dartok.tools.flops import count_macs

    oracle = create_model("dart_vit_micro_patch8", num_tokens=16, score_source="oracle")
    learned = create_model("dart_vit_micro_patch8", num_tokens=16)
    rep_o, rep_l = count_macs(oracle, (1, 128, 128)), count_macs(learned, (1, 128, 128))
    assert "scorer" not in rep_o.by_part and rep_l.by_part["scorer"] > 0
    assert rep_o.total == pytest.approx(rep_l.total - rep_l.by_part["scorer"], rel=1e-3)


def test_which_moves_metric_is_the_moving_items_mass():
    """which_moves: the boxes the data hands the metric are the moving item's, not the static one's."""
    clips = MovingClutteredFashionMNIST("test", num_frames=4, canvas_size=48, num_samples=4, task="which_moves",
                                        return_box=True)
    m = create_model("dart_videomamba_micro_patch8", 8, in_chans=1, num_classes=10, num_frames=4, img_size=48,
                     scorer_input_size=48, score_source="oracle", depth=1)
    res = evaluate(m, build_loader(clips, 4, shuffle=False), "cpu")
    grid = m.patch_embed.pdf_size()

    def boxes(item):  # item 0: the moving one, 1: the static one (MovingClutteredFashionMNIST.object_boxes)
        return stack_frame_boxes(torch.stack([torch.from_numpy(torus_pieces(clips.object_boxes(i)[:, item])).float()
                                              for i in range(4)]))

    oracle_map = box_pdf(boxes(0), grid)
    assert res["object_mass"] == pytest.approx(object_mass(oracle_map, boxes(0)).mean().item(), abs=1e-5)
    assert object_mass(oracle_map, boxes(1)).mean().item() < res["object_mass"]
