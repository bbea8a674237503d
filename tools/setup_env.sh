#!/usr/bin/env bash
# Build (or reuse) the course's isolated environment in .venv.
# Skips all work when the files that define the environment have not changed since the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
CONSTRAINTS=requirements/constraints.txt
stamp="$VENV/.tlcourse-env"
LAB_SETTINGS=tools/lab-settings/overrides.json
want=$(cat settings.ini setup.py "$CONSTRAINTS" tools/setup_env.sh tools/torchvision_cpu_fix.py "$LAB_SETTINGS" | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] < (3, 10):
    sys.exit(f"tlcourse needs Python 3.10 or newer; found {sys.version.split()[0]}. Set PYTHON=/path/to/python3.11 and retry.")
PY

start=$(date +%s)
echo "== tlcourse: building $VENV (the first build takes 1-6 minutes, by machine) =="
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() {
  # some machines' pip configs name local index folders that may not exist; their warnings are noise here
  # --no-compile: byte-compiling all ~17,000 installed .py files (303 MB) is a large part of a build on slow machines;
  # Python compiles (and caches) only the modules that are actually imported, the first time they are.
  "$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-compile -c "$CONSTRAINTS" "$@" 2>&1 \
    | sed '/is ignored: it is neither a file nor a directory/d'
}
# The installer: uv (pinned, fetched from the package registry into $VENV/.uv, outside the environment itself) when it
# can be had, else pip. Both install exactly the versions in $CONSTRAINTS. uv downloads and unpacks in parallel: on
# a 2-core test machine it built this environment in ~1 minute where pip took ~15. uv does not read pip's config,
# so pip's configured find-links (where a local CPU torch wheel may live) are passed on to it.
UV_VERSION=0.13.9
uv_install() {
  local links=() link
  for link in ${PIP_FIND_LINKS:-} $("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true); do
    links+=(--find-links "$link")
  done
  "$VENV/.uv/bin/uv" pip install -q --python "$VENV/bin/python" "${links[@]}" -c "$CONSTRAINTS" "$@"
}
have_uv=0
if [ -x "$VENV/.uv/bin/uv" ] || "$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-compile \
     --target "$VENV/.uv" "uv==$UV_VERSION" >/dev/null 2>&1; then
  have_uv=1
else
  echo "uv $UV_VERSION could not be installed; installing with pip" >&2
fi
install() {
  if [ "$have_uv" = 1 ]; then
    uv_install "$@" && return 0
    echo "uv could not install $*; trying pip" >&2
  fi
  pip_install "$@"
}
# torch first, alone, pinned: anything unpinned would pull the multi-GB CUDA build.
install torch==2.13.0
install -e ".[dev]"
"$VENV/bin/python" tools/torchvision_cpu_fix.py
# JupyterLab's defaults for this environment (a course that runs offline does not ask to fetch Jupyter news or check
# for updates): Lab reads <prefix>/share/jupyter/lab/settings/overrides.json; a user's own settings still win.
mkdir -p "$VENV/share/jupyter/lab/settings"
cp "$LAB_SETTINGS" "$VENV/share/jupyter/lab/settings/overrides.json"
"$VENV/bin/python" tools/selfcheck.py
echo "$want" > "$stamp"
echo "== tlcourse: environment ready in $(( $(date +%s) - start )) s =="
