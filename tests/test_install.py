"""tlcourse as a normal wheel: built from a clean copy of the project (what a fresh clone holds), installed without
the repository, it loads every dataset and shipped checkpoint from inside the package; the wheel carries nothing else;
every library it imports is declared."""
import ast, hashlib, importlib.metadata, json, os, re, shutil, subprocess, sys, zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Files that sit in a working tree but must never reach a wheel: caches, byte-code, partial atomic writes, the site.
JUNK = ["data/.manifest.json.123.tmp", "data/checkpoints/.fashion_cnn.safetensors.abc.tmp", "data/__pycache__/x.pyc",
        "tlcourse/__pycache__/data.cpython-311.pyc", "tlcourse/.data.py.swp", "_site/index.html", ".cache/features.pt",
        "nbs/.ipynb_checkpoints/00_data-checkpoint.ipynb", "build/lib/tlcourse/stale.py"]


def project_files() -> list[str]:
    "What a fresh clone would hold: the tracked files plus new, not-ignored ones (as tools/check_nbdev_sync.py)."
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    "Build the wheel offline, as `pip install .` does, from a scratch copy of the project with junk planted in it."
    tmp = tmp_path_factory.mktemp("install")
    src, files = tmp / "src", project_files()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    for f in JUNK:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_text("junk")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp / "dist").glob("tlcourse-*.whl")
    return dict(tmp=tmp, wheel=wheel, files=files)


def test_wheel_holds_the_package_and_the_data_and_nothing_else(built):
    with zipfile.ZipFile(built["wheel"]) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        payload = {n: hashlib.sha256(z.read(n)).hexdigest() for n in names if n.startswith("tlcourse/")}
    files = built["files"]
    package = {f for f in files if re.fullmatch(r"tlcourse/[^/]+\.py", f)}
    data = {f"tlcourse/_data/{f[len('data/'):]}": f for f in files if f.startswith("data/")}
    assert "tlcourse/_data/manifest.json" in data and "tlcourse/_data/checkpoints/manifest.json" in data
    assert set(payload) == package | set(data), (
        f"unexpected in the wheel: {sorted(set(payload) - package - set(data))}; "
        f"missing from it: {sorted(package | set(data) - set(payload))}")
    assert all(payload[n] == sha256(ROOT / f) for n, f in data.items()), "a data file in the wheel differs from data/"
    others = {n.split("/")[0] for n in names if not n.startswith("tlcourse/")}
    assert others == {built["wheel"].name.split("-py3")[0] + ".dist-info"}, others


def test_installed_wheel_loads_every_dataset_and_checkpoint_without_the_repository(built):
    tmp = built["tmp"]
    target, work = tmp / "site", tmp / "elsewhere"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(target), str(built["wheel"])], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    script = """
import json, sys
import tlcourse
from tlcourse.data import load_digits
from tlcourse.registry import data_dir, load_pretrained, read_manifest, verify_all
checkpoints = {name: sum(p.numel() for p in load_pretrained(name).parameters()) for name in read_manifest("checkpoints")}
print(json.dumps(dict(file=tlcourse.__file__, data=str(data_dir()), path=sys.path, problems=verify_all(),
                      datasets=sorted(read_manifest("datasets")), digits=len(load_digits()), checkpoints=checkpoints)))
"""
    # the installed copy first on the path; the repository nowhere (the dev environment's editable finder only
    # answers for names that nothing on sys.path provides); no data location from the environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLCOURSE_")}
    env.update(PYTHONPATH=str(target), TLCOURSE_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve().is_relative_to(target.resolve()), out["file"]
    assert Path(out["data"]).resolve() == (target / "tlcourse" / "_data").resolve()
    entries = [(work / p).resolve() for p in out["path"]]  # '' is the working directory
    assert ROOT not in entries and not [p for p in entries if p != target.resolve() and (p / "tlcourse").exists()], entries
    assert out["problems"] == []
    from tlcourse.data import load_digits
    from tlcourse.registry import read_manifest
    assert out["datasets"] == sorted(read_manifest("datasets")) and out["digits"] == len(load_digits())
    assert sorted(out["checkpoints"]) == sorted(read_manifest("checkpoints"))
    assert all(n > 0 for n in out["checkpoints"].values()), out["checkpoints"]


def test_a_source_checkout_reads_the_repository_data(monkeypatch):
    "The editable install (`make env`) has no packaged copy: it reads data/ itself, so edits there take effect at once."
    import tlcourse
    from tlcourse.registry import data_dir
    monkeypatch.delenv("TLCOURSE_DATA", raising=False)
    assert Path(tlcourse.__file__).resolve().parent == ROOT / "tlcourse"
    assert not (ROOT / "tlcourse" / "_data").exists(), "tlcourse/_data belongs in the wheel only; delete it here"
    assert data_dir().resolve() == ROOT / "data"


def third_party_imports(path: Path) -> dict[str, bool]:
    "Top-level modules a file imports that are not tlcourse's or the standard library's -> whether each import is required."
    tree = ast.parse(path.read_text())
    optional = set()
    for node in ast.walk(tree):  # an import inside `try: ... except ImportError/Exception:` has a fallback
        if isinstance(node, ast.Try) and any(
                h.type is None or (isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError", "Exception"))
                for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0: names = [node.module]
        else: continue
        for name in names:
            top = name.split(".")[0]
            if top == "tlcourse" or top in sys.stdlib_module_names or top == "__future__": continue
            found[top] = found.get(top, False) or id(node) not in optional
    return found


def test_every_library_the_package_imports_is_a_declared_requirement():
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    canon = lambda name: re.sub(r"[-_.]+", "-", name).lower()
    declared = {canon(re.split(r"[<>=!~\[; ]", req)[0]) for req in cfg["DEFAULT"]["requirements"].split()}
    assert all(re.search(r"==\d", req) for req in cfg["DEFAULT"]["requirements"].split()), "requirements are pinned exactly"
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in sorted((ROOT / "tlcourse").glob("*.py")):
        for module, required in third_party_imports(path).items():
            dists = {canon(d) for d in distributions.get(module, [module])}
            if required and not dists & declared:
                missing.setdefault(module, []).append(path.name)
    assert not missing, (f"imported but not in settings.ini's requirements: {missing}. Add each one, pinned as in "
                         "requirements/constraints.txt.")
