"""Video DART: stacked-frame partition with one shared budget (paper §3.3, §4.4; issue 4)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dartok  # noqa: F401  (torchvision shim before timm)
from dartok.partition import band_layout
from dartok.scorer import Scorer, edge_pdf
from dartok.video import (
    VideoDART,
    frame_boxes,
    frame_token_counts,
    stack_frames,
    temporal_difference,
    token_frames,
    unstack_frames,
    video_bands,
)
from dartok.video_tokenizer import motion_pdf

T, G, P = 4, 4, 8  # frames, spatial pos grid, patch size → 32×32 frames


def tiny(num_tokens=T * G * G, scorer=None, **kw):
    args = dict(num_tokens=num_tokens, num_frames=T, patch_size=P, in_chans=1, embed_dim=8, pos_grid=G,
                img_size=G * P, scorer=scorer)
    args.update(kw)
    return VideoDART(**args)


def gated_scorer(input_size=64):
    """A real v2 scorer whose channel gate is fixed to 1 (fc2 = 0 weights, bias 1), by construction."""
    sc = Scorer(trunk="mobilenetv3_small", head="v2", input_size=input_size, in_chans=1, learn_contrast=False)
    with torch.no_grad():
        sc.head.fc2.weight.zero_()
        sc.head.fc2.bias.fill_(1.0)
    return sc


def frame_mass(pdf, num_frames=T):
    return pdf.reshape(pdf.shape[0], num_frames, -1).sum(-1)


def test_stack_unstack_and_bands():
    v = torch.arange(2 * 1 * T * 3 * 5, dtype=torch.float32).view(2, 1, T, 3, 5)
    tall = stack_frames(v)
    assert tall.shape == (2, 1, T * 3, 5)
    assert torch.equal(tall[:, :, 3:6], v[:, :, 1])  # frame 1 right under frame 0
    assert torch.equal(unstack_frames(tall, T), v)
    assert video_bands(T * G * G, T) == T * G  # N = T·g² → the per-frame g×g grid
    assert video_bands(196 * 4, 8) == 8 * 10  # ≈ square boxes on the 8:1 tall image
    assert video_bands(3, 8) == 3  # never more bands than tokens
    with pytest.raises(ValueError, match="num_frames"):
        video_bands(10, 0)
    with pytest.raises(ValueError, match="divid"):
        unstack_frames(torch.zeros(1, 1, 7, 4), 2)


@pytest.mark.parametrize("bands", [None, T * G])
def test_uniform_pdf_gives_per_frame_vit_grid_exactly(bands):
    torch.manual_seed(0)
    m = tiny(bands=bands).double()
    with torch.no_grad():
        m.temporal_pos_embedding.normal_()
    x = torch.randn(2, 1, T, G * P, G * P, dtype=torch.float64)
    out = m(x)
    # reference: the ViT patch embed on every frame, frame-major token order
    frames = x.transpose(1, 2).reshape(2 * T, 1, G * P, G * P)
    ref = F.conv2d(frames, m.proj.weight, m.proj.bias, stride=P).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out.tokens, ref.reshape(2, T * G * G, -1), atol=1e-12, rtol=0)
    ref_pos = (m.pos_embed.view(1, 1, G * G, -1) + m.temporal_pos_embedding.view(1, T, 1, -1)).reshape(1, T * G * G, -1)
    torch.testing.assert_close(out.pos_embed, ref_pos.expand(2, -1, -1), atol=1e-12, rtol=0)
    assert torch.equal(m.frame_token_counts(out.boxes), torch.full((2, T), G * G))
    assert torch.equal(m.token_frames(out.boxes)[0], torch.arange(T).repeat_interleave(G * G))
    assert out.pdf.shape == (2, T * G, G)


def test_static_clip_shares_budget_equally():
    torch.manual_seed(1)
    frame = torch.rand(1, 1, 1, 64, 64)
    static = frame.expand(2, 1, T, 64, 64).contiguous()
    for n in (64, 30):  # T | N, and T ∤ N
        m = tiny(num_tokens=n, scorer=gated_scorer(), img_size=64)
        out = m(static)
        blocks = out.pdf.view(2, T, -1)
        torch.testing.assert_close(blocks, blocks[:, :1].expand_as(blocks), atol=1e-6, rtol=0)  # same pdf per frame
        counts = m.frame_token_counts(out.boxes)
        assert bool((counts.sum(1) == n).all())
        if n % T == 0:  # band boundaries on frame boundaries: exactly N/T each, no box straddles two frames
            assert bool((counts == n // T).all())
            _, share = frame_boxes(out.boxes, T)
            assert bool(((share < 1e-4) | (share > 1 - 1e-4)).all())
        else:  # fractional shares N/T: one band straddles each frame boundary
            assert set(counts.flatten().tolist()) <= {n // T, n // T + 1}
    # bands not a multiple of T: straddling bands go to the frame of their centre; counts stay within one band
    m = tiny(num_tokens=64, scorer=gated_scorer(), img_size=64, bands=10)
    counts = m.frame_token_counts(m(static).boxes)
    assert int(counts.sum(1).unique()) == 64
    assert int((counts - 64 // T).abs().max()) <= max(band_layout(64, 10))


def test_frame_with_more_content_gets_more_tokens():
    x = torch.zeros(1, 1, T, 32, 32)
    x[:, :, 2, 8:24, 8:24] = torch.rand(16, 16)  # only frame 2 has content
    pdf = edge_pdf(stack_frames(x), size=(T * G, G))
    m = tiny(num_tokens=48)
    out = m(x, pdf=pdf)
    counts = m.frame_token_counts(out.boxes)[0]
    assert int(counts.argmax()) == 2
    assert int(counts[2]) > 48 // T and int(counts.sum()) == 48
    assert float(frame_mass(out.pdf)[0, 2]) > 0.5


def test_frame_difference_raises_the_moving_frame():
    x = torch.zeros(1, 1, T, 64, 64)
    x[..., 10:30, 10:30] = 1.0
    x[:, :, 2] = 0.0
    x[:, :, 2, 30:50, 34:54] = 1.0  # the object jumps in frame 2 only
    torch.manual_seed(0)
    sc = gated_scorer()
    mass = {}
    for mode in ("abs", "none"):
        m = tiny(num_tokens=64, scorer=sc, img_size=64, temporal_diff=mode)
        out = m(x)
        mass[mode] = frame_mass(out.pdf.detach())[0]
        counts = m.frame_token_counts(out.boxes)[0]
        if mode == "abs":
            assert int(counts[2]) > 64 // T > int(counts[0])
            frames_of_tokens = m.token_frames(out.boxes)[0]
            assert bool((frames_of_tokens.diff() >= 0).all())  # band-major = frame-major token order
    # static frames 0 and 1 are identical either way; the difference term moves mass to the changing frames
    assert abs(float(mass["abs"][0] - mass["abs"][1])) < 1e-6
    assert float(mass["abs"][2]) > float(mass["none"][2]) + 0.05
    assert float(mass["abs"][2]) > 2 * float(mass["abs"][0])


def test_temporal_difference_definition():
    f = torch.randn(2, 3, 4, 2, 2)
    d = temporal_difference(f, "signed")
    torch.testing.assert_close(d[:, 1:], f[:, 1:] - f[:, :-1])
    torch.testing.assert_close(d[:, 0], f[:, 0] - f[:, 1])  # first frame: difference to its neighbour
    torch.testing.assert_close(temporal_difference(f, "abs"), d.abs())
    assert temporal_difference(f, "none") is None
    assert torch.equal(temporal_difference(f[:, :1], "abs"), torch.zeros_like(f[:, :1]))
    with pytest.raises(ValueError, match="temporal_diff"):
        temporal_difference(f, "l2")
    with pytest.raises(ValueError, match="B×T×C×h×w"):
        temporal_difference(f[0], "abs")


def test_tall_position_map_area_average():
    torch.manual_seed(2)
    m = tiny().double()
    with torch.no_grad():
        m.temporal_pos_embedding.normal_()
    tall = m.pos_map()
    assert tall.shape == (1, T * G, G, 8)
    torch.testing.assert_close(tall[0, G + 1, 2], m.pos_embed[0, 1 * G + 2] + m.temporal_pos_embedding[0, 1])
    # a box straddling frames 0 and 1: exactly the area mixture of the two frames' cells
    box = torch.tensor([[[0.0, (G - 1) / (T * G), 1.0 / G, (G + 1) / (T * G)]]], dtype=torch.float64)
    got = m.position_embeddings(box)[0, 0]
    want = 0.5 * (tall[0, G - 1, 0] + tall[0, G, 0])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # the average over the whole frame 1 is the mean spatial embedding + frame 1's temporal embedding
    box = torch.tensor([[[0.0, 1.0 / T, 1.0, 2.0 / T]]], dtype=torch.float64)
    want = m.pos_embed[0].mean(0) + m.temporal_pos_embedding[0, 1]
    torch.testing.assert_close(m.position_embeddings(box)[0, 0], want, atol=1e-12, rtol=0)
    assert tiny(pos_grid=0).position_embeddings(box.float()).abs().sum() == 0


def test_motion_pdf_definition_and_edge_cases():
    """motion_pdf: per-cell mean |x_t − x_{t−1}| (frame 0: |x_0 − x_1|), stacked, normalised over the clip."""
    torch.manual_seed(5)
    x = torch.rand(2, 3, T, 16, 24, dtype=torch.float64)
    p = motion_pdf(x, (4, 6))
    assert p.shape == (2, T * 4, 6) and p.dtype == torch.float64
    d = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(1)
    d = torch.cat([d[:, :1], d], 1)
    ref = F.avg_pool2d(d, 4).reshape(2, -1)  # 4×4 px cells: the exact cell means
    torch.testing.assert_close(p.reshape(2, -1), ref / ref.sum(1, keepdim=True))
    # one square moving right by one cell a frame: the mass sits on the cells it leaves and enters
    v = torch.zeros(1, 1, 3, 16, 16)
    for t in range(3):
        v[0, 0, t, 0:4, 4 * t:4 * t + 4] = 1.0
    m = motion_pdf(v, (4, 4)).reshape(3, 4, 4)
    assert (m > 0).nonzero().tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [2, 0, 1], [2, 0, 2]]
    torch.testing.assert_close(m.sum(), torch.tensor(1.0))
    # nothing moves, or one frame: uniform
    static = torch.rand(1, 1, 1, 16, 16).expand(1, 1, T, 16, 16)
    torch.testing.assert_close(motion_pdf(static, (4, 4)), torch.full((1, T * 4, 4), 1 / (T * 16)))
    torch.testing.assert_close(motion_pdf(v[:, :, :1], (4, 4)), torch.full((1, 4, 4), 1 / 16))
    with pytest.raises(ValueError, match="B×C×T×H×W"):
        motion_pdf(v[:, :, 0], (4, 4))
    with pytest.raises(ValueError, match="size"):
        motion_pdf(v, (0, 4))
    with pytest.raises(ValueError, match="size"):
        motion_pdf(v, (32, 4))


def test_motion_prior_mixes_the_motion_map_and_keeps_the_scorer_learning():
    """VideoDART(motion_prior=β): pdf = (1 − β)·scorer pdf + β·motion_pdf, before alpha; β = 0 is the paper's."""
    torch.manual_seed(6)
    scorer = dict(trunk="mobilenetv3_small", head="v2", input_size=32, trainable_trunk=False)
    x = torch.zeros(2, 1, T, 32, 32)
    for t in range(T):  # an item moving right on a static textured background
        x[:, :, t] = 0.2 * torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
        x[:, :, t, 8:16, 4 * t:4 * t + 8] = 1.0
    base = tiny(num_tokens=24, scorer=scorer, img_size=32, alpha=0.0)
    mixed = tiny(num_tokens=24, scorer=scorer, img_size=32, alpha=0.0, motion_prior=0.5)
    mixed.load_state_dict(base.state_dict())
    motion = motion_pdf(x, tuple(base.scorer.grid_size))
    with torch.no_grad():
        p0, p1 = base(x).pdf, mixed(x).pdf
    torch.testing.assert_close(p1, 0.5 * p0 + 0.5 * motion)
    moving = motion > 0
    assert float((p1 * moving).sum()) > float((p0 * moving).sum()) + 0.2  # the tokens' mass moves onto the item
    out = mixed(x)
    out.tokens.pow(2).sum().backward()
    assert sum(float(q.grad.abs().sum()) for q in mixed.scorer.head.parameters()) > 0  # the scorer still learns
    assert "motion_prior=0.5" in repr(mixed)
    for bad in (-0.1, 1.5, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="motion_prior"):
            tiny(motion_prior=bad)


def test_motion_score_source_is_motion_prior_one_without_the_scorer():
    """score_source="motion": no scorer, pdf = motion_pdf on the scorer's would-be grid; the same
    boxes and tokens as motion_prior=1 with a scorer (whose share is 0), for fewer MACs."""
    from dartok.models import create_model
    from dartok.tools.flops import count_macs

    torch.manual_seed(7)
    kw = dict(num_tokens=32, img_size=64, num_frames=T, scorer={"trunk": "mobilenetv3_small", "input_size": 64,
                                                                "stage": 2, "head": "v2", "trainable_trunk": False})
    with_scorer = create_model("dart_videomamba_micro_patch8", motion_prior=1.0, **kw).eval()
    motion = create_model("dart_videomamba_micro_patch8", score_source="motion", **kw).eval()
    assert motion.patch_embed.scorer is None and motion.patch_embed.score_grid() == (8, 8)
    assert tuple(with_scorer.patch_embed.scorer.grid_size) == (8, 8)
    state = {k: v for k, v in with_scorer.state_dict().items() if not k.startswith("patch_embed.scorer.")}
    assert motion.load_state_dict(state, strict=True) is not None  # every other weight is shared
    x = torch.zeros(2, 1, T, 64, 64)
    for t in range(T):  # an item moving right over static clutter
        x[:, :, t] = 0.3 * (torch.rand(64, 64, generator=torch.Generator().manual_seed(1)) > 0.9)
        x[:, :, t, 20:36, 6 * t:6 * t + 16] = 1.0
    with torch.no_grad():
        a, b = with_scorer.patch_embed(x), motion.patch_embed(x)
        torch.testing.assert_close(b.pdf, a.pdf, rtol=0, atol=0)
        torch.testing.assert_close(b.boxes, a.boxes, rtol=0, atol=0)
        torch.testing.assert_close(motion(x), with_scorer(x), rtol=0, atol=0)
    expected = motion_pdf(x, (8, 8))
    pe = motion.patch_embed
    torch.testing.assert_close(pe.score(x), expected)
    assert "score_source=motion" in repr(pe)
    shape = (1, T, 64, 64)
    assert count_macs(motion, shape).total < count_macs(with_scorer, shape).total
    with pytest.raises(ValueError, match="leave motion_prior at 0"):
        create_model("dart_videomamba_micro_patch8", score_source="motion", motion_prior=0.5, **kw)
    with pytest.raises(ValueError, match="pass scorer=None"):
        tiny(score_source="motion", scorer=dict(trunk="mobilenetv3_small", input_size=32))
    with pytest.raises(ValueError, match="needs a clip: VideoDART"):
        create_model("dart_vit_micro_patch8", score_source="motion")


def test_gradients_reach_scorer_head_and_embeddings_not_trunk():
    torch.manual_seed(3)
    m = tiny(num_tokens=24, scorer=dict(trunk="mobilenetv3_small", head="v2", input_size=32, trainable_trunk=False), img_size=32)
    x = torch.rand(2, 1, T, 32, 32)
    out = m(x)
    (out.tokens.pow(2).sum() + (out.tokens * out.pos_embed).sum()).backward()
    head = [p.grad for p in m.scorer.head.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in head)
    assert sum(float(g.abs().sum()) for g in head) > 0
    assert all(p.grad is None for p in m.scorer.trunk.parameters())
    assert m.temporal_pos_embedding.grad is not None and float(m.temporal_pos_embedding.grad.abs().sum()) > 0
    assert m.proj.weight.grad is not None


def test_pdf_is_per_clip_and_pdf_override_layouts():
    torch.manual_seed(4)
    m = tiny(num_tokens=24, scorer=dict(trunk="mobilenetv3_small", head="v2", input_size=32), img_size=32).eval()
    x = torch.rand(3, 1, T, 32, 32)
    with torch.no_grad():
        full, one = m(x), m(x[1:2])
    torch.testing.assert_close(full.pdf[1:2], one.pdf, atol=1e-6, rtol=0)  # batch-independent
    torch.testing.assert_close(full.pdf.sum((1, 2)), torch.ones(3))
    p = torch.rand(3, T, 5, 6)
    a, b = m(x, pdf=p), m(x, pdf=p.reshape(3, T * 5, 6))
    assert torch.equal(a.boxes, b.boxes)


def test_frame_helpers_on_hand_boxes():
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.2], [0.5, 0.2, 1.0, 0.3], [0.0, 0.5, 1.0, 1.0]]])  # T=4: 0.25 per frame
    assert token_frames(boxes, 4).tolist() == [[0, 1, 3]]  # centre y = 0.25 is frame 1's first row
    assert frame_token_counts(boxes, 4).tolist() == [[1, 1, 0, 1]]
    clipped, share = frame_boxes(boxes, 4)
    assert clipped.shape == (1, 3, 4, 4)
    torch.testing.assert_close(share[0, 1], torch.tensor([0.5, 0.5, 0.0, 0.0]))  # straddles frames 0 and 1
    torch.testing.assert_close(clipped[0, 1, 0], torch.tensor([0.5, 0.8, 1.0, 1.0]))
    torch.testing.assert_close(clipped[0, 1, 1], torch.tensor([0.5, 0.0, 1.0, 0.2]))
    torch.testing.assert_close(share[0, 2], torch.tensor([0.0, 0.0, 0.5, 0.5]))
    torch.testing.assert_close(share.sum(-1), torch.ones(1, 3))
    with pytest.raises(ValueError, match="B×N×4"):
        frame_token_counts(boxes[0], 4)


def test_bad_inputs_raise_clear_errors():
    m = tiny()
    x = torch.rand(1, 1, T, 32, 32)
    with pytest.raises(ValueError, match="B×C×T×H×W"):
        m(x[:, :, 0])
    with pytest.raises(ValueError, match="frames.*num_frames=4"):
        m(x[:, :, :3])
    with pytest.raises(ValueError, match="channels.*in_chans=1"):
        m(x.expand(1, 3, T, 32, 32))
    bad = x.clone()
    bad[0, 0, 2, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m(bad)
    with pytest.raises(ValueError, match="pdf"):
        m(x, pdf=torch.rand(2, 8, 4))
    with pytest.raises(ValueError, match="T = num_frames"):
        m(x, pdf=torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="num_frames"):
        tiny(num_frames=0)
    with pytest.raises(ValueError, match="temporal_diff"):
        tiny(temporal_diff="sum")
    with pytest.raises(ValueError, match="Scorer"):
        tiny(scorer=torch.nn.Identity())
    with pytest.raises(ValueError, match="num_tokens"):
        tiny(num_tokens=0)


def test_video_partition_figure(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from dartok.viz import plot_video_partition, save_video_partition_figure

    m = tiny(num_tokens=24)
    x = torch.rand(2, 1, T, 32, 32)
    out = m(x, pdf=torch.rand(2, T * 3, 3))
    path = save_video_partition_figure(tmp_path / "sub" / "clip.png", x, out.boxes, out.pdf, titles=["a", "b"])
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    save_video_partition_figure(tmp_path / "one.png", x[0], out.boxes[0])  # a single clip
    # a box straddling frames 0 and 1 is drawn, clipped, in both; the titles carry the counts
    boxes = torch.tensor([[0.0, 0.0, 1.0, 0.2], [0.0, 0.2, 1.0, 0.3], [0.0, 0.3, 1.0, 1.0]])
    fig, axes = plt.subplots(1, T)
    plot_video_partition(axes, x[0], boxes, show_centers=True)
    rects = [sum(isinstance(p, Rectangle) for p in ax.patches) for ax in axes]
    assert rects == [2, 2, 1, 1]
    assert [ax.get_title() for ax in axes] == ["t=0: 1 tok", "t=1: 1 tok", "t=2: 1 tok", "t=3: 0 tok"]
    with pytest.raises(ValueError, match="one axes per frame"):
        plot_video_partition(axes[:2], x[0], boxes)
    plt.close(fig)
    with pytest.raises(ValueError, match="boxes"):
        save_video_partition_figure(tmp_path / "x.png", x, out.boxes[:1])
    assert np.isfinite(out.pdf.detach().numpy()).all()


# --------------------------------------------------------------------------- DART VideoMamba


def tiny_videomamba(**kw):
    from dartok.videomamba import VideoMamba

    args = dict(img_size=16, patch_size=4, depth=2, embed_dim=16, in_chans=1, num_classes=3, num_frames=T,
                drop_path_rate=0.0)
    args.update(kw)
    return VideoMamba(**args)


@pytest.mark.parametrize("bands", [None, T * 4])
def test_dart_videomamba_uniform_equals_plain_videomamba_exactly(bands):
    from dartok.video import DartVideoMamba, patch_videomamba

    torch.manual_seed(5)
    vm = tiny_videomamba().double().eval()
    with torch.no_grad():
        vm.temporal_pos_embedding.normal_()  # float64 values: a float32 round trip would show
    x = torch.randn(2, 1, T, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        ref_tokens, ref = vm.embed(x), vm(x)
    model = patch_videomamba(vm, num_tokens=T * 16, scorer=None, bands=bands).eval()
    assert isinstance(model, DartVideoMamba) and model.patch_embed.bands == T * 4
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), ref_tokens, atol=1e-12, rtol=0)
        torch.testing.assert_close(model(x), ref, atol=1e-12, rtol=0)


def test_patch_videomamba_moves_weights_and_checks_models():
    from dartok.video import patch_videomamba

    vm = tiny_videomamba()
    conv = vm.patch_embed.proj.weight.clone()
    temporal = vm.temporal_pos_embedding.detach().clone() + 1.0
    with torch.no_grad():
        vm.temporal_pos_embedding.add_(1.0)
    cls_pos, grid = vm.pos_embed[:, :1].detach().clone(), vm.pos_embed[:, 1:].detach().clone()
    model = patch_videomamba(vm, scorer=dict(trunk="mobilenetv3_small", head="v2", input_size=32))
    pe = model.patch_embed
    assert pe.num_tokens == 16 * T // 2  # T/2 frames' worth by default
    assert torch.equal(pe.proj.weight, conv.squeeze(2))
    assert torch.equal(pe.temporal_pos_embedding, temporal) and torch.equal(pe.pos_embed, grid)
    assert torch.equal(model.pos_embed, cls_pos)
    names = {n for n, _ in model.named_parameters()}
    assert "temporal_pos_embedding" not in names  # moved, not duplicated (DDP would see an unused parameter)
    assert model.no_weight_decay() <= names
    assert model.pretrained_cfg["input_size"] == (1, 16, 16) and model.num_frames == T
    out = model(torch.rand(2, 1, T, 24, 24))  # any frame size
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="already"):
        patch_videomamba(model)
    with pytest.raises(TypeError, match="VideoMamba"):
        patch_videomamba(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="tubelet"):
        patch_videomamba(tiny_videomamba(kernel_size=2))
    with pytest.raises(ValueError, match="frames"):
        model(torch.rand(2, 1, T + 1, 16, 16))


def test_registered_dart_videomamba_models_train():
    import timm

    model = timm.create_model("dart_videomamba_micro_patch8", num_classes=4, num_tokens=13)
    pe = model.patch_embed
    assert pe.num_tokens == 13 and pe.scorer.head_type == "v2" and pe.scorer.input_size == 128
    assert model.pretrained_cfg["input_size"] == (1, 128, 128) and pe.in_chans == 1
    x = torch.rand(2, 1, model.num_frames, 128, 128)
    model(x).logsumexp(-1).sum().backward()
    assert pe.scorer.head.fc1.weight.grad is not None and float(pe.scorer.head.fc1.weight.grad.abs().sum()) > 0
    # no pretrained weights here: the trunk trains from scratch (SPEC §3)
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in pe.scorer.trunk.parameters())
    assert timm.create_model("dart_videomamba_micro_patch8").patch_embed.num_tokens == 36 * 4 // 2
    tiny_model = timm.create_model("dart_videomamba_tiny_patch16_224", depth=1)
    assert tiny_model.patch_embed.num_tokens == 196 * 4 and tiny_model.num_frames == 8
    assert tiny_model.patch_embed.bands == 8 * 10 and tiny_model.patch_embed.scorer.grid_size == (14, 14)
