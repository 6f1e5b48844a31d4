"""Multi-process (torch.distributed / DDP) training.

In-process checks of the data sharding and loss weighting, plus real 2-process gloo runs on
CPU launched with ``python -m torch.distributed.run`` (= ``torchrun``): a 2-process run
gives the weights of a 1-process run on the same global batch, and ``--resume`` works
across a changed world size (2 -> 1 and 1 -> 2 processes); two simulated nodes (two torchrun
launches with ``--nnodes 2``) give the same weights too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import dartok  # noqa: F401  (before timm: torchvision shim)
import pytest
import torch
from torch import nn

from dartok.engine import (
    ShardedBatchSampler,
    TrainConfig,
    build_loader,
    epoch_seed,
    read_metrics,
    shard_indices,
    train,
)

ATOL = 1e-5
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID")


# --------------------------------------------------------------------------------------
# sharding (no process group needed)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 17, 23, 33, 64])
@pytest.mark.parametrize("world", [2, 4])
def test_union_of_rank_batches_is_the_one_process_batch(n, world):
    batch = 8
    for drop_last in (False, True):
        def batches(rank, k):
            s = ShardedBatchSampler(n, batch, rank=rank, world_size=k, drop_last=drop_last, seed=3)
            s.set_epoch(5)
            return list(s), s.plan(), len(s)

        ref, ref_plan, ref_len = batches(0, 1)
        assert all(w == 1.0 for _, w in ref_plan) and [len(b) for b in ref] == [k for k, _ in ref_plan]
        per_rank = [batches(r, world) for r in range(world)]
        for b, plan, length in per_rank:
            assert length == ref_len == len(b) == len(plan)  # steps per epoch do not depend on the world size
        for step, full in enumerate(ref):
            union = []
            for b, plan, _ in per_rank:
                n_real, _ = plan[step]
                union += b[step][:n_real]  # padding (n_real == 0) excluded
                if n_real == 0:
                    assert len(b[step]) == 1 and plan[step][1] == 0.0
            assert union == full  # same samples, same order: the shards are contiguous slices
        # loss weight w = n_rank * K / m: mean over ranks of w * (mean loss of the shard) is
        # the mean loss over the m samples of the global batch (see the gradient test below)
        for step, full in enumerate(ref):
            for _, plan, _ in per_rank:
                n_real, w = plan[step]
                assert w == pytest.approx(n_real * world / len(full))


def test_one_process_order_matches_build_loader():
    ds = torch.utils.data.TensorDataset(torch.arange(23))
    for epoch in (0, 3):
        g = torch.Generator()
        old = build_loader(ds, 5, shuffle=True, generator=g)
        g.manual_seed(epoch_seed(7, epoch))
        ref = [b[0].tolist() for b in old]
        g2 = torch.Generator()
        s = ShardedBatchSampler(len(ds), 5, shuffle=True, seed=7, generator=g2)
        s.set_epoch(epoch)
        new = [b[0].tolist() for b in torch.utils.data.DataLoader(ds, batch_sampler=s, generator=g2)]
        assert new == ref
    with pytest.raises(ValueError, match="not divisible"):
        ShardedBatchSampler(10, 6, rank=0, world_size=4)


@pytest.mark.parametrize("n", [0, 1, 5, 25])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_eval_shards_cover_each_sample_once(n, world):
    shards = [list(shard_indices(n, r, world)) for r in range(world)]
    assert sum(shards, []) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("m,world", [(16, 2), (7, 2), (7, 4), (1, 2), (3, 4)])
def test_weighted_rank_losses_average_to_the_global_mean_gradient(m, world):
    """What DDP computes -- the mean over ranks of each rank's weighted loss gradient --
    equals the gradient of the mean loss over the global batch, also for uneven / padded shards."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    x, y = torch.randn(m, 4), torch.randint(0, 3, (m,))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    ref = torch.autograd.grad(loss_fn(lin(x), y), lin.weight)[0]
    order = list(range(m))
    total = torch.zeros_like(ref)
    for r in range(world):
        s = ShardedBatchSampler(m, 16 if m > 8 else 8 * world, rank=r, world_size=world, shuffle=False)
        (idx,), ((n_real, w),) = list(s), s.plan()
        assert (n_real == 0) == (w == 0.0)
        xs, ys = x[[order[i] for i in idx]], y[[order[i] for i in idx]]
        total += torch.autograd.grad(loss_fn(lin(xs), ys) * w, lin.weight)[0]
    torch.testing.assert_close(total / world, ref, atol=1e-6, rtol=1e-5)


def test_global_batch_must_divide_by_world_size(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="global batch size and must be divisible by the number of processes"):
        train(TrainConfig(batch_size=16, output=str(tmp_path / "x"), progress=False))


def test_cuda_device_per_local_rank(monkeypatch):
    from dartok.engine import select_device

    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert select_device(None) == torch.device("cuda", 2) == select_device("cuda")
    assert select_device("cuda:0") == torch.device("cuda", 0)  # explicit index wins
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="no GPU of its own"):  # 4 torchrun procs, 1 GPU
        select_device("cuda")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # not torchrun: a scheduler bound one GPU to this process
    assert select_device("cuda") == torch.device("cuda", 0)


# --------------------------------------------------------------------------------------
# real 2-process runs (gloo, CPU)
# --------------------------------------------------------------------------------------
def _cli_args(cfg: dict) -> list[str]:
    args = []
    for k, v in cfg.items():
        flag = "--" + k.replace("_", "-")
        if v is False:
            if k == "progress":
                args.append("--no-progress")
        elif v is True:
            args.append(flag)
        elif isinstance(v, dict):
            args += [flag, json.dumps(v)]
        elif v is not None:
            args += [flag, str(v)]
    return args


def torchrun_train(args: list[str], nproc: int = 2, timeout: float = 180) -> str:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N -m dartok.cli train ARGS``."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dartok.cli", "train", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"torchrun failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def _weights(run_dir, name="model.safetensors") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoint" / name))


def _comparable(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` without the entries whose true gradient is exactly zero.

    These are the key bias of attention ``qkv`` (softmax is invariant to adding ``q . b_k``
    to every logit) and the output bias of the v1 scorer head (the scores are standardized
    per sample, so a shift cancels). Their computed gradient is pure rounding noise
    (~1e-12), which Adam normalizes into steps of up to ~lr: their values (~1e-6..1e-5,
    started at 0) are noise in any run and change with the summation order, e.g. between
    1 and 2 processes. All other weights must match.
    """
    if name.endswith("attn.qkv.bias"):
        q, _, v = t.chunk(3)
        return torch.cat([q, v])
    if name.endswith("scorer.head.fc2.bias"):
        return t[:0]
    return t


def assert_same_weights(a: dict, b: dict, atol: float = ATOL) -> float:
    assert a.keys() == b.keys()
    worst = max((_comparable(k, x) - _comparable(k, b[k])).abs().max().item()
                for k, x in a.items() if x.is_floating_point() and _comparable(k, x).numel())
    assert worst <= atol, f"weights differ by up to {worst:.3g} (> {atol})"
    return worst


def _reference(tmp_path, base: dict, name: str):
    """1-process run of 2 epochs, keeping a copy of its run dir after epoch 1."""
    one = tmp_path / f"{name}_1proc"
    train(TrainConfig(**base, output=str(one), stop_after=1))
    shutil.copytree(one, tmp_path / f"{name}_1proc_epoch1")
    train(TrainConfig(**base, output=str(one), resume=True))
    return tmp_path / f"{name}_1proc_epoch1", one


# 23 samples, global batch 16 -> steps of 16 and 7 samples: shards 8+8, then 3+4 (uneven,
# loss-weighted); 25 test images -> unpadded eval shards of 12 + 13.
VIT_RUN = dict(
    model="vit_micro_patch8", num_tokens=16, canvas_size=48, train_samples=23, test_samples=25,
    data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2}, model_kwargs={"depth": 1},
    epochs=2, warmup_epochs=0, batch_size=16, lr=2e-3, clip_grad=1.0, model_ema=True, model_ema_decay=0.5,
    device="cpu", threads=1, progress=False,
)

# DART with dropout off; 17 samples -> steps of 16 and 1: the lone sample goes to rank 0,
# rank 1 gets a zero-weight padding sample. The scorer trunk is frozen: a trunk trained from
# scratch has BatchNorm in train mode, whose batch statistics are per process under DDP (as
# in timm without SyncBatchNorm), so K processes cannot equal one process exactly.
DART_RUN = dict(
    model="dart_vit_micro_patch8", num_tokens=9, canvas_size=48, train_samples=17, test_samples=9,
    data_kwargs={"object_scale": [0.3, 0.5], "num_clutter": 2},
    model_kwargs={"scorer_input_size": 32, "depth": 1, "drop_rate": 0.0, "drop_path_rate": 0.0,
                  "trainable_scorer_trunk": False},
    epochs=2, warmup_epochs=0, batch_size=16, lr=2e-3, device="cpu", threads=1, progress=False,
)


def test_two_processes_match_one_process_and_resume_with_one(tmp_path):
    """2 procs == 1 proc on the same global batch; a 2-proc run resumed by 1 proc == 1 proc throughout."""
    epoch1, one = _reference(tmp_path, VIT_RUN, "vit")
    two = tmp_path / "vit_2proc"
    out = torchrun_train(_cli_args({**VIT_RUN, "output": two, "stop_after": 1, "json": tmp_path / "s.json"}))
    assert "final test top-1" in out and out.count("final test top-1") == 1  # rank 0 reports
    assert_same_weights(_weights(two), _weights(epoch1))
    assert_same_weights(_weights(two, "model_ema.safetensors"), _weights(epoch1, "model_ema.safetensors"))
    assert not any(k.startswith("module.") for k in _weights(two))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["test"]["n"] == 25 and summary["world_size"] == 2  # every test image exactly once
    m2, m1 = read_metrics(two), read_metrics(epoch1)
    assert len(m2) == 1 and m2[0]["world_size"] == 2 and m2[0]["global_step"] == m1[0]["global_step"] == 2
    for key in ("train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "test_top1_ema", "lr"):
        assert m2[0][key] == pytest.approx(m1[0][key], abs=1e-4), key
    # resume the 2-process run with 1 process: same as the 1-process run all along
    res = train(TrainConfig(**VIT_RUN, output=str(two), resume=True))
    assert res["epoch"] == 2 and res["global_step"] == 4 and res["test"]["n"] == 25
    assert_same_weights(_weights(two), _weights(one))
    assert_same_weights(_weights(two, "model_ema.safetensors"), _weights(one, "model_ema.safetensors"))
    assert [r["world_size"] for r in read_metrics(two)] == [2, 1]


def test_dart_resume_with_two_processes(tmp_path):
    """A 1-process DART run resumed by 2 processes (padding-weighted last step) == 1 process throughout."""
    epoch1, one = _reference(tmp_path, DART_RUN, "dart")
    torchrun_train(["-o", str(epoch1), "--resume", "--no-progress"])  # options come from the checkpoint
    assert_same_weights(_weights(epoch1), _weights(one))
    rows = read_metrics(epoch1)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["world_size"] == 2
    assert rows[1]["test_top1"] == pytest.approx(read_metrics(one)[1]["test_top1"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_match_one_process(tmp_path):
    """Multi-node torchrun, simulated: two launches (``--nnodes 2 --node_rank 0/1``, one process
    each, static rendezvous on localhost). Both have LOCAL_RANK 0; only global rank 0 (node 0)
    reports and writes, and the weights equal the 1-process run on the same global batch."""
    epoch1, _ = _reference(tmp_path, VIT_RUN, "vit")
    run = tmp_path / "vit_2nodes"
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    port = _free_port()
    args = _cli_args({**VIT_RUN, "output": run, "stop_after": 1})
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node}",
                               "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
                               "-m", "dartok.cli", "train", *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in (0, 1)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, f"node failed ({p.returncode}):\n{out[-3000:]}\n{err[-3000:]}"
        outs.append(out)
    assert outs[0].count("final test top-1") == 1 and "final test top-1" not in outs[1]  # rank 0 only
    assert_same_weights(_weights(run), _weights(epoch1))
    rows = read_metrics(run)
    assert len(rows) == 1 and rows[0]["world_size"] == 2
