"""EvaluateOn (lecture 4, experiment 4): held-out loss and accuracy along training, checked against a hand computation."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlcourse.data import make_loader
from tlcourse.learner import Callback, EvaluateOn, Learner, set_seed


def labelled(n, seed):
    "n points in 8 dimensions with three learnable classes, as a TensorDataset."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return torch.utils.data.TensorDataset(x, y)


def make_model():
    "A small MLP with dropout (random numbers in training) and BatchNorm (different in train and eval mode)."
    set_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


class KeepWeights(Callback):
    "Reference: a copy of the model after every epoch, to evaluate by hand afterwards."
    def __init__(self): self.copies = []
    def after_epoch(self, learn): self.copies.append(copy.deepcopy(learn.model).eval())


def learner(callbacks, epochs=5, valid=False):
    train = labelled(40, 0)
    learn = Learner(make_model(), make_loader(train, 16, shuffle=True), make_loader(labelled(30, 2), 30) if valid else None,
                    lr=1e-2, seed=0, callbacks=callbacks, progress=False)
    learn.fit(epochs)
    return learn


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread): pass


def test_rows_equal_hand_computed_loss_and_accuracy():
    test, train = labelled(50, 1), labelled(40, 0)
    keep = KeepWeights()
    learn = learner([EvaluateOn({"test": test, "train_set": train}, every=2, batch_size=7), keep])
    rows = learn.history.epochs
    evaluated = [r["epoch"] for r in rows if "test_loss" in r]
    assert evaluated == [1, 3, 4]                          # every second epoch, and the last one
    for epoch in evaluated:
        model = keep.copies[epoch]
        for name, (x, y) in (("test", test.tensors), ("train_set", train.tensors)):
            with torch.no_grad(): logits = model(x)
            assert rows[epoch][f"{name}_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
            assert rows[epoch][f"{name}_accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-7)
    assert all("test_loss" not in rows[e] for e in (0, 2))


def test_training_is_unchanged_by_the_evaluations():
    plain = learner([])
    tracked = learner([EvaluateOn({"test": labelled(50, 1)}, every=1)])
    for a, b in zip(plain.model.state_dict().values(), tracked.model.state_dict().values()):
        assert torch.equal(a, b)                           # same dropout masks, same batch statistics, same data order
    assert plain.history.train_loss == tracked.history.train_loss
    assert tracked.model.training                          # evaluation leaves the model in training mode


def test_feeds_early_stopping_like_the_learners_own_columns():
    from tlcourse.learner import EarlyStopping
    stop = EarlyStopping("held_loss", patience=1, min_delta=10.0)  # no improvement can be that large: stops after epoch 2
    learn = learner([EvaluateOn({"held": labelled(50, 1)}), stop])
    assert stop.stopped_epoch == 1 and len(learn.history.epochs) == 2


@pytest.mark.parametrize("datasets, every, error, words", [
    ({}, 1, TypeError, "non-empty dict"),
    ([labelled(5, 0)], 1, TypeError, "non-empty dict"),
    ({3: labelled(5, 0)}, 1, TypeError, "non-empty strings"),
    ({"test": labelled(0, 0)}, 1, ValueError, "'test' is empty"),
    ({"test": labelled(5, 0)}, 0, ValueError, "positive int"),
    ({"test": labelled(5, 0)}, 1.5, ValueError, "positive int"),
    ({"test": labelled(5, 0)}, True, ValueError, "positive int"),
])
def test_bad_arguments_say_what_to_pass(datasets, every, error, words):
    with pytest.raises(error, match=words): EvaluateOn(datasets, every=every)


@pytest.mark.parametrize("name, valid", [("train", False), ("valid", True)])
def test_a_name_that_would_overwrite_the_learners_columns_is_refused(name, valid):
    with pytest.raises(ValueError, match=f"call it something else, e.g. '{name}_set'"):
        learner([EvaluateOn({name: labelled(10, 1)})], epochs=1, valid=valid)


def test_valid_is_a_free_name_without_a_validation_loader():
    learn = learner([EvaluateOn({"valid": labelled(10, 1)})], epochs=1)
    assert "valid_accuracy" in learn.history.epochs[-1]
