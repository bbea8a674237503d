"""Lecture 4c's library: trim_padding and the switchable ULMFiT recipe, ulmfit_fine_tune."""
import math, warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tlcourse.schedules import slanted_triangular_lr
from tlcourse.learner import set_seed
from tlcourse.models import TinyTransformer
from tlcourse.pretrain_text import PAD_ID
from tlcourse.ulmfit import ULMFIT_PARTS, trim_padding, ulmfit_fine_tune

STAGES = ["stem", "block1", "block2", "head"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(causal=True):
    set_seed(0)
    return TinyTransformer(vocab_size=40, num_classes=2, d_model=16, n_layers=2, n_heads=2, max_len=12, causal=causal)


@pytest.fixture
def reviews():
    "24 token sequences of 3 to 9 real tokens, padded to 12, labelled by whether token 7 occurs."
    g = torch.Generator().manual_seed(0)
    tokens = torch.full((24, 12), PAD_ID)
    for i in range(24):
        length = int(torch.randint(3, 10, (), generator=g))
        tokens[i, :length] = torch.randint(5, 40, (length,), generator=g)
    labels = (tokens == 7).any(1).long()
    labels[:2] = torch.tensor([0, 1])
    return TensorDataset(tokens, labels)


def fit(reviews, **kwargs):
    settings = dict(lr=1e-2, steps=12, epochs=4, batch_size=8, seed=0)
    return ulmfit_fine_tune(tiny_model(), reviews, **{**settings, **kwargs})


def parameters_of(model, stage):
    return [p.detach().clone() for p in model.stage(stage).parameters()]


# ---------------------------------------------------------------- trim_padding
def test_trim_padding_cuts_to_the_longest_row_and_keeps_the_logits(reviews):
    items = [reviews[i] for i in range(6)]
    tokens, labels = trim_padding(items)
    longest = max(int((t != PAD_ID).sum()) for t, _ in items)
    assert tokens.shape == (6, longest) and torch.equal(labels, torch.stack([y for _, y in items]))
    full = torch.stack([t for t, _ in items])
    assert torch.equal(tokens, full[:, :longest]) and (full[:, longest:] == PAD_ID).all()
    for causal in (True, False):
        model = tiny_model(causal).eval()
        with torch.no_grad(): assert torch.allclose(model(tokens), model(full), atol=1e-6)


def test_trim_padding_errors_and_all_padding():
    tokens, _ = trim_padding([(torch.zeros(5, dtype=torch.long), torch.tensor(0))] * 2)
    assert tokens.shape == (2, 1)
    with pytest.raises(ValueError, match="token ids"):
        trim_padding([(torch.rand(5), torch.tensor(0))] * 2)


# ---------------------------------------------------------------- the rates each stage gets, at every step
def test_full_recipe_rates_are_layerwise_times_the_slanted_triangle(reviews):
    learn = fit(reviews)
    lrs, T = np.array(learn.history.lrs), 4 * 3
    assert lrs.shape == (T, 4)
    expected = [[1e-2 * (1 / 2.6) ** (3 - g) * slanted_triangular_lr(t, T, 1.0) for g in range(4)] for t in range(T)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert [group["name"] for group in learn.opt.param_groups] == STAGES


def test_switches_off_give_one_rate_and_the_cosine(reviews):
    learn = fit(reviews, discriminative=False, slanted_triangular=False)
    lrs, T = np.array(learn.history.lrs), 12
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * t / T)) for t in range(T)]
    np.testing.assert_allclose(lrs, np.repeat(np.array(expected)[:, None], 4, axis=1), rtol=1e-12)


def test_decay_and_schedule_settings_are_used(reviews):
    learn = fit(reviews, decay=0.5, cut_frac=0.25, ratio=8, gradual_unfreezing=False)
    lrs, T = np.array(learn.history.lrs), 12
    expected = [[1e-2 * 0.5 ** (3 - g) * slanted_triangular_lr(t, T, 1.0, 0.25, 8) for g in range(4)] for t in range(T)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)


def test_fixed_number_of_steps_per_epoch_even_for_a_tiny_set(reviews):
    tiny = TensorDataset(*reviews[:4])
    learn = fit(tiny, steps=20)
    assert len(learn.train_dl) == 5 and len(learn.history.lrs) == 4 * 5


def test_the_budget_is_counted_in_steps(reviews):
    for steps, epochs in [(12, 4), (10, 5), (6, 6)]:
        learn = fit(reviews, steps=steps, epochs=epochs, gradual_unfreezing=False, slanted_triangular=False)
        assert len(learn.history.train_loss) == steps and len(learn.history.epochs) == epochs
        assert len(learn.train_dl) == steps // epochs


# ---------------------------------------------------------------- gradual unfreezing: order, and frozen means untouched
def test_gradual_unfreezing_order_and_frozen_stages_untouched(reviews):
    model = tiny_model()
    before = {s: parameters_of(model, s) for s in STAGES}
    with pytest.warns(UserWarning, match="never train"):
        learn = ulmfit_fine_tune(model, reviews, lr=1e-2, steps=12, epochs=3, batch_size=8)
    assert learn.unfrozen == [["head"], ["block2", "head"], ["block1", "block2", "head"]]
    # the stem was frozen in every epoch: bit-identical; every other stage trained
    assert all(torch.equal(a, b) for a, b in zip(before["stem"], parameters_of(model, "stem")))
    for stage in ("block1", "block2", "head"):
        assert any(not torch.equal(a, b) for a, b in zip(before[stage], parameters_of(model, stage))), stage


def test_without_gradual_unfreezing_every_stage_trains_from_the_first_epoch(reviews):
    model = tiny_model()
    before = {s: parameters_of(model, s) for s in STAGES}
    learn = ulmfit_fine_tune(model, reviews, lr=1e-2, steps=2, epochs=1, batch_size=8,
                             gradual_unfreezing=False, slanted_triangular=False)
    assert learn.unfrozen == [STAGES]
    for stage in STAGES:
        assert any(not torch.equal(a, b) for a, b in zip(before[stage], parameters_of(model, stage))), stage


def test_full_recipe_reaches_every_stage_and_learns(reviews):
    learn = fit(reviews, steps=18, epochs=6, lr=3e-2)
    assert learn.unfrozen[3] == STAGES and learn.unfrozen[-1] == STAGES
    losses = learn.history.train_loss
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_recipe_is_reproducible(reviews):
    a, b = fit(reviews), fit(reviews)
    assert a.history.train_loss == b.history.train_loss


# ---------------------------------------------------------------- bad input
def test_bad_input_gets_clear_errors(reviews):
    with pytest.raises(ValueError, match="empty"):
        ulmfit_fine_tune(tiny_model(), TensorDataset(torch.zeros(0, 12).long(), torch.zeros(0).long()), lr=1e-2)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        ulmfit_fine_tune(tiny_model(), reviews, lr=1e-2, epochs=0)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        ulmfit_fine_tune(tiny_model(), reviews, lr=1e-2, steps=0)
    with pytest.raises(ValueError, match="steps must be a positive int, got True"):
        ulmfit_fine_tune(tiny_model(), reviews, lr=1e-2, steps=True)
    with pytest.raises(ValueError, match=r"steps \(13\) must be a multiple of epochs \(4\).*Try steps=12"):
        ulmfit_fine_tune(tiny_model(), reviews, lr=1e-2, steps=13, epochs=4)
    with pytest.raises(TypeError, match="StagedModel"):
        ulmfit_fine_tune(nn.Linear(12, 2), reviews, lr=1e-2)
    with pytest.raises(ValueError, match="at least 10 steps"):   # the slanted triangle needs steps to rise
        ulmfit_fine_tune(tiny_model(), reviews, lr=1e-2, steps=2, epochs=1, gradual_unfreezing=False)


def test_parts_are_the_three_of_the_paper():
    assert ULMFIT_PARTS == {"discriminative": True, "slanted_triangular": True, "gradual_unfreezing": True}
