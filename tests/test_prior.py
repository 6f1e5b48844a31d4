"""DART's annealed training-free prior (issue 11 item 3, docs/method.md §10)."""
from __future__ import annotations

import dartok  # noqa: F401  (before timm: torchvision shim)
import pytest
import torch

from dartok.localization import object_mass
from dartok.models import create_model
from dartok.partition import mix_uniform
from dartok.scorer import PRIORS, saliency_pdf
from dartok.train.config import TrainConfig
from dartok.train.loop import prior_weight


def test_saliency_puts_the_mass_on_what_stands_out_from_the_dominant_colour():
    images = torch.zeros(3, 3, 64, 64)
    images[:, :, 16:32, 32:48] = 1.0  # a white square on black: cells (1, 2) of a 4×4 map
    images[1] = 1.0 - images[1]  # black on white: the same place stands out
    images[2, 0] += 0.5  # a colour cast everywhere changes nothing
    pdf = saliency_pdf(images, (4, 4))
    assert pdf.shape == (3, 4, 4) and pdf.dtype == torch.float32
    torch.testing.assert_close(pdf.sum((1, 2)), torch.ones(3))
    box = torch.tensor([[0.5, 0.25, 0.75, 0.5]]).expand(3, 4)
    assert (object_mass(pdf, box) > 0.8).all()
    torch.testing.assert_close(pdf[0], pdf[1])
    torch.testing.assert_close(pdf[0], pdf[2])
    flat = saliency_pdf(torch.full((2, 1, 32, 32), 0.3), (4, 4))
    torch.testing.assert_close(flat, torch.full((2, 4, 4), 1 / 16))
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    assert not saliency_pdf(x, (4, 4)).requires_grad  # a fixed prior
    assert saliency_pdf(torch.rand(2, 1, 32, 32, dtype=torch.bfloat16), (4, 4)).dtype == torch.float32
    assert set(PRIORS) == {"saliency", "edges"}


def test_prior_weight_anneals_linearly_from_one_to_zero():
    assert prior_weight(0.0, 3) == 1.0
    assert prior_weight(1.5, 3) == pytest.approx(0.5)
    assert prior_weight(3.0, 3) == 0.0 and prior_weight(7.2, 3) == 0.0
    assert prior_weight(0.0, 0) == 0.0


def test_the_tokenizer_mixes_its_prior_with_the_annealed_share():
    torch.manual_seed(0)
    model = create_model("dart_vit_micro_patch8", 16, scorer_input_size=64, prior="saliency").eval()
    plain = create_model("dart_vit_micro_patch8", 16, scorer_input_size=64).eval()
    plain.load_state_dict(model.state_dict())
    dart = model.patch_embed
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        learned = dart.scorer(x)
        prior = saliency_pdf(x, tuple(learned.shape[-2:]))
        assert dart.prior_weight == 0.0  # built off: only training turns it on
        torch.testing.assert_close(model.tokenize(x).pdf, plain.tokenize(x).pdf)
        dart.prior_weight = 1.0
        torch.testing.assert_close(model.tokenize(x).pdf, mix_uniform(prior, dart.alpha))
        dart.prior_weight = 0.25
        torch.testing.assert_close(model.tokenize(x).pdf, mix_uniform(0.75 * learned + 0.25 * prior, dart.alpha))
        given = torch.rand(2, *learned.shape[-2:])  # a given pdf is used as given
        torch.testing.assert_close(model.tokenize(x, pdf=given).pdf,
                                   mix_uniform(given / given.sum((1, 2), keepdim=True), dart.alpha))
    with pytest.raises(ValueError, match="prior"):
        create_model("dart_vit_micro_patch8", 16, prior="blobs")


def test_training_sets_the_share_before_every_step_and_ends_at_zero():
    from dartok.train.loop import train_one_epoch

    model = create_model("dart_vit_micro_patch8", 16, scorer_input_size=64, depth=1, prior="saliency")
    dart = model.patch_embed
    seen = []
    dart.register_forward_pre_hook(lambda m, args: seen.append(m.prior_weight))
    batches = [(torch.rand(2, 1, 64, 64), torch.tensor([0, 1]))] * 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(2):
        train_one_epoch(model, batches, optimizer, None, loss_fn, torch.device("cpu"), epoch=epoch, global_step=0,
                        input_size=(1, 64, 64), progress=False, prior_epochs=1.5)
    assert seen == pytest.approx([1.0, 5 / 6, 4 / 6, 0.5, 2 / 6, 1 / 6, 0.0, 0.0])


def test_prior_epochs_must_end_before_training_does():
    TrainConfig(epochs=4, prior_epochs=4).validate()
    TrainConfig(epochs=4, prior_epochs=0).validate()
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="prior_epochs"):
            TrainConfig(epochs=4, prior_epochs=bad).validate()


def test_a_taught_prior_adds_its_kl_to_the_loss_and_leaves_the_pdf_alone():
    torch.manual_seed(0)
    kw = dict(scorer_input_size=64, depth=1, prior="saliency", scorer_cam=False)
    teach = create_model("dart_vit_micro_patch8", 16, prior_mode="teach", **kw).train()
    mix = create_model("dart_vit_micro_patch8", 16, prior_mode="mix", **kw).train()
    both = create_model("dart_vit_micro_patch8", 16, **kw).train()
    mix.load_state_dict(teach.state_dict())
    both.load_state_dict(teach.state_dict())
    x, y = torch.rand(3, 1, 64, 64), torch.tensor([0, 1, 2])
    for m in (teach, mix, both):
        m.patch_embed.prior_weight = 0.4
    learned = teach.patch_embed.scorer(x)
    prior = saliency_pdf(x, tuple(learned.shape[-2:]))
    kl = (prior * (prior.log() - learned.log())).sum((1, 2)).mean()
    out = teach.tokenize(x)
    torch.testing.assert_close(out.pdf, mix_uniform(learned, teach.patch_embed.alpha))  # not mixed
    loss = teach.patch_embed.auxiliary_loss(y)
    torch.testing.assert_close(loss, 0.4 * kl)
    assert teach.patch_embed.auxiliary_loss(y) is None  # consumed
    loss.backward()  # it reaches the scorer
    assert teach.patch_embed.scorer.trunk.conv_stem.weight.grad.abs().sum() > 0
    mix.tokenize(x)
    assert mix.patch_embed.auxiliary_loss(y) is None  # mixed, not taught
    both.tokenize(x)
    torch.testing.assert_close(both.patch_embed.auxiliary_loss(y), 0.4 * kl)
    teach.eval()
    teach.tokenize(x)
    assert teach.patch_embed.auxiliary_loss(y) is None  # only training forwards teach
    with pytest.raises(ValueError, match="prior_mode"):
        create_model("dart_vit_micro_patch8", 16, prior="saliency", prior_mode="distil")
