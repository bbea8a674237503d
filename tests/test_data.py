"""tlcourse.data: the shipped datasets are intact and shaped as documented; splits, loaders and shifts behave."""
import gzip, hashlib, math, os, shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import tlcourse.data as data
from tlcourse.data import (DataFileError, TensorImageDataset, colorize, contrast, dataset_path, gaussian_blur,
                           gaussian_noise, load_digits, load_domain_pair, load_fashion_mnist, load_mnist5k,
                           load_rotten_tomatoes, load_rotten_tomatoes_reviews, load_torchvision_dataset,
                           make_loader, permute_labels, read_manifest, rotate, split_per_class,
                           subsample_per_class, verify_datasets)

NAMES = ["digits", "fashion_mnist", "glyphs", "mnist5k", "rotten_tomatoes"]


def test_manifest_checksums_match_files():
    manifest = read_manifest()
    assert sorted(manifest) == NAMES
    for name, entry in manifest.items():
        blob = (data.data_dir() / entry["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"] and len(blob) == entry["size"]
        assert entry["regenerate"] == f"python scripts/make_data.py {name}"
        for key in ("source", "license", "citation", "dataset"):
            assert entry[key], f"{name} lacks {key}"
    assert verify_datasets() == []
    assert sum(e["size"] for e in manifest.values()) < 20e6  # the repository stays small: 15.7 MB with the glyphs (2.9 MB)


def test_default_data_dir_is_repo_data(monkeypatch):
    "In a source checkout, without TLCOURSE_DATA, the data folder is the repository's data/ (see test_registry for the rest)."
    package = Path(data.__file__).resolve().parent
    monkeypatch.delenv("TLCOURSE_DATA", raising=False)
    if not (package / "_data").exists():
        assert data.data_dir() == package.parent / "data"


def check_images(ds, n, side, per_class=None):
    assert isinstance(ds, TensorImageDataset) and len(ds) == n
    assert ds.images.shape == (n, 1, side, side) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    assert ds.images.min() >= 0 and ds.images.max() == 1
    assert len(ds.classes) == 10 and set(ds.labels.tolist()) == set(range(10))
    if per_class is not None:
        assert torch.bincount(ds.labels).tolist() == [per_class] * 10


def test_image_datasets_shapes_ranges_counts():
    check_images(load_mnist5k(), 5000, 28, per_class=500)
    digits = load_digits()
    check_images(digits, 1797, 8)
    assert torch.bincount(digits.labels).min() >= 170
    # ink counts 0..16 scaled by 16: every pixel is a multiple of 1/16
    assert torch.allclose(digits.images * 16, (digits.images * 16).round(), atol=1e-5)
    check_images(load_digits(size=12), 1797, 12)
    check_images(load_fashion_mnist("train"), 20000, 28, per_class=2000)
    check_images(load_fashion_mnist("test"), 5000, 28, per_class=500)
    assert load_fashion_mnist("train").classes[9] == "Ankle boot"
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_fashion_mnist("valid")


def test_rotten_tomatoes():
    df = load_rotten_tomatoes()
    assert list(df.columns) == ["text", "category", "movie", "label"]
    assert len(df) == 13905 and df["movie"].nunique() == 1449
    assert df["category"].value_counts().to_dict() == {"fresh": 7403, "rotten": 5405, "plot": 1097}
    assert ((df["label"] == 1) == (df["category"] == "fresh")).all()
    texts, labels = load_rotten_tomatoes_reviews()
    assert len(texts) == len(labels) and 12700 < len(texts) <= 7403 + 5405
    assert labels.dtype == torch.int64 and set(labels.tolist()) == {0, 1}
    assert all(isinstance(t, str) and t.strip() for t in texts)


def test_unknown_name_lists_known():
    with pytest.raises(DataFileError) as err:
        dataset_path("cifar10")
    assert all(name in str(err.value) for name in NAMES)


@pytest.fixture
def scratch_data(tmp_path, monkeypatch):
    "A copy of manifest + digits in a tmp folder that TLCOURSE_DATA points at."
    for f in ["manifest.json", "digits.npz"]:
        shutil.copy(data.data_dir() / f, tmp_path / f)
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path))
    return tmp_path


def test_corrupt_file_raises_clear_error(scratch_data):
    assert load_digits().images.shape[0] == 1797  # the intact copy loads
    blob = bytearray((scratch_data / "digits.npz").read_bytes())
    blob[200] ^= 0xFF
    (scratch_data / "digits.npz").write_bytes(bytes(blob))
    expected = read_manifest()["digits"]["sha256"]
    with pytest.raises(ValueError) as err:  # DataFileError is a ValueError ...
        load_digits()
    message = str(err.value)
    assert isinstance(err.value, DataFileError) and "corrupt" in message and expected in message
    assert hashlib.sha256(bytes(blob)).hexdigest() in message
    assert "git checkout -- data/digits.npz" in message and "python scripts/make_data.py digits" in message
    assert any("digits" in p for p in verify_datasets())


def test_missing_file_raises_clear_error(scratch_data):
    (scratch_data / "digits.npz").unlink()
    with pytest.raises(FileNotFoundError, match="missing") as err:  # ... and a FileNotFoundError
        load_digits()
    assert "python scripts/make_data.py digits" in str(err.value)
    with pytest.raises(DataFileError, match="missing"):
        load_mnist5k()  # its file was never copied
    (scratch_data / "manifest.json").unlink()
    problems = verify_datasets()
    assert len(problems) == 1 and "manifest.json" in problems[0]


def test_split_per_class_reproducible_and_stratified():
    labels = load_mnist5k().labels
    first, rest = split_per_class(labels, 0.2, seed=0)
    assert torch.bincount(labels[first]).tolist() == [100] * 10
    assert torch.bincount(labels[rest]).tolist() == [400] * 10
    assert torch.equal(torch.sort(torch.cat([first, rest])).values, torch.arange(len(labels)))
    assert torch.equal(split_per_class(labels, 0.2, seed=0)[0], first)
    assert not torch.equal(split_per_class(labels, 0.2, seed=1)[0], first)
    n_first, _ = split_per_class(labels, 7, seed=0)
    assert torch.bincount(labels[n_first]).tolist() == [7] * 10
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_per_class(labels, 1.5)
    with pytest.raises(ValueError, match="non-empty"):
        split_per_class(torch.tensor([], dtype=torch.long), 1)


def test_subsample_per_class():
    ds = load_digits()
    sub = subsample_per_class(ds, 5, seed=2)
    assert isinstance(sub, TensorImageDataset) and torch.bincount(sub.labels).tolist() == [5] * 10
    idx = subsample_per_class(ds.labels, 5, seed=2)
    assert torch.equal(ds.labels[idx], sub.labels) and torch.equal(ds.images[idx], sub.images)
    assert set(idx.tolist()) <= set(subsample_per_class(ds.labels, 20, seed=2).tolist())  # nested in n
    with pytest.raises(ValueError) as err:
        subsample_per_class(ds.labels, 175)
    assert "8: 174" in str(err.value)  # names the short class and its count


def test_make_loader():
    ds = subsample_per_class(load_mnist5k(), 10)
    loader = make_loader(ds, 16)
    assert loader.num_workers == 0
    assert torch.equal(torch.cat([y for _, y in loader]), ds.labels)  # no shuffle keeps the order
    order = lambda seed: torch.cat([y for _, y in make_loader(ds, 16, shuffle=True, seed=seed)])
    assert torch.equal(order(0), order(0)) and not torch.equal(order(0), order(1))
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)


def test_make_loader_fixed_epoch_size_and_collate():
    ds = subsample_per_class(load_mnist5k(), 1)                       # 10 images, one per class
    loader = make_loader(ds, 8, shuffle=True, seed=3, samples_per_epoch=45)
    drawn = torch.cat([y for _, y in loader])
    assert len(loader) == 6 and len(drawn) == 45
    for start in range(0, 40, 10):                                     # complete random orders, one after another
        assert sorted(drawn[start:start + 10].tolist()) == sorted(ds.labels.tolist())
    assert len(set(drawn[40:].tolist())) == 5                          # the last, partial order repeats nothing
    assert torch.equal(drawn, torch.cat([y for _, y in make_loader(ds, 8, shuffle=True, seed=3, samples_per_epoch=45)]))
    batch = next(iter(make_loader(ds, 4, collate_fn=lambda items: len(items))))
    assert batch == 4
    with pytest.raises(ValueError, match="shuffle=True"):
        make_loader(ds, 4, samples_per_epoch=20)
    with pytest.raises(ValueError, match="positive int"):
        make_loader(ds, 4, shuffle=True, samples_per_epoch=0)


def test_dataset_rejects_bad_shapes():
    with pytest.raises(ValueError, match="unsqueeze"):
        TensorImageDataset(torch.rand(4, 8, 8), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[N\]"):
        TensorImageDataset(torch.rand(4, 1, 8, 8), torch.zeros(3))
    with pytest.raises(TypeError, match="255"):
        TensorImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4))


def test_shift_transforms():
    x = load_mnist5k().images[::500]  # one of each digit, [10, 1, 28, 28]
    assert torch.equal(contrast(x, 1.0), x) and torch.equal(gaussian_noise(x, 0.0), x)
    assert torch.equal(gaussian_blur(x, 0), x)
    for out in [rotate(x, 30), gaussian_noise(x, 0.2, seed=3), gaussian_blur(x, 1.0), contrast(x, 0.5)]:
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(rotate(x, 360), x, atol=1e-4)
    assert torch.allclose(rotate(x, 90), x.rot90(1, dims=(2, 3)), atol=1e-4)  # counter-clockwise
    assert torch.equal(gaussian_noise(x, 0.2, seed=3), gaussian_noise(x, 0.2, seed=3))
    assert not torch.equal(gaussian_noise(x, 0.2, seed=3), gaussian_noise(x, 0.2, seed=4))
    assert gaussian_blur(x, 1.5).std() < x.std() and contrast(x, 0.3).std() < x.std()
    flat = contrast(x, 0.0)
    assert torch.allclose(flat, flat.mean(dim=(2, 3), keepdim=True).expand_as(flat), atol=1e-6)
    rgb = colorize(x, color=(1.0, 0.5, 0.0), background=(0.0, 0.0, 0.2))
    assert rgb.shape == (10, 3, 28, 28)
    assert torch.allclose(rgb[:, 0:1], x) and torch.allclose(rgb[:, 1:2], 0.5 * x)
    assert torch.allclose(rgb[:, 2:3], 0.2 * (1 - x))
    with pytest.raises(ValueError, match="1-channel"):
        colorize(rgb)
    labels = torch.arange(10).repeat(3)
    new = permute_labels(labels, 10, seed=5)
    mapping = permute_labels(torch.arange(10), 10, seed=5)
    assert sorted(mapping.tolist()) == list(range(10)) and torch.equal(new, mapping[labels])
    with pytest.raises(ValueError, match="0..9"):
        permute_labels(torch.tensor([10]), 10)


def test_domain_pair():
    mnist, digits = load_domain_pair(size=12)
    assert mnist.images.shape == (5000, 1, 12, 12) and digits.images.shape == (1797, 1, 12, 12)
    assert mnist.images.min() >= 0 and mnist.images.max() <= 1 and digits.images.max() <= 1
    # cropping MNIST's empty border makes the digits fill the frame, as the UCI digits do
    border = lambda ds: torch.cat([ds.images[..., 0, :], ds.images[..., -1, :]], dim=-1).mean()
    uncropped, _ = load_domain_pair(size=12, crop_mnist_border=False)
    assert border(mnist) > 2 * border(uncropped)
    with pytest.raises(ValueError, match="size"):
        load_domain_pair(size=2)


def write_idx_gz(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_torchvision_local_loading(tmp_path, name):
    raw = tmp_path / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {p: rng.integers(0, 256, size=(n, 28, 28)) for p, n in [("train", 12), ("t10k", 5)]}
    labels = {p: rng.integers(0, 10, size=len(images[p])) for p in images}
    for p in images:
        write_idx_gz(raw / f"{p}-images-idx3-ubyte.gz", images[p])
        write_idx_gz(raw / f"{p}-labels-idx1-ubyte.gz", labels[p])
    for train, p in [(True, "train"), (False, "t10k")]:
        ds = load_torchvision_dataset(name, tmp_path, train=train)
        assert ds.images.shape == (len(images[p]), 1, 28, 28) and ds.images.dtype == torch.float32
        assert torch.allclose(ds.images[:, 0] * 255, torch.tensor(images[p], dtype=torch.float32), atol=1e-3)
        assert ds.labels.tolist() == labels[p].tolist()


def test_torchvision_missing_files_and_unknown_name(tmp_path):
    with pytest.raises(DataFileError) as err:
        load_torchvision_dataset("FashionMNIST", tmp_path)
    message = str(err.value)
    assert "download=True" in message and "FashionMNIST/raw" in message and "t10k-images-idx3-ubyte" in message
    with pytest.raises(ValueError, match="supported: MNIST"):
        load_torchvision_dataset("CIFAR10", tmp_path)


def test_shift_parameters_must_be_finite_and_in_range():
    x = load_digits().images[:4]
    for bad in [math.nan, math.inf, -math.inf]:
        with pytest.raises(ValueError, match="rotate: degrees must be a finite number"): rotate(x, bad)
        with pytest.raises(ValueError, match="gaussian_noise: std must be a finite number >= 0"): gaussian_noise(x, bad)
        with pytest.raises(ValueError, match="gaussian_blur: sigma must be a finite number >= 0"): gaussian_blur(x, bad)
        with pytest.raises(ValueError, match="contrast: factor must be a finite number >= 0"): contrast(x, bad)
        with pytest.raises(ValueError, match=r"color channel must be a finite number in \[0, 1\]"): colorize(x, color=(bad, 0, 0))
    with pytest.raises(ValueError, match=">= 0, got -0.1"): gaussian_noise(x, -0.1)
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"): colorize(x, background=(0, 1.5, 0))
    with pytest.raises(ValueError, match="3 numbers"): colorize(x, color=(1.0, 0.5))
    with pytest.raises(TypeError, match="must be a number"): rotate(x, "30")
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"): permute_labels(torch.tensor([0, 1]), 0)
    assert torch.equal(rotate(x, np.float64(30)), rotate(x, 30))  # numpy numbers are still numbers


def test_per_class_count_beyond_what_exists_says_how_many_exist():
    labels = load_digits().labels  # the smallest digits class, 8, has 174 examples
    with pytest.raises(ValueError, match=r"Asked for 1000 examples per class.*8: 174"):
        split_per_class(labels, 1000)
    for bad in [math.nan, -0.5, 1.0]:
        with pytest.raises(ValueError, match="between 0 and 1"): split_per_class(labels, bad)


def test_checksum_is_on_content_even_with_size_and_mtime_restored(scratch_data):
    path = scratch_data / "digits.npz"
    assert load_digits().images.shape[0] == 1797  # verified (and, before the fix, cached) once
    before = path.stat()
    blob = bytearray(path.read_bytes())
    blob[200] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # put the old modification time back
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(DataFileError, match="corrupt"):
        load_digits()
    assert data.file_sha256(path) == hashlib.sha256(bytes(blob)).hexdigest()
