"""Lecture 7b's library: the glyph dataset, episodes, prototypical networks, MAML (second and first order), baselines."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tlcourse.data import dataset_path, load_glyphs, render_glyphs
from tlcourse.meta import (MAML, EpisodeDataset, PrototypicalNetwork, check_support, episode_accuracy, episode_loss,
                           evaluate_episodes, images_per_task, interval, maml_classifier, meta_train, mlp_backbone,
                           pretrain_classifier, prototypes, split_classes, support_fine_tuner)
from tlcourse.registry import entry, file_sha256

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_images(classes=12, per_class=8, size=6, seed=0):
    "Images [classes * per_class, 1, size, size] whose class shows in their mean, and their labels."
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.rand(len(labels), 1, size, size, generator=g) * 0.5 + labels[:, None, None, None] / classes
    return images, labels


def one_episode(n_way=5, k_shot=3, n_query=4, seed=0, dtype=torch.float32):
    images, labels = toy_images()
    inputs, query_labels = EpisodeDataset(images.to(dtype), labels, torch.arange(12), n_way, k_shot, n_query, 10, seed=seed)[3]
    return inputs, query_labels


# ---------------------------------------------------------------- the glyph dataset
def test_glyph_file_matches_its_registered_sha256():
    path = dataset_path("glyphs")  # raises when the content differs from the manifest
    assert file_sha256(path) == entry("datasets", "glyphs")["sha256"]


def test_glyph_generator_is_deterministic_and_made_the_shipped_file():
    first, second = render_glyphs(classes=3), render_glyphs(classes=3)
    for name in first: assert np.array_equal(first[name], second[name]), name
    with np.load(dataset_path("glyphs")) as shipped:
        n = len(first["labels"])
        for name in ("images", "labels", "faces"): assert np.array_equal(first[name], shipped[name][:n]), name
        assert list(first["characters"]) == list(shipped["characters"][:3])
        assert len(shipped["characters"]) >= 400 and np.all(np.bincount(shipped["labels"]) == 20)


def test_other_seed_draws_other_distortions():
    assert not np.array_equal(render_glyphs(classes=1, seed=0)["images"], render_glyphs(classes=1, seed=1)["images"])


def test_load_glyphs_shapes_and_names():
    glyphs = load_glyphs(size=20)
    assert glyphs.images.shape[1:] == (1, 20, 20) and glyphs.images.dtype == torch.float32
    assert 0 <= glyphs.images.min() and glyphs.images.max() <= 1
    assert len(glyphs.classes) == len(glyphs.alphabets) == int(glyphs.labels.max()) + 1
    assert len(set(glyphs.classes)) == len(glyphs.classes)  # every class a different character


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_render_glyphs_refuses_bad_sizes(bad):
    with pytest.raises(ValueError, match="per_class must be a positive int"): render_glyphs(per_class=bad, classes=1)


# ---------------------------------------------------------------- splits and episodes
def test_split_classes_is_disjoint_and_complete():
    parts = split_classes(50, test=10, valid=5, seed=3)
    together = torch.cat(list(parts.values()))
    assert sorted(together.tolist()) == list(range(50))
    assert (len(parts["train"]), len(parts["valid"]), len(parts["test"])) == (35, 5, 10)
    assert torch.equal(parts["test"], split_classes(50, test=10, valid=5, seed=3)["test"])


@pytest.mark.parametrize("kwargs", [dict(test=0), dict(test=10, valid=40), dict(test=-1), dict(test=3, valid=1.5)])
def test_split_classes_refuses_impossible_splits(kwargs):
    with pytest.raises(ValueError, match="split_classes"): split_classes(50, **kwargs)


@pytest.mark.parametrize("n_way,k_shot,n_query", [(5, 1, 3), (3, 5, 2), (2, 2, 6)])
def test_episodes_have_n_k_support_and_n_q_queries_from_one_split(n_way, k_shot, n_query):
    images, labels = toy_images()
    parts = split_classes(12, test=5, seed=0)
    for name, class_ids in parts.items():
        if len(class_ids) < n_way: continue
        episodes = EpisodeDataset(images, labels, class_ids, n_way, k_shot, n_query, 30, seed=1)
        for i in range(len(episodes)):
            support, support_labels, query, query_labels, chosen = episodes.indices(i)
            assert len(support) == n_way * k_shot and len(query) == n_way * n_query
            assert set(labels[support].tolist()) | set(labels[query].tolist()) <= set(class_ids.tolist())
            assert not set(support.tolist()) & set(query.tolist())  # a query is never in the support set
            assert torch.equal(torch.bincount(support_labels, minlength=n_way), torch.full((n_way,), k_shot))
            assert torch.equal(labels[support], chosen[support_labels]) and torch.equal(labels[query], chosen[query_labels])
        inputs, query_labels = episodes[0]
        assert inputs["support"].shape == (n_way * k_shot, 1, 6, 6) and inputs["query"].shape == (n_way * n_query, 1, 6, 6)


def test_meta_train_and_meta_test_episodes_never_share_a_class():
    images, labels = toy_images()
    parts = split_classes(12, test=5, seed=0)
    seen = {name: set() for name in ("train", "test")}
    for name in seen:
        for i in range(40): seen[name] |= set(EpisodeDataset(images, labels, parts[name], 5, 1, 2, 40, seed=i).indices(i)[4].tolist())
    assert seen["train"] and seen["test"] and not seen["train"] & seen["test"]


def test_episodes_are_seeded():
    images, labels = toy_images()
    a, b, c = (EpisodeDataset(images, labels, torch.arange(12), 5, 2, 3, 8, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.indices(5), b.indices(5)))
    assert not all(torch.equal(x, y) for x, y in zip(a.indices(5), c.indices(5)))


def test_episode_errors_say_what_is_wrong():
    images, labels = toy_images()
    with pytest.raises(ValueError, match="k_shot must be an int >= 1"): EpisodeDataset(images, labels, range(12), 5, 0, 3, 5)
    with pytest.raises(ValueError, match="n_way=13 is more than the 12 classes"): EpisodeDataset(images, labels, range(12), 13, 1, 1, 5)
    with pytest.raises(ValueError, match="needs k_shot \\+ n_query = 9 images"): EpisodeDataset(images, labels, range(12), 5, 5, 4, 5)
    with pytest.raises(ValueError, match="12 labels"): EpisodeDataset(images[:10], labels[:12], range(12), 5, 1, 1, 5)
    with pytest.raises(IndexError): EpisodeDataset(images, labels, range(12), 5, 1, 1, 5)[5]


# ---------------------------------------------------------------- prototypical networks
def test_protonet_predicts_the_nearest_class_mean_computed_by_hand():
    torch.manual_seed(0)
    inputs, _ = one_episode(dtype=torch.float64)
    backbone = mlp_backbone(36, widths=(10, 4)).double()
    logits = PrototypicalNetwork(backbone, n_way=5)(**inputs)
    support, query = backbone(inputs["support"]).detach(), backbone(inputs["query"]).detach()
    means = [support[inputs["support_labels"] == c].mean(0) for c in range(5)]
    distances = torch.tensor([[float(((q - m) ** 2).sum()) for m in means] for q in query], dtype=torch.float64)
    assert torch.allclose(logits.detach(), -distances, rtol=1e-10, atol=1e-10)
    assert torch.equal(logits.argmax(-1), distances.argmin(-1))


def test_protonet_takes_a_batch_of_tasks():
    torch.manual_seed(0)
    episodes = [one_episode(seed=s) for s in range(3)]
    net = PrototypicalNetwork(mlp_backbone(36, widths=(8,)))
    batch = {k: torch.stack([e[0][k] for e in episodes]) for k in episodes[0][0]}
    together = net(**batch)
    assert together.shape == (3, 20, 5)
    for t, (inputs, _) in enumerate(episodes): assert torch.allclose(together[t], net(**inputs), atol=1e-5)


def test_prototypes_are_class_means():
    emb = torch.tensor([[0.0, 2.0], [2.0, 0.0], [4.0, 4.0]])
    assert torch.equal(prototypes(emb, torch.tensor([0, 0, 1]), 2), torch.tensor([[1.0, 1.0], [4.0, 4.0]]))


def test_a_support_set_without_a_class_is_refused():
    inputs, _ = one_episode()
    labels = inputs["support_labels"].clone(); labels[labels == 2] = 1
    with pytest.raises(ValueError, match="no example of class 2"): PrototypicalNetwork(mlp_backbone(36))(inputs["support"], labels, inputs["query"])
    with pytest.raises(ValueError, match="no example of class 2"): MAML(maml_classifier(mlp_backbone(36), 5))(inputs["support"], labels, inputs["query"])
    with pytest.raises(ValueError, match="no example of class 1"): prototypes(torch.zeros(2, 3), torch.tensor([0, 0]), 2)
    with pytest.raises(ValueError, match="in 0..4"): check_support(torch.tensor([0, 1, 2, 3, 5]), 5)
    with pytest.raises(ValueError, match="empty"): check_support(torch.tensor([], dtype=torch.long), 5)


# ---------------------------------------------------------------- MAML
def explicit_inner_loop(model, x, y, steps, lr):
    "The inner loop with torch.autograd.grad(create_graph=True): adapted weights as a list, the starting weights' graph kept."
    names, weights = [n for n, _ in model.named_parameters()], list(model.parameters())
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, dict(zip(names, weights)), (x,)), y)
        weights = [w - lr * g for w, g in zip(weights, torch.autograd.grad(loss, weights, create_graph=True))]
    return names, weights


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_equals_autograd_through_the_inner_steps(steps):
    torch.manual_seed(0)
    model = maml_classifier(mlp_backbone(36, widths=(7, 5)), 5).double()
    tasks = [one_episode(seed=s, dtype=torch.float64) for s in range(2)]
    batch = {k: torch.stack([t[0][k] for t in tasks]) for k in tasks[0][0]}
    query_labels = torch.stack([t[1] for t in tasks])
    episode_loss(MAML(model, inner_steps=steps, inner_lr=0.3)(**batch), query_labels).backward()
    meta_gradient = [p.grad.clone() for p in model.parameters()]
    total = 0
    for inputs, labels in tasks:  # the mean query loss over the two tasks, differentiated by hand
        names, adapted = explicit_inner_loop(model, inputs["support"], inputs["support_labels"], steps, 0.3)
        total = total + F.cross_entropy(functional_call(model, dict(zip(names, adapted)), (inputs["query"],)), labels) / 2
    reference = torch.autograd.grad(total, list(model.parameters()))
    for got, want in zip(meta_gradient, reference): assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_first_order_maml_gradient_is_the_query_gradient_at_the_adapted_weights():
    torch.manual_seed(1)
    model = maml_classifier(mlp_backbone(36, widths=(7, 5)), 5).double()
    inputs, labels = one_episode(dtype=torch.float64)
    episode_loss(MAML(model, inner_steps=2, inner_lr=0.3, first_order=True)(**inputs), labels).backward()
    names, adapted = explicit_inner_loop(model, inputs["support"], inputs["support_labels"], 2, 0.3)
    adapted = [w.detach().requires_grad_() for w in adapted]
    query_loss = F.cross_entropy(functional_call(model, dict(zip(names, adapted)), (inputs["query"],)), labels)
    formula = torch.autograd.grad(query_loss, adapted)  # grad of L(theta', Q) with respect to theta'
    for p, want in zip(model.parameters(), formula): assert torch.allclose(p.grad, want, rtol=1e-9, atol=1e-12)


def test_maml_refuses_bad_settings():
    with pytest.raises(ValueError, match="inner_steps must be an int >= 1"): MAML(maml_classifier(mlp_backbone(36), 5), inner_steps=0)
    with pytest.raises(ValueError, match="inner_lr must be a positive"): MAML(maml_classifier(mlp_backbone(36), 5), inner_lr=float("nan"))
    with pytest.raises(ValueError, match="last nn.Linear"): MAML(nn.ReLU())


# ---------------------------------------------------------------- baselines, budget, training, evaluation
def test_fine_tuner_leaves_the_pretrained_backbone_alone_and_fits_the_support_set():
    torch.manual_seed(0)
    backbone = mlp_backbone(36, widths=(16, 8))
    before = [p.clone() for p in backbone.parameters()]
    inputs, _ = one_episode()
    tuner = support_fine_tuner(backbone, 5, steps=30, lr=0.5)
    assert torch.equal(tuner.model[-1].weight, torch.zeros(5, 8))  # a new head: every class starts at log(5) loss
    support_loss = episode_loss(tuner(inputs["support"], inputs["support_labels"], inputs["support"]), inputs["support_labels"])
    assert support_loss < np.log(5) - 0.2  # the support set is being learnt
    assert all(torch.equal(a, b) for a, b in zip(before, backbone.parameters()))


def test_budget_counts_images_through_the_network():
    assert images_per_task(PrototypicalNetwork(mlp_backbone(36)), 5, 1, 15) == 80
    assert images_per_task(MAML(maml_classifier(mlp_backbone(36), 5), inner_steps=5), 5, 1, 15) == 100
    images, labels = toy_images()
    learner = meta_train(PrototypicalNetwork(mlp_backbone(36, widths=(8,))), images, labels, torch.arange(12), 5, 1, 3, budget=400)
    assert len(learner.train_dl.dataset) == 400 // 20 and len(learner.history.train_loss) == 20
    with pytest.raises(ValueError, match="does not pay for one batch"):
        meta_train(MAML(maml_classifier(mlp_backbone(36), 5)), images, labels, torch.arange(12), 5, 1, 3, budget=60, tasks_per_batch=2)


def test_meta_training_and_pretraining_learn_the_toy_classes():
    images, labels = toy_images(per_class=20)
    torch.manual_seed(0)
    test = EpisodeDataset(images, labels, torch.arange(12), 5, 2, 4, 40, seed=99)
    learner = meta_train(PrototypicalNetwork(mlp_backbone(36, widths=(16, 8))), images, labels, torch.arange(12), 5, 2, 4, 6000, lr=3e-3)
    pretrained = pretrain_classifier(mlp_backbone(36, widths=(16, 8)), images, labels, torch.arange(6), budget=3000, batch_size=20)
    assert pretrained.model[-1].out_features == 6
    scores = evaluate_episodes(learner.model, test, batch_size=16)
    assert scores.shape == (40,) and scores.mean() > 0.5  # chance is 0.2
    mean, half = interval(scores)
    assert abs(mean - scores.double().mean().item()) < 1e-12
    assert abs(half - 1.96 * scores.double().std().item() / 40 ** 0.5) < 1e-12
