"""tools/test_notebooks.py: the notebook runner `make test` uses."""
import json, subprocess, sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent.parent / "tools" / "test_notebooks.py"


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
