"""Lecture 4b's library: the cut network on cached maps (top_stages), surgical fine-tuning, the super-class task."""
import pytest
import torch

from tlcourse.data import TensorImageDataset
from tlcourse.data import FASHION_SUPERCLASSES, superclass_task
from tlcourse.models import ReshapeTo, top_stages
from tlcourse.finetune import surgical_fine_tune
from tlcourse.learner import set_seed
from tlcourse.models import SmallCNN
from tlcourse.features import extract_features


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def model():
    set_seed(0)
    return SmallCNN(num_classes=4).eval()


def test_top_stages_on_cached_maps_equals_whole_network(model):
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    maps = extract_features(model, images, stage="stage2", grid=7)   # stage2 maps are 7x7: grid 7 keeps them exactly
    top = top_stages(model, "stage2", (32, 7, 7)).eval()
    assert top.stage_names == ["stem", "stage3", "head"]
    with torch.no_grad():
        torch.testing.assert_close(top(maps), model(images), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(top(maps.view(-1, 32, 7, 7)), model(images), atol=1e-5, rtol=1e-4)


def test_top_stages_are_copies(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    top = top_stages(model, "stage2", (32, 7, 7))
    with torch.no_grad():
        for p in top.parameters(): p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_top_stages_rejects_bad_cuts(model):
    with pytest.raises(ValueError):
        top_stages(model, "head", (4,))
    with pytest.raises(Exception):
        top_stages(model, "stage9", (4,))


def test_reshape_to():
    assert ReshapeTo((2, 3, 4))(torch.zeros(5, 24)).shape == (5, 2, 3, 4)


def test_surgical_fine_tune_changes_only_its_stage(model):
    g = torch.Generator().manual_seed(1)
    data = TensorImageDataset(torch.rand(16, 1, 28, 28, generator=g), torch.arange(16) % 4)
    tuned = surgical_fine_tune(model, data, "stage2", steps=2, seed=0).model
    for name in model.stage_names:
        same = all(torch.equal(a, b) for a, b in zip(model.stage(name).parameters(), tuned.stage(name).parameters()))
        assert same == (name != "stage2"), name


def test_superclass_task_sides():
    source, target = superclass_task("test", "source"), superclass_task("test", "target")
    assert source.classes == target.classes == list(FASHION_SUPERCLASSES)
    assert set(source.labels.tolist()) == set(target.labels.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError):
        superclass_task("test", "middle")
