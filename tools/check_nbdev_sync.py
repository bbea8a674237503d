"""Fail when `nbdev_export` or `nbdev_clean` would change any file of the project.

Both commands run on a scratch copy of the tracked (and not-ignored) files, so the
working tree is never touched; the differences are listed with the fix.
"""
import filecmp, shutil, subprocess, sys, tempfile
from pathlib import Path

def project_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if f and (root / f).is_file()]

def main() -> int:
    root = Path(__file__).resolve().parent.parent
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        files = project_files(root)
        for f in files:
            (scratch / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, scratch / f)
        for cmd in ("nbdev_export", "nbdev_clean"):
            r = subprocess.run([str(bin_dir / cmd)], cwd=scratch, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{cmd} failed:\n{r.stdout}{r.stderr}", file=sys.stderr); return 1
        known = set(files)
        changed = [f for f in files if not filecmp.cmp(root / f, scratch / f, shallow=False)]
        lib = [p.relative_to(scratch).as_posix() for p in (scratch / "tlcourse").rglob("*.py")]
        added = [f for f in lib if f not in known]
    if changed or added:
        print("The notebooks and the library are out of sync, or notebooks are not clean.\n"
              "nbdev_export / nbdev_clean would change:", *[f"  {f}" for f in changed + added],
              "Fix: run `.venv/bin/nbdev_export && .venv/bin/nbdev_clean`, review, and commit.", sep="\n", file=sys.stderr)
        return 1
    print(f"nbdev sync check: export and clean change nothing ({len(files)} files checked)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
