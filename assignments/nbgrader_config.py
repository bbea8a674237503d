"""nbgrader's configuration for the tlcourse assignments (nbgrader 0.9.6).

Run nbgrader from this folder (the Makefile's `make release` and `make autograde` do). Everything here is headless
and offline: the course root is this folder, the gradebook is a sqlite file beside it, and no exchange folder is used
(instructors copy submissions into submitted/<student>/<assignment>/ themselves, or use `nbgrader zip_collect`).
"""
import os
from pathlib import Path

here = Path(__file__).resolve().parent
c = get_config()  # noqa: F821  (nbgrader provides get_config when it loads this file)

c.CourseDirectory.course_id = "tlcourse"
c.CourseDirectory.root = str(here)
# source/<assignment>/ is the instructor's version; release/, submitted/, autograded/ and feedback/ are generated
c.CourseDirectory.db_url = "sqlite:///" + str(here / "gradebook.db")
# the exchange is only used by nbgrader's release/collect commands for a shared JupyterHub; keep it in the course
c.Exchange.root = str(here / "exchange")

# Training cells run a few hundred small steps on CPU: allow two minutes a cell, then interrupt the kernel and record
# a CellTimeoutError in that cell (an infinite loop costs the task it sits in, not the whole assignment).
# TLCOURSE_CELL_TIMEOUT overrides it (the grading test uses a few seconds to check the limit quickly).
c.Execute.timeout = int(os.environ.get("TLCOURSE_CELL_TIMEOUT", "120"))
c.Execute.interrupt_on_timeout = True
# Nothing here sets environment variables: JupyterLab loads this file too (for the nbgrader extension), and what it
# set would reach every kernel of the course. Headless grading sets its own in tools/grading.py.

# the student's stub in place of every solution region
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# a graded cell that a student deleted is put back (and runs), so deleting a test cannot skip it
c.OverwriteCells.add_missing_cells = True
