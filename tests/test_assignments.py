"""Every assignment's instructor version is well formed for nbgrader, and its student release gives nothing away.

Light: nothing is executed. The release is made by nbgrader's own `generate_assignment` (in this process, into a
temporary course folder with the repository's configuration), then searched for the solution and hidden-test text.
"""
import json
import os
import re
import shutil
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "assignments"
# one assignment per lecture (issue 16)
EXPECTED = ["a01_why_transfer", "a02a_metrics", "a02b_evaluation", "a02c_representations", "a03a_pretrain",
            "a03b_pretrain_text", "a03c_graphs", "a03d_at_scale", "a04_finetune", "a04b_surgical", "a04c_ulmfit",
            "a05_peft", "a06_domain", "a07a_multitask", "a07b_meta"]
SOURCES = sorted(p for p in (COURSE / "source").glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
NAMES = [p.parent.name for p in SOURCES]
MARKERS = {"solution": ("### BEGIN SOLUTION", "### END SOLUTION"),
           "hidden": ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")}
NBGRADER_KEYS = {"grade", "grade_id", "locked", "schema_version", "solution", "task"}


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def grading(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def regions(text: str, kind: str, where: str) -> list[list[str]]:
    """The lines inside each `kind` region of `text`; fails on a region that is opened twice, closed without being
    opened, or never closed."""
    begin, end = MARKERS[kind]
    found, inside = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if begin in line:
            assert inside is None, f"{where}: line {number} opens a {kind} region inside another; close the first with `{end}`"
            inside = []
        elif end in line:
            assert inside is not None, f"{where}: line {number} closes a {kind} region that was never opened with `{begin}`"
            found.append(inside)
            inside = None
        elif inside is not None:
            inside.append(line)
    assert inside is None, f"{where}: a {kind} region is opened but never closed; add `{end}`"
    return found


def is_autograded_test(cell) -> bool:
    g = grading(cell)
    return bool(cell["cell_type"] == "code" and g.get("grade") and not g.get("solution"))


def is_manual(cell) -> bool:
    "A task cell, or a manually graded answer (graded, with a solution, not a code cell that tests could grade)."
    g = grading(cell)
    return bool(g.get("task")) or (cell["cell_type"] == "markdown" and g.get("grade") and g.get("solution"))


def secret_lines(nb) -> set[str]:
    """Lines (stripped, at least 12 characters) of every solution region, hidden-test region and markdown answer
    without markers that appear nowhere else in the notebook (a prompt may quote a line): none may reach students."""
    inside, outside = set(), []
    for cell in nb["cells"]:
        text, g = source(cell), grading(cell)
        hidden = [line for region in regions(text, "solution", "") + regions(text, "hidden", "") for line in region]
        whole = cell["cell_type"] == "markdown" and g.get("solution") and MARKERS["solution"][0] not in text
        secret = text.splitlines() if whole else hidden
        inside.update(line.strip() for line in secret)
        rest = list(text.splitlines())
        for line in secret:
            rest.remove(line)
        outside.extend(rest)
    outside = "\n".join(outside)
    return {line for line in inside if len(line) >= 12 and line not in outside}


def load(path) -> dict:
    return json.loads(Path(path).read_text())


def test_every_lecture_has_its_assignment():
    missing = [name for name in EXPECTED if not (COURSE / "source" / name / f"{name}.ipynb").exists()]
    assert not missing, f"No instructor notebook assignments/source/<name>/<name>.ipynb for {missing}"
    assert set(NAMES) == set(EXPECTED), f"Unexpected assignments {sorted(set(NAMES) - set(EXPECTED))}: add them to EXPECTED"


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_source_is_well_formed(path):
    nb, name = load(path), path.parent.name
    assert path.stem == name, f"{path}: the notebook must be named after its folder ({name}.ipynb)"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", f"{name}: set the python3 kernelspec"
    ids = []
    for i, cell in enumerate(nb["cells"]):
        g, text, where = grading(cell), source(cell), f"{name} cell {i}"
        solution_regions, hidden_regions = regions(text, "solution", where), regions(text, "hidden", where)
        if not g:  # a plain cell: nbgrader releases it as it is
            assert not (solution_regions or hidden_regions), f"{where}: a region in a cell without nbgrader metadata would be released"
            continue
        assert NBGRADER_KEYS <= set(g) and g["schema_version"] == 3, \
            f"{where}: nbgrader metadata needs schema_version 3 and {sorted(NBGRADER_KEYS)}, got {g}"
        ids.append(g["grade_id"])
        if solution_regions:
            assert g["solution"], f"{where} ({g['grade_id']}): a solution region in a cell not marked solution would be released"
        if hidden_regions:
            assert is_autograded_test(cell), f"{where} ({g['grade_id']}): hidden tests belong in an autograded test cell"
        if cell["cell_type"] == "code" and g["solution"]:
            assert solution_regions, f"{where} ({g['grade_id']}): mark the answer with `### BEGIN SOLUTION` / `### END SOLUTION`"
        if g["grade"] or g["task"]:
            assert isinstance(g.get("points"), (int, float)) and g["points"] > 0, f"{where} ({g['grade_id']}): give it points > 0"
        if is_autograded_test(cell):
            assert g["locked"], f"{where} ({g['grade_id']}): lock the test cell so students cannot edit it"
    assert len(ids) == len(set(ids)), f"{name}: grade_ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}"
    tests = [c for c in nb["cells"] if is_autograded_test(c)]
    assert len(tests) >= 3, f"{name}: needs at least 3 autograded test cells with points, has {len(tests)}"
    with_hidden = [c for c in tests if regions(source(c), "hidden", name)]
    assert len(with_hidden) >= 3, f"{name}: needs hidden tests in at least 3 test cells, has {len(with_hidden)}"
    visible = [c for c in tests if "assert" in re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", source(c), flags=re.S)]
    assert len(visible) >= 3, f"{name}: at least 3 test cells must show students a visible check, has {len(visible)}"
    assert any(is_manual(c) for c in nb["cells"]), f"{name}: needs one task graded by hand (a task cell or a markdown answer)"


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    "nbgrader generate_assignment for every assignment, with the repository's configuration, in a temporary course."
    import nbgrader.api
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.converters import GenerateAssignment
    from traitlets.config import Config, PyFileConfigLoader

    course = tmp_path_factory.mktemp("course")
    shutil.copytree(COURSE / "source", course / "source", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    config = Config()
    if (COURSE / "nbgrader_config.py").exists():
        config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(COURSE)).load_config())
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    config.Exchange.root = str(course / "exchange")
    failures, monkeypatch = {}, pytest.MonkeyPatch()
    # nbgrader runs the `alembic` command of its environment, which may not be on PATH when the tests run
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    # ...and it runs it once per gradebook opened; the answer is the same for every assignment, so ask once
    head = nbgrader.api.get_alembic_version()
    monkeypatch.setattr(nbgrader.api, "get_alembic_version", lambda: head)
    for name in NAMES:
        coursedir = CourseDirectory(config=config)
        coursedir.assignment_id = name
        app = GenerateAssignment(coursedir=coursedir, config=config)
        app.force = app.create_assignment = True
        try:
            app.start()
        except Exception as error:  # nbgrader reports the problem (e.g. bad metadata); the test names the assignment
            failures[name] = f"{error!r}\n{traceback.format_exc()}"
    monkeypatch.undo()
    return course / "release", failures


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_release_has_no_solution_or_hidden_test(path, releases):
    release_dir, failures = releases
    name = path.parent.name
    assert name not in failures, f"nbgrader generate_assignment failed for {name}: {failures.get(name)}"
    released = release_dir / name / path.name
    assert released.exists(), f"nbgrader made no release of {name}"
    text = released.read_text()
    for begin, end in MARKERS.values():
        assert begin not in text and end not in text, f"{name}: the release still contains `{begin}`"
    nb = load(released)
    released_text = "\n".join(source(c) for c in nb["cells"]) + "\n" + text  # decoded, as JSON escapes quotes
    leaked = sorted(line for line in secret_lines(load(path)) if line in released_text)
    assert not leaked, f"{name}: the student release contains solution or hidden-test lines: {leaked[:5]}"
    stubs = [c for c in nb["cells"] if grading(c).get("solution")]
    assert stubs and all(("YOUR CODE HERE" in source(c)) or ("YOUR ANSWER HERE" in source(c)) for c in stubs), \
        f"{name}: every answer cell of the release must hold the student's stub"
    source_tests = sum(is_autograded_test(c) for c in load(path)["cells"])
    assert sum(is_autograded_test(c) for c in nb["cells"]) == source_tests, f"{name}: the release lost test cells"


def test_loading_the_config_leaves_the_environment_alone(monkeypatch):
    """JupyterLab loads nbgrader_config.py for the nbgrader extension: a variable it set (Agg, one thread) would reach
    every kernel of `make lab`, so lectures would show no figure and run on one thread."""
    from traitlets.config.loader import PyFileConfigLoader
    for name in ("OMP_NUM_THREADS", "MPLBACKEND", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    PyFileConfigLoader("nbgrader_config.py", path=str(COURSE)).load_config()
    assert dict(os.environ) == before
