"""Behaviour of tlcourse.learner: the one training loop of the course."""
import copy, math, os, random, signal
from pathlib import Path

import numpy as np
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

    def failing_save(obj, f):  # f: an open file or a path, whichever the writer hands to torch.save
        if isinstance(f, (str, os.PathLike)): Path(f).write_bytes(b'partial bytes')
        else: f.write(b'partial bytes')
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


# ---- a learner never loses or corrupts work (issue 13) ----

def make_bn_model():
    "Batch norm (running statistics change in the forward pass) and dropout (draws random numbers)."
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


class Optimiser(torch.optim.AdamW):
    "AdamW that can send itself Ctrl-C (SIGINT) right after its `signal_after`-th update, as if the user pressed it then."
    signal_after = None

    def step(self, closure=None):
        out = super().step(closure)
        self.updates = getattr(self, 'updates', 0) + 1
        if self.updates == self.signal_after: signal.raise_signal(signal.SIGINT)
        return out


def bn_learner(tmp_path, callbacks=(), **kwargs):
    set_seed(0)
    train, valid = loaders()
    return Learner(make_bn_model(), train, valid, seed=0, lr=1e-2, callbacks=callbacks, progress=False,
                   schedule=lambda p: 1 - p, opt_func=Optimiser, checkpoint_path=tmp_path / 'run.pt', **kwargs)


def assert_same(a, b, where='state'):
    "Recursive equality, bit for bit for tensors and arrays."
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray): assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a: assert_same(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert type(a) == type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)): assert_same(x, y, f'{where}[{i}]')
    else: assert a == b or (a != a and b != b), f'{where}: {a!r} != {b!r}'


def training_state(learn):
    "Everything a resume must reproduce: weights and batch-norm buffers, optimiser, history."
    return {'model': learn.model.state_dict(), 'optimizer': learn.opt.state_dict(), 'history': learn.history.state_dict()}


STEPS_PER_EPOCH, EPOCHS = 6, 3
# (event, step at which to interrupt): every event, and every stage of a step (steps 7-11 are batches 1-5 of epoch 1)
INTERRUPTS = [('before_fit', 0), ('before_epoch', 6), ('before_batch', 7), ('after_pred', 8), ('after_loss', 9),
              ('before_step', 10), ('after_step', 11), ('after_validate', 12), ('after_epoch', 12), ('after_fit', 18)]


def test_interrupts_cover_every_event():
    assert sorted(e for e, _ in INTERRUPTS) == sorted(EVENTS)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    learn = bn_learner(tmp_path_factory.mktemp('full'))
    learn.fit(EPOCHS)
    assert learn.steps_per_epoch == STEPS_PER_EPOCH
    return copy.deepcopy(training_state(learn))


@pytest.mark.parametrize('event,step', INTERRUPTS)
def test_resume_is_bit_exact_after_an_interrupt_at_any_event(tmp_path, uninterrupted, event, step):
    interrupted = bn_learner(tmp_path, callbacks=[InterruptAt(step, event)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(EPOCHS)
    checkpoint = tmp_path / 'run.pt'
    if event == 'before_fit':
        assert not checkpoint.exists()  # nothing had started: nothing to save, a resume starts afresh
    else:
        saved = read_checkpoint(checkpoint)
        assert saved['step'] == step
        assert_same(saved['model'], interrupted.model.state_dict())  # the learner was rewound to what it saved
    resumed = bn_learner(tmp_path)
    resumed.fit(EPOCHS, resume=True)
    assert_same(training_state(resumed), uninterrupted)
    assert [p.name for p in tmp_path.iterdir()] == ['run.pt']  # no temporary files left


def test_mid_step_interrupt_undoes_the_batch_norm_update(tmp_path):
    "The forward pass has moved the running statistics; the saved step must not include that half-step."
    seen = {}

    class Watch(Callback):
        def after_step(self, learn):
            if learn.step == 9: seen['after_step_9'] = learn.model[1].running_mean.clone()
        def after_pred(self, learn):
            if learn.step == 9: seen['moved'] = not torch.equal(learn.model[1].running_mean, seen['after_step_9'])
    learn = bn_learner(tmp_path, callbacks=[Watch(), InterruptAt(9, 'after_loss')])
    with pytest.raises(KeyboardInterrupt):
        learn.fit(EPOCHS)
    assert seen['moved']
    assert_same(read_checkpoint(tmp_path / 'run.pt')['model']['1.running_mean'], seen['after_step_9'])


def test_ctrl_c_during_the_update_waits_until_the_step_is_counted(tmp_path, uninterrupted):
    "A real SIGINT right after the optimiser has changed the weights, before the step counter moves."
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    Optimiser.signal_after = 10
    try:
        learn = bn_learner(tmp_path)
        with pytest.raises(KeyboardInterrupt):
            learn.fit(EPOCHS)
    finally:
        Optimiser.signal_after = None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put the handler back
    assert learn.step == 10 and read_checkpoint(tmp_path / 'run.pt')['step'] == 10
    resumed = bn_learner(tmp_path)
    resumed.fit(EPOCHS, resume=True)
    assert_same(training_state(resumed), uninterrupted)


class Picky(Callback):
    "A callback with state that refuses a negative count."
    def __init__(self): self.count = 0
    def after_step(self, learn): self.count += 1
    def state_dict(self): return {'count': self.count}
    def load_state_dict(self, state):
        if state['count'] < 0: raise ValueError('count must be >= 0')
        self.count = state['count']


def everything(learn):
    "The whole observable state of a learner and the process's random generators."
    counters = {k: getattr(learn, k) for k in ('step', 'epoch', 'batch_idx', 'epochs_done', 'n_epochs', 'total_steps',
                                               'steps_per_epoch', 'seed', 'last_checkpoint', '_history_start')}
    return copy.deepcopy({'training': training_state(learn), 'counters': counters,
                          'trainable': [p.requires_grad for p in learn.model.parameters()],
                          'callbacks': [cb.state_dict() for cb in learn.callbacks],
                          'rng': [random.getstate(), np.random.get_state(), torch.get_rng_state()]})


def edited(good, tmp_path, name, change):
    state = torch.load(good, weights_only=True)
    change(state)
    torch.save(state, tmp_path / name)
    return tmp_path / name


def other_learner_checkpoint(tmp_path, name, **kwargs):
    set_seed(0)
    train, valid = loaders()
    model = kwargs.pop('model', None) or make_bn_model()
    Learner(model, train, valid, seed=0, progress=False, checkpoint_path=tmp_path / name, **kwargs).fit(2)
    return tmp_path / name


def bad_checkpoints(tmp_path, good):
    def rng_of_wrong_size(s): s['rng']['python']['state'] = s['rng']['python']['state'][:10]
    def wrong_adam_shape(s): s['optimizer']['state'][0]['exp_avg'] = torch.zeros(3, 3)
    def history_too_short(s): s['history']['train_loss'] = s['history']['train_loss'][:2]
    def rejected_callback_state(s): s['callbacks'] = [['Picky', {'count': -1}]]
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(good.read_bytes()[:800])
    torch.save({'something': 'else'}, tmp_path / 'not_a_checkpoint.pt')
    model = make_bn_model()
    return {
        'truncated file': (truncated, 'damaged'),
        'not a learner checkpoint': (tmp_path / 'not_a_checkpoint.pt', 'not a tlcourse Learner checkpoint'),
        'key missing': (edited(good, tmp_path, 'no_rng.pt', lambda s: s.pop('rng')), 'lacks rng'),
        'weights of another shape': (other_learner_checkpoint(tmp_path, 'wide.pt', model=nn.Sequential(
            nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))), 'do not fit this model'),
        'other param groups': (other_learner_checkpoint(tmp_path, 'groups.pt', model=model, param_groups=[
            {'params': model[:2].parameters()}, {'params': model[4].parameters()}]), 'param groups'),
        'other optimiser': (other_learner_checkpoint(tmp_path, 'sgd.pt', opt_func=torch.optim.SGD), 'uses Optimiser'),
        'optimiser state of another shape': (edited(good, tmp_path, 'adam.pt', wrong_adam_shape), r"'exp_avg' has shape \(3, 3\)"),
        'damaged history': (edited(good, tmp_path, 'history.pt', history_too_short), 'history'),
        # these two pass every check and fail half-way through loading: the learner must be put back
        'damaged random states': (edited(good, tmp_path, 'rng.pt', rng_of_wrong_size), 'left exactly as it was'),
        'callback rejects its state': (edited(good, tmp_path, 'picky.pt', rejected_callback_state), 'count must be >= 0'),
    }


def test_a_failed_load_changes_nothing(tmp_path):
    learn = bn_learner(tmp_path, callbacks=[Picky()])
    learn.fit(2)
    learn.model[0].requires_grad_(False)  # frozen layers must stay frozen too
    good = tmp_path / 'run.pt'
    for kind, (path, message) in bad_checkpoints(tmp_path, good).items():
        for how in ('load_checkpoint', 'fit(resume=True)'):
            random.random(); np.random.rand(); torch.rand(1)  # states that differ from any saved ones
            before = everything(learn)
            with pytest.raises(CheckpointError, match=message):
                if how == 'load_checkpoint': learn.load_checkpoint(path)
                else:
                    learn.checkpoint_path = path
                    try: learn.fit(2, resume=True)
                    finally: learn.checkpoint_path = good
            assert_same(everything(learn), before, f'{kind} via {how}')
    learn.load_checkpoint(good)  # and a good file still loads
    assert learn.step == 12 and learn.callbacks[0].count == 12


class Diverge(Callback):
    "After step `at`, put an infinity into a weight, as a diverging update does while its loss was still finite."
    def __init__(self, at, then_interrupt=False): self.at, self.then_interrupt = at, then_interrupt
    def after_step(self, learn):
        if learn.step == self.at:
            with torch.no_grad(): learn.model[0].weight[0, 0] = float('inf')
            if self.then_interrupt: raise KeyboardInterrupt


# (diverging step, checkpoint_every, Ctrl-C right after it, step of the last finite checkpoint); each divergence
# happens just before a save (end of an epoch, every 2nd step) or an interrupt, so the loss has not yet turned NaN
@pytest.mark.parametrize('at,every,interrupt,last_good', [(18, 'epoch', False, 12), (9, 'epoch', True, 6),
                                                          (10, 2, False, 8), (6, 'epoch', False, None)])
def test_non_finite_weights_never_overwrite_the_last_finite_checkpoint(tmp_path, at, every, interrupt, last_good):
    learn = bn_learner(tmp_path, callbacks=[Diverge(at, interrupt)], checkpoint_every=every)
    with pytest.raises(KeyboardInterrupt if interrupt else NonFiniteLossError) as info:
        learn.fit(EPOCHS)
    if not interrupt:
        message = str(info.value)
        assert '0.weight' in message and 'lower learning rate' in message
        assert (f'step {last_good}' in message) if last_good else 'No checkpoint was saved' in message
    if last_good is None:
        assert not (tmp_path / 'run.pt').exists()
        return
    saved = read_checkpoint(tmp_path / 'run.pt')
    assert saved['step'] == last_good
    assert all(torch.isfinite(t).all() for t in saved['model'].values() if t.is_floating_point())


def test_non_finite_weights_stop_a_fit_without_checkpoints():
    "No checkpoint file to protect, but the fit must not end as a success with broken weights."
    set_seed(0)
    train, _ = loaders()
    learn = Learner(make_bn_model(), train, seed=0, progress=False, callbacks=[Diverge(6)])
    with pytest.raises(NonFiniteLossError, match='No checkpoint was saved'):
        learn.fit(1)
