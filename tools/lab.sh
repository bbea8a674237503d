#!/usr/bin/env bash
# Start JupyterLab on the course start page; no browser is needed on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8888}
TOKEN=${JUPYTER_TOKEN:-$("$VENV/bin/python" -c "import secrets; print(secrets.token_hex(16))")}
export JUPYTER_RUNTIME_DIR=${JUPYTER_RUNTIME_DIR:-$PWD/.cache/jupyter-runtime}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# nbgrader's Lab extension (Formgrader, Validate) finds the course's config in assignments/ through Jupyter's config path
export JUPYTER_CONFIG_PATH="$PWD/assignments${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
# Notebooks opened in Lab draw their figures inline, whatever MPLBACKEND the calling shell has (Agg in a test run).
export MPLBACKEND=module://matplotlib_inline.backend_inline
mkdir -p "$JUPYTER_RUNTIME_DIR"
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)   # containers and CI run as root
echo "== tlcourse: JupyterLab starting on the course start page =="
echo "   open  http://127.0.0.1:${PORT}/lab/tree/nbs/index.ipynb?token=${TOKEN}"
echo "   (Ctrl-C twice to stop; if port ${PORT} is busy, run: make lab PORT=8899)"
exec "$VENV/bin/jupyter" lab --no-browser --ip=127.0.0.1 --port="$PORT" --ServerApp.port_retries=0 \
  --IdentityProvider.token="$TOKEN" --ServerApp.default_url=/lab/tree/nbs/index.ipynb \
  --ServerApp.root_dir="$PWD" "${extra[@]}"
