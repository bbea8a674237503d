"""Release and grade the course's nbgrader assignments, headless, in one process (used by `make release` and
`make autograde`).

    python tools/grading.py release [ASSIGNMENT ...]    student versions into assignments/release/ (default: all)
    python tools/grading.py autograde                   grade assignments/submitted/<student>/<assignment>/,
                                                        feedback HTML into assignments/feedback/, grades.csv

`--course DIR` works on another course folder (it must hold an nbgrader_config.py); the grading test uses a copy.
"""
from __future__ import annotations
import argparse, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "assignments"


def _api(course: Path, timeout: int | None = None):
    "nbgrader's API configured by `course`/nbgrader_config.py, with its course root set to `course`."
    config_file = course / "nbgrader_config.py"
    if not config_file.exists():
        sys.exit(f"{course} has no nbgrader_config.py: point --course at the course folder (the repo's assignments/).")
    # graders run headless and offline, one thread per kernel (the course's models are tiny; more threads only make two
    # graders fight); set here, not in nbgrader_config.py, which JupyterLab also loads for every course kernel
    for name, value in dict(OMP_NUM_THREADS="1", MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1").items():
        os.environ.setdefault(name, value)
    # nbgrader runs the `alembic` command of its own environment to create the gradebook: put that environment first
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    from traitlets.config.loader import PyFileConfigLoader
    from nbgrader.apps import NbGraderAPI
    config = PyFileConfigLoader(config_file.name, path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    if timeout is not None: config.Execute.timeout = timeout
    return NbGraderAPI(config=config)


def _check(result: dict, what: str):
    if not result.get("success"):
        sys.stderr.write(result.get("log", "") + "\n" + result.get("error", "") + "\n")
        sys.exit(f"nbgrader could not {what}; its log and error are above.")


def assignments_in(course: Path) -> list[str]:
    "Names of the assignments with an instructor's version under `course`/source/."
    return sorted(p.name for p in (course / "source").iterdir() if p.is_dir() and list(p.glob("*.ipynb")))


def release(course: Path = ROOT, names=None) -> list[str]:
    "Write the student version of each assignment in `names` (default: all) into `course`/release/<name>/."
    known = assignments_in(course)
    names = list(names or known)
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"no assignment {', '.join(unknown)} under {course / 'source'}; the assignments are: {', '.join(known)}.")
    api = _api(course)
    for name in names:
        _check(api.generate_assignment(name, force=True, create=True), f"release {name}")
        print(f"released {name} -> {course / 'release' / name}")
    return names


def submissions(course: Path) -> list[tuple[str, str]]:
    "(student, assignment) for every folder `course`/submitted/<student>/<assignment>/."
    submitted = course / "submitted"
    if not submitted.is_dir(): return []
    return sorted((a.parent.name, a.name) for a in submitted.glob("*/*") if a.is_dir())


def autograde(course: Path = ROOT, timeout: int | None = None) -> Path:
    """Autograde every submission, write feedback HTML per student and assignment, export the gradebook as
    `course`/grades.csv and return its path (None when nothing is submitted). An assignment that was never released is released first (nbgrader
    grades against the gradebook's record of the instructor's version)."""
    todo = submissions(course)
    if not todo:   # a fresh clone: say where submissions go, and succeed
        print(f"nothing to grade yet: put each student's notebook in {course / 'submitted'}/<student>/<assignment>/"
              "<assignment>.ipynb (nbgrader's layout; `nbgrader zip_collect` builds it from downloaded files).")
        return None
    known = assignments_in(course)
    unknown = sorted({a for _, a in todo} - set(known))
    if unknown:
        sys.exit(f"submissions for {', '.join(unknown)}, which has no instructor's version under {course / 'source'}; "
                 f"rename the folder to one of: {', '.join(known)}.")
    api = _api(course, timeout)
    from nbgrader.api import Gradebook
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        recorded = {a.name for a in gradebook.assignments}
    for name in sorted({a for _, a in todo} - recorded):
        _check(api.generate_assignment(name, force=True, create=True), f"record {name} in the gradebook")
    for student, name in todo:
        _check(api.autograde(name, student, force=True, create=True), f"autograde {student}/{name}")
        _check(api.generate_feedback(name, student, force=True), f"write feedback for {student}/{name}")
        print(f"graded {student}/{name}; feedback in {course / 'feedback' / student / name}")
    from nbgrader.plugins.export import CsvExportPlugin
    out = course / "grades.csv"
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        CsvExportPlugin(to=str(out)).export(gradebook)
    print(f"gradebook exported to {out}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["release", "autograde"])
    parser.add_argument("assignments", nargs="*", help="release only these (default: all)")
    parser.add_argument("--course", type=Path, default=ROOT, help="the nbgrader course folder (default: assignments/)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds a cell may run (default: the config's)")
    args = parser.parse_intermixed_args(argv)
    course = args.course.resolve()
    if args.command == "release": release(course, args.assignments)
    else:
        if args.assignments: parser.error("autograde grades every submission; it takes no assignment names")
        autograde(course, args.timeout)


if __name__ == "__main__":
    main()
