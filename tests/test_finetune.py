"""Lecture 4's library: freezing, discriminative rates, schedules, LR finder, gradual unfreezing, LP-FT, L2-SP, recipe."""
import copy, math

import numpy as np
import pytest
import torch
from torch import nn

from tlcourse.data import TensorImageDataset, make_loader
from tlcourse.finetune import GradualUnfreezing, L2SP, fine_tune, freeze, freeze_up_to, l2_sp_penalty, layerwise_lr_groups, lp_ft, lr_find, probe_to_head, train_only, trainable_stages, unfreeze
from tlcourse.schedules import constant_schedule, one_cycle, slanted_triangular_lr, slanted_triangular_schedule, warmup_cosine
from tlcourse.learner import Callback, Learner, set_seed
from tlcourse.models import SmallCNN, TinyTransformer
from tlcourse.features import LinearProbe, fit_linear_probe


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def data():
    "40 random 28x28 images with 4 classes: enough to take real optimiser steps."
    g = torch.Generator().manual_seed(0)
    return TensorImageDataset(torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 4)


def small_cnn(num_classes=4):
    set_seed(0)
    return SmallCNN(num_classes=num_classes, widths=(4, 8, 8))


def record_lrs(learn):
    return np.array(learn.history.lrs)


# ---------------------------------------------------------------- schedules equal their formulas at every step
def stlr_by_hand(t, T, lr_max, cut_frac, ratio):
    "Howard & Ruder (2018), eq. 3, written out again."
    cut = int(T * cut_frac)
    if t < cut: p = t / cut
    else: p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return lr_max * (1 + p * (ratio - 1)) / ratio


@pytest.mark.parametrize("T,cut_frac,ratio", [(100, 0.1, 32), (37, 0.2, 10), (10, 0.1, 32)])
def test_slanted_triangular_lr_equals_the_paper_formula(T, cut_frac, ratio):
    for t in range(T + 1):
        assert slanted_triangular_lr(t, T, 0.01, cut_frac, ratio) == pytest.approx(stlr_by_hand(t, T, 0.01, cut_frac, ratio), rel=1e-12)
    cut = int(T * cut_frac)
    assert slanted_triangular_lr(cut, T, 0.01, cut_frac, ratio) == pytest.approx(0.01)      # the peak
    assert slanted_triangular_lr(0, T, 0.01, cut_frac, ratio) == pytest.approx(0.01 / ratio)  # the start


def test_slanted_triangular_too_few_steps_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 10 steps"):
        slanted_triangular_lr(0, 5, 0.01, cut_frac=0.1)


def cos_between(a, b, x): return b + (a - b) * (1 + math.cos(math.pi * x)) / 2


@pytest.mark.parametrize("name", ["constant", "warmup_cosine", "one_cycle", "slanted"])
def test_learner_applies_each_schedule_exactly_at_every_step(data, name):
    model = small_cnn()
    loader = make_loader(data, 8)  # 5 batches per epoch
    T = 3 * len(loader)
    schedule = {"constant": constant_schedule, "warmup_cosine": warmup_cosine(0.2, final=0.1),
                "one_cycle": one_cycle(0.3, div=10, final_div=100), "slanted": slanted_triangular_schedule(T, 0.2, 8)}[name]
    def by_hand(t):
        p = t / T
        if name == "constant": return 1.0
        if name == "warmup_cosine": return p / 0.2 if p < 0.2 else cos_between(1, 0.1, (p - 0.2) / 0.8)
        if name == "one_cycle": return cos_between(0.1, 1, p / 0.3) if p < 0.3 else cos_between(1, 0.01, (p - 0.3) / 0.7)
        return stlr_by_hand(t, T, 1.0, 0.2, 8)
    learn = Learner(model, loader, param_groups=layerwise_lr_groups(model, 0.01, 0.5), lr=0.01, schedule=schedule,
                    progress=False)
    learn.fit(3)
    base = np.array([0.01 * 0.5 ** d for d in (4, 3, 2, 1, 0)])
    expected = np.array([[by_hand(t) * b for b in base] for t in range(T)])
    np.testing.assert_allclose(record_lrs(learn), expected, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- param groups
def test_layerwise_groups_carry_the_rates_asked_for():
    model = small_cnn()
    groups = layerwise_lr_groups(model, base_lr=1e-3, decay=1 / 2.6)
    assert [g["name"] for g in groups] == model.stage_names
    learn = Learner(model, [(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))], param_groups=groups, lr=1e-3, progress=False)
    for group, depth in zip(learn.opt.param_groups, (4, 3, 2, 1, 0)):
        assert group["lr"] == pytest.approx(1e-3 / 2.6 ** depth, rel=1e-12)
    # every parameter is in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_layerwise_groups_work_for_a_transformer_and_reject_bad_input():
    model = TinyTransformer(vocab_size=50, num_classes=2, d_model=16, n_layers=3, n_heads=2)
    groups = layerwise_lr_groups(model, 1.0, 0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [("stem", 1 / 16), ("block1", 1 / 8), ("block2", 1 / 4),
                                                      ("block3", 1 / 2), ("head", 1.0)]
    with pytest.raises(ValueError, match="decay must be a positive"): layerwise_lr_groups(model, 1.0, 0)
    with pytest.raises(TypeError, match="not a StagedModel"): layerwise_lr_groups(nn.Linear(2, 2), 1.0)


# ---------------------------------------------------------------- freezing
def test_bad_stage_name_fails_naming_the_stages_that_exist():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"No stage named 'block2'.*\['stem', 'stage1', 'stage2', 'stage3', 'head'\]"):
        freeze_up_to(model, "block2")
    with pytest.raises(ValueError, match="stages are"): train_only(model, ["stage1", "stag3"])
    with pytest.raises(ValueError, match="nothing to train"): freeze_up_to(model, "head")


def test_frozen_parameters_bit_identical_while_trainable_ones_change(data):
    model = freeze_up_to(small_cnn(), "stage2")
    assert trainable_stages(model) == ["stage3", "head"]
    before = copy.deepcopy(model.state_dict())
    Learner(model, make_loader(data, 8, shuffle=True), lr=1e-2, weight_decay=0.1, progress=False).fit(2)
    after = model.state_dict()
    for key in after:
        frozen = key.split(".")[1] in ("stem", "stage1", "stage2")
        if frozen: assert torch.equal(before[key], after[key]), key  # weights and BatchNorm statistics
    for stage in ("stage3", "head"):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(f"stages.{stage}."))


def test_freeze_bn_stats_option(data):
    model = freeze_up_to(small_cnn(), "stage1", freeze_bn_stats=False)
    before = copy.deepcopy(model.state_dict())
    Learner(model, make_loader(data, 8), lr=1e-2, progress=False).fit(1)
    after = model.state_dict()
    assert torch.equal(before["stages.stem.0.weight"], after["stages.stem.0.weight"])        # weights frozen
    assert not torch.equal(before["stages.stem.1.running_mean"], after["stages.stem.1.running_mean"])  # stats adapt
    # and with the default, a frozen stage stays in eval mode even after model.train()
    model = freeze(small_cnn(), "stem").train()
    model(torch.rand(2, 1, 28, 28))
    assert not model.stage("stem").training and model.stage("stage1").training


def test_unfreeze_restores_training_and_train_only_keeps_one_stage():
    model = freeze(small_cnn()).train()
    assert trainable_stages(model) == []
    unfreeze(model, "stage2")
    model(torch.rand(2, 1, 28, 28))
    assert trainable_stages(model) == ["stage2"] and model.stage("stage2").training
    assert trainable_stages(train_only(model, "stem")) == ["stem"]


# ---------------------------------------------------------------- gradual unfreezing
class RecordTrainable(Callback):
    def __init__(self): self.seen = []
    def after_epoch(self, learn): self.seen.append(trainable_stages(learn.model))


def test_gradual_unfreezing_order(data):
    model = small_cnn()
    names = model.stage_names
    stem_before = copy.deepcopy(model.stage("stem").state_dict())
    unfreezing, record = GradualUnfreezing(), RecordTrainable()
    learn = Learner(model, make_loader(data, 20), param_groups=layerwise_lr_groups(model, 1e-2), lr=1e-2,
                    callbacks=[unfreezing, record], progress=False)
    learn.fit(6)
    expected = [names[-k:] for k in (1, 2, 3, 4, 5, 5)]  # head, then one more stage per epoch from the top
    assert unfreezing.unfrozen == expected and record.seen == expected
    # the stem only trained in the last two epochs; two stages per epoch unfreezes twice as fast
    gu2 = GradualUnfreezing(stages_per_epoch=2)
    Learner(small_cnn(), make_loader(data, 20), lr=1e-2, callbacks=[gu2], progress=False).fit(3)
    assert gu2.unfrozen == [names[-1:], names[-3:], names]
    assert any(not torch.equal(v, model.stage("stem").state_dict()[k]) for k, v in stem_before.items())


# ---------------------------------------------------------------- L2-SP
def test_l2_sp_zero_at_pretrained_weights_and_gradient_by_hand():
    model = small_cnn()
    reference = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("stages.head.")}
    assert l2_sp_penalty(model, reference, alpha=1.0, beta=0.0).item() == 0.0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.1 * torch.randn(p.shape, generator=g))
    alpha, beta = 0.3, 0.7
    penalty = l2_sp_penalty(model, reference, alpha, beta)
    # the value by hand, with explicit loops over the parameters
    value = 0.0
    for name, p in model.named_parameters():
        if name.startswith("stages.head."): value += beta / 2 * float((p.detach().double() ** 2).sum())
        else: value += alpha / 2 * float(((p.detach().double() - reference[name].double()) ** 2).sum())
    assert penalty.item() == pytest.approx(value, rel=1e-5)
    penalty.backward()
    for name, p in model.named_parameters():
        expected = beta * p if name.startswith("stages.head.") else alpha * (p - reference[name])
        assert torch.allclose(p.grad, expected, atol=1e-7), name


def test_l2_sp_callback_adds_the_penalty_and_warns_about_weight_decay(data):
    model = small_cnn()
    callback = L2SP(model, alpha=0.5, beta=0.0)
    class Check(Callback):
        def after_loss(self, learn): self.loss = learn.loss.item()
    check = Check()
    learn = Learner(model, make_loader(data, 40), lr=1e-9, callbacks=[callback, check], progress=False)
    learn.fit(2)  # at lr 1e-9 the weights barely move, so the penalty stays ~0: the loss is cross-entropy alone
    assert check.loss == pytest.approx(learn.history.train_loss[-1])
    with torch.no_grad(): model.stages.stem[0].weight.add_(1.0)
    learn.fit(1)
    n = model.stages.stem[0].weight.numel()
    assert learn.history.train_loss[-1] > math.log(4) - 0.5 + 0.5 / 2 * n * 0.9  # the penalty is in the loss
    with pytest.warns(UserWarning, match="weight_decay"):
        Learner(model, make_loader(data, 40), lr=1e-9, weight_decay=0.1, callbacks=[L2SP(model)], progress=False).fit(1)


# ---------------------------------------------------------------- LP-FT, LR finder, recipe
def test_probe_to_head_reproduces_the_probe(data):
    model = small_cnn().eval()
    features = model.features(data.images).detach()
    probe = fit_linear_probe(features, data.labels, 4, steps=20)
    probe_to_head(probe, model)
    with torch.no_grad():
        assert torch.allclose(model(data.images), probe(features), atol=1e-5)
    with pytest.raises(ValueError, match="fit the probe on model.features"):
        probe_to_head(LinearProbe(torch.rand(5, 3), 4), model)


def test_lp_ft_starts_from_the_probed_head(data):
    model = small_cnn()
    learn = lp_ft(model, data, lr=1e-3, steps=5, probe_steps=10)
    assert trainable_stages(model) == model.stage_names and len(learn.history) > 0


def test_lr_find_restores_everything(data):
    model = small_cnn()
    learn = Learner(model, make_loader(data, 8, shuffle=True), lr=1e-3, seed=0, progress=False)
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    result = lr_find(learn, 1e-5, 10.0, num_steps=12)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and len(learn.history) == 0
    assert len(result.lrs) == len(result.losses) >= 2
    ratios = np.array(result.lrs[1:]) / np.array(result.lrs[:-1])
    np.testing.assert_allclose(ratios, (10.0 / 1e-5) ** (1 / 11), rtol=1e-9)  # exponential sweep
    assert 1e-5 <= result.suggestion <= 10.0
    assert learn.opt.param_groups[0]["lr"] == pytest.approx(1e-3) and learn.callbacks == []


def test_fine_tune_recipe_freezes_then_trains_everything(data):
    model = small_cnn()
    before = copy.deepcopy(model.state_dict())
    learn = fine_tune(model, make_loader(data, 20), steps=4, base_lr=1e-2, freeze_steps=2, progress=False)
    assert len(learn.head_history) == 2 and len(learn.history) == 2
    assert [g["name"] for g in learn.opt.param_groups] == model.stage_names
    assert learn.opt.param_groups[-1]["base_lr"] == pytest.approx(5e-3)
    assert trainable_stages(model) == model.stage_names
    assert not torch.equal(before["stages.stem.0.weight"], model.state_dict()["stages.stem.0.weight"])


# ---------------------------------------------------------------- the layered API: Learner methods over the functions
def test_learner_freeze_to_freezes_what_the_functions_freeze(data):
    learn = Learner(small_cnn(), make_loader(data, 10), seed=0, progress=False)
    names = learn.model.stage_names                                     # stem, stage1, stage2, stage3, head
    assert learn.freeze() is learn and trainable_stages(learn.model) == ["head"]
    for n in range(-len(names), len(names)):
        assert trainable_stages(learn.freeze_to(n).model) == names[n:], n
    by_function = freeze_up_to(small_cnn(), "stage2")
    learn.freeze_to("stage2")
    assert trainable_stages(learn.model) == trainable_stages(by_function) == ["stage3", "head"]
    for stage in names:  # the same BatchNorm handling: frozen stages keep their statistics
        assert getattr(learn.model.stage(stage), "frozen_in_eval", False) == getattr(by_function.stage(stage), "frozen_in_eval", False)
    assert trainable_stages(learn.unfreeze().model) == names
    with pytest.raises(ValueError, match=r"n must be an int from -5 to 4"): learn.freeze_to(5)
    with pytest.raises(ValueError, match=r"n must be an int from -5 to 4"): learn.freeze_to(-6)
    with pytest.raises(TypeError, match="stage name or an int"): learn.freeze_to(1.5)
    with pytest.raises(ValueError, match="stages are"): learn.freeze_to("block2")


def test_learner_lr_find_is_the_function(data):
    def sweep(use_method):
        learn = Learner(small_cnn(), make_loader(data, 8, shuffle=True), lr=1e-3, seed=0, progress=False)
        set_seed(1)
        return learn.lr_find(1e-5, 10.0, num_steps=6) if use_method else lr_find(learn, 1e-5, 10.0, num_steps=6)
    by_method, by_function = sweep(True), sweep(False)
    assert by_method.lrs == by_function.lrs and by_method.losses == by_function.losses


def fine_tune_by_hand(model, loader, head_epochs, epochs, base_lr, decay):
    "The recipe written out with the lower layer: two Learners, freeze_up_to / unfreeze, fresh optimisers."
    freeze_up_to(model, model.stage_names[-2])
    head = Learner(model, loader, lr=base_lr, schedule=one_cycle(), seed=0, progress=False)
    head.fit(head_epochs)
    unfreeze(model)
    learn = Learner(model, loader, param_groups=layerwise_lr_groups(model, base_lr / 2, decay), lr=base_lr / 2,
                    schedule=one_cycle(), seed=0, progress=False)
    learn.fit(epochs)
    return head.history, learn


def test_fine_tune_method_equals_the_recipe_by_hand(data):
    "Learner.fine_tune(steps) takes the same steps, in the same order, as the two-phase recipe by hand: equal weights."
    loader = make_loader(data, 10, shuffle=True)                       # 4 steps per epoch
    head_history, by_hand = fine_tune_by_hand(small_cnn(), loader, 1, 2, 1e-2, 0.5)
    learn = Learner(small_cnn(), loader, seed=0, progress=False)
    assert learn.fine_tune(steps=12, freeze_steps=4, base_lr=1e-2, decay=0.5) is learn
    for name, value in by_hand.model.state_dict().items():
        assert torch.equal(value, learn.model.state_dict()[name]), name
    assert learn.history.train_loss == by_hand.history.train_loss and learn.head_history.train_loss == head_history.train_loss
    assert [g["base_lr"] for g in learn.opt.param_groups] == [g["base_lr"] for g in by_hand.opt.param_groups]


def test_fine_tune_counts_its_budget_in_steps(data):
    loader = make_loader(data, 10, shuffle=True)                       # 4 steps per epoch
    learn = Learner(small_cnn(), loader, seed=0, progress=False).fine_tune(steps=20, freeze_steps=8)
    assert (len(learn.head_history), len(learn.history)) == (8, 12)
    learn = Learner(small_cnn(), loader, seed=0, progress=False).fine_tune(steps=12)   # default: one epoch on the head
    assert (len(learn.head_history), len(learn.history)) == (4, 8)
    learn = Learner(small_cnn(), loader, seed=0, progress=False).fine_tune(steps=8, freeze_steps=0)
    assert learn.head_history is None and len(learn.history) == 8
    with pytest.raises(ValueError, match=r"freeze_steps \(4\) must be smaller than steps \(4\)"): learn.fine_tune(steps=4)
    with pytest.raises(ValueError, match="steps must be an int >= 1"): learn.fine_tune(steps=0)
    with pytest.raises(TypeError, match="steps must be an int >= 1"): learn.fine_tune(steps=2.5)
    with pytest.raises(ValueError, match="freeze_steps must be an int >= 0"): learn.fine_tune(steps=8, freeze_steps=-1)


def test_fine_tune_method_on_token_batches():
    "The recipe needs stages, not images: a TinyTransformer on token ids fine-tunes the same way."
    set_seed(0)
    model = TinyTransformer(vocab_size=40, num_classes=2, d_model=16, n_layers=2, n_heads=2, max_len=12)
    tokens = torch.randint(5, 40, (24, 12), generator=torch.Generator().manual_seed(0))
    reviews = torch.utils.data.TensorDataset(tokens, (tokens == 7).any(1).long())
    stem = copy.deepcopy(model.stage("stem").state_dict())
    learn = Learner(model, make_loader(reviews, 8, shuffle=True), seed=0, progress=False).freeze()
    learn.fine_tune(steps=9, freeze_steps=3, base_lr=1e-2)                # 3 steps per epoch: 1 epoch, then 2
    assert (len(learn.head_history), len(learn.history)) == (3, 6)
    assert [g["name"] for g in learn.opt.param_groups] == model.stage_names and trainable_stages(model) == model.stage_names
    assert any(not torch.equal(v, model.stage("stem").state_dict()[k]) for k, v in stem.items())

def test_transfer_learner_loads_the_checkpoint_with_a_new_head_and_a_frozen_body(data):
    from tlcourse.finetune import transfer_learner
    from tlcourse.registry import load_pretrained
    pretrained = load_pretrained("fashion_cnn").state_dict()
    learn = transfer_learner("fashion_cnn", data, num_classes=4, valid_set=data, lr=1e-2, progress=False)
    model = learn.model
    assert trainable_stages(model) == ["head"] and model(data.images[:2]).shape == (2, 4)
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("stages.head")}
    assert body and all(torch.equal(v, pretrained[k]) for k, v in body.items())       # the checkpoint's weights
    assert [g["name"] for g in learn.opt.param_groups] == model.stage_names
    learn.fine_tune(steps=6, freeze_steps=2, base_lr=1e-2)
    assert not torch.equal(model.state_dict()["stages.stem.0.weight"], pretrained["stages.stem.0.weight"])
    assert "valid_accuracy" in learn.history.epochs[-1]


def test_transfer_learner_refuses_bad_input_clearly(data):
    from tlcourse.finetune import transfer_learner
    with pytest.raises(ValueError, match="Unknown checkpoint 'no_such_checkpoint'. Known checkpoints: .*fashion_cnn"):
        transfer_learner("no_such_checkpoint", data, 4)
    with pytest.raises(TypeError, match="name of a shipped checkpoint"): transfer_learner(small_cnn(), data, 4)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"): transfer_learner("fashion_cnn", data, 1)
    with pytest.raises(ValueError, match="labels up to 3, but num_classes=3"): transfer_learner("fashion_cnn", data, 3)
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="train_set is empty"): transfer_learner("fashion_cnn", empty, 4)


# ---------------------------------------------------------------- lecture 4b's helpers
def test_superclass_task_shares_labels_but_not_sub_classes():
    from tlcourse.data import load_fashion_mnist
    from tlcourse.data import FASHION_SUPERCLASSES, superclass_task
    source, target = superclass_task("test", "source"), superclass_task("test", "target")
    assert source.classes == target.classes == list(FASHION_SUPERCLASSES)
    assert set(source.labels.tolist()) == set(target.labels.tolist()) == {0, 1, 2}
    # no image of the target appears in the source: the sub-classes differ
    fashion = load_fashion_mnist("test")
    source_subs = {c for src, _ in FASHION_SUPERCLASSES.values() for c in src}
    target_subs = {c for _, tgt in FASHION_SUPERCLASSES.values() for c in tgt}
    assert not source_subs & target_subs
    assert len(source) == int(torch.isin(fashion.labels, torch.tensor(sorted(source_subs))).sum())
    with pytest.raises(ValueError, match="side must be"): superclass_task("test", "both")


def test_surgical_fine_tune_changes_only_the_chosen_stage(data):
    from tlcourse.finetune import surgical_fine_tune
    source = small_cnn()
    tuned = surgical_fine_tune(source, data, "stage2", steps=4).model
    for stage in source.stage_names:
        same = all(torch.equal(a, b) for a, b in zip(source.stage(stage).state_dict().values(), tuned.stage(stage).state_dict().values()))
        assert same == (stage != "stage2"), stage
    with pytest.raises(ValueError, match="stages are"): surgical_fine_tune(source, data, "layer9", steps=1)


def test_top_stages_on_cached_maps_equal_the_whole_network(data):
    from tlcourse.models import top_stages
    from tlcourse.features import extract_features
    model = small_cnn().eval()
    maps = extract_features(model, data.images, stage="stage2", grid=7, cache=False)  # stage2 output is 8 x 7 x 7
    top = top_stages(model, "stage2", (8, 7, 7)).eval()
    with torch.no_grad(): assert torch.allclose(top(maps), model(data.images), atol=1e-5)
    assert top.stage_names == ["stem", "stage3", "head"]
    with torch.no_grad(): assert torch.allclose(top(maps.view(-1, 8, 7, 7)), model(data.images), atol=1e-5)  # maps already shaped
    with pytest.raises(ValueError, match="nothing above the head"): top_stages(model, "head", (4,))


# ---------------------------------------------------------------- out-of-range settings are refused with the range
def test_decay_outside_0_1_is_refused_with_the_range(data):
    model = small_cnn()
    for bad in [1.5, 2.6, 0, -0.5, math.nan, math.inf]:
        with pytest.raises(ValueError, match=r"decay must be a finite number in \(0, 1\]"): layerwise_lr_groups(model, 1.0, bad)
        with pytest.raises(ValueError, match=r"\(0, 1\]"): fine_tune(model, make_loader(data, 10), steps=8, decay=bad)
    with pytest.raises(TypeError, match="decay must be a number"): layerwise_lr_groups(model, 1.0, "0.5")
    assert [g["lr"] for g in layerwise_lr_groups(model, 1.0, 1)] == [1.0] * len(model.stage_names)  # decay = 1 still allowed


def test_bad_rates_and_step_counts_are_refused_with_the_range(data):
    model = small_cnn()
    for bad in [-1e-3, 0.0, math.nan, math.inf]:
        with pytest.raises(ValueError, match=r"base_lr must be a finite number in \(0, inf\)"): layerwise_lr_groups(model, bad)
        with pytest.raises(ValueError, match=r"base_lr .*\(0, inf\)"): fine_tune(model, make_loader(data, 10), steps=8, base_lr=bad)
        with pytest.raises(ValueError, match=r"lr_max .*\(0, inf\)"): slanted_triangular_lr(0, 100, bad)
        with pytest.raises(ValueError, match=r"div .*\(0, inf\)"): one_cycle(div=bad)
        with pytest.raises(ValueError, match=r"lr .*\(0, inf\)"): lp_ft(model, None, lr=bad)
    with pytest.raises(ValueError, match=r"final must be a finite number in \[0, 1\]"): warmup_cosine(final=math.nan)
    with pytest.raises(ValueError, match=r"final_div .*\(0, inf\)"): one_cycle(final_div=math.inf)
    with pytest.raises(ValueError, match=r"ratio .*\[1, inf\)"): slanted_triangular_lr(0, 100, 0.01, ratio=0.5)
    with pytest.raises(ValueError, match=r"t must be a step in 0..T = 0..100"): slanted_triangular_lr(-1, 100, 0.01)
    with pytest.raises(ValueError, match=r"t must be a step in 0..T = 0..100"): slanted_triangular_lr(101, 100, 0.01)
    with pytest.raises(ValueError, match=r"T \(the number of steps\) must be an int >= 1"): slanted_triangular_schedule(-10)
    with pytest.raises(ValueError, match="steps must be an int >= 1"): fine_tune(model, make_loader(data, 10), steps=-1)
    with pytest.raises(ValueError, match="freeze_steps must be an int >= 0"): fine_tune(model, make_loader(data, 10), steps=8, freeze_steps=-1)
    with pytest.raises(ValueError, match="steps must be an int >= 1"): lp_ft(model, None, lr=1e-3, steps=-5)
    with pytest.raises(ValueError, match=r"alpha must be a finite number in \[0, inf\)"): L2SP(model, alpha=math.nan)
    with pytest.raises(ValueError, match=r"beta must be a finite number in \[0, inf\)"): l2_sp_penalty(model, {}, 0.1, -1.0)
    learn = Learner(model, make_loader(data, 10), lr=1e-3)
    with pytest.raises(ValueError, match=r"end_lr must be a finite number in \(0, inf\)"): lr_find(learn, 1e-5, math.inf)
    with pytest.raises(ValueError, match=r"start_lr .*\(0, inf\)"): lr_find(learn, math.nan, 1.0)
    with pytest.raises(ValueError, match=r"beta .*\[0, 1\)"): lr_find(learn, beta=1.0)
    with pytest.raises(TypeError, match="num_steps must be an int >= 2"): lr_find(learn, num_steps=10.5)
