#!/usr/bin/env bash
# trendflow on Linux/macOS -- the POSIX twin of run_pipeline.bat.
#
#   ./run_pipeline.sh                      # the whole pipeline on the demo universe (= trendflow run)
#   ./run_pipeline.sh run --data DIR ...   # any trendflow command with its arguments
#   ./run_pipeline.sh trade --out DIR      # one stage
#   ./run_pipeline.sh --stages trading,reporting   # flags alone: `run` with those flags
#   ./run_pipeline.sh test [pytest args]   # the test suite
#
# First use creates .venv beside this file and installs the pinned set (constraints.txt).
# The exit code is the command's exit code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRENDFLOW_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-WARNING}"

# (Re)install when the venv is missing or the pinned set changed since it was installed.
STAMP="$VENV/.trendflow-pins"
PINS="$(cat "$ROOT/constraints.txt" "$ROOT/pyproject.toml" | cksum)"
if [ ! -x "$PY" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$PINS" ]; then
    echo "setting up $VENV (one time) ..." >&2
    PYTHON="${PYTHON:-python3}"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "error: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 2; }
    [ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test,dask,ibkr,data]"
    echo "$PINS" > "$STAMP"
fi

cd "$ROOT"
command="${1:-run}"
case "$command" in
    -*) command=run ;;          # flags alone mean `run` with those flags
    *) [ $# -gt 0 ] && shift ;;
esac
if [ "$command" = "test" ]; then
    exec "$PY" -m pytest "$@"
fi
mkdir -p "$ROOT/v4_trace_outputs/logs"
log="$ROOT/v4_trace_outputs/logs/run_pipeline_$(date +%Y%m%d_%H%M%S).log"
set +e
"$VENV/bin/trendflow" "$command" "$@" 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
echo "log: $log" >&2
exit "$code"
