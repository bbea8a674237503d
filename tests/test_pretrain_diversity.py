"""Lecture 3a's diversity experiment: `sample_from_classes` draws a diverse or a narrow source of the same size, and two
SimCLR tasks that differ only in their source start from the same weights and take the same number of steps."""
import dataclasses
from collections import Counter

import pytest
import torch

from tlcourse.data import TensorImageDataset, load_fashion_mnist, sample_from_classes, subsample_per_class
import tlcourse.pretrain as P


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist("train")


def test_even_draw_from_the_chosen_classes_counted_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 1, 0])
    for classes, size in [([0, 2], 4), ([1], 3), ([0, 1, 2], 9), (2, 4)]:
        idx = sample_from_classes(labels, classes, size, seed=5)
        chosen = [classes] if isinstance(classes, int) else classes
        counts = Counter()
        for i in idx.tolist(): counts[int(labels[i])] += 1   # the reference: count the drawn labels one by one
        assert dict(counts) == {c: size // len(chosen) for c in chosen}
        assert idx.dtype == torch.long and len(idx) == size == len(set(idx.tolist()))
        assert idx.tolist() == sorted(idx.tolist())


def test_all_classes_is_subsample_per_class_and_two_whole_classes_are_every_member(fashion):
    for seed in (0, 3):
        assert torch.equal(sample_from_classes(fashion, range(10), 4000, seed=seed),
                           subsample_per_class(fashion.labels, 400, seed=seed))
    every_member = torch.nonzero((fashion.labels == 0) | (fashion.labels == 1)).flatten()
    assert torch.equal(sample_from_classes(fashion, [0, 1], len(every_member), seed=1), every_member)


def test_seeded_and_independent_of_class_order(fashion):
    a = sample_from_classes(fashion.labels, [3, 7], 200, seed=1)
    assert torch.equal(a, sample_from_classes(fashion.labels, [7, 3], 200, seed=1))
    assert torch.equal(a, sample_from_classes(fashion.labels, [3, 7], 200, seed=1))
    assert not torch.equal(a, sample_from_classes(fashion.labels, [3, 7], 200, seed=2))
    small = TensorImageDataset(torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 0, 1, 0, 1]))
    assert torch.equal(sample_from_classes(small, [0], 3), torch.tensor([0, 2, 4]))


@pytest.mark.parametrize("classes, size, error, message", [
    ([], 4, ValueError, "empty"),
    (["T-shirt/top"], 4, TypeError, r"classes\.index\(name\)"),
    ([True], 4, TypeError, "int class ids"),
    ([0, 0], 4, ValueError, "twice"),
    ([0, 5], 4, ValueError, r"no example has class \[5\]"),
    ([0, 1], 3, ValueError, "do not split evenly over 2 classes; use a multiple of 2"),
    ([0, 1], 8, ValueError, r"need 4 per class.*\{0: 3, 1: 3\}"),
    ([0], 0, ValueError, "positive int"),
    ([0], 2.0, ValueError, "positive int"),
])
def test_bad_input_says_what_to_fix(classes, size, error, message):
    with pytest.raises(error, match=message):
        sample_from_classes(torch.tensor([0, 1, 0, 1, 0, 1]), classes, size)


def test_sources_differ_only_in_their_images(fashion):
    "The lecture's pairing: for one seed, the diverse and the narrow task share initial weights and take equal steps."
    runs = {}
    for name, classes in {"diverse": list(range(10)), "narrow": [0, 1]}.items():
        images = fashion.images[sample_from_classes(fashion, classes, 60, seed=2)]
        task = dataclasses.replace(P.make_task("simclr", seed=2, n_train=8, n_valid=None, epochs=1, batch_size=32),
                                   train_set=P.UnlabelledImages(images))
        start = {k: v.clone() for k, v in task.model.state_dict().items()}
        runs[name] = (start, P.pretrain(task, seed=2, progress=False))
    (start_a, run_a), (start_b, run_b) = runs["diverse"], runs["narrow"]
    assert all(torch.equal(start_a[k], start_b[k]) for k in start_a)
    assert run_a.history.epochs[-1]["step"] == run_b.history.epochs[-1]["step"] == 1   # 60 images, batch 32, drop_last
    assert any(not torch.equal(x, y) for x, y in zip(run_a.pretrained.state_dict().values(),
                                                       run_b.pretrained.state_dict().values()))
