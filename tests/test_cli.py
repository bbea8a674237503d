"""tlcourse.cli: the `tlcourse pretrain` command: reproducibility, shipping and verifying checkpoints, and the checks
that keep it from losing or faking work (settings out of range, protected or existing output files, diverged runs)."""
import hashlib, json

import pytest
import torch
from safetensors.torch import load_file

import tlcourse.cli as C
import tlcourse.distributed as D
import tlcourse.recipes as R
from tlcourse.data import data_dir, load_fashion_mnist
from tlcourse.models import ChecksumError
from tlcourse.registry import checkpoints_dir, load_pretrained

TINY_CNN = ["supervised", "--set", "n_train=128", "--set", "n_valid=64", "--epochs", "1", "--batch-size", "64"]
LR_RANGE = "--lr must be a number > 0 and at most 1e30"
TINY_MLP = ["tlcourse.distributed:fashion_mlp_task", "--set", "n_train=64", "--set", "n_valid=32", "--epochs", "1",
            "--batch-size", "32"]


def run_cli(capsys, *argv):
    "(exit status, JSON printed by a successful run or None, stderr)."
    status = C.main(list(argv))
    captured = capsys.readouterr()
    lines = [l for l in captured.out.splitlines() if l.startswith("{")]
    return status, (json.loads(lines[-1]) if lines else None), captured.err


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def test_parse_settings():
    assert C.parse_settings(["n_train=256", "dropout=0.0", "name=abc", "n_valid=None"]) == \
        dict(n_train=256, dropout=0.0, name="abc", n_valid=None)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        C.parse_settings(["n_train"])


def test_overrides_replace_task_fields():
    task = C.build_task("tlcourse.distributed:fashion_mlp_task", seed=0, settings=dict(n_train=64, n_valid=0), epochs=3, lr=0.5)
    assert (task.epochs, task.lr, len(task.train_set), task.valid_set) == (3, 0.5, 64, None)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        C.build_task("tlcourse.distributed:fashion_mlp_task", settings=dict(n_train=64), batch_size=0)


# --- settings out of range are refused, with the range, before any data is loaded ---

@pytest.mark.parametrize("flag,value,expected", [
    ("--lr", "inf", LR_RANGE), ("--lr", "nan", LR_RANGE), ("--lr", "0", LR_RANGE), ("--lr", "-0.001", LR_RANGE),
    ("--lr", "1e31", LR_RANGE),
    ("--epochs", "0", "--epochs must be an int >= 1"), ("--batch-size", "-4", "--batch-size must be an int >= 1"),
    ("--weight-decay", "-0.1", "--weight-decay must be a finite number >= 0"),
    ("--weight-decay", "inf", "--weight-decay must be a finite number >= 0"), ("--seed", "-1", "--seed must be an int from 0")])
def test_out_of_range_settings_are_refused_with_the_range(tmp_path, capsys, monkeypatch, flag, value, expected):
    monkeypatch.setattr(C, "build_task", lambda *a, **k: pytest.fail("a refused run must not build its task"))
    out = tmp_path / "w.safetensors"
    status, result, err = run_cli(capsys, "pretrain", *TINY_MLP, flag, value, "--out", str(out))
    assert status == 2 and result is None and expected in err and "got " in err
    assert not out.exists()


def test_run_settings_checked_in_python_too():
    with pytest.raises(ValueError, match=r"--lr must be a number > 0 and at most 1e30 \(e.g. 1e-3\), got nan"):
        C.run_pretraining("tlcourse.distributed:fashion_mlp_task", lr=float("nan"))
    with pytest.raises(ValueError, match="--epochs must be an int >= 1, got 2.5"):
        C.check_run_settings(0, epochs=2.5)
    with pytest.raises(TypeError, match="Unknown run settings \\['momentum'\\]"):
        C.check_run_settings(0, momentum=0.9)
    C.check_run_settings(0, epochs=1, batch_size=1, lr=1e-3, weight_decay=0.0)  # in range: no error


@pytest.mark.parametrize("setting", ["lr=1e999", "lr=0.0", "lr=fast", "weight_decay=-1.0", "weight_decay=1e999"])
def test_task_settings_from_set_are_checked_too(tmp_path, capsys, setting):
    "`--set lr=...` reaches the task through the builder, not through --lr: the same range applies."
    out = tmp_path / "w.safetensors"
    status, _, err = run_cli(capsys, "pretrain", "supervised", "--set", "n_train=64", "--set", setting, "--out", str(out))
    name = setting.partition("=")[0]
    assert status == 2 and f"must be {C.RUN_SETTING_RANGES[name]}" in err and not out.exists()


def test_builder_settings_out_of_range(capsys):
    status, _, err = run_cli(capsys, "pretrain", *TINY_MLP, "--set", "hidden=-1")
    assert status == 2 and "MLPClassifier: hidden must be an int >= 1, got -1" in err


@pytest.mark.parametrize("setting,split", [("n_train", "train"), ("n_valid", "test")])
@pytest.mark.parametrize("objective", ["supervised", "simclr", "tlcourse.distributed:fashion_mlp_task"])
def test_more_examples_than_the_split_holds_is_refused(capsys, objective, setting, split):
    available = len(load_fashion_mnist(split))
    status, _, err = run_cli(capsys, "pretrain", objective, "--set", f"{setting}={available + 1}")
    assert status == 2 and f"{setting}={available + 1:,} asks for more examples than there are" in err
    assert f"{available:,} available" in err
    task = C.build_task(objective, settings={setting: available, "n_train" if setting == "n_valid" else "n_valid": 32})
    assert len(task.train_set if setting == "n_train" else task.valid_set) == available  # exactly all is fine


def test_more_text_than_there_is_is_refused():
    from tlcourse.pretrain_text import rotten_tomatoes_text_splits, text_tokenizer, TEXT_DEFAULTS
    chunks = len(text_tokenizer(TEXT_DEFAULTS["vocab_size"]).chunks(rotten_tomatoes_text_splits()["pretrain_texts"],
                                                                    TEXT_DEFAULTS["max_len"]))
    n_valid = TEXT_DEFAULTS["n_valid"]
    with pytest.raises(ValueError, match=f"n_train must be None \\(all\\) or an int from 1 to {chunks - n_valid:,}"):
        C.build_task("mlm", settings=dict(n_train=chunks))
    with pytest.raises(ValueError, match=f"n_valid must be an int from 0 to {chunks - 1:,}"):
        C.build_task("next_token", settings=dict(n_valid=chunks))
    assert len(C.build_task("mlm", settings=dict(n_train=chunks - n_valid)).train_set) == chunks - n_valid


# --- the output file: never the shipped checkpoints, never an existing file without --force ---

def test_out_in_the_shipped_checkpoints_folder_is_refused(tmp_path, capsys):
    "The issue's case: --out data/checkpoints/<shipped>.safetensors used to replace the shipped file and exit 0."
    shipped = checkpoints_dir() / "fashion_cnn.safetensors"
    before = digest(shipped)
    for out in [shipped, checkpoints_dir() / "new_file.safetensors", checkpoints_dir() / ".." / "checkpoints" / "x.safetensors"]:
        status, _, err = run_cli(capsys, "pretrain", *TINY_MLP, "--out", str(out), "--force")
        assert status == 2 and "inside the shipped checkpoints folder" in err and "--ship NAME" in err
    link = tmp_path / "link"
    link.symlink_to(checkpoints_dir())  # a symbolic link to the folder is the folder
    status, _, err = run_cli(capsys, "pretrain", *TINY_MLP, "--out", str(link / "fashion_cnn.safetensors"), "--force")
    assert status == 2 and "inside the shipped checkpoints folder" in err
    assert digest(shipped) == before and not (checkpoints_dir() / "new_file.safetensors").exists()


def test_existing_out_needs_force(tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"an earlier run's weights")
    status, _, err = run_cli(capsys, "pretrain", *TINY_MLP, "--out", str(out))
    assert status == 2 and "already exists" in err and "--force" in err
    assert out.read_bytes() == b"an earlier run's weights"
    status, result, _ = run_cli(capsys, "pretrain", *TINY_MLP, "--out", str(out), "--force")
    assert status == 0 and result["sha256"] == digest(out)
    assert set(load_file(out)) == set(C.build_task(TINY_MLP[0], settings=dict(n_train=64, n_valid=0)).model.state_dict())
    status, _, err = run_cli(capsys, "pretrain", *TINY_MLP, "--out", str(tmp_path), "--force")
    assert status == 2 and "must name a .safetensors file" in err


def test_shipping_may_write_into_the_checkpoints_folder_but_replaces_only_with_force(data_copy, capsys):
    copy = data_copy / "checkpoints" / "copy.safetensors"
    (data_copy / "checkpoints").mkdir()
    status, result, _ = run_cli(capsys, "pretrain", *TINY_MLP, "--ship", "tiny_mlp", "--out", str(copy))
    assert status == 0 and copy.exists() and (data_copy / "checkpoints" / "tiny_mlp.safetensors").exists()
    shipped = data_copy / "checkpoints" / "tiny_mlp.safetensors"
    before = digest(shipped)
    status, _, err = run_cli(capsys, "pretrain", *TINY_MLP, "--seed", "1", "--ship", "tiny_mlp")
    assert status == 2 and "already shipped" in err and "--force" in err and digest(shipped) == before
    status, result, _ = run_cli(capsys, "pretrain", *TINY_MLP, "--seed", "1", "--ship", "tiny_mlp", "--force")
    assert status == 0 and digest(shipped) != before
    assert json.loads((data_copy / "checkpoints" / "manifest.json").read_text())["tiny_mlp"]["sha256"] == digest(shipped)


# --- a run that ends non-finite exits 1 and writes nothing ---

def test_diverging_loss_exits_1_and_keeps_the_last_finite_weights(tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    assert run_cli(capsys, "pretrain", *TINY_MLP, "--out", str(out))[0] == 0
    finite = digest(out)
    status, result, err = run_cli(capsys, "pretrain", *TINY_MLP, "--out", str(out), "--force", "--lr", "1e30")
    assert status == 1 and result is None
    assert "training loss became nan" in err and "Nothing was written" in err
    assert digest(out) == finite and all(torch.isfinite(t).all() for t in load_file(out).values())


def test_finite_loss_but_non_finite_end_exits_1(tmp_path, capsys):
    """One step whose training loss is finite but whose update throws the weights so far that validation overflows:
    the Learner's loss check alone would have saved them."""
    out = tmp_path / "w.safetensors"
    argv = ["tlcourse.distributed:fashion_mlp_task", "--set", "n_train=32", "--set", "n_valid=32", "--epochs", "1",
            "--batch-size", "32", "--lr", "1e30"]
    status, result, err = run_cli(capsys, "pretrain", *argv, "--out", str(out))
    assert status == 1 and result is None and "validation loss became nan" in err and "--lr 1e+30" in err
    assert not out.exists()


def test_non_finite_weights_are_never_saved():
    model = D.MLPClassifier(hidden=4)
    C.check_finite_run(model, dict(train_loss=1.0), lr=1e-3)  # all finite: no error
    with torch.no_grad(): model.net[1].weight[0, 0] = float("inf")
    with pytest.raises(C.NonFiniteLossError, match=r"non-finite values \(weights net.1.weight\).*--lr 0.001"):
        C.check_finite_run(model, dict(train_loss=1.0), lr=1e-3)
    with torch.no_grad(): model.net[1].weight[0, 0] = 0.0
    with pytest.raises(C.NonFiniteLossError, match=r"train_loss = inf"):
        C.check_finite_run(model, dict(train_loss=float("inf")), lr=1e-3)


def test_diverged_run_ships_nothing(data_copy, capsys):
    status, _, err = run_cli(capsys, "pretrain", *TINY_MLP, "--lr", "1e30", "--ship", "tiny_mlp")
    assert status == 1 and "Nothing was written" in err
    assert not (data_copy / "checkpoints" / "manifest.json").exists()
    assert not (data_copy / "checkpoints" / "tiny_mlp.safetensors").exists()


# --- shipping and verifying ---

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


def test_course_checkpoint_ships_through_its_recipe(data_copy, tmp_path, monkeypatch, capsys):
    "`tlcourse pretrain supervised --ship` runs fashion_cnn's recipe in tlcourse.recipes; overrides are refused."
    calls = []
    def fake_recipe():
        calls.append(1)
        checkpoints_dir().mkdir(exist_ok=True)
        (checkpoints_dir() / "fashion_cnn.safetensors").write_bytes(b"weights")
        return dict(file="fashion_cnn.safetensors", sha256=hashlib.sha256(b"weights").hexdigest(), size=7, license="test",
                    model="SmallCNN", architecture={}, command="python scripts/make_checkpoints.py fashion_cnn",
                    seconds=0.1, source_test_accuracy=0.9)
    monkeypatch.setitem(R.RECIPES, "fashion_cnn", fake_recipe)
    status, result, _ = run_cli(capsys, "pretrain", "supervised", "--ship", "--out", str(tmp_path / "copy.safetensors"))
    assert status == 0 and calls == [1] and result["metrics"] == {"source_test_accuracy": 0.9}
    manifest = json.loads((checkpoints_dir() / "manifest.json").read_text())
    assert manifest["fashion_cnn"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (tmp_path / "copy.safetensors").read_bytes() == b"weights"
    for argv in (["supervised", "--epochs", "1", "--ship"], ["simclr", "--ship", "fashion_cnn"]):
        status, _, err = run_cli(capsys, "pretrain", *argv)
        assert status == 2 and "course checkpoint" in err and "--ship my_checkpoint" in err
    assert calls == [1]
    assert run_cli(capsys, "checkpoints", "fashion_cnn")[0] == 0 and calls == [1, 1]


def test_python_m_tlcourse_cli_runs_main(tmp_path):
    "`python -m tlcourse.cli` (what torchrun runs, and the console script's target) is the same command."
    import subprocess, sys
    done = subprocess.run([sys.executable, "-m", "tlcourse.cli", "pretrain", *TINY_MLP, "--lr", "inf"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and LR_RANGE in done.stderr
