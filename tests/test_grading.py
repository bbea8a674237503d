"""End to end with nbgrader: release an assignment, autograde four submissions, write feedback and the gradebook CSV.

Works on a copy of the course folder (config + assignment 2a, whose tasks run in seconds), so the repository's own
gradebook and release are never touched. The four submissions:
- the instructor's version (solutions in): full marks on every autograded task;
- the untouched student release: zero on every autograded task;
- a partly correct one (tasks 1 and 3 solved, task 2 wrong, task 4 left alone): exactly the points of tasks 1 and 3;
- a cheating one: it deletes task 1's test cell, replaces task 3's test with `pass`, and hangs in task 2; both test
  cells come back from the gradebook and fail, the hang is stopped by the cell time limit and costs task 2 only, so
  only its correct task 4 scores.
"""
import copy, csv, importlib.util, json, shutil
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "a02a_metrics"
POINTS = {"t1_tests": 2, "t2_tests": 3, "t3_tests": 2, "t4_tests": 3}   # the autograded tasks of assignment 2a
MANUAL = "t5_answer"
TIMEOUT = 15   # seconds a cell may run in this test: far above any cell of the assignment, far below the default


def _grading():
    spec = importlib.util.spec_from_file_location("grading", ROOT / "tools" / "grading.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells_by_id(nb) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if "nbgrader" in c.metadata}


def _regions(source: str, begin: str, end: str) -> list[str]:
    "The non-empty lines between every begin/end marker pair of a cell's source."
    out, inside = [], False
    for line in source.splitlines():
        if begin in line: inside = True; continue
        if end in line: inside = False; continue
        if inside and line.strip(): out.append(line.strip())
    return out


def _submit(course: Path, student: str, nb):
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{ASSIGNMENT}.ipynb")


def _grade_all(course: Path):
    "Release assignment 2a in `course` (a fresh copy of the course), grade the four submissions; return what the checks need."
    grading = _grading()
    shutil.copy(ROOT / "assignments" / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "assignments" / "source" / ASSIGNMENT, course / "source" / ASSIGNMENT)
    grading.release(course, [ASSIGNMENT])

    source = nbformat.read(course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    release = nbformat.read(course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    solutions = _cells_by_id(source)

    _submit(course, "instructor", source)
    _submit(course, "untouched", release)

    partial = copy.deepcopy(release)
    cells = _cells_by_id(partial)
    for task in ("t1", "t3"):
        cells[f"{task}_solution"].source = solutions[f"{task}_solution"].source
    # a plausible mistake: accuracy instead of macro F1
    cells["t2_solution"].source = ("def macro_f1(y_true, y_pred) -> float:\n"
                                   "    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))")
    _submit(course, "partial", partial)

    cheat = copy.deepcopy(release)
    cells = _cells_by_id(cheat)
    cheat.cells = [c for c in cheat.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "t1_tests"]  # deleted
    cells["t2_solution"].source = "def macro_f1(y_true, y_pred) -> float:\n    while True:\n        pass"       # hangs
    cells["t3_solution"].source = "def top_k_accuracy(scores, y_true, k):\n    return 1.0"                    # wrong
    cells["t3_tests"].source = "pass"                                                                      # edited
    cells["t4_solution"].source = solutions["t4_solution"].source                                          # right
    _submit(course, "cheat", cheat)

    csv_path = grading.autograde(course, timeout=TIMEOUT)
    with open(csv_path) as f: rows = {r["student_id"]: r for r in csv.DictReader(f)}
    return course, rows, source, release


def _scores(course: Path, student: str) -> dict:
    "grade_id -> score of every graded cell of `student`'s submission."
    from nbgrader.api import Gradebook
    with Gradebook("sqlite:///" + str(course / "gradebook.db"), "tlcourse") as gb:
        nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
        return {g.name: g.score for g in nb.grades}


def _autograded(course: Path, student: str):
    return nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)


def _release_has_no_solution_or_hidden_test(graded):
    course, _, source, release = graded
    text = "\n".join(p.read_text() for p in (course / "release" / ASSIGNMENT).rglob("*") if p.is_file())
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "Model answer"):
        assert marker not in text, f"the release contains {marker!r}"
    secret = []
    for cell in source.cells:
        secret += _regions(cell.source, "### BEGIN SOLUTION", "### END SOLUTION")
        secret += _regions(cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
    secret += [line for line in _cells_by_id(source)[MANUAL].source.splitlines() if line.strip()]
    # lines that could appear in a stub or in visible code by coincidence (e.g. `return counts`) would prove nothing
    secret = [s for s in secret if len(s) > 24]
    assert len(secret) > 20, "the search needs the assignment's solution and hidden-test lines to look for"
    leaked = [s for s in secret if s in text]
    assert not leaked, f"solution or hidden-test lines in the release: {leaked[:3]}"
    # and the student still gets every task: stubs where the solutions were, the visible tests intact
    stubs = _cells_by_id(release)
    for task in ("t1", "t2", "t3", "t4"):
        assert "raise NotImplementedError()" in stubs[f"{task}_solution"].source
        assert stubs[f"{task}_tests"].source.strip()


def _instructor_solution_gets_full_marks(graded):
    course, rows, _, _ = graded
    scores = _scores(course, "instructor")
    assert {k: scores[k] for k in POINTS} == POINTS
    assert float(rows["instructor"]["score"]) == sum(POINTS.values())   # the manual task waits for a person
    assert float(rows["instructor"]["max_score"]) == sum(POINTS.values()) + 2


def _untouched_release_gets_zero(graded):
    course, rows, _, _ = graded
    scores = _scores(course, "untouched")
    assert all(scores[k] == 0 for k in POINTS), scores
    assert float(rows["untouched"]["score"]) == 0


def _partly_correct_gets_partial_marks(graded):
    course, rows, _, _ = graded
    scores = _scores(course, "partial")
    assert {k: scores[k] for k in POINTS} == {"t1_tests": 2, "t2_tests": 0, "t3_tests": 2, "t4_tests": 0}
    assert float(rows["partial"]["score"]) == 4


def _deleted_and_edited_test_cells_are_restored(graded):
    course, _, source, _ = graded
    scores = _scores(course, "cheat")
    assert scores["t1_tests"] == 0 and scores["t3_tests"] == 0, scores
    cells = _cells_by_id(_autograded(course, "cheat"))
    assert "was missing from the submission" in cells["t1_tests"].source, "the deleted test cell was put back"
    # the edited test ran as the instructor wrote it, hidden tests included
    assert cells["t3_tests"].source == _cells_by_id(source)["t3_tests"].source


def _infinite_loop_stops_at_the_time_limit_and_costs_only_its_task(graded):
    course, rows, _, _ = graded
    scores = _scores(course, "cheat")
    assert scores["t2_tests"] == 0 and scores["t4_tests"] == POINTS["t4_tests"], scores
    outputs = _cells_by_id(_autograded(course, "cheat"))["t2_tests"].outputs
    assert any(o.get("ename") == "CellTimeoutError" or "KeyboardInterrupt" in json.dumps(o) for o in outputs), outputs
    assert float(rows["cheat"]["score"]) == POINTS["t4_tests"]


def _feedback_for_every_student(graded):
    course, rows, _, _ = graded
    assert set(rows) == {"instructor", "untouched", "partial", "cheat"}
    for student in rows:
        html = (course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
        total = f"(Score: {round(float(rows[student]['score']), 2)} / {round(float(rows[student]['max_score']), 2)})"
        assert total in html, f"{student}'s feedback does not show the gradebook's total {total}"


def test_grading_end_to_end(tmp_path):
    """One test, so that pytest-xdist never grades the same submissions twice on two workers: release, then every
    check above on one graded course."""
    graded = _grade_all(tmp_path)
    _release_has_no_solution_or_hidden_test(graded)
    _instructor_solution_gets_full_marks(graded)
    _untouched_release_gets_zero(graded)
    _partly_correct_gets_partial_marks(graded)
    _deleted_and_edited_test_cells_are_restored(graded)
    _infinite_loop_stops_at_the_time_limit_and_costs_only_its_task(graded)
    _feedback_for_every_student(graded)
