"""The benchmark presets build what they say: every run's model exists with its options applied."""
import pytest
import torch

from dartok import compare as cmp
from dartok.models import create_model

CPU_PRESETS = ("cpu", "cpu-36", "cpu-ablations", "cpu-vim", "cpu-video", "cpu-video-which", "cpu-seg")  # the harder-data ones: test_compare.py


@pytest.mark.parametrize("preset", sorted(cmp.PRESETS))
def test_preset_run_names_unique(preset):
    names = [s.name for s in cmp.PRESETS[preset]["specs"]]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_cpu_preset_models_build(preset):
    for spec in cmp.PRESETS[preset]["specs"]:
        model = create_model(spec.model, num_tokens=spec.num_tokens, **spec.model_kwargs)
        assert sum(p.numel() for p in model.parameters()) > 0, spec.name


def _options(model):
    """What each ablation can change, read back from the built model."""
    dart = model.patch_embed
    scorer = dart.scorer
    return {"scorer": scorer.trunk_name, "alpha": dart.alpha, "scorer_input_size": scorer.input_size,
            "learn_contrast": scorer.learn_contrast,
            "trainable_scorer_trunk": any(p.requires_grad for p in scorer.trunk.parameters())}


def test_ablations_change_one_option_each_from_the_reference():
    specs = cmp.PRESETS["cpu-ablations"]["specs"]
    refs = [s for s in specs if not s.model_kwargs]
    assert len(refs) == 1, "the ablation set needs exactly one reference run with the defaults"
    ref = _options(create_model(refs[0].model, num_tokens=refs[0].num_tokens))
    groups = {s.group for s in specs}
    assert {"scorer trunk", "alpha", "scorer input", "trunk frozen?"} <= groups  # what issue 3 asks for
    for spec in specs:
        if spec is refs[0]:
            continue
        if spec.is_oracle:  # not an ablation of the scorer: the bound beside them (issue 11)
            assert spec.model_kwargs == {"score_source": "oracle"} and spec.num_tokens == refs[0].num_tokens
            assert create_model(spec.model, num_tokens=spec.num_tokens, **spec.model_kwargs).patch_embed.scorer is None
            continue
        assert spec.model == refs[0].model and spec.num_tokens == refs[0].num_tokens
        got = _options(create_model(spec.model, num_tokens=spec.num_tokens, **spec.model_kwargs))
        changed = {k for k in ref if got[k] != ref[k]}
        assert changed == set(spec.model_kwargs), (spec.name, changed)


@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_cpu_presets_have_the_oracle_beside_learned_dart_on_data_with_boxes(preset):
    from dartok.data import dataset_info

    entry = cmp.PRESETS[preset]
    assert dataset_info(entry["train"].get("data", "cluttered_fmnist")).boxes
    oracles = [s for s in entry["specs"] if s.is_oracle]
    assert oracles, preset
    learned = {(s.model, s.num_tokens) for s in entry["specs"] if s.is_dart and not s.is_oracle}
    grids = {s.num_tokens for s in entry["specs"] if not s.is_dart}
    for o in oracles:
        assert (o.model, o.num_tokens) in learned  # same model and budget as a learned DART run
    if grids and not preset.startswith("cpu-video"):  # video: the grid's budget is per frame; ablations: no grid run
        assert {o.num_tokens for o in oracles} <= grids  # and a grid run at that budget


@pytest.mark.parametrize("preset", ["cpu", "cpu-36", "cpu-small", "cpu-clutter-36", "cpu-large", "cpu-large-36"])
def test_cpu_classification_presets_use_the_from_scratch_scorer(preset):
    """Issue 11's default: every DART run (the oracle's too, for its 16x16 cells) of the micro classification
    presets gets scratch_scorer() at the preset's canvas, the training pretrains it (SCRATCH_TRAIN); the
    grid runs are untouched."""
    from dartok.tools.compare import SCRATCH_TRAIN, scratch_scorer

    entry = cmp.PRESETS[preset]
    canvas = entry["train"]["canvas_size"]
    assert {k: entry["train"][k] for k in SCRATCH_TRAIN} == SCRATCH_TRAIN
    for spec in entry["specs"]:
        if spec.is_dart:
            assert spec.model_kwargs["scorer"] == scratch_scorer(canvas), spec.name
        else:
            assert spec.model_kwargs == {}, spec.name
    dart = next(s for s in entry["specs"] if s.is_dart and not s.is_oracle)
    model = create_model(dart.model, num_tokens=dart.num_tokens, img_size=canvas, in_chans=1, num_classes=10,
                         **dart.model_kwargs)
    assert model.patch_embed.scorer.grid_size == (canvas // 8, canvas // 8)
    # the specs do not share one dict: a run that edits its kwargs leaves the others alone
    darts = [s for s in entry["specs"] if s.is_dart]
    assert len({id(s.model_kwargs["scorer"]) for s in darts}) == len(darts)


def test_full_presets_have_no_oracle():  # ImageFolder / SSv2 data has no object boxes
    for name in ("full", "full-vim", "full-video"):
        assert not any(s.is_oracle for s in cmp.PRESETS[name]["specs"])


# ------------------------------------------------------------------ runs are TrainConfigs, built from fields


@pytest.mark.parametrize("preset", sorted(cmp.PRESETS))
def test_presets_build_train_configs(preset, tmp_path):
    from dartok.engine import TrainConfig
    from dartok.tools.compare import train_config

    entry = cmp.PRESETS[preset]
    for spec in entry["specs"]:
        cfg = train_config(spec, entry["train"], tmp_path / spec.name, threads=1)
        assert isinstance(cfg, TrainConfig)
        assert (cfg.model, cfg.num_tokens, cfg.model_kwargs) == (spec.model, spec.num_tokens, spec.model_kwargs)
        assert cfg.output == str(tmp_path / spec.name) and cfg.threads == 1 and cfg.progress is False
        for key, value in entry["train"].items():
            assert getattr(cfg, key) == value, key


def test_train_config_rejects_unknown_and_reserved_keys(tmp_path):
    from dartok.tools.compare import train_config

    spec = cmp.RunSpec("grid@4", "vit_micro_patch8", 4)
    with pytest.raises(ValueError, match=r"run 'grid@4': unknown training options \['epoch'\]"):
        train_config(spec, {"epoch": 3}, tmp_path)  # a typo of 'epochs' is not dropped silently
    with pytest.raises(ValueError, match="'model'"):
        train_config(spec, {"model": "x"}, tmp_path)  # the spec says which model
    with pytest.raises(ValueError, match="epochs"):
        train_config(spec, {"epochs": 0}, tmp_path)  # TrainConfig.validate
    # run_specs builds every config before anything trains: nothing is written
    with pytest.raises(ValueError, match="unknown training option"):
        cmp.run_specs([spec], tmp_path / "runs", {"epochs": 1, "bogus": 1}, jobs=1)
    assert not (tmp_path / "runs").exists()


def test_demo_is_a_preset():
    from dartok.tools.compare import DEMO_DEFAULTS, demo_preset, scratch_scorer

    preset = demo_preset(9, {"alpha": 0.2}, epochs=2)
    assert [(s.name, s.model, s.num_tokens) for s in preset["specs"]] == [
        ("grid", "vit_micro_patch8", 9), ("dart", "dart_vit_micro_patch8", 9), ("oracle", "dart_vit_micro_patch8", 9)]
    scorer = scratch_scorer(DEMO_DEFAULTS["canvas_size"])
    assert scorer["stage"] == 2 and scorer["activation"] == "softmax" and scorer["cam_classes"] == 10
    assert scorer["pdf_blur"] == 3 and scorer["align_cells"] is True
    assert preset["specs"][1].model_kwargs == {"scorer": scorer, "alpha": 0.2} and not preset["specs"][0].model_kwargs
    # the oracle cuts the learned scorer's grid (16x16 here), with the true box as its score map
    assert preset["specs"][2].model_kwargs == {"scorer": scorer, "alpha": 0.2, "score_source": "oracle"}
    assert preset["train"]["epochs"] == 2 and preset["train"]["canvas_size"] == DEMO_DEFAULTS["canvas_size"]
    assert preset["train"]["scorer_pretrain_epochs"] == 8 and preset["train"]["scorer_pretrain_lr"] == 3e-3
    # the scorer follows the canvas; the paper's scorer on request
    assert demo_preset(9, canvas_size=64)["specs"][1].model_kwargs["scorer"]["input_size"] == 64
    assert demo_preset(9, {"scorer": "mobilenetv3_small"})["specs"][1].model_kwargs == {"scorer": "mobilenetv3_small"}
    with pytest.raises(ValueError, match="square"):
        demo_preset(10)


def test_which_moves_preset_starts_every_video_row_from_its_image_run(tmp_path):
    """cpu-video-which: grid on every frame, DART at half the grid's tokens, the oracle at DART's budget,
    on which_moves; its image run builds, and its weights inflate into every row's model."""
    from dartok.models.videomamba import load_image_weights
    from dartok.tools.compare import SCRATCH_TRAIN, train_config

    entry = cmp.PRESETS["cpu-video-which"]
    assert entry["train"]["data_kwargs"]["task"] == "which_moves"
    grid, dart, oracle = entry["specs"]
    assert not grid.is_dart and dart.is_dart and oracle.is_oracle
    assert "motion_prior" not in oracle.model_kwargs and oracle.model_kwargs["scorer"] == dart.model_kwargs["scorer"]
    assert dart.num_tokens == oracle.num_tokens == grid.num_tokens * entry["train"]["data_kwargs"]["num_frames"] // 2
    image = entry["image"]
    cfg = train_config(image["spec"], image["train"], tmp_path / "image")
    assert cfg.data == "cluttered_fmnist" and cfg.canvas_size == entry["train"]["canvas_size"]
    img = create_model(cfg.model, num_tokens=cfg.num_tokens, in_chans=1, num_classes=10, **cfg.model_kwargs)
    assert cfg.scorer_pretrain_epochs == SCRATCH_TRAIN["scorer_pretrain_epochs"]  # the from-scratch recipe
    assert img.patch_embed.scorer.cam is not None and img.patch_embed.scorer.activation == "softmax"
    for spec in entry["specs"]:
        video = create_model(spec.model, num_tokens=spec.num_tokens, **spec.model_kwargs)
        report = load_image_weights(video, img)
        assert [k.rsplit(".", 1)[-1] for k in report.missing] == ["temporal_pos_embedding"], spec.name
        if spec.is_dart and not spec.is_oracle:  # the image run's trunk, frozen, on an 8x8 map a frame
            assert video.patch_embed.motion_prior == 1.0  # the tokens cut the motion map (docs/method.md §6)
            scorer = video.patch_embed.scorer
            assert scorer.cam is None and scorer.activation == "softmax" and scorer.grid_size == (8, 8)
            assert not any(p.requires_grad for p in scorer.trunk.parameters())
            for k, v in scorer.trunk.state_dict().items():
                assert torch.equal(v, img.patch_embed.scorer.trunk.state_dict()[k]), k


def test_segmentation_preset_builds_segmenters_at_equal_tokens(tmp_path):
    """cpu-seg: grid, DART and oracle at each budget, all segmentation models."""
    from dartok.tools.compare import train_config

    entry = cmp.PRESETS["cpu-seg"]
    assert entry["train"]["task"] == "segmentation" and entry["train"]["label_smoothing"] == 0.0
    budgets = sorted({s.num_tokens for s in entry["specs"]})
    assert budgets == [16, 36]
    for n in budgets:
        group = [s for s in entry["specs"] if s.num_tokens == n]
        assert sorted((s.is_dart, s.is_oracle) for s in group) == [(False, False), (True, False), (True, True)]
    for spec in entry["specs"]:
        if spec.is_dart:  # the scorer cut at stride 8: an 8x8 score map on the 64 px canvas
            assert spec.model_kwargs["scorer_stage"] == 2 and spec.model_kwargs["scorer_input_size"] == 64
        cfg = train_config(spec, entry["train"], tmp_path / spec.name)
        model = create_model(spec.model, num_tokens=spec.num_tokens, task=cfg.task, num_classes=11, in_chans=1,
                             output_size=(8, 8), **spec.model_kwargs)
        x = torch.rand(1, *model.pretrained_cfg["input_size"])
        if spec.is_dart:
            assert model.patch_embed.score_grid() == (8, 8)
        if spec.is_oracle:
            with model.patch_embed.given_pdf(torch.ones(1, *model.patch_embed.score_grid())):
                assert model(x).shape == (1, 11, 8, 8)
        else:
            assert model(x).shape == (1, 11, 8, 8)


def test_warp_preset_gives_the_cnn_and_the_warp_the_same_pixels():
    """cpu-warp: the plain CNN on the canvas resized to S px, the same CNN behind the warp of the full
    canvas to S px (learned scorer, and the oracle); cpu-partition: bands vs grid, nothing else differs."""
    from dartok.models import DartWarp
    from dartok.train.run import _wants_boxes
    from dartok.data import dataset_info

    cnn, uniform, warp, oracle = cmp.PRESETS["cpu-warp"]["specs"]
    plain = create_model(cnn.model, num_tokens=cnn.num_tokens, in_chans=1, **cnn.model_kwargs)
    side = plain.pretrained_cfg["input_size"][-1]
    for spec in (uniform, warp, oracle):
        model = create_model(spec.model, num_tokens=spec.num_tokens, in_chans=1, img_size=128, **spec.model_kwargs)
        assert (model.patch_embed.scorer is None) == (spec is not warp)
        assert isinstance(model, DartWarp) and type(model.backbone) is type(plain)
        assert model.patch_embed.out_size == (side, side) and spec.model == f"dart_warp_{cnn.model}"
        assert sum(p.numel() for p in model.backbone.parameters()) == sum(p.numel() for p in plain.parameters())
    assert not cnn.is_dart and warp.is_dart and oracle.is_oracle and oracle.num_tokens == warp.num_tokens
    assert _wants_boxes(oracle.model, oracle.model_kwargs, dataset_info("cluttered_fmnist")) == (True, True)
    # the learned row has the from-scratch scorer (pretrained, then frozen); the oracle cuts the same 16x16 cells
    from dartok.tools.compare import SCRATCH_TRAIN, scratch_scorer

    assert warp.model_kwargs["scorer"] == scratch_scorer(128) and oracle.model_kwargs["scorer"] == scratch_scorer(128)
    assert {k: v for k, v in cmp.PRESETS["cpu-warp"]["train"].items() if k.startswith("scorer_")} == SCRATCH_TRAIN
    assert not any(k.startswith("scorer_") for k in cmp.PRESETS["cpu-partition"]["train"])
    specs = cmp.PRESETS["cpu-partition"]["specs"]
    for a, b in ((specs[0], specs[1]), (specs[2], specs[3])):
        assert (a.model, a.num_tokens) == (b.model, b.num_tokens)
        assert {**a.model_kwargs, "partition": "grid"} == b.model_kwargs
        model = create_model(b.model, num_tokens=b.num_tokens, **b.model_kwargs)
        assert model.patch_embed.partition_mode == "grid"
