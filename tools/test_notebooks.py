"""Run every course notebook as a test (nbdev's own `test_nb`), several at a time, longest first.

`nbdev_test --n_workers N` hands notebooks to its workers in file-name order, so a long lecture near the end of
the list can run alone while the other worker idles. This runner keeps nbdev's per-notebook test (same skip flags,
same working directory, same `IN_TEST`), but starts the notebooks that took longest last time first and prints
each result as it arrives, so a slow or failing lecture shows in the log at once.

With `--site DIR` each notebook, once run, is also published as a page of a quick-profile course site (the HTML
export only: nothing runs twice), with the same page writer as `make course` (tools/build_course.py), and the site's
start, glossary, claims and timings pages are written at the end. `make test` builds .cache/site-quick/ this way, and
tests/test_browser.py checks it offline in a real browser.

Usage: python tools/test_notebooks.py [--workers 2] [--site DIR] [notebook ...]
Seconds of the last run are kept in .cache/notebook_seconds.json (git-ignored) to order the next one.
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: build_course (the page writer), and this module by name
TIMES = ROOT / ".cache" / "notebook_seconds.json"
# Seconds each notebook took in the quick profile under this runner (one worker, quiet 2-core machine, 2026-11-30).
# Only the order matters; a notebook missing here (a new lecture) counts as the longest until it has been timed.
DEFAULT_SECONDS = {"33_pretrain_at_scale": 29, "30_pretrain": 16, "41_finetune_experiments": 15, "40_finetune": 15,
                   "10_why_transfer": 15, "31_pretrain_text": 15, "01_models": 14, "21_evaluation": 13, "42_ulmfit": 13,
                   "50_peft": 12, "60_domain": 13, "71_meta_learning": 13, "32_pretrain_graphs": 12, "34_command_line": 10, "00_data": 10, "20_metrics": 8,
                   "22_representations": 5, "03_evaluate": 2, "02_learner": 2, "index": 1,
                   "70_multitask": 13}


_last_run = {}


def _keep_executed_notebooks():
    "Make nbdev's test_nb remember the notebook its shell runs (its cells carry their outputs afterwards)."
    import nbdev.test
    from execnb.shell import CaptureShell
    if getattr(nbdev.test.CaptureShell, "keeps_notebook", False): return

    class KeepingShell(CaptureShell):
        keeps_notebook = True
        def run_all(self, nb, *args, **kwargs):
            _last_run["nb"] = nb
            return super().run_all(nb, *args, **kwargs)
    nbdev.test.CaptureShell = KeepingShell


def _joined(output: dict) -> dict:
    "An output as nbformat holds it in memory: text kept as a list of lines (as on disk) joined into one string."
    output = dict(output)
    if isinstance(output.get("text"), list): output["text"] = "".join(output["text"])
    if isinstance(output.get("data"), dict):
        output["data"] = {k: "".join(v) if isinstance(v, list) and not k.endswith("json") else v  # JSON data stays as is
                          for k, v in output["data"].items()}
    return output


def executed_copy(path: Path, ran):
    """The notebook at `path` with the outputs of `ran` (the cells nbdev's shell ran) in its code cells.

    nbdev runs a processed copy (frontmatter cell added, directive lines removed): cells are matched by their id."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    outputs = {c.get("id"): c for c in (ran.cells if ran is not None else []) if c.get("cell_type") == "code" and c.get("id")}
    for cell in nb.cells:
        done = outputs.get(cell.get("id")) if cell.cell_type == "code" else None
        if done is None: continue
        cell.outputs = [nbformat.from_dict(_joined(o)) for o in done.get("outputs", [])]
        cell.execution_count = done.get("execution_count")
    return nb


def test_and_publish(path: Path, skip_flags, basepath, site: Path | None = None, lectures=(), claims_file: Path | None = None):
    """nbdev's test_nb on one notebook (same skip flags, IN_TEST, working directory, error printing); with `site`, the
    executed notebook is also written as `site/<name>.html`. Returns (passed, seconds, seconds spent on the page)."""
    from nbdev.test import test_nb
    if site is None:
        return (*test_nb(path, skip_flags=skip_flags, basepath=basepath), 0.0)
    import build_course
    _keep_executed_notebooks()
    _last_run.clear()
    if claims_file is not None:
        Path(claims_file).unlink(missing_ok=True)  # a claim counts only if this run stated it
        os.environ["TLCOURSE_CLAIMS_FILE"] = str(claims_file)
    try:
        passed, seconds = test_nb(path, skip_flags=skip_flags, basepath=basepath)
    finally:
        os.environ.pop("TLCOURSE_CLAIMS_FILE", None)
    start = time.time()
    # a failing notebook is published too: its page shows how far it got and the error
    build_course.publish_page(executed_copy(path, _last_run.get("nb")), Path(site), path.stem, list(lectures))
    return passed, seconds, time.time() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every notebook nbdev_test would run)")
    parser.add_argument("--workers", type=int, default=2, help="notebooks run at the same time (default 2)")
    parser.add_argument("--site", type=Path, help="also publish each executed notebook into this quick-profile site")
    args = parser.parse_args(argv)
    if args.workers < 1: parser.error("--workers must be at least 1")

    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    # handed to the workers by reference to this module by name: a notebook's kernel replaces their __main__
    from test_notebooks import test_and_publish
    config = get_config()
    if args.notebooks:
        files = [Path(p).resolve() for p in args.notebooks]
        missing = [str(p) for p in files if not p.exists()]
        if missing: parser.error(f"no such notebook: {', '.join(missing)}")
    else:
        files = [Path(p).resolve() for p in nbglob(as_path=True)
                 if not (Path(p).parent / ".notest").exists()]
    if not files:
        print("No notebooks to test."); return 0

    last = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    def expected(path: Path) -> float:
        return last.get(path.stem, DEFAULT_SECONDS.get(path.stem, float("inf")))
    files.sort(key=expected, reverse=True)

    skip_flags = config.tst_flags.split()
    site = args.site.resolve() if args.site else None
    lectures, claims_dir = [], None
    if site:
        import build_course
        build_course.mathjax_source()  # a missing MathJax copy fails now, before any notebook runs
        lectures = build_course.site_lectures(files)
        claims_dir = site / "claims"
        claims_dir.mkdir(parents=True, exist_ok=True)
    start, results, page_seconds = time.time(), {}, 0.0
    print(f"Running {len(files)} notebooks, {args.workers} at a time, longest first"
          + (f"; publishing each into {site}" if site else "") + ".", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(test_and_publish, f, skip_flags, config.config_path, site, lectures,
                               claims_dir / f"{f.stem}.json" if claims_dir else None): f for f in files}
        for future in as_completed(futures):
            path = futures[future]
            passed, seconds, page_s = future.result()
            results[path.stem] = (passed, seconds)
            page_seconds += page_s
            print(f"{'ok    ' if passed else 'FAILED'} {path.name}: {seconds:.0f} s"
                  + (f" + page {page_s:.1f} s" if site else "") + f" ({time.time() - start:.0f} s since start)", flush=True)
    if site:
        import build_course
        pages_start = time.time()
        rows = [dict(notebook=f.name, title=build_course.notebook_title(json.loads(f.read_text(encoding="utf-8")), f.stem),
                     wall_s=round(results[f.stem][1], 1), peak_mb=None, error=None if results[f.stem][0] else "failed",
                     claims=build_course.read_claims(claims_dir / f"{f.stem}.json")[1])
                for f in sorted(files, key=lambda f: f.name) if f.stem != "index"]
        ran_start_page = any(f.stem == "index" for f in files)
        build_course.write_site_pages(site, rows, "quick", lectures,
                                      start_page=None if ran_start_page else ROOT / "nbs" / "index.ipynb",
                                      note="Run by `make test` (quick profile, two notebooks at a time; no peak memory measured).")
        page_seconds += time.time() - pages_start
        print(f"Quick-profile site: {site / 'index.html'} ({page_seconds:.1f} s of HTML export in all).", flush=True)

    # only the course's own notebooks are remembered (not, say, a test's notebooks in a temporary folder);
    # written whole and renamed, so two runs at once cannot leave a half-written file
    nbs = Path(config.nbs_path).resolve()
    timed = {f.stem: round(results[f.stem][1]) for f in files if results[f.stem][0] and f.parent == nbs}
    if timed:
        TIMES.parent.mkdir(parents=True, exist_ok=True)
        partial = TIMES.with_name(f"{TIMES.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({**last, **timed}, indent=1))
        os.replace(partial, TIMES)
    failed = sorted(name for name, (ok, _) in results.items() if not ok)
    print(f"{len(files) - len(failed)} of {len(files)} notebooks passed in {time.time() - start:.0f} s.")
    if failed:
        print("Failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
