"""Tests for dartok.train.task: the Task protocol and Classification (loss, metric sums, best metric)."""
from __future__ import annotations

import math

import dartok  # noqa: F401  (before timm)
import pytest
import torch
from torch import nn

from dartok.engine import TrainConfig
from dartok.train.task import (
    TASKS,
    Classification,
    ClassificationMetrics,
    ClassificationTrainMetrics,
    Task,
    create_task,
)


def test_classification_names_and_direction():
    task = Classification()
    assert task.name == "classification" and task.best_metric == "top1" and task.higher_is_better
    assert task.worst() == -math.inf
    assert task.is_better(10.0, task.worst()) and task.is_better(50.0, 40.0) and not task.is_better(40.0, 50.0)
    assert not task.is_better(float("nan"), 10.0)
    assert TASKS["classification"] is Classification
    assert isinstance(create_task("classification"), Classification)
    with pytest.raises(ValueError, match="unknown task 'detection'.*classification.*segmentation"):
        create_task("detection")
    assert issubclass(Classification, Task)


def test_classification_loss_from_config():
    task = create_task("classification", TrainConfig(label_smoothing=0.2))
    assert isinstance(task.criterion, nn.CrossEntropyLoss) and task.criterion.label_smoothing == 0.2
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    expected = nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    torch.testing.assert_close(task.loss(logits, labels), expected)
    with pytest.raises(ValueError, match="label_smoothing"):
        Classification(label_smoothing=1.0)


def test_metrics_summed_over_batches_equal_the_whole_set():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 7, generator=g)
    labels = torch.randint(0, 7, (37,), generator=g)
    whole = ClassificationMetrics()
    whole.update(logits, labels)
    batched = ClassificationMetrics()
    for lo in range(0, 37, 8):  # uneven last batch
        batched.update(logits[lo:lo + 8], labels[lo:lo + 8])
    a, b = whole.compute(), batched.compute()
    assert a["n"] == b["n"] == 37
    for k in ("loss", "top1", "top5"):
        assert a[k] == pytest.approx(b[k], rel=1e-6)
    # by hand
    assert a["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    assert a["top1"] == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())
    top5 = logits.topk(5, 1).indices.eq(labels[:, None]).any(1).float().mean().item()
    assert a["top5"] == pytest.approx(100.0 * top5)
    # shards of "ranks", merged, give the same too (what all_reduce sums)
    shards = [ClassificationMetrics(), ClassificationMetrics(), ClassificationMetrics()]
    for i, s in enumerate(shards):
        s.update(logits[i::3], labels[i::3])
    merged = shards[0].merge(shards[1]).merge(shards[2]).compute()
    assert merged["n"] == 37 and merged["top1"] == pytest.approx(a["top1"])
    assert merged["loss"] == pytest.approx(a["loss"])
    # all_reduce without a process group is the identity
    before = dict(batched.sums)
    batched.all_reduce("cpu")
    assert batched.sums == before


def test_empty_metrics_and_train_statistics():
    empty = ClassificationMetrics().compute()
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("loss", "top1", "top5"))
    tr = ClassificationTrainMetrics()
    tr.update(torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 0, 0]), loss=0.5)
    tr.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]), loss=1.5)
    tr.update(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), loss=9.0)  # padding step: nothing added
    out = tr.compute()
    assert out["n"] == 4 and out["loss"] == pytest.approx((0.5 * 3 + 1.5) / 4) and out["acc"] == pytest.approx(75.0)
    assert ClassificationTrainMetrics().compute() == {"loss": 0.0, "acc": 0.0, "n": 0}


class LowerIsBetter(Task):
    """A made-up task: the metric is the mean squared error (best when lowest)."""

    name = "toy_regression"
    best_metric = "mse"
    higher_is_better = False


def test_best_metric_direction_of_another_task():
    task = LowerIsBetter()
    assert task.worst() == math.inf and task.is_better(0.1, task.worst()) and task.is_better(0.1, 0.2)
    assert not task.is_better(0.3, 0.2)


def test_describe_lists_the_task_columns_then_the_loss():
    metrics = {"loss": 0.5, "top1": 50.0, "top5": 100.0, "n": 4}
    assert Classification().describe(metrics) == "top-1 50.00%  top-5 100.00%  loss 0.5000"
    assert Classification().describe({"top1": 12.5}) == "top-1 12.50%"


def test_compare_tables_follow_the_rows_task(tmp_path, monkeypatch):
    """compare's table and figure take their columns from the task, not from classification."""
    from dartok.tools import compare
    from dartok.train import task as task_mod

    class Toy(LowerIsBetter):
        columns = (("mse", "MSE", ""),)

    monkeypatch.setitem(task_mod.TASKS, Toy.name, Toy)
    row = {"group": "main", "name": "a", "model": "dart_x", "num_tokens": 16, "input_size": [1, 8, 8], "epochs": 1,
           "task": Toy.name, "best_metric": "mse", "test_mse": 0.25, "gmacs": 0.1, "params_m": 0.5,
           "train_images_per_s": 10.0, "train_time_s": 60.0}
    md = compare.write_tables([row], tmp_path / "t", {})
    assert "| test MSE | GMACs |" in md and "| 0.25 | 0.1000 |" in md and "top-1" not in md
    compare.plot_accuracy_vs_macs([row], tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
    with pytest.raises(ValueError, match="one task"):
        compare.write_tables([row, {**row, "task": "classification"}], tmp_path / "u", {})
