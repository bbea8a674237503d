"""tlcourse.pretrain: the shared PretrainTask interface, the registry, checked checkpoint loading, and the image objectives."""
import json, shutil

import pytest
import torch
from torch import nn

import tlcourse.pretrain as P
import tlcourse.transfer as T
from tlcourse.models import ChecksumError, WeightsMismatchError


def test_unknown_objective_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown pretraining objective 'simclear'.*known objectives:.*simclr.*supervised"):
        P.make_task("simclear")


def test_registry_has_agreed_names():
    for name in ["supervised", "simclr", "mlm", "next_token"]:
        assert name in P.OBJECTIVES
    assert P.OBJECTIVES["mlm"] == "tlcourse.pretrain_text:mlm_task"


def test_task_needs_trainer_containing_model():
    with pytest.raises(ValueError, match="trainer must contain `model`"):
        P.PretrainTask("x", nn.Linear(2, 2), nn.Linear(2, 2), nn.functional.mse_loss, train_set=[1])


def test_supervised_task_is_pretrain_source_cnn_recipe(monkeypatch):
    "pretrain(supervised_task) and pretrain_source_cnn give identical weights on the same (reduced) data and seed."
    from tlcourse.data import load_fashion_mnist
    small = {split: load_fashion_mnist(split).subset(torch.arange(300)) for split in ("train", "test")}
    monkeypatch.setattr(T, "load_fashion_mnist", lambda split="train": small[split])
    monkeypatch.setattr(P, "load_fashion_mnist", lambda split="train": small[split])
    a, history = P.pretrain(P.make_task("supervised", seed=3, epochs=1), seed=3, progress=False)
    b, _ = T.pretrain_source_cnn(epochs=1, seed=3, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert "valid_accuracy" in history.epochs[-1]


def test_pretrain_reduces_loss_and_is_seeded():
    runs = [P.pretrain(P.make_task("supervised", n_train=256, n_valid=64, epochs=2, lr=3e-3), seed=1, progress=False)
            for _ in range(2)]
    (m1, h1), (m2, h2) = runs
    assert h1.train_loss == h2.train_loss
    assert sum(h1.train_loss[-2:]) < sum(h1.train_loss[:2])


@pytest.fixture
def scratch_checkpoints(tmp_path, monkeypatch):
    "A copy of data/checkpoints in a tmp data folder that TLCOURSE_DATA points at."
    from tlcourse.data import data_dir
    shutil.copytree(data_dir() / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path))
    return tmp_path / "checkpoints"


def test_load_pretrained_matches_lecture1_loader():
    a, b = P.load_pretrained("fashion_cnn"), T.load_pretrained_cnn("fashion_cnn")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(KeyError, match="Shipped checkpoints:.*fashion_cnn"):
        P.load_pretrained("no_such_checkpoint")


def test_load_pretrained_rejects_corrupt_file(scratch_checkpoints):
    path = scratch_checkpoints / "fashion_cnn.safetensors"
    raw = bytearray(path.read_bytes()); raw[-1] ^= 0xFF; path.write_bytes(raw)
    with pytest.raises(ChecksumError, match=r"(?s)fashion_cnn.*expected [0-9a-f]{64}.*actual +[0-9a-f]{64}"):
        P.load_pretrained("fashion_cnn")


def test_load_pretrained_rejects_wrong_architecture(scratch_checkpoints):
    with pytest.raises(WeightsMismatchError, match=r"architecture \{'in_channels': 1, 'num_classes': 10\}.*'in_channels': 3"):
        P.load_pretrained("fashion_cnn", architecture=dict(in_channels=3, num_classes=10))
    # a manifest whose architecture disagrees with the file: both are named
    manifest_path = scratch_checkpoints / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fashion_cnn"]["architecture"] = dict(in_channels=1, num_classes=10, widths=[8, 16, 32])
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsMismatchError, match=r"(?s)manifest says architecture.*widths.*saved with architecture"):
        P.load_pretrained("fashion_cnn")
