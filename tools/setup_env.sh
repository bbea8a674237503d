#!/usr/bin/env bash
# Build (or reuse) the course's isolated environment in .venv.
# Skips all work when the files that define the environment have not changed since the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
CONSTRAINTS=requirements/constraints.txt
stamp="$VENV/.tlcourse-env"
want=$(cat settings.ini setup.py "$CONSTRAINTS" tools/setup_env.sh tools/torchvision_cpu_fix.py | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] < (3, 10):
    sys.exit(f"tlcourse needs Python 3.10 or newer; found {sys.version.split()[0]}. Set PYTHON=/path/to/python3.11 and retry.")
PY

start=$(date +%s)
echo "== tlcourse: building $VENV (the first build takes 2-15 minutes, by machine) =="
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() {
  # some machines' pip configs name local index folders that may not exist; their warnings are noise here
  # --no-compile: byte-compiling all ~17,000 installed .py files (303 MB) is a large part of a build on slow machines;
  # Python compiles (and caches) only the modules that are actually imported, the first time they are.
  "$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-compile -c "$CONSTRAINTS" "$@" 2>&1 \
    | sed '/is ignored: it is neither a file nor a directory/d'
}
# torch first, alone, pinned: anything unpinned would pull the multi-GB CUDA build.
pip_install torch==2.13.0
pip_install -e ".[dev]"
"$VENV/bin/python" tools/torchvision_cpu_fix.py
"$VENV/bin/python" tools/selfcheck.py
echo "$want" > "$stamp"
echo "== tlcourse: environment ready in $(( $(date +%s) - start )) s =="
