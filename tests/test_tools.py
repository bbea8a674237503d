"""tools/test_notebooks.py (the notebook runner `make test` uses) and tools/build_course.py (`make course`)."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tools" / "test_notebooks.py"


def notebook(path: Path, source: str) -> Path:
    cell = dict(cell_type="code", metadata={}, source=[source], outputs=[], execution_count=None)
    meta = dict(kernelspec=dict(name="python3", language="python", display_name="Python 3"))
    path.write_text(json.dumps(dict(cells=[cell], metadata=meta, nbformat=4, nbformat_minor=5)))
    return path


def run(*args):
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=900)


def test_runner_reports_each_notebook_and_fails_on_an_error(tmp_path):
    good, bad = notebook(tmp_path / "good.ipynb", "x = 1 + 1\nassert x == 2"), notebook(tmp_path / "bad.ipynb", "assert 1 == 2, 'boom'")
    # one worker runs both: the second notebook must still reach a worker whose kernel replaced __main__
    result = run("--workers", "1", good, bad, good)
    assert result.returncode == 1
    assert result.stdout.count("ok     good.ipynb") == 2 and "FAILED bad.ipynb" in result.stdout
    assert "boom" in result.stderr and "Failed: bad" in result.stderr
    assert run("--workers", "2", good).returncode == 0


def test_runner_rejects_a_missing_notebook_and_bad_workers(tmp_path):
    missing = run(tmp_path / "nope.ipynb")
    assert missing.returncode == 2 and "no such notebook" in missing.stderr
    assert run("--workers", "0", tmp_path / "nope.ipynb").returncode == 2


def test_runner_remembers_only_the_course_notebooks(tmp_path):
    times = RUNNER.parent.parent / ".cache" / "notebook_seconds.json"
    assert run(notebook(tmp_path / "scratch_only.ipynb", "pass")).returncode == 0
    after = json.loads(times.read_text()) if times.exists() else {}
    assert "scratch_only" not in after


def _claims_notebook(path, holds: bool):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    nb = new_notebook(cells=[
        new_markdown_cell("# A lecture with one claim"),
        new_code_cell("from tlcourse.evaluate import Claims, experiment_sizes\n"
                      "sizes = experiment_sizes(lecture=dict(n=3), quick=dict(n=1))\nclaims = Claims()"),
        new_code_cell(f"claims.greater('the value is above one', {2.0 if holds else 0.5}, 1.0)\nclaims.report()")],
        metadata={"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}})
    nbformat.write(nb, path)
    return path


def test_course_build_collects_claims_and_fails_on_one_that_does_not_hold(tmp_path):
    "make course: each lecture's claims land in claims.csv / claims.html; a false claim fails the lecture profile only."
    import csv
    good = _claims_notebook(tmp_path / "91_good.ipynb", holds=True)
    bad = _claims_notebook(tmp_path / "92_bad.ipynb", holds=False)
    site = tmp_path / "site"
    run = lambda *args: subprocess.run([sys.executable, str(ROOT / "tools" / "build_course.py"), "--site", str(site), *args],
                                       capture_output=True, text=True, timeout=900)
    r = run(str(good), str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "92_bad.ipynb: the value is above one" in r.stderr and "91_good" not in r.stderr
    rows = list(csv.DictReader(open(site / "claims.csv")))
    assert [(row["notebook"], row["holds"], row["profile"]) for row in rows] == [
        ("91_good.ipynb", "True", "lecture"), ("92_bad.ipynb", "False", "lecture")]
    assert "0.500 vs 1.000" in (site / "claims.html").read_text()
    # the quick profile shows the same claims but does not enforce them (decided by the same function; one build above
    # runs real kernels, a second would only repeat them)
    sys.path.insert(0, str(ROOT / "tools"))
    import build_course
    bad_row = dict(notebook="92_bad.ipynb", error=None, claims=[dict(claim="the value is above one", holds=False)])
    assert build_course.verdict([bad_row], "quick") == 0 and build_course.verdict([bad_row], "lecture") == 1
    assert build_course.verdict([dict(bad_row, error="RuntimeError: boom", claims=[])], "quick") == 1
