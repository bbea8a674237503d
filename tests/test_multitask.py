"""Lecture 7a's library: batches with one part per task, the shared-trunk network, the (weighted) multi-task loss,
training at a counted budget, and the gradient-conflict measure."""
import math

import pytest
import torch
import torch.nn.functional as F

from tlcourse.data import TensorImageDataset, make_loader
from tlcourse.learner import Callback, set_seed
from tlcourse.models import SmallCNN
from tlcourse.multitask import (MultiTaskLoss, MultiTaskNet, RecordTaskConflict, TaskBatches, TaskModel, train_multitask,
                                train_task, trunk_gradient_cosine)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WIDTHS = (4, 8)


def images(n, classes, seed, size=12):
    g = torch.Generator().manual_seed(seed)
    return TensorImageDataset(torch.rand(n, 1, size, size, generator=g), torch.arange(n) % classes)


def small_net(seed=0, tasks=None):
    set_seed(seed)
    return MultiTaskNet(tasks or {"a": 3, "b": 2}, widths=WIDTHS)


# ---------------------------------------------------------------- TaskBatches
def test_task_batches_read_every_task_side_by_side_and_cycle_the_smaller():
    a, b = images(10, 3, 0), images(4, 2, 1)
    pairs = TaskBatches({"a": a, "b": b}, seed=3)
    assert len(pairs) == 10
    x, y = pairs[0]
    assert set(x) == set(y) == {"a", "b"} and x["a"].shape == (1, 12, 12)
    # one pass over the larger dataset shows every example of it once, and the smaller one in whole cycles
    seen_a = [int(pairs.orders["a"][i]) for i in range(10)]
    assert sorted(seen_a) == list(range(10))
    seen_b = [int(pairs.orders["b"][i % 4]) for i in range(8)]
    assert sorted(seen_b) == sorted(list(range(4)) * 2)
    for i in range(10):  # item i is the example the order names, with its own label
        x, y = pairs[i]
        j = int(pairs.orders["b"][i % 4])
        assert torch.equal(x["b"], b.images[j]) and y["b"] == b.labels[j]
    # the same seed gives the same orders; a loader stacks each task's part into a batch
    assert all(torch.equal(pairs.orders[t], TaskBatches({"a": a, "b": b}, seed=3).orders[t]) for t in "ab")
    xb, yb = next(iter(make_loader(pairs, batch_size=4)))
    assert xb["a"].shape == (4, 1, 12, 12) and yb["b"].shape == (4,)


@pytest.mark.parametrize("datasets, error, words", [
    ([images(4, 2, 0)], TypeError, "dict"),
    ({}, ValueError, "at least one task"),
    ({"fashion-mnist": images(4, 2, 0)}, ValueError, "identifiers"),
    ({"a": images(4, 2, 0), "b": torch.utils.data.TensorDataset(torch.zeros(0, 1))}, ValueError, "empty"),
])
def test_task_batches_refuse_bad_input_saying_why(datasets, error, words):
    with pytest.raises(error, match=words):
        TaskBatches(datasets)


# ---------------------------------------------------------------- the network
def test_multitask_net_gives_each_task_its_trunk_features_through_its_own_head():
    net = small_net().eval()
    xa, xb = torch.rand(5, 1, 12, 12), torch.rand(3, 1, 12, 12)
    out = net(a=xa, b=xb)
    assert out["a"].shape == (5, 3) and out["b"].shape == (3, 2)
    with torch.no_grad():  # the reference: trunk, then the head, for each task alone
        assert torch.allclose(out["a"], net.heads["a"](net.trunk(xa)), atol=1e-6)
        assert torch.allclose(out["b"], net.heads["b"](net.trunk(xb)), atol=1e-6)
        assert torch.allclose(net.task_model("b")(xb), out["b"], atol=1e-6)


def test_task_model_shares_weights_and_training_it_leaves_other_heads_alone():
    net = small_net()
    model = net.task_model("a")
    assert isinstance(model, TaskModel) and model.stages["head"].classifier is net.heads["a"]
    assert {id(p) for p in model.parameters()} <= {id(p) for p in net.parameters()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train_task(net, "a", images(12, 3, 0), steps=3, batch_size=4)
    after = net.state_dict()
    assert torch.equal(after["heads.b.weight"], before["heads.b.weight"]) and torch.equal(after["heads.b.bias"], before["heads.b.bias"])
    assert not torch.equal(after["heads.a.weight"], before["heads.a.weight"])
    assert not torch.equal(after["trunk.stages.stem.0.weight"], before["trunk.stages.stem.0.weight"])


def test_load_single_task_copies_a_trained_classifier_into_trunk_and_head():
    set_seed(1)
    single = SmallCNN(num_classes=3, widths=WIDTHS).eval()
    net = small_net().load_single_task(single, "a").eval()
    x = torch.rand(4, 1, 12, 12)
    with torch.no_grad(): assert torch.allclose(net.task_model("a")(x), single(x), atol=1e-6)


def test_multitask_net_refuses_bad_tasks_saying_which():
    with pytest.raises(TypeError, match="dict"): MultiTaskNet(["a", "b"])
    with pytest.raises(ValueError, match="classes >= 2"): MultiTaskNet({"a": 1})
    with pytest.raises(ValueError, match="classes >= 2"): MultiTaskNet({"a": True})
    with pytest.raises(ValueError, match="identifiers"): MultiTaskNet({"not ok": 3})
    net = small_net()
    with pytest.raises(KeyError, match="heads for"): net.task_model("c")
    with pytest.raises(KeyError, match="heads for"): net(c=torch.rand(2, 1, 12, 12))
    with pytest.raises(TypeError, match="images per task"): net()


# ---------------------------------------------------------------- the objective
def test_multitask_loss_is_the_weighted_sum_of_task_cross_entropies_and_so_is_its_gradient():
    g = torch.Generator().manual_seed(0)
    logits = {"a": torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True),
              "b": torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True)}
    labels = {"a": torch.tensor([0, 1, 2, 0, 1, 2]), "b": torch.tensor([1, 0, 1, 1])}
    ce = {t: F.cross_entropy(logits[t], labels[t]) for t in logits}
    assert torch.allclose(MultiTaskLoss()(logits, labels), ce["a"] + ce["b"], rtol=0, atol=1e-15)
    loss = MultiTaskLoss({"a": 0.25, "b": 2.0})
    total = loss(logits, labels)
    assert torch.allclose(total, 0.25 * ce["a"] + 2.0 * ce["b"], rtol=0, atol=1e-15)
    assert loss.parts == pytest.approx({t: ce[t].item() for t in ce}, abs=1e-12)
    grads = torch.autograd.grad(total, [logits["a"], logits["b"]])
    hand = [0.25 * torch.autograd.grad(ce["a"], logits["a"], retain_graph=True)[0],
            2.0 * torch.autograd.grad(ce["b"], logits["b"])[0]]
    assert all(torch.allclose(g_, h, rtol=0, atol=1e-15) for g_, h in zip(grads, hand))
    # a single task's plain logits: plain cross-entropy (validation and prediction)
    assert torch.equal(MultiTaskLoss()(logits["a"], labels["a"]), F.cross_entropy(logits["a"], labels["a"]))


@pytest.mark.parametrize("weights, error, words", [
    ({"a": -1.0, "b": 1.0}, ValueError, ">= 0"),
    ({"a": math.nan, "b": 1.0}, ValueError, ">= 0"),
    ({"a": math.inf, "b": 1.0}, ValueError, ">= 0"),
    ({"a": True, "b": 1.0}, ValueError, ">= 0"),
    ({"a": 0, "b": 0.0}, ValueError, "above 0"),
    ({}, TypeError, "non-empty dict"),
    ([1.0, 1.0], TypeError, "non-empty dict"),
])
def test_multitask_loss_refuses_bad_weights(weights, error, words):
    with pytest.raises(error, match=words):
        MultiTaskLoss(weights)


def test_multitask_loss_refuses_mismatched_tasks():
    logits, labels = {"a": torch.randn(2, 3), "b": torch.randn(2, 2)}, {"a": torch.tensor([0, 1]), "b": torch.tensor([1, 0])}
    with pytest.raises(ValueError, match="labels for"): MultiTaskLoss()(logits, {"a": labels["a"]})
    with pytest.raises(ValueError, match="one weight per task"): MultiTaskLoss({"a": 1.0})(logits, labels)
    with pytest.raises(TypeError, match="task: logits"): MultiTaskLoss()(logits, labels["a"])


# ---------------------------------------------------------------- training at a counted budget
class CountBatches(Callback):
    def __init__(self): self.sizes = []
    def before_batch(self, learn): self.sizes.append({t: len(y) for t, y in learn.yb.items()})


def test_train_multitask_takes_exactly_the_steps_with_a_batch_of_every_task():
    counter = CountBatches()
    learner = train_multitask(small_net(), {"a": images(10, 3, 0), "b": images(4, 2, 1)}, steps=5, batch_size=3,
                              callbacks=[counter])
    assert learner.step == 5 and counter.sizes == [{"a": 3, "b": 3}] * 5
    assert learner.images_seen == 5 * 3 * 2 and learner.seconds > 0
    # pretrain-then-fine-tune with the same steps sees the same number of images
    net = small_net()
    pretrain, finetune = train_task(net, "a", images(10, 3, 0), 5, batch_size=3), train_task(net, "b", images(4, 2, 1), 5, batch_size=3)
    assert pretrain.step == finetune.step == 5 and pretrain.images_seen + finetune.images_seen == learner.images_seen


def test_training_is_reproducible_from_the_seed():
    data = {"a": images(10, 3, 0), "b": images(6, 2, 1)}
    runs = [small_net(seed=0) for _ in range(2)]
    for net in runs: train_multitask(net, data, steps=4, batch_size=4, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))


def test_training_refuses_bad_budgets_and_unknown_tasks():
    net, data = small_net(), {"a": images(6, 3, 0), "b": images(6, 2, 1)}
    with pytest.raises(ValueError, match="steps must be a positive int"): train_multitask(net, data, steps=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"): train_task(net, "a", data["a"], 3, batch_size=0)
    with pytest.raises(ValueError, match="steps must be a positive int"): train_task(net, "a", data["a"], 2.5)
    with pytest.raises(KeyError, match="no head for"): train_multitask(net, {"c": data["a"]}, steps=2)
    with pytest.raises(KeyError, match="heads for"): train_task(net, "c", data["a"], 2)


# ---------------------------------------------------------------- gradient conflict
def test_trunk_gradient_cosine_equals_the_cosine_of_separately_computed_gradients():
    net = small_net()
    loss = MultiTaskLoss()
    data = {"a": images(6, 3, 0), "b": images(6, 2, 1)}
    out = net(**{t: d.images for t, d in data.items()})
    loss(out, {t: d.labels for t, d in data.items()})
    cosine = trunk_gradient_cosine(net, loss.terms)[("a", "b")]
    flat = {}
    for task in "ab":  # the reference: two separate backward passes through the trunk
        net.zero_grad()
        loss.terms[task].backward(retain_graph=True)
        flat[task] = torch.cat([p.grad.flatten() for p in net.trunk.parameters()])
    reference = (flat["a"] @ flat["b"]) / (flat["a"].norm() * flat["b"].norm())
    assert cosine == pytest.approx(reference.item(), abs=1e-5)
    assert trunk_gradient_cosine(net, {"x": loss.terms["a"], "y": 3 * loss.terms["a"]})[("x", "y")] == pytest.approx(1, abs=1e-6)
    assert trunk_gradient_cosine(net, {"x": loss.terms["a"], "y": -loss.terms["a"]})[("x", "y")] == pytest.approx(-1, abs=1e-6)


def test_record_task_conflict_records_every_few_steps_and_needs_two_tasks():
    recorder = RecordTaskConflict(every=2)
    train_multitask(small_net(), {"a": images(8, 3, 0), "b": images(8, 2, 1)}, steps=5, batch_size=4, callbacks=[recorder])
    assert [r["step"] for r in recorder.rows] == [0, 2, 4]
    assert all(-1 <= r["cosine a/b"] <= 1 and r["a loss"] > 0 for r in recorder.rows)
    with pytest.raises(TypeError, match="at least two tasks"):
        train_multitask(small_net(tasks={"a": 3}), {"a": images(8, 3, 0)}, steps=2, batch_size=4, callbacks=[RecordTaskConflict()])
    for every in (0, 1.5, True):
        with pytest.raises(ValueError, match="positive int"): RecordTaskConflict(every=every)
