"""Lecture 3's library: linear CKA, per-stage activations, layer-wise transfer, 2-d embeddings."""
import matplotlib
matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from tlcourse.data import load_mnist5k, subsample_per_class
from tlcourse.models import SmallCNN
from tlcourse.representations import (cka_matrix, embed_2d, layer_activations, layerwise_experiment, layerwise_transfer,
                                      linear_cka, plot_cka, plot_embedding, transfer_first_stages)
from tlcourse.learner import fit_classifier
from tlcourse.registry import load_pretrained


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def source():
    return load_pretrained("fashion_cnn")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist5k()


def cka_by_hsic(X, Y):
    "The definition: HSIC with explicit n x n linear kernels and the centring matrix H."
    X, Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
    n = len(X)
    H = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    hsic = lambda K, L: torch.trace(K @ H @ L @ H) / (n - 1) ** 2
    K, L = X @ X.T, Y @ Y.T
    return (hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))).item()


@pytest.mark.parametrize("n,d1,d2", [(100, 5, 12), (60, 80, 7), (40, 100, 200)])  # feature form and Gram form
def test_linear_cka_equals_hsic_definition(n, d1, d2):
    g = torch.Generator().manual_seed(n + d1)
    X = torch.randn(n, d1, generator=g)
    Y = X[:, :1] * torch.randn(1, d2, generator=g) + torch.randn(n, d2, generator=g)
    assert linear_cka(X, Y) == pytest.approx(cka_by_hsic(X, Y), abs=1e-10)
    assert linear_cka(X.numpy(), Y.numpy()) == pytest.approx(linear_cka(X, Y), abs=1e-12)  # NumPy arrays work too


def test_linear_cka_invariances_and_range():
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(150, 20, generator=g).double(), torch.randn(150, 9, generator=g).double()
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g).double())
    assert linear_cka(X, X) == pytest.approx(1, abs=1e-12)
    assert linear_cka(X, X @ Q) == pytest.approx(1, abs=1e-10)
    assert linear_cka(X @ Q, Y) == pytest.approx(linear_cka(X, Y), abs=1e-10)
    assert linear_cka(3.7 * X, Y) == pytest.approx(linear_cka(X, Y), abs=1e-12)
    assert linear_cka(X + 5, Y) == pytest.approx(linear_cka(X, Y), abs=1e-10)  # centring removes offsets
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), abs=1e-14)
    A = torch.randn(20, 20, generator=g).double()
    values = [linear_cka(X, Y), linear_cka(X, X @ A), linear_cka(X, torch.cat([X, Y], 1))]
    assert all(0 <= v <= 1 for v in values) and values[1] < 0.999  # not invariant to arbitrary linear maps


@pytest.mark.parametrize("X,Y,match", [
    (torch.randn(10, 3), torch.randn(9, 3), "10 rows but Y has 9"),
    (torch.randn(0, 3), torch.randn(0, 3), "at least 2 examples"),
    (torch.randn(10, 0), torch.randn(10, 3), "at least 2 examples and 1 feature"),
    (torch.randn(10), torch.randn(10), r"shape \[N, D\]"),
    (torch.ones(10, 3), torch.randn(10, 3), "constant"),
    (torch.randn(10, 300), torch.ones(10, 400), "constant"),
])
def test_linear_cka_bad_input(X, Y, match):
    with pytest.raises(ValueError, match=match):
        linear_cka(X, Y)


def test_layer_activations_shapes_and_values(source, mnist):
    images = mnist.images[::100]
    acts = layer_activations(source, images)
    assert list(acts) == source.stage_names
    # full resolution: the stage outputs flattened, computed by hand
    x = images
    with torch.no_grad():
        for name in source.stage_names[:-1]:
            x = source.stage(name)(x)
            assert torch.allclose(acts[name], x.flatten(1), atol=1e-5)
        assert torch.allclose(acts["head"], source(images), atol=1e-5)
    pooled = layer_activations(source, images, ["stage1"], grid=2)["stage1"]
    assert pooled.shape == (50, 16 * 4)


def test_layer_activations_bad_input(source, mnist):
    with pytest.raises(ValueError, match="stage9.*stem.*stage1.*head"):
        layer_activations(source, mnist.images[:4], ["stem", "stage9"])
    with pytest.raises(ValueError, match="non-empty"):
        layer_activations(source, mnist.images[:0])
    with pytest.raises(TypeError, match="StagedModel"):
        layer_activations(torch.nn.Linear(3, 3), mnist.images[:4])


def test_cka_matrix_matches_pairwise_cka(source, mnist):
    images = mnist.images[::50]
    other = SmallCNN().eval()
    matrix = cka_matrix(source, other, images, stages=["stem", "stage3", "head"])
    acts_a = layer_activations(source, images, ["stem", "stage3", "head"])
    acts_b = layer_activations(other, images, ["stem", "stage3", "head"])
    expected = np.array([[linear_cka(a, b) for b in acts_b.values()] for a in acts_a.values()])
    assert np.allclose(matrix.values, expected, atol=1e-10)
    self_matrix = cka_matrix(source, source, images)
    assert np.allclose(np.diag(self_matrix.values), 1) and np.allclose(self_matrix.values, self_matrix.values.T)
    plot_cka(matrix)


def test_transfer_first_stages_copies_reinitialises_and_freezes(source, mnist):
    body = source.stage_names[:-1]
    for k in range(len(body) + 1):
        for frozen in (True, False):
            model = transfer_first_stages(source, k, frozen, num_classes=10)
            for s in body:
                copied = all(torch.equal(model.stage(s).state_dict()[key], v)
                             for key, v in source.stage(s).state_dict().items())
                assert copied == (s in body[:k])
                assert all(p.requires_grad != (frozen and s in body[:k]) for p in model.stage(s).parameters())
            assert all(p.requires_grad for p in model.stage("head").parameters())
    # training leaves frozen stages exactly as they were, BatchNorm running statistics included
    model = transfer_first_stages(source, 3, frozen=True, num_classes=10)
    fit_classifier(model, mnist.subset(subsample_per_class(mnist.labels, 3, seed=0)), lr=1e-2, steps=6)
    for s in body:
        unchanged = all(torch.equal(model.stage(s).state_dict()[key], v) for key, v in source.stage(s).state_dict().items())
        assert unchanged == (s in body[:3])


@pytest.mark.parametrize("k", [-1, 5, 2.0, True])
def test_transfer_first_stages_k_out_of_range(source, k):
    with pytest.raises(ValueError, match=r"k must be an int from 0 to 4.*stem"):
        transfer_first_stages(source, k, frozen=True, num_classes=10)


def test_layerwise_experiment_runs(source, mnist):
    train = mnist.subset(subsample_per_class(mnist.labels, 2, seed=0))
    test = mnist.subset(torch.arange(0, 5000, 50))
    acc = layerwise_transfer(source, train, test, 2, frozen=True, steps=4)
    assert 0 <= acc <= 1
    results = layerwise_experiment(source, {0: train}, test, ks=[0, 4], steps=2)
    assert len(results) == 4 and set(results["method"]) == {"frozen", "fine-tuned"}
    k0 = results[results["k"] == 0]["accuracy"]
    assert k0.nunique() == 1  # k = 0 copies nothing: one scratch run reported under both methods


def test_embed_2d_pca_matches_sklearn_and_plot_embedding():
    from sklearn.decomposition import PCA
    g = torch.Generator().manual_seed(0)
    features = torch.randn(120, 6, generator=g) * torch.tensor([5.0, 3, 1, 1, 1, 1])
    ours = embed_2d(features, "pca")
    reference = PCA(2).fit_transform(features.double().numpy())
    assert np.allclose(np.abs(ours), np.abs(reference), atol=1e-8)
    xy = embed_2d(features[:40], "tsne")
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    with pytest.raises(ValueError, match="'pca' or 'tsne'"):
        embed_2d(features, "umap")
    labels, domains = torch.arange(120) % 10, torch.arange(120) % 2
    axes = plot_embedding(features, labels, domains, "pca", ["a", "b"])
    assert len(axes) == 2
    with pytest.raises(ValueError, match="labels"):
        plot_embedding(features, labels[:10])
    with pytest.raises(ValueError, match="domain"):
        plot_embedding(features, labels, domains[:5])
