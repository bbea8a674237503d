"""tlcourse.cli: the `tlcourse pretrain` command, reproducibility, shipping and verifying checkpoints, the sharded sampler."""
import json, shutil

import pytest
import torch
from safetensors.torch import load_file

import tlcourse.cli as C
from tlcourse.data import data_dir
from tlcourse.learner import Callback, Learner
from tlcourse.models import ChecksumError
from tlcourse.pretrain import load_pretrained, pretrain_loader

TINY_CNN = ["supervised", "--set", "n_train=128", "--set", "n_valid=64", "--epochs", "1", "--batch-size", "64"]


def run_cli(capsys, *argv):
    "(exit status, JSON printed by a successful run or None, stderr)."
    status = C.main(list(argv))
    captured = capsys.readouterr()
    lines = [l for l in captured.out.splitlines() if l.startswith("{")]
    return status, (json.loads(lines[-1]) if lines else None), captured.err


def test_same_seed_same_metrics_and_weights(tmp_path, capsys):
    "Two runs of the registered `supervised` objective with seed 3 agree bit for bit; seed 4 differs."
    runs = [run_cli(capsys, "pretrain", *TINY_CNN, "--seed", str(seed), "--out", str(tmp_path / f"{i}.safetensors"))
            for i, seed in enumerate([3, 3, 4])]
    assert [r[0] for r in runs] == [0, 0, 0]
    (_, a, _), (_, b, _), (_, c, _) = runs
    assert a["metrics"] == b["metrics"]
    # compare tensors, not file checksums: safetensors may order the metadata header differently from run to run
    wa, wb = (load_file(tmp_path / f"{i}.safetensors") for i in (0, 1))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["metrics"]["train_loss"] != c["metrics"]["train_loss"]
    assert set(a["metrics"]) == {"train_loss", "valid_loss", "valid_accuracy"}


def test_unknown_objective_lists_known_ones(tmp_path, capsys):
    status, _, err = run_cli(capsys, "pretrain", "simclear", "--out", str(tmp_path / "w.safetensors"))
    assert status == 2 and "Unknown pretraining objective 'simclear'" in err and "simclr" in err and "supervised" in err
    with pytest.raises(ValueError, match="known objectives:.*next_token"):
        C.run_pretraining("gpt5")
    with pytest.raises(ValueError, match="Cannot import the task builder 'nowhere.module:task'"):
        C.run_pretraining("nowhere.module:task")


def test_missing_output_folder_fails_before_training(tmp_path, capsys):
    status, _, err = run_cli(capsys, "pretrain", *TINY_CNN, "--out", str(tmp_path / "no" / "such" / "w.safetensors"))
    assert status == 2 and "does not exist" in err and "mkdir -p" in err
    with pytest.raises(ValueError, match="must name a .safetensors file"):
        C.check_output_path(tmp_path / "w.pt")


def test_batch_size_must_split_over_processes():
    assert C.per_rank_batch_size(128, 4) == 32
    with pytest.raises(ValueError, match="global batch size 100 cannot be split evenly over 3 processes.*--batch-size 99"):
        C.per_rank_batch_size(100, 3)


def test_parse_settings():
    assert C.parse_settings(["n_train=256", "dropout=0.0", "name=abc", "n_valid=None"]) == \
        dict(n_train=256, dropout=0.0, name="abc", n_valid=None)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        C.parse_settings(["n_train"])


def test_overrides_replace_task_fields():
    task = C.build_task("tlcourse.cli:fashion_mlp_task", seed=0, settings=dict(n_train=64, n_valid=0), epochs=3, lr=0.5)
    assert (task.epochs, task.lr, len(task.train_set), task.valid_set) == (3, 0.5, 64, None)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        C.build_task("tlcourse.cli:fashion_mlp_task", settings=dict(n_train=64), batch_size=0)


class RecordOrder(Callback):
    "Collects the inputs of every training batch, per epoch."
    def __init__(self): self.epochs = []
    def before_epoch(self, learn): self.epochs.append([])
    def before_batch(self, learn): self.epochs[-1].append(learn.xb.clone())


def test_reference_order_is_the_learners_order():
    "reference_order(n, seed, epoch) is the order in which the Learner visits a shuffled pretrain_loader."
    n, seed = 50, 7
    positions = torch.utils.data.TensorDataset(torch.arange(n).float()[:, None], torch.zeros(n, dtype=torch.long))
    recorder = RecordOrder()
    learn = Learner(torch.nn.Linear(1, 1), pretrain_loader(positions, 16, shuffle=True, seed=seed), metrics=(),
                    loss_func=lambda pred, y: pred.mean(), seed=seed, callbacks=[recorder], device="cpu", progress=False)
    learn.fit(3)
    for epoch, batches in enumerate(recorder.epochs):
        seen = torch.cat(batches)[:, 0].long()
        assert torch.equal(seen, C.reference_order(n, seed, epoch))
    assert not torch.equal(C.reference_order(n, seed, 0), C.reference_order(n, seed, 1))


@pytest.mark.parametrize("n,batch,world,drop_last", [(50, 8, 2, False), (50, 12, 3, False), (50, 12, 4, True), (5, 4, 4, False)])
def test_sharded_batches_union_is_the_global_batch(n, batch, world, drop_last):
    "Step k's local batches over all ranks hold exactly single-process batch k (the last one padded by wrap-around)."
    dataset = list(range(n))
    loaders = [C.sharded_loader(dataset, batch, rank, world, shuffle=True, seed=1, drop_last=drop_last) for rank in range(world)]
    for loader in loaders: loader.sampler.set_epoch(2)
    order = C.reference_order(n, 1, 2).tolist()
    if drop_last: order = order[:n // batch * batch]
    single = [order[i:i + batch] for i in range(0, len(order), batch)]
    steps = list(zip(*[list(loader) for loader in loaders]))
    assert len(steps) == len(single) == len(loaders[0])
    for k, local_batches in enumerate(steps):
        last = k == len(steps) - 1
        assert all(len(b) == (len(local_batches[0]) if last else batch // world) for b in local_batches)
        together = sorted(i for b in local_batches for i in b.tolist())
        if k < len(single) - 1 or len(single[k]) == batch: assert together == sorted(single[k])
        else: assert set(together) >= set(single[k])  # the padded last batch repeats a few examples


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    "A data folder whose datasets are links to the real ones and whose checkpoints folder is empty ($TLCOURSE_DATA)."
    root = tmp_path / "data"
    root.mkdir()
    for item in data_dir().iterdir():
        if item.name != "checkpoints": (root / item.name).symlink_to(item)
    monkeypatch.setenv("TLCOURSE_DATA", str(root))
    return root


def test_ship_verify_and_corrupt_checkpoint(data_copy, capsys):
    status, result, _ = run_cli(capsys, "pretrain", *TINY_CNN, "--ship", "tiny_cnn")
    assert status == 0
    entry = json.loads((data_copy / "checkpoints" / "manifest.json").read_text())["tiny_cnn"]
    for field in ["file", "sha256", "size", "model", "architecture", "objective", "objective_name", "data", "settings",
                  "metrics", "command", "seconds", "torch", "license"]:
        assert field in entry, field
    assert entry["objective_name"] == "supervised" and entry["settings"]["seed"] == 0
    assert entry["command"].startswith("tlcourse pretrain supervised --seed 0")
    assert entry["metrics"]["train_loss"] == pytest.approx(result["metrics"]["train_loss"], abs=1e-4)
    model = load_pretrained("tiny_cnn")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert run_cli(capsys, "verify", "tiny_cnn")[0] == 0
    # damage one byte: verification names the expected and the actual checksum
    path = data_copy / "checkpoints" / "tiny_cnn.safetensors"
    raw = bytearray(path.read_bytes()); raw[-10] ^= 0xFF; path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=entry["sha256"][:12]):
        C.verify_checkpoint("tiny_cnn")
    status, _, err = run_cli(capsys, "verify", "tiny_cnn")
    assert status == 2 and "sha256" in err.lower()
    # a truncated loose weights file
    loose = data_copy / "loose.safetensors"
    loose.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ChecksumError, match="is damaged"):
        C.verify_checkpoint(loose)


def test_class_path_refuses_local_classes():
    class Local(torch.nn.Module): pass
    with pytest.raises(ValueError, match="importable class"):
        C.class_path(Local())
    assert C.class_path(C.MLPClassifier()) == "tlcourse.cli.MLPClassifier"


def test_course_checkpoint_ships_through_its_recipe(tmp_path, monkeypatch, capsys):
    "`tlcourse pretrain supervised --ship` runs fashion_cnn's recipe in scripts/make_checkpoints.py; overrides are refused."
    recipes = C.checkpoint_recipes()
    calls = []
    def fake_recipe():
        calls.append(1)
        (tmp_path / "fashion_cnn.safetensors").write_bytes(b"weights")
        return dict(file="fashion_cnn.safetensors", sha256="abc", seconds=0.1, source_test_accuracy=0.9)
    monkeypatch.setitem(recipes.BUILDERS, "fashion_cnn", fake_recipe)
    monkeypatch.setattr(recipes, "CHECKPOINTS", tmp_path)
    status, result, _ = run_cli(capsys, "pretrain", "supervised", "--ship", "--out", str(tmp_path / "copy.safetensors"))
    assert status == 0 and calls == [1] and result["metrics"] == {"source_test_accuracy": 0.9}
    assert json.loads((tmp_path / "manifest.json").read_text())["fashion_cnn"]["sha256"] == "abc"
    assert (tmp_path / "copy.safetensors").read_bytes() == b"weights"
    for argv in (["supervised", "--epochs", "1", "--ship"], ["simclr", "--ship", "fashion_cnn"]):
        status, _, err = run_cli(capsys, "pretrain", *argv)
        assert status == 2 and "course checkpoint" in err and "--ship my_checkpoint" in err
    assert calls == [1]
    assert run_cli(capsys, "checkpoints", "fashion_cnn")[0] == 0 and calls == [1, 1]
