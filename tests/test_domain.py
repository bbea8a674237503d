"""Lecture 6's library: gradient reversal, DANN, MMD, CORAL, entropy and pseudo-labels, proxy A-distance, honest UDA."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tlcourse.data import TensorImageDataset
from tlcourse.domain import ADAPTATION_TERMS, AdaptationLoss, DomainAdaptationNet, GradientReversal, GradientReversalSchedule, RecordLossParts, SourceTargetPairs, UnlabelledImages, coral_loss, domain_adversarial_loss, entropy_loss, gaussian_kernel_sum, hide_labels, multi_kernel_mmd, mmd_bandwidths, proxy_a_distance, pseudo_label_loss, pseudo_labels, reverse_gradient, train_adapted
from tlcourse.schedules import dann_lambda
from tlcourse.learner import Learner


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- gradient reversal
@pytest.mark.parametrize("lambda_", [0.0, 0.3, 1.0, 2.5])
def test_reversal_forward_is_identity_and_gradient_is_minus_lambda(lambda_):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 2, generator=g, dtype=torch.float64)
    out = GradientReversal(lambda_)(x)
    assert torch.equal(out, x) and out is not x
    loss = torch.tanh(out @ W).pow(2).sum()  # hand-built graph after the layer
    loss.backward()
    reversed_grad = x.grad.clone()
    # the same graph without the layer, differentiated by autograd: the reference gradient
    x_plain = x.detach().clone().requires_grad_(True)
    torch.tanh(x_plain @ W).pow(2).sum().backward()
    assert torch.allclose(reversed_grad, -lambda_ * x_plain.grad, rtol=0, atol=1e-14)


def test_reversal_scales_exactly_the_incoming_gradient():
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    incoming = torch.randn(5, dtype=torch.float64)
    reverse_gradient(x, 0.7).backward(incoming)
    assert torch.equal(x.grad, -0.7 * incoming)


def test_reversal_only_flips_the_branch_it_sits_on():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    (x.sum() + reverse_gradient(x, 2.0).sum() * 3).backward()  # d/dx: 1 from the plain branch, -2 * 3 through the layer
    assert torch.equal(x.grad, torch.tensor([-5.0, -5.0], dtype=torch.float64))


def test_lambda_schedule_matches_formula_and_callback_follows_progress():
    for p in np.linspace(0, 1, 11):
        for gamma in (1.0, 10.0):
            assert dann_lambda(p, gamma) == pytest.approx(2 / (1 + math.exp(-gamma * p)) - 1, abs=1e-15)
    assert dann_lambda(0.0) == 0.0 and 0.99 < dann_lambda(1.0) < 1.0
    with pytest.raises(ValueError, match=r"progress must be a finite number in \[0, 1\]"):
        dann_lambda(1.5)
    layer = GradientReversal()
    schedule = GradientReversalSchedule(layer, gamma=10.0, max_lambda=0.5)
    data = [(torch.randn(4, 2), torch.randint(0, 2, (4,))) for _ in range(5)]
    Learner(torch.nn.Sequential(layer, torch.nn.Linear(2, 2)), data, callbacks=[schedule], seed=0, progress=False).fit(2)
    assert schedule.values == [0.5 * dann_lambda(step / 10) for step in range(10)]
    assert layer.lambda_ == schedule.values[-1]
    with pytest.raises(TypeError, match="lambda_"):
        GradientReversalSchedule(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------- MMD
def mmd_by_loops(S, T, bandwidths, unbiased=False):
    "The estimator written out term by term with explicit loops over pairs."
    k = lambda a, b: sum(math.exp(-sum((float(a[d]) - float(b[d])) ** 2 for d in range(len(a))) / (2 * s2)) for s2 in bandwidths)
    n, m = len(S), len(T)
    if unbiased:
        ss = sum(k(S[i], S[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        tt = sum(k(T[i], T[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    else:
        ss = sum(k(S[i], S[j]) for i in range(n) for j in range(n)) / n ** 2
        tt = sum(k(T[i], T[j]) for i in range(m) for j in range(m)) / m ** 2
    st = sum(k(S[i], T[j]) for i in range(n) for j in range(m)) / (n * m)
    return ss + tt - 2 * st


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_equals_kernel_formula_with_loops(unbiased):
    g = torch.Generator().manual_seed(1)
    S, T = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64) * 1.5 + 0.3
    bandwidths = [0.25, 1.0, 4.0]
    assert multi_kernel_mmd(S, T, bandwidths, unbiased=unbiased).item() == pytest.approx(
        mmd_by_loops(S, T, bandwidths, unbiased), abs=1e-12)
    # default bandwidths: multiples of the mean squared distance between distinct pooled points
    pooled = torch.cat([S, T])
    mean_sq = np.mean([float(((pooled[i] - pooled[j]) ** 2).sum()) for i in range(9) for j in range(9) if i != j])
    assert mmd_bandwidths(S, T) == pytest.approx([m * mean_sq for m in (0.125, 0.25, 0.5, 1, 2)], rel=1e-12)
    assert multi_kernel_mmd(S, T, unbiased=unbiased).item() == pytest.approx(
        mmd_by_loops(S, T, mmd_bandwidths(S, T), unbiased), abs=1e-12)


def test_gaussian_kernel_sum_entries():
    X, Y = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    K = gaussian_kernel_sum(X, Y, [1.0, 2.0])
    assert K.shape == (2, 1)
    assert K[1, 0].item() == pytest.approx(math.exp(-5 / 2) + math.exp(-5 / 4), rel=1e-6)


def test_mmd_of_sample_with_itself_is_zero_and_grows_with_mean_shift():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(100, 6, generator=g, dtype=torch.float64)
    assert multi_kernel_mmd(X, X).item() == pytest.approx(0, abs=1e-14)
    fixed = [0.5, 2.0, 8.0]  # fixed bandwidths, so only the samples change
    noise = torch.randn(100, 6, generator=g, dtype=torch.float64)
    values = [multi_kernel_mmd(X, noise + shift, fixed).item() for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:])) and values[0] >= 0
    with_default = [multi_kernel_mmd(X, noise + shift).item() for shift in (0.0, 1.0, 3.0)]
    assert with_default[0] < with_default[1] < with_default[2]


def test_mmd_degenerate_inputs():
    same_point = torch.ones(5, 3)
    assert multi_kernel_mmd(same_point, same_point.clone()).item() == 0  # no 0 / 0 from a zero bandwidth
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        multi_kernel_mmd(torch.randn(4, 2), torch.randn(4, 2), bandwidths=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least 2 examples"):
        multi_kernel_mmd(torch.randn(1, 2), torch.randn(4, 2), unbiased=True)


def test_mmd_is_differentiable():
    S = torch.randn(10, 3, requires_grad=True)
    multi_kernel_mmd(S, torch.randn(12, 3) + 1).backward()
    assert S.grad is not None and torch.isfinite(S.grad).all() and S.grad.abs().sum() > 0


# ---------------------------------------------------------------- CORAL
def test_coral_equals_formula_computed_directly():
    g = torch.Generator().manual_seed(3)
    S, T = torch.randn(40, 5, generator=g, dtype=torch.float64), torch.randn(25, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    C_s, C_t = np.cov(S.numpy(), rowvar=False), np.cov(T.numpy(), rowvar=False)
    d = 5
    expected = sum((C_s[i, j] - C_t[i, j]) ** 2 for i in range(d) for j in range(d)) / (4 * d ** 2)
    assert coral_loss(S, T).item() == pytest.approx(expected, rel=1e-12)
    assert coral_loss(S, S + 10).item() == pytest.approx(0, abs=1e-20)  # a mean shift is invisible to CORAL


@pytest.mark.parametrize("loss", [multi_kernel_mmd, coral_loss, proxy_a_distance])
def test_different_feature_sizes_fail_clearly(loss):
    with pytest.raises(ValueError, match="source features have 8 dimensions but target features have 6"):
        loss(torch.randn(20, 8), torch.randn(20, 6))
    with pytest.raises(ValueError, match=r"must be a \[N, D\] tensor"):
        loss(torch.randn(20, 8, 2), torch.randn(20, 8, 2))


def test_model_refuses_source_and_target_batches_of_different_shapes():
    model = DomainAdaptationNet(widths=(4, 8))
    with pytest.raises(ValueError, match="differ in image shape"):
        model(source=torch.rand(2, 1, 16, 16), target=torch.rand(2, 1, 12, 12))


# ---------------------------------------------------------------- entropy, pseudo-labels, domain loss
def test_entropy_and_pseudo_labels():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 2.9]])
    p = F.softmax(logits, 1)
    assert entropy_loss(logits).item() == pytest.approx(float(-(p * p.log()).sum(1).mean()), abs=1e-6)
    assert entropy_loss(logits[1:2]).item() == pytest.approx(math.log(3), abs=1e-6)
    labels, mask = pseudo_labels(logits, 0.9)
    assert labels.tolist() == [0, 0, 1] and mask.tolist() == [True, False, False]
    expected = F.cross_entropy(logits[:1], torch.tensor([0])).item() / 3  # one confident row of three
    assert pseudo_label_loss(logits, 0.9).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(logits, 1.5)


def test_domain_adversarial_loss_labels_source_zero_target_one():
    logits = torch.tensor([2.0, -1.0, 0.5])
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 0.0, 1.0]))
    assert domain_adversarial_loss(logits, n_source=2).item() == pytest.approx(expected.item())


# ---------------------------------------------------------------- honest UDA
class LabelGuard:
    "Stands in for a target dataset's labels; any use of it fails the test."
    def _fail(self, *args, **kwargs): raise AssertionError("training read the target labels")
    __getitem__ = __len__ = __iter__ = __array__ = __getattr__ = __int__ = __index__ = _fail


def tiny_domains(n_source=64, n_target=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_source) % 4
    images = torch.rand(n_source, 1, 16, 16, generator=g) * 0.2
    for c in range(4): images[labels == c, :, 4 * c:4 * c + 4, :] += 0.8  # a bright band per class
    target_labels = torch.arange(n_target) % 4
    target = torch.rand(n_target, 1, 16, 16, generator=g) * 0.3
    for c in range(4): target[target_labels == c, :, 4 * c:4 * c + 4, :] += 0.5  # same classes, other contrast
    return TensorImageDataset(images, labels), TensorImageDataset(target.clamp(0, 1), target_labels)


def test_guard_would_catch_a_read():
    _, target = tiny_domains()
    target.labels = LabelGuard()
    with pytest.raises(AssertionError, match="target labels"):
        target[0]


@pytest.mark.parametrize("method", sorted(ADAPTATION_TERMS))
def test_training_never_reads_target_labels(method):
    source, target = tiny_domains()
    target.labels = LabelGuard()  # any read of the target labels now raises
    learner = train_adapted(method, source, hide_labels(target), steps=4, batch_size=16, widths=(4, 8))
    assert len(learner.history.train_loss) >= 4 and all(math.isfinite(v) for v in learner.history.train_loss)


def test_labelled_target_is_refused():
    source, target = tiny_domains()
    with pytest.raises(TypeError, match="must be unlabelled"):
        SourceTargetPairs(source, target)
    with pytest.raises(TypeError, match="hide_labels"):
        train_adapted("dann", source, target, steps=2)
    with pytest.raises(TypeError, match=r"\.images"):
        hide_labels([1, 2, 3])
    with pytest.raises(TypeError, match=r"float image tensor"):
        UnlabelledImages(torch.zeros(3, 16, 16))


def test_pairs_cover_both_domains_and_check_shapes():
    source, target = tiny_domains(n_source=10, n_target=25)
    pairs = SourceTargetPairs(source, hide_labels(target), seed=0)
    assert len(pairs) == 25
    seen_target = {tuple(pairs[i][0]["target"].flatten()[:5].tolist()) for i in range(25)}
    assert len(seen_target) == 25  # one pass over the larger domain sees every target image once
    x, y = pairs[3]
    assert set(x) == {"source", "target"} and y.dtype == torch.long
    small = UnlabelledImages(torch.rand(5, 1, 8, 8))
    with pytest.raises(ValueError, match="one resolution"):
        SourceTargetPairs(source, small)


def test_unknown_method_and_dann_without_critic():
    with pytest.raises(ValueError, match="Unknown adaptation method"):
        AdaptationLoss("mdd")
    model = DomainAdaptationNet(widths=(4, 8), adversarial=False)
    out = model(source=torch.rand(3, 1, 16, 16), target=torch.rand(2, 1, 16, 16))
    assert out.domain_logits is None
    with pytest.raises(ValueError, match="domain classifier"):
        AdaptationLoss("dann")(out, torch.tensor([0, 1, 2]))


def test_dann_steps_run_and_reduce_the_label_loss():
    source, target = tiny_domains(n_source=128, n_target=64)
    parts = RecordLossParts()
    learner = train_adapted("dann", source, hide_labels(target), steps=40, batch_size=32, lr=3e-3, widths=(8, 16),
                            callbacks=[parts])
    label = [row["label"] for row in parts.rows]
    assert len(label) == 40 and set(parts.rows[0]) == {"label", "dann"}
    assert np.mean(label[-5:]) < 0.5 * np.mean(label[:5])
    domain = [row["dann"] for row in parts.rows]
    assert all(math.isfinite(v) for v in domain)
    # the model still predicts plain label logits for evaluation
    assert learner.model(source.images[:3]).shape == (3, 4)


def test_adaptation_loss_on_plain_logits_is_cross_entropy():
    logits, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    for method in ADAPTATION_TERMS:
        assert AdaptationLoss(method)(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())


# ---------------------------------------------------------------- proxy A-distance
def test_proxy_a_distance_range_and_direction():
    g = torch.Generator().manual_seed(4)
    same = proxy_a_distance(torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g))
    close = proxy_a_distance(torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g) + 0.3)
    apart = proxy_a_distance(torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g) + 4)
    assert abs(same) < 0.3 and same < close < apart and apart == pytest.approx(2.0, abs=0.05)


def test_proxy_a_distance_is_two_times_one_minus_twice_sklearn_error():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    g = torch.Generator().manual_seed(5)
    S, T = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g) + 0.7
    rng = np.random.default_rng(0)  # the same draws as the function: one permutation per domain
    s, t = S.numpy()[rng.permutation(50)], T.numpy()[rng.permutation(50)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(np.concatenate([s[25:], t[25:]]), np.r_[np.zeros(25), np.ones(25)])
    err = 1 - clf.score(np.concatenate([s[:25], t[:25]]), np.r_[np.zeros(25), np.ones(25)])
    assert proxy_a_distance(S, T, seed=0) == pytest.approx(2 * (1 - 2 * err))
    with pytest.raises(ValueError, match="test_fraction"):
        proxy_a_distance(S, T, test_fraction=1.0)


def test_training_call_returns_every_output_with_its_shape():
    model = DomainAdaptationNet(widths=(4, 8))
    out = model(source=torch.rand(8, 1, 16, 16), target=torch.rand(5, 1, 16, 16))
    assert out.source_logits.shape == (8, 10) and out.target_logits.shape == (5, 10)
    assert out.source_features.shape == (8, 8) and out.target_features.shape == (5, 8)
    assert out.domain_logits.shape == (13,)
    assert model(torch.rand(5, 1, 16, 16)).shape == (5, 10)  # the evaluation call: label logits only


def test_hide_labels_keeps_only_the_images():
    _, target = tiny_domains(n_target=6)
    hidden = hide_labels(target)
    assert isinstance(hidden, UnlabelledImages) and not hasattr(hidden, "labels")
    assert len(hidden) == 6 and torch.equal(hidden[2], target.images[2])


# ---------------------------------------------------------------- issue 13: empty batches and nonsense settings
def test_mmd_and_coral_refuse_an_empty_batch():
    full, empty = torch.randn(4, 3), torch.zeros(0, 3)
    for loss in (multi_kernel_mmd, coral_loss):
        with pytest.raises(ValueError, match="target batch is empty"):
            loss(full, empty)
        with pytest.raises(ValueError, match="source batch is empty"):
            loss(empty, full)
    with pytest.raises(ValueError, match="source batch is empty"):
        multi_kernel_mmd(empty, full, bandwidths=[1.0])  # with given bandwidths it used to return NaN
    with pytest.raises(ValueError, match="at least 2 pooled examples"):
        mmd_bandwidths(torch.randn(1, 3), empty)


@pytest.mark.parametrize("gamma", [-10.0, -0.1, math.nan, math.inf])
def test_dann_lambda_refuses_negative_or_non_finite_gamma(gamma):
    with pytest.raises(ValueError, match=r"gamma must be a finite number in \[0, inf\).*no longer be reversed"):
        dann_lambda(0.5, gamma)
    with pytest.raises(ValueError, match=r"gamma must be a finite number >= 0"):
        GradientReversalSchedule(GradientReversal(), gamma=gamma)


@pytest.mark.parametrize("max_lambda", [-1.0, math.nan, math.inf, "1"])
def test_reversal_schedule_refuses_negative_or_non_finite_max_lambda(max_lambda):
    with pytest.raises(ValueError, match=r"max_lambda must be a finite number >= 0"):
        GradientReversalSchedule(GradientReversal(), max_lambda=max_lambda)
    assert dann_lambda(0.5, 0) == 0.0 and GradientReversalSchedule(GradientReversal(), 10, 0).max_lambda == 0


@pytest.mark.parametrize("fn", [entropy_loss, pseudo_label_loss, pseudo_labels])
def test_self_training_terms_refuse_empty_or_non_finite_logits(fn):
    with pytest.raises(ValueError, match="batch is empty"):
        fn(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="NaN or infinity"):
        fn(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"\[N, num_classes\]"):
        fn(torch.zeros(3))
