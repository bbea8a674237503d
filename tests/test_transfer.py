"""Lecture 1's library: shipped checkpoint, cached features, linear probe, fair-comparison tools."""
from pathlib import Path
import math
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tlcourse.data import load_mnist5k, split_per_class
from tlcourse.learner import set_seed
from tlcourse.models import SmallCNN
from tlcourse.features import LinearProbe, extract_features, fingerprint, fit_linear_probe, probe_accuracy
from tlcourse.recipes import pretrain_source_cnn
from tlcourse.schedules import cosine_schedule
from tlcourse.evaluate import curve_summary, label_efficiency, summarize_runs, transfer_gain, tune
from tlcourse.learner import evaluate_accuracy, fit_classifier


@pytest.fixture(scope="module")
def mnist():
    return load_mnist5k()


def test_cosine_schedule_matches_formula():
    for p in np.linspace(0, 1, 11):
        assert cosine_schedule(p) == pytest.approx((1 + math.cos(math.pi * p)) / 2, abs=1e-12)


def test_pretraining_is_deterministic(monkeypatch):
    """The recipe that made the shipped checkpoint gives identical weights for the same seed (one epoch on the first
    2,048 training images, to keep the test quick: the code path is the full recipe's)."""
    from tlcourse.data import load_fashion_mnist
    import tlcourse.recipes as T  # lecture 1's recipe lives with the other checkpoint recipes
    small = {"train": load_fashion_mnist("train").subset(torch.arange(2048)), "test": load_fashion_mnist("test").subset(torch.arange(1000))}
    monkeypatch.setattr(T, "load_fashion_mnist", lambda split="train": small[split])
    first, second = (pretrain_source_cnn(epochs=1, seed=3, progress=False) for _ in range(2))
    (a, ha), (b, hb) = (first.model, first.history), (second.model, second.history)
    assert not a.training                                               # handed back ready to transfer
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert ha.to_frame()["valid_accuracy"].tolist() == hb.to_frame()["valid_accuracy"].tolist()


def test_extract_features_cache(tmp_path, monkeypatch, mnist):
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path))
    model, images = SmallCNN().eval(), mnist.images[:64]
    first = extract_features(model, images)
    assert first.shape == (64, 64) and first.dtype == torch.float32
    assert torch.allclose(first, model.features(images), atol=1e-5)
    files = list((tmp_path / "features").glob("*.pt"))
    assert len(files) == 1
    assert torch.equal(extract_features(model, images), first)          # served from the cache
    files[0].write_bytes(b"not a tensor")                               # a damaged entry is recomputed
    assert torch.equal(extract_features(model, images), first)
    with torch.no_grad(): model.stages["stem"][0].weight.mul_(2)        # new weights -> new key, new features
    assert fingerprint(model, images) != files[0].stem
    assert not torch.equal(extract_features(model, images), first)


def test_extract_features_by_stage_and_errors(mnist):
    model, images = SmallCNN().eval(), mnist.images[:16]
    f = extract_features(model, images, stage="stage1", grid=4, cache=False)
    with torch.no_grad():
        maps = model.stage("stage1")(model.stage("stem")(images))
    assert f.shape == (16, 16 * 4 * 4)
    assert torch.allclose(f, nn.functional.adaptive_avg_pool2d(maps, 4).flatten(1), atol=1e-6)
    with pytest.raises(ValueError, match="stage9.*stem"):
        extract_features(model, images, stage="stage9", cache=False)
    with pytest.raises(ValueError, match="non-empty batch"):
        extract_features(model, images[0], cache=False)


def test_linear_probe_agrees_with_scikit_learn(mnist):
    "Same model class as multinomial logistic regression: accuracies land close on real pixels."
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    x, y = mnist.images.flatten(1)[:, ::4], mnist.labels  # 196 pixels
    train, test = split_per_class(y, 30, seed=0)
    ours = probe_accuracy(x, y, train, test[:1000])
    scaler = StandardScaler().fit(x[train].numpy())
    ref = LogisticRegression(max_iter=3000).fit(scaler.transform(x[train].numpy()), y[train].numpy())
    theirs = ref.score(scaler.transform(x[test[:1000]].numpy()), y[test[:1000]].numpy())
    assert ours > 0.7 and abs(ours - theirs) < 0.05


def test_linear_probe_standardises_and_checks_input():
    feats = torch.randn(20, 3) * torch.tensor([1.0, 100.0, 0.01]) + 5
    probe = LinearProbe(feats, 2)
    z = (feats - probe.mean) / probe.std
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4) and torch.allclose(z.std(0), torch.ones(3), atol=1e-4)
    assert torch.isfinite(LinearProbe(feats[:1], 2)(feats)).all()  # a single example still works
    with pytest.raises(ValueError, match="match"):
        fit_linear_probe(feats, torch.zeros(19, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        LinearProbe(torch.zeros(0, 3), 2)


def test_fit_classifier_is_seeded_and_budgeted(mnist):
    train = mnist.subset(torch.arange(0, 5000, 50))  # 100 images
    runs = []
    for _ in range(2):
        set_seed(0)
        runs.append(fit_classifier(SmallCNN(), train, lr=3e-3, steps=20, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()))
    assert runs[0].step == 20                                         # 100 images / batch 32 = 4 batches x 5 epochs
    tiny = fit_classifier(SmallCNN(), mnist.subset(torch.arange(0, 5000, 500)), lr=3e-3, steps=200, max_epochs=7)
    assert tiny.step == 7                                             # 10 images: one batch per epoch, capped epochs
    with pytest.raises(ValueError, match="empty|0 images"):
        fit_classifier(SmallCNN(), mnist.subset(torch.arange(0)), lr=1e-3)


def test_tune_returns_best_candidate():
    best, table = tune(lambda lr, bonus=0: -abs(lr - 0.01) + bonus, [dict(lr=1e-3), dict(lr=1e-2), dict(lr=1e-1)], bonus=1)
    assert best == dict(lr=1e-2) and len(table) == 3 and table["valid_accuracy"].max() == pytest.approx(1.0)
    with pytest.raises(ValueError): tune(lambda: 0, [])


def test_label_efficiency_pairs_methods_on_the_same_sample(mnist):
    seen = {}
    def recorder(name):
        def run(train_idx, seed, scale=1.0):
            seen[(name, len(train_idx), seed)] = train_idx.clone()
            counts = torch.bincount(mnist.labels[train_idx], minlength=10)
            assert (counts == len(train_idx) // 10).all()                # n per class
            return scale * len(train_idx)
        return run
    pool = torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:4000]  # mnist5k is sorted by label
    df = label_efficiency({"a": recorder("a"), "b": recorder("b")}, mnist.labels, [1, 3], [0, 1], pool_indices=pool,
                          b=dict(scale=2.0))
    assert len(df) == 8 and set(df.columns) >= {"method", "n", "seed", "accuracy", "seconds"}
    assert df.query("method == 'b' and n == 3")["accuracy"].tolist() == [60.0, 60.0]
    for n in (10, 30):
        for seed in (0, 1):
            assert torch.equal(seen[("a", n, seed)], seen[("b", n, seed)])
            assert torch.isin(seen[("a", n, seed)], pool).all()           # drawn from the pool only
    assert not torch.equal(seen[("a", 10, 0)], seen[("a", 10, 1)])


def test_summarize_and_transfer_gain_against_hand_computation():
    from scipy import stats
    df = pd.DataFrame(dict(method=["scratch"] * 3 + ["ft"] * 3, n=[5] * 6, seed=[0, 1, 2] * 2,
                           accuracy=[0.50, 0.60, 0.55, 0.70, 0.72, 0.71]))
    summary = summarize_runs(df).set_index("method")
    acc = np.array([0.70, 0.72, 0.71])
    assert summary.loc["ft", "mean"] == pytest.approx(acc.mean())
    assert summary.loc["ft", "ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * acc.std(ddof=1) / math.sqrt(3))
    gain = transfer_gain(df).iloc[0]
    diffs = acc - np.array([0.50, 0.60, 0.55])                          # paired by seed
    assert gain["mean"] == pytest.approx(diffs.mean())
    assert gain["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3))
    assert gain["verdict"] == "ft better"
    assert gain["p_value"] == pytest.approx(stats.ttest_rel(acc, [0.50, 0.60, 0.55]).pvalue)  # the paired t-test
    worse = df.assign(accuracy=np.where(df.method == "ft", df.accuracy - 0.3, df.accuracy))
    assert transfer_gain(worse).iloc[0]["verdict"] == "scratch better"    # negative transfer is flagged
    one_seed = transfer_gain(df[df.seed == 0]).iloc[0]                     # one seed: a gain, but no interval
    assert one_seed["mean"] == pytest.approx(0.2) and one_seed["verdict"] == "unclear" and math.isnan(one_seed["ci95"])
    with pytest.raises(ValueError, match="baseline"):
        transfer_gain(df, baseline="nope")


def test_curve_summary():
    table = curve_summary({"fast": ([1, 2, 3], [0.5, 0.9, 0.95]), "slow": ([1, 2, 3], [0.2, 0.4, 0.9])}, fraction=0.9)
    assert table.loc["fast", "start"] == 0.5 and table.loc["slow", "asymptote"] == 0.9
    target_col = [c for c in table.columns if c.startswith("x to reach")][0]
    assert table.loc["fast", target_col] == 2 and table.loc["slow", target_col] == 3   # 0.9 * 0.95 = 0.855
    assert np.isnan(curve_summary({"a": ([1, 2], [0.1, 0.2]), "b": ([1, 2], [0.1, 1.0])}).loc["a", "x to reach 0.900"])
    with pytest.raises(ValueError):
        curve_summary({"bad": ([1, 2], [0.1])})


def test_cached_tensor_is_the_one_cache_and_never_trusts_a_bad_entry(tmp_path, monkeypatch):
    from tlcourse.features import cached_tensor, cache_dir
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path))
    calls = []
    def compute(): calls.append(1); return torch.arange(4.0)
    assert torch.equal(cached_tensor("k1", compute), torch.arange(4.0)) and len(calls) == 1
    assert torch.equal(cached_tensor("k1", compute), torch.arange(4.0)) and len(calls) == 1   # served from the cache
    (cache_dir() / "k1.pt").write_bytes(b"not a tensor file")                                    # damaged entry
    assert torch.equal(cached_tensor("k1", compute), torch.arange(4.0)) and len(calls) == 2
    torch.save({"not": "a tensor"}, cache_dir() / "k1.pt")                                       # foreign entry
    assert torch.equal(cached_tensor("k1", compute), torch.arange(4.0)) and len(calls) == 3
    assert torch.equal(cached_tensor("k2", compute, cache=False), torch.arange(4.0))
    assert not (cache_dir() / "k2.pt").exists()                                                  # cache=False stores nothing
    for bad in ["", "../escape", "a/b"]:
        with pytest.raises(ValueError, match="cache key"):
            cached_tensor(bad, compute)


def test_cache_dir_outside_a_checkout_is_the_users_cache(tmp_path, monkeypatch):
    import tlcourse
    from tlcourse.features import cache_dir
    monkeypatch.delenv("TLCOURSE_CACHE", raising=False)
    assert cache_dir().parent.parent == Path(tlcourse.__file__).resolve().parent.parent  # a checkout: the repo's .cache
    fake = tmp_path / "site-packages" / "tlcourse"; fake.mkdir(parents=True)
    monkeypatch.setattr(tlcourse, "__file__", str(fake / "__init__.py"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tlcourse" / "features"  # installed: never inside site-packages
