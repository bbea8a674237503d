"""tlcourse.pretrain: the shared PretrainTask interface, the registry, checked checkpoint loading, and the image objectives."""
import json

import pytest
import torch
from torch import nn

import tlcourse.pretrain as P
import tlcourse.recipes as R
from tlcourse.registry import DataFileError, load_pretrained
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
    monkeypatch.setattr(R, "load_fashion_mnist", lambda split="train": small[split])
    monkeypatch.setattr(P, "load_fashion_mnist", lambda split="train": small[split])
    learner = P.pretrain(P.make_task("supervised", seed=3, epochs=1), seed=3, progress=False)
    a, history = learner.pretrained, learner.history
    b = R.pretrain_source_cnn(epochs=1, seed=3, progress=False).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert "valid_accuracy" in history.epochs[-1]


def test_pretrain_reduces_loss_and_is_seeded():
    runs = [P.pretrain(P.make_task("supervised", n_train=256, n_valid=64, epochs=2, lr=3e-3), seed=1, progress=False)
            for _ in range(2)]
    h1, h2 = (run.history for run in runs)
    assert h1.train_loss == h2.train_loss
    assert sum(h1.train_loss[-2:]) < sum(h1.train_loss[:2])




def test_load_pretrained_unknown_name_lists_shipped():
    with pytest.raises(DataFileError, match="Known checkpoints:.*fashion_cnn"):
        load_pretrained("no_such_checkpoint")


def test_load_pretrained_rejects_corrupt_file(scratch_checkpoints):
    path = scratch_checkpoints / "fashion_cnn.safetensors"
    raw = bytearray(path.read_bytes()); raw[-1] ^= 0xFF; path.write_bytes(raw)
    with pytest.raises(ChecksumError, match=r"(?s)fashion_cnn.*expected [0-9a-f]{64}.*actual +[0-9a-f]{64}"):
        load_pretrained("fashion_cnn")


def test_load_pretrained_rejects_wrong_architecture(scratch_checkpoints):
    with pytest.raises(WeightsMismatchError, match=r"architecture \{'in_channels': 1, 'num_classes': 10\}.*'in_channels': 3"):
        load_pretrained("fashion_cnn", architecture=dict(in_channels=3, num_classes=10))
    # a manifest whose architecture disagrees with the file: both are named
    manifest_path = scratch_checkpoints / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fashion_cnn"]["architecture"] = dict(in_channels=1, num_classes=10, widths=[8, 16, 32])
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsMismatchError, match=r"(?s)manifest says architecture.*widths.*saved with architecture"):
        load_pretrained("fashion_cnn")


# ---- SimCLR ----

def nt_xent_by_loops(z1, z2, temperature):
    "The NT-Xent formula with explicit loops over every pair of the 2N views."
    import math
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n2, total = len(z), 0.0
    for i in range(n2):
        partner = (i + n2 // 2) % n2
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(n2) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[partner]) / temperature) / denominator)
    return total / n2


@pytest.mark.parametrize("n,d,tau", [(2, 2, 0.5), (3, 4, 0.1), (5, 3, 1.0)])
def test_nt_xent_matches_loops(n, d, tau):
    g = torch.Generator().manual_seed(n * 10 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert P.nt_xent_loss(z1, z2, tau).item() == pytest.approx(nt_xent_by_loops(z1, z2, tau), rel=1e-5)


def test_nt_xent_scale_invariant_and_symmetric():
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    assert torch.allclose(P.nt_xent_loss(z1, z2), P.nt_xent_loss(3 * z1, 0.5 * z2), atol=1e-6)
    assert torch.allclose(P.nt_xent_loss(z1, z2), P.nt_xent_loss(z2, z1), atol=1e-6)


def test_nt_xent_few_steps_reduce_it():
    torch.manual_seed(0)
    z1 = torch.randn(8, 4, requires_grad=True)
    z2 = torch.randn(8, 4, requires_grad=True)
    opt = torch.optim.SGD([z1, z2], lr=0.5)
    losses = []
    for _ in range(10):
        loss = P.nt_xent_loss(z1, z2, 0.5); losses.append(loss.item())
        opt.zero_grad(); loss.backward(); opt.step()
    assert losses[-1] < losses[0] - 0.1


def test_nt_xent_bad_input():
    with pytest.raises(ValueError, match=r"same shape.*\(4, 3\) and \(5, 3\)"):
        P.nt_xent_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 images.*no negatives"):
        P.nt_xent_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"same shape \[N, D\]"):
        P.nt_xent_loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="temperature must be positive"):
        P.nt_xent_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=0)


def test_batch_augment_groups():
    images = torch.rand(20, 1, 28, 28)
    torch.manual_seed(0)
    out = P.BatchAugment(group_size=8)(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    # one draw for the whole batch: every image gets the same crop, so equal images give equal views
    same = torch.rand(1, 1, 28, 28).repeat(6, 1, 1, 1)
    whole = P.BatchAugment(group_size=6)(same)
    assert torch.allclose(whole[0], whole[5])
    torch.manual_seed(1)
    per_image = P.BatchAugment(group_size=1)(same)
    assert not torch.allclose(per_image[0], per_image[5])
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        P.BatchAugment()(torch.rand(28, 28))


def test_simclr_task_shapes_and_training():
    task = P.make_task("simclr", n_train=256, n_valid=64, epochs=2, batch_size=64)
    xb, yb = next(iter(P.pretrain_loader(task.train_set, 8, collate_fn=task.collate_fn)))
    assert xb.shape == (8, 2, 1, 28, 28) and yb.shape == (8,)
    assert task.trainer(xb).shape == (8, 2, 64)
    learner = P.pretrain(task, progress=False)
    model, history = learner.pretrained, learner.history
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert "valid_loss" in history.epochs[-1]
    assert model.features(torch.rand(3, 1, 28, 28)).shape == (3, 64)


# ---- denoising autoencoder ----

def test_reconstruction_loss_matches_direct_computation():
    recon, clean = torch.rand(3, 1, 4, 5), torch.rand(3, 1, 4, 5)
    direct = sum(float(recon[b, 0, i, j] - clean[b, 0, i, j]) ** 2
                 for b in range(3) for i in range(4) for j in range(5)) / 60
    assert P.reconstruction_loss(recon, clean).item() == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        P.reconstruction_loss(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 5, 5))


def test_corrupt_noise_and_masks():
    torch.manual_seed(0)
    grey = [torch.full((1, 28, 28), 0.5) for _ in range(64)]
    noisy, clean = P.Corrupt(noise_std=0.1)(grey)
    assert torch.equal(clean, torch.stack(grey))
    assert (noisy - clean).std().item() == pytest.approx(0.1, abs=0.01)
    masked, _ = P.Corrupt(noise_std=0.0, mask_ratio=0.5)(grey)
    assert (masked == 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="mask_ratio"):
        P.Corrupt(mask_ratio=1.0)


def test_denoising_task_trains():
    task = P.make_task("denoising", n_train=256, n_valid=64, epochs=2)
    xb, yb = next(iter(P.pretrain_loader(task.train_set, 4, collate_fn=task.collate_fn)))
    out = task.trainer(xb)
    assert out.shape == yb.shape == (4, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    history = P.pretrain(task, progress=False).history
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
