"""Run every course notebook as a test (nbdev's own `test_nb`), several at a time, longest first.

`nbdev_test --n_workers N` hands notebooks to its workers in file-name order, so a long lecture near the end of
the list can run alone while the other worker idles. This runner keeps nbdev's per-notebook test (same skip flags,
same working directory, same `IN_TEST`), but starts the notebooks that took longest last time first and prints
each result as it arrives, so a slow or failing lecture shows in the log at once.

Usage: python tools/test_notebooks.py [--workers 2] [notebook ...]
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
TIMES = ROOT / ".cache" / "notebook_seconds.json"
# Seconds each notebook took in the quick profile under this runner (one worker, quiet 2-core machine, 2026-11-30).
# Only the order matters; a notebook missing here (a new lecture) counts as the longest until it has been timed.
DEFAULT_SECONDS = {"33_pretrain_at_scale": 29, "30_pretrain": 16, "41_finetune_experiments": 15, "40_finetune": 15,
                   "10_why_transfer": 15, "31_pretrain_text": 15, "01_models": 14, "21_evaluation": 13, "42_ulmfit": 13,
                   "50_peft": 12, "60_domain": 13, "71_meta_learning": 13, "32_pretrain_graphs": 12, "34_command_line": 10, "00_data": 10, "20_metrics": 8,
                   "22_representations": 5, "03_evaluate": 2, "02_learner": 2, "index": 1,
                   "70_multitask": 13}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every notebook nbdev_test would run)")
    parser.add_argument("--workers", type=int, default=2, help="notebooks run at the same time (default 2)")
    args = parser.parse_args(argv)
    if args.workers < 1: parser.error("--workers must be at least 1")

    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    from nbdev.test import test_nb  # handed to the workers by reference: a notebook's kernel replaces their __main__
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
    start, results = time.time(), {}
    print(f"Running {len(files)} notebooks, {args.workers} at a time, longest first.", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(test_nb, f, skip_flags=skip_flags, basepath=config.config_path): f for f in files}
        for future in as_completed(futures):
            path = futures[future]
            passed, seconds = future.result()
            results[path.stem] = (passed, seconds)
            print(f"{'ok    ' if passed else 'FAILED'} {path.name}: {seconds:.0f} s "
                  f"({time.time() - start:.0f} s since start)", flush=True)

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
