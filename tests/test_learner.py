"""Behaviour of tlcourse.learner: the one training loop of the course."""
import math
import pytest
import torch
from torch import nn

from tlcourse.learner import (Callback, CheckpointError, EarlyStopping, EVENTS, Learner, NonFiniteLossError,
                              StopTraining, accuracy, atomic_torch_save, read_checkpoint, set_seed)


def make_data(n=96, n_features=8, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # learnable labels in 0..2
    return torch.utils.data.TensorDataset(x, y[:n] % n_classes)


def loaders(batch_size=16):
    train = torch.utils.data.DataLoader(make_data(), batch_size=batch_size, shuffle=True)
    valid = torch.utils.data.DataLoader(make_data(48, seed=1), batch_size=32)
    return train, valid


def make_model(n_out=3):
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, n_out))


def weights(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def new_learner(tmp_path=None, callbacks=(), **kwargs):
    set_seed(0)
    train, valid = loaders()
    kwargs.setdefault('lr', 1e-2)
    return Learner(make_model(), train, valid, seed=0, callbacks=callbacks, progress=False,
                   checkpoint_path=(tmp_path / 'run.pt') if tmp_path else None, **kwargs)


class InterruptAt(Callback):
    def __init__(self, step, event='after_step'):
        self.at = step
        setattr(self, event, self._maybe_interrupt)

    def _maybe_interrupt(self, learn):
        if learn.step == self.at: raise KeyboardInterrupt


# the interrupt can come at any event: mid-epoch after a step, before a batch, or while computing the loss
@pytest.mark.parametrize('step,event', [(9, 'after_step'), (6, 'before_batch'), (13, 'after_loss')])
def test_resume_after_interrupt_is_bit_identical(tmp_path, step, event):
    full = new_learner(tmp_path, schedule=lambda p: 1 - p, grad_clip=1.0)
    full.fit(3)
    expected, expected_history = weights(full.model), full.history.state_dict()
    (tmp_path / 'run.pt').unlink()

    interrupted = new_learner(tmp_path, callbacks=[InterruptAt(step, event)], schedule=lambda p: 1 - p, grad_clip=1.0)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(3)
    assert read_checkpoint(tmp_path / 'run.pt')['step'] == step
    resumed = new_learner(tmp_path, schedule=lambda p: 1 - p, grad_clip=1.0)
    resumed.fit(3, resume=True)
    assert same_weights(weights(resumed.model), expected)
    assert resumed.history.state_dict() == expected_history
    assert not [p for p in tmp_path.iterdir() if p.name != 'run.pt']  # no temp files left


def test_resume_from_epoch_checkpoint_with_early_stopping_state(tmp_path):
    full = new_learner(tmp_path, callbacks=[EarlyStopping('valid_loss', patience=2)])
    full.fit(3)
    expected = weights(full.model)
    interrupted = new_learner(tmp_path, callbacks=[EarlyStopping('valid_loss', patience=2), InterruptAt(12)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(3)
    stopper = EarlyStopping('valid_loss', patience=2)
    resumed = new_learner(tmp_path, callbacks=[stopper])
    resumed.fit(3, resume=True)
    assert same_weights(weights(resumed.model), expected)
    assert stopper.best == full.callbacks[0].best


def test_two_seeded_runs_give_identical_metrics():
    a, b = new_learner(), new_learner()
    a.fit(2); b.fit(2)
    assert a.history.state_dict() == b.history.state_dict()
    assert a.validate() == b.validate()


def test_nan_loss_stops_with_step_and_epoch(tmp_path):
    class PoisonLoss(Callback):
        def after_loss(self, learn):
            if learn.step == 8: learn.loss = learn.loss * float('nan')
    learn = new_learner(tmp_path, callbacks=[PoisonLoss()])
    before = weights(learn.model)
    with pytest.raises(NonFiniteLossError) as info:
        learn.fit(2)
    message = str(info.value)
    assert 'nan' in message and 'step 8' in message and 'epoch 1' in message and 'batch 2' in message
    assert 'lower learning rate' in message and 'run.pt' in message  # the epoch-0 checkpoint is the good one
    assert math.isfinite(learn.history.train_loss[7])
    assert not same_weights(weights(learn.model), before)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())  # stopped before the bad update


def test_output_size_guard_names_both_numbers():
    set_seed(0)
    train, _ = loaders()
    with pytest.raises(ValueError) as info:
        Learner(make_model(n_out=5), train, num_classes=3, progress=False).fit(1)
    assert '5 values' in str(info.value) and '3 classes' in str(info.value)
    with pytest.raises(ValueError, match='outputs 2 values'):  # classes inferred from the labels
        Learner(make_model(n_out=2), train, progress=False).fit(1)


def test_empty_loader_and_bad_arguments():
    no_rows = torch.utils.data.TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long))
    empty = torch.utils.data.DataLoader(no_rows, batch_size=4)
    with pytest.raises(ValueError, match='train_dl is empty'):
        Learner(make_model(), empty)
    train, _ = loaders()
    with pytest.raises(ValueError, match='lr must be'):
        Learner(make_model(), train, lr=-1)
    with pytest.raises(TypeError, match='instance'):
        Learner(make_model(), train, callbacks=[EarlyStopping])
    with pytest.raises(ValueError, match='resume=True needs'):
        Learner(make_model(), train, progress=False).fit(1, resume=True)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / 'ckpt.pt'
    atomic_torch_save({'version': torch.tensor(1)}, target)

    def failing_save(obj, f):
        f.write(b'partial bytes')
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):
        atomic_torch_save({'version': torch.tensor(2)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)['version'].item() == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ['ckpt.pt']  # no temp file left behind


def test_corrupt_and_mismatched_checkpoints_fail_clearly(tmp_path):
    learn = new_learner(tmp_path)
    learn.fit(1)
    good = tmp_path / 'run.pt'
    broken = tmp_path / 'broken.pt'
    broken.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match='broken.pt') as info:
        learn.load_checkpoint(broken)
    assert 'Delete' in str(info.value)
    torch.save({'something': 'else'}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='not a tlcourse Learner checkpoint'):
        learn.load_checkpoint(tmp_path / 'other.pt')
    set_seed(0)
    train, _ = loaders()
    other = Learner(nn.Sequential(nn.Linear(8, 3)), train, progress=False)
    with pytest.raises(CheckpointError, match='do not fit this model|param groups'):
        other.load_checkpoint(good)
    with pytest.raises(CheckpointError, match='belongs to a fit of 1 epochs'):
        new_learner(tmp_path).fit(4, resume=True)


def test_checkpoint_loads_with_weights_only(tmp_path):
    learn = new_learner(tmp_path)
    learn.fit(1)
    state = torch.load(tmp_path / 'run.pt', weights_only=True)
    assert state['step'] == learn.total_steps and set(state['rng']) == {'python', 'numpy', 'torch', 'cuda'}


def test_callbacks_fire_in_order():
    calls = []

    class Recorder(Callback):
        def __init__(self, name): self.name = name
    for event in EVENTS:
        setattr(Recorder, event, lambda self, learn, event=event: calls.append((self.name, event)))
    learn = new_learner(callbacks=[Recorder('a'), Recorder('b')])
    learn.fit(1)
    events = [e for name, e in calls if name == 'a']
    assert events[:7] == ['before_fit', 'before_epoch', 'before_batch', 'after_pred', 'after_loss',
                          'before_step', 'after_step']
    assert events[-3:] == ['after_validate', 'after_epoch', 'after_fit']
    assert events.count('after_step') == learn.steps_per_epoch
    assert [n for n, e in calls if e == 'before_batch'][:2] == ['a', 'b']  # list order within an event


def test_callback_adds_loss_and_stops_training():
    class AddOne(Callback):
        def after_loss(self, learn): learn.loss = learn.loss + 1.0

    class StopAfter(Callback):
        def after_step(self, learn):
            if learn.step == 4: raise StopTraining()

    plain, extra = new_learner(callbacks=[StopAfter()]), new_learner(callbacks=[AddOne(), StopAfter()])
    plain.fit(3); extra.fit(3)
    assert len(plain.history) == len(extra.history) == 4 and plain.step == 4
    # a constant adds nothing to the gradients, so the losses differ by exactly 1 at every step
    assert all(math.isclose(e - p, 1.0, rel_tol=1e-5) for p, e in zip(plain.history.train_loss, extra.history.train_loss))


def test_schedule_multiplier_reaches_each_group():
    set_seed(0)
    train, _ = loaders()
    model = make_model()
    groups = [{'params': model[0].parameters(), 'lr': 1e-3}, {'params': model[3].parameters(), 'lr': 1e-2}]
    seen = []

    class WatchLR(Callback):
        def before_step(self, learn): seen.append((learn.progress, [g['lr'] for g in learn.opt.param_groups]))
    learn = Learner(model, train, param_groups=groups, schedule=[lambda p: 1 - p, lambda p: 0.5],
                    callbacks=[WatchLR()], progress=False)
    learn.fit(2)
    assert len(seen) == learn.total_steps
    for progress, (lr_body, lr_head) in seen:
        assert math.isclose(lr_body, 1e-3 * (1 - progress)) and math.isclose(lr_head, 5e-3)
    assert [lrs for _, lrs in seen] == learn.history.lrs


def test_param_group_learning_rates_are_respected():
    "With SGD (no momentum) a step moves each parameter by exactly lr * grad."
    set_seed(0)
    train, _ = loaders()
    model = make_model()
    groups = [{'params': model[0].parameters(), 'lr': 0.1}, {'params': model[3].parameters(), 'lr': 0.001}]
    record = {}

    class Capture(Callback):
        def before_step(self, learn):
            record['before'] = [p.detach().clone() for p in (model[0].weight, model[3].weight)]
            record['grads'] = [p.grad.clone() for p in (model[0].weight, model[3].weight)]
        def after_step(self, learn): raise StopTraining()
    Learner(model, train, opt_func=torch.optim.SGD, param_groups=groups, callbacks=[Capture()], progress=False).fit(1)
    for p, before, grad, lr in zip((model[0].weight, model[3].weight), record['before'], record['grads'], (0.1, 0.001)):
        assert torch.allclose(before - p.detach(), lr * grad, atol=1e-7)


def test_frozen_parameters_do_not_change_and_can_be_unfrozen():
    class FreezeThenUnfreeze(Callback):
        def before_fit(self, learn): learn.model[0].requires_grad_(False)
        def before_epoch(self, learn):
            if learn.epoch == 1: learn.model[0].requires_grad_(True)
        def after_epoch(self, learn):
            if learn.epoch == 0: self.after_first = learn.model[0].weight.detach().clone()

    learn = new_learner(weight_decay=0.1, callbacks=[cb := FreezeThenUnfreeze()])
    start = learn.model[0].weight.detach().clone()
    head_start = learn.model[3].weight.detach().clone()
    learn.fit(2)
    assert torch.equal(cb.after_first, start)  # frozen during epoch 0, even with weight decay
    assert not torch.equal(learn.model[0].weight, start)  # trained after unfreezing
    assert not torch.equal(learn.model[3].weight, head_start)


def test_early_stopping_stops_after_patience():
    stopper = EarlyStopping('valid_accuracy', patience=2, mode='max')

    class FakeMetric(Callback):  # accuracy that peaks at epoch 1, then falls
        def after_validate(self, learn): learn.epoch_metrics['valid_accuracy'] = [0.5, 0.9, 0.8, 0.7, 0.6, 0.5][learn.epoch]
    learn = new_learner(callbacks=[FakeMetric(), stopper])
    learn.fit(6)
    assert len(learn.history.epochs) == 4 and stopper.stopped_epoch == 3 and stopper.best == 0.9
    with pytest.raises(KeyError, match='valid_nonsense'):
        new_learner(callbacks=[EarlyStopping('valid_nonsense')]).fit(1)


def test_grad_clip_bounds_the_gradient_norm():
    norms = []

    class GradNorm(Callback):
        def after_step(self, learn):
            grads = [p.grad.flatten() for p in learn.model.parameters() if p.grad is not None]
            norms.append(torch.cat(grads).norm().item())
    new_learner(lr=1.0, grad_clip=0.05, callbacks=[GradNorm()]).fit(1)
    assert norms and max(norms) <= 0.05 * (1 + 1e-4)


def test_accuracy_and_predict():
    assert accuracy(torch.tensor([[1., 0.], [0., 1.]]), torch.tensor([0, 0])) == 0.5
    with pytest.raises(ValueError, match=r'\(2, 3\).*\(2, 2\)'):
        accuracy(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.long))
    learn = new_learner()
    logits, targets = learn.predict(learn.valid_dl)
    assert logits.shape == (48, 3) and targets.shape == (48,) and learn.model.training
    assert set(learn.validate()) == {'loss', 'accuracy'}
    frame = learn.fit(1).to_frame()
    assert list(frame.columns) == ['epoch', 'step', 'train_loss', 'valid_loss', 'valid_accuracy']
