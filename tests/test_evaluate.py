"""Lecture 2's evaluation tools: learning curves, convergence speed, fair comparison, ablations."""
import math
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tlcourse.evaluate import (ablate, ablation_configurations, area_under_curve, cross_validate, learning_curve,
                               log_uniform, paired_comparison, random_search, sample_settings, steps_to_target,
                               stratified_folds, uniform)
from tlcourse.evaluate import label_efficiency


def nearest_mean_run(images, labels):
    "A cheap real recipe: nearest class mean on raw pixels; accuracy on `evaluate_on`."
    def run(train_idx, seed, evaluate_on, shrink=0.0):
        x, y = images[train_idx], labels[train_idx]
        means = torch.stack([x[y == c].mean(0) for c in range(10)]) * (1 - shrink)
        pred = torch.cdist(images[evaluate_on], means).argmin(1)
        return (pred == labels[evaluate_on]).float().mean().item()
    return run


@pytest.fixture(scope="module")
def digits():
    from tlcourse.data import load_digits
    d = load_digits()
    return d.images.flatten(1), d.labels


def test_learning_curve_is_label_efficiency_with_one_method(digits):
    images, labels = digits
    run = nearest_mean_run(images, labels)
    test = torch.arange(0, len(labels), 3)
    pool = torch.tensor([i for i in range(len(labels)) if i % 3])
    ours = learning_curve(run, labels, [1, 5], [0, 1], pool_indices=pool, name="nearest mean", evaluate_on=test)
    ref = label_efficiency({"nearest mean": run}, labels, [1, 5], [0, 1], pool_indices=pool,
                           **{"nearest mean": dict(evaluate_on=test)})
    pd.testing.assert_frame_equal(ours.drop(columns="seconds"), ref.drop(columns="seconds"))
    assert ours.groupby("n")["accuracy"].mean()[5] > ours.groupby("n")["accuracy"].mean()[1]


def frame(steps, values):
    return pd.DataFrame({"step": steps, "valid_accuracy": values})


def test_steps_to_target():
    h = frame([10, 20, 30, 40], [0.2, 0.5, 0.45, 0.9])
    assert steps_to_target(h, 0.5) == 20 and steps_to_target(h, 0.2) == 10 and steps_to_target(h, 0.9) == 40
    assert math.isnan(steps_to_target(h, 0.95))


def test_area_under_curve_matches_numpy_trapezoid():
    rng = np.random.default_rng(0)
    steps = np.cumsum(rng.integers(1, 20, size=12)).astype(float)
    values = rng.uniform(size=12)
    expected = np.trapezoid(values, steps) / (steps[-1] - steps[0])
    assert area_under_curve(frame(steps, values)) == pytest.approx(expected, rel=1e-12)
    assert area_under_curve(frame(steps, np.full(12, 0.7))) == pytest.approx(0.7)   # a flat curve's average is itself
    assert area_under_curve(frame([5], [0.3])) == 0.3


def test_curve_tools_reject_bad_histories():
    with pytest.raises(KeyError, match="valid_set"): steps_to_target(pd.DataFrame({"step": [1]}), 0.5)
    with pytest.raises(ValueError, match="empty"): area_under_curve(frame([], []))
    with pytest.raises(ValueError, match="increase"): area_under_curve(frame([2, 1], [0.1, 0.2]))


def test_sample_settings_log_uniform_and_reproducible():
    space = dict(lr=log_uniform(1e-4, 1e-1), momentum=uniform(0.5, 0.9), stage=["a", "b"], steps=100)
    settings = sample_settings(space, 2000, seed=3)
    assert settings[:5] == sample_settings(space, 5, seed=3)
    assert settings[:5] != sample_settings(space, 5, seed=4)
    lrs = np.array([s["lr"] for s in settings])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    # the logarithm is uniform: a Kolmogorov-Smirnov test against scipy's uniform does not reject it
    assert stats.kstest(np.log(lrs), stats.uniform(np.log(1e-4), np.log(1e-1) - np.log(1e-4)).cdf).pvalue > 0.01
    assert {s["stage"] for s in settings} == {"a", "b"} and all(s["steps"] == 100 for s in settings)
    with pytest.raises(ValueError): sample_settings(space, 0)
    with pytest.raises(ValueError): sample_settings({}, 3)
    with pytest.raises(ValueError): log_uniform(0, 1)


def test_random_search_picks_the_best_trial():
    def run(x, lr, offset=0.0): return -(math.log10(lr) + 2) ** 2 + x + offset
    best, table = random_search(run, dict(lr=log_uniform(1e-4, 1)), 20, 0, 1.0, offset=0.5)
    assert len(table) == 20 and best["lr"] == table.loc[table["valid_accuracy"].idxmax(), "lr"]
    assert table["valid_accuracy"].max() == pytest.approx(run(1.0, best["lr"], 0.5))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_stratified_folds_have_sklearn_properties(k):
    from sklearn.model_selection import StratifiedKFold
    labels = torch.tensor([0] * 13 + [1] * 7 + [2] * 22 + [3] * 5)
    folds = stratified_folds(labels, k, seed=1)
    valid = [v for _, v in folds]
    assert len(folds) == k
    assert torch.equal(torch.cat(valid).sort().values, torch.arange(len(labels)))          # disjoint and covering
    for train, v in folds:
        assert len(set(train.tolist()) & set(v.tolist())) == 0 and len(train) + len(v) == len(labels)
    ours = np.stack([np.bincount(labels[v].numpy(), minlength=4) for v in valid])
    sk = np.stack([np.bincount(labels.numpy()[v], minlength=4)
                   for _, v in StratifiedKFold(k, shuffle=True, random_state=0).split(np.zeros(len(labels)), labels.numpy())])
    # each class is spread over the folds exactly as evenly as sklearn spreads it
    assert (np.sort(ours, axis=0) == np.sort(sk, axis=0)).all()
    assert ours.sum(1).max() - ours.sum(1).min() <= 1
    assert all(torch.equal(a[1], b[1]) for a, b in zip(folds, stratified_folds(labels, k, seed=1)))


def test_stratified_folds_reject_bad_k():
    labels = torch.tensor([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match="smallest class"): stratified_folds(labels, 4)
    with pytest.raises(ValueError): stratified_folds(labels, 1)
    with pytest.raises(ValueError): stratified_folds(torch.tensor([], dtype=torch.long), 2)


def test_cross_validate_scores_every_fold(digits):
    images, labels = digits
    seen = []
    def run(train_idx, seed, evaluate_on):
        seen.append(evaluate_on)
        assert not set(train_idx.tolist()) & set(evaluate_on.tolist())
        return nearest_mean_run(images, labels)(train_idx, seed, evaluate_on)
    subset = torch.arange(0, len(labels), 2)
    table = cross_validate(run, labels, k=4, seed=0, indices=subset)
    assert list(table["fold"]) == [0, 1, 2, 3] and table["accuracy"].between(0.5, 1).all()
    assert torch.equal(torch.cat(seen).sort().values, subset)


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(0.8, 0.05, size=7)
    b = a - 0.03 + rng.normal(0, 0.02, size=7)
    result = paired_comparison(a, b)
    ref = stats.ttest_rel(a, b)
    d = a - b
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert result["mean_difference"] == pytest.approx(d.mean())
    assert (result["low"], result["high"]) == pytest.approx((low, high))
    assert result["t"] == pytest.approx(ref.statistic) and result["p_value"] == pytest.approx(ref.pvalue)
    assert result["verdict"] == ("a better" if low > 0 else "b better" if high < 0 else "unclear")
    assert paired_comparison(b, a)["verdict"] == {"a better": "b better", "b better": "a better", "unclear": "unclear"}[result["verdict"]]
    assert paired_comparison(a, a + rng.normal(0, 0.5, 7))["verdict"] in {"unclear", "a better", "b better"}


def test_paired_comparison_rejects_bad_input():
    with pytest.raises(ValueError, match="one b for every a"): paired_comparison([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"): paired_comparison([1], [2])
    with pytest.raises(ValueError, match="finite"): paired_comparison([1, float("nan")], [2, 3])


def test_ablate_switches_one_component_at_a_time():
    calls = []
    def recipe(seed, pretrained=True, augment=False, scale=1.0):
        calls.append((seed, pretrained, augment))
        return scale * (0.5 + 0.3 * pretrained + 0.05 * augment) + 0.01 * seed
    table = ablate(recipe, dict(pretrained=True, augment=False), seeds=[0, 1, 2], scale=2.0)
    assert list(table["configuration"]) == ["full", "without pretrained", "with augment", "all off"]
    assert len(calls) == 4 * 3
    row = table.set_index("configuration")
    assert row.loc["without pretrained", "change"] == pytest.approx(-0.6)
    assert row.loc["with augment", "change"] == pytest.approx(0.1)
    assert row.loc["full", "mean"] == pytest.approx(2 * 0.8 + 0.01)
    assert (row["count"] == 3).all() and bool(row.loc["without pretrained", "pretrained"]) is False
    assert len(table.attrs["runs"]) == 12


def test_ablate_rejects_bad_components():
    def recipe(seed, pretrained=True): return 1.0
    with pytest.raises(ValueError, match="Unknown component"): ablate(recipe, dict(pretrained=True, dropout=True), [0, 1])
    with pytest.raises(ValueError, match="no components"): ablate(recipe, {}, [0])
    with pytest.raises(TypeError, match="True or False"): ablate(recipe, dict(pretrained=1), [0])
    with pytest.raises(ValueError, match="seed"): ablate(recipe, dict(pretrained=True), [])
    assert list(ablation_configurations(dict(a=False, b=False))) == ["full", "with a", "with b"]
