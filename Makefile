# tlcourse: the two commands a user needs are `make lab` (set up + open the course) and `make test`.
VENV   ?= .venv
PORT   ?= 8888
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Python caches compiled modules in .venv's __pycache__ folders. Some machines set
# PYTHONDONTWRITEBYTECODE (this 2-core test machine does), so every process (test workers, kernels, torchrun ranks) compiled torch anew: ~2 s each.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: env lab test test-py test-nbs sync-check browser course course-cold bench checkpoints lock clean release autograde

## env: build .venv on first use (skipped when settings.ini / constraints are unchanged)
env:
	@bash tools/setup_env.sh

## lab: set up, then start JupyterLab on the course start page and print its URL
lab: env
	@PORT=$(PORT) bash tools/lab.sh

## test: set up, get the browser the browser test drives, check notebooks and library are in sync, run every notebook
##   (publishing each into the quick-profile site .cache/site-quick/), then pytest (which checks that site in chromium)
test: env browser sync-check test-nbs test-py

## browser: install Debian's chromium for tests/test_browser.py when it is missing and this machine allows it (root with
##   apt-get, as in CI); otherwise print how to enable the test
browser:
	@bash tools/ensure_browser.sh

sync-check:
	$(PY) tools/check_nbdev_sync.py

# Tests and notebooks run two at a time with one torch thread each: the course's networks are too small for two
# threads to share one job well, so two jobs side by side finish the suite far sooner on two cores.
# tools/test_notebooks.py runs nbdev's own notebook test, longest notebooks first, and prints each result at once.
# --dist worksteal: a worker that runs out of tests takes queued ones from the other, so neither idles at the end.
test-py:
	MPLBACKEND=Agg OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist worksteal tests

# --site: each notebook, once run, is also exported as a page of the quick-profile course site (HTML export only)
QUICK_SITE := .cache/site-quick
test-nbs:
	rm -rf $(QUICK_SITE)
	MPLBACKEND=Agg OMP_NUM_THREADS=1 $(PY) tools/test_notebooks.py --workers 2 --site $(QUICK_SITE)

## course: execute every lecture headless into the offline course site _site/ (open _site/index.html): each lecture's
##   executed notebook and page, the start page, glossary, claims and timings; maths from a local MathJax, no CDN
##   make course COLD=1 measures with an empty feature cache (the budget's measurement); PROFILE=quick runs tiny sizes
COLD    ?=
PROFILE ?= lecture
course: env
	$(PY) tools/build_course.py --profile $(PROFILE) $(if $(filter 1 yes true,$(COLD)),--cold)

## course-cold: the same as make course COLD=1
course-cold:
	$(MAKE) course COLD=1

## bench: the learner's per-step overhead over a hand-written loop
bench: env
	$(PY) scripts/bench_learner.py

## checkpoints: regenerate the pretrained checkpoints shipped under data/
checkpoints: env
	$(PY) scripts/make_checkpoints.py

## release: the student version of every assignment (nbgrader) into assignments/release/: no solutions, no hidden tests
release: env
	$(PY) tools/grading.py release

## autograde: grade every submission in assignments/submitted/<student>/<assignment>/, write feedback HTML per
##   student into assignments/feedback/ and the gradebook as assignments/grades.csv
autograde: env
	$(PY) tools/grading.py autograde

## lock: refresh requirements/constraints.txt from the current .venv
lock:
	$(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' | \
	  cat requirements/lock-header.txt - > requirements/constraints.txt

clean:
	rm -rf _site _docs _proc .cache .pytest_cache
