#!/usr/bin/env bash
# The README's test command: build/check the environment, lint, then run the test suite (CPU).
#   bash tools/run_tests.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$SECONDS

VENV="$(bash tools/setup_env.sh | tail -n 1)"
PY="$VENV/bin/python"
echo "[run_tests] environment: $VENV ($((SECONDS - t0)) s)"

# Tests never reach a model hub: everything loads from local paths or registry packages.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONDONTWRITEBYTECODE=1

LINT_PATHS=(find_plugin tools tests setup.py)
[ -d projects ] && LINT_PATHS+=(projects)
echo "[run_tests] lint: black, isort, flake8 on ${LINT_PATHS[*]}"
"$PY" -m black --check -l 100 "${LINT_PATHS[@]}" ||
    { echo "[run_tests] black would reformat the files above (run: $PY -m black -l 100 ${LINT_PATHS[*]})"; exit 1; }
"$PY" -m isort --check-only --quiet "${LINT_PATHS[@]}" ||
    { echo "[run_tests] isort would reorder imports (run: $PY -m isort ${LINT_PATHS[*]})"; exit 1; }
"$PY" -m flake8 "${LINT_PATHS[@]}" || { echo "[run_tests] flake8 found problems (above)"; exit 1; }

echo "[run_tests] pytest ($((SECONDS - t0)) s since start)"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[run_tests] pytest collected no tests: that is a failure here"
    rc=1
fi
echo "[run_tests] finished with exit code $rc in $((SECONDS - t0)) s"
exit "$rc"
