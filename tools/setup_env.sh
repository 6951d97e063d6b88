#!/usr/bin/env bash
# Build (or check) the find_plugin virtual environment from requirements/lock.txt.
#
#   bash tools/setup_env.sh            # build or verify; prints the venv path on the last line
#   bash tools/setup_env.sh --detectron2-only   # the same without mmcv's ~13-minute compile
#                                      (enough for the detectron2 path; a later full run adds it)
#   FIND_PLUGIN_VENV=/some/dir bash tools/setup_env.sh   # use a venv at an explicit place
#
# The environment lives outside the clone (default: ${XDG_CACHE_HOME:-~/.cache}/find_plugin/venv-<hash>,
# the hash taken over the lock file and this script's STAGES_VERSION), so fresh clones and CI reuse it.
# Each stage leaves a marker in the venv; a second run with an unchanged lock only re-checks the
# stack and re-points the editable install at this clone. Stages, in order:
#   1 build tools (pip, setuptools<70, wheel, ninja: mmcv's setup.py needs them present)
#   2 torch + torchvision + numpy          3 detectron2 (sal-detectron2 wheel) + fvcore/iopath/opencv
#   4 mmcv 2.1.0 compiled with its ops     5 everything else in the lock
#   6 find_plugin itself (editable)        7 smoke check of the compiled pieces
set -euo pipefail

D2_ONLY=0
case "${1:-}" in
    "") ;;
    --detectron2-only) D2_ONLY=1 ;;
    *) printf '[setup_env] ERROR: unknown argument %s (expected nothing or --detectron2-only)\n' "$1" >&2
       exit 2 ;;
esac

STAGES_VERSION=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/requirements/lock.txt"

say() { printf '[setup_env] %s\n' "$*" >&2; }
die() {
    printf '[setup_env] ERROR: %s\n' "$*" >&2
    exit 1
}

[ -f "$LOCK" ] || die "lock file not found: $LOCK (run this script from a find_plugin clone)"

# --- 0. CPython 3.10: PATH first, then pyenv -------------------------------------------------
find_python310() {
    local cand root
    for cand in python3.10 python3 python; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            command -v "$cand"
            return 0
        fi
    done
    # pyenv: its own root when the command is there, else the usual places (CI may lack the shims).
    local roots=("${PYENV_ROOT:-$HOME/.pyenv}")
    if command -v pyenv >/dev/null 2>&1; then
        roots=("$(pyenv root)" "${roots[@]}")
    fi
    for root in "${roots[@]}"; do
        for cand in "$root"/versions/3.10*/bin/python3.10; do
            if [ -x "$cand" ] && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then
                echo "$cand"
                return 0
            fi
        done
    done
    return 1
}

lock_hash() {
    { cat "$LOCK"; echo "stages=$STAGES_VERSION"; } | sha256sum | cut -c1-12
}

HASH="$(lock_hash)"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/find_plugin"
VENV="${FIND_PLUGIN_VENV:-$CACHE_ROOT/venv-$HASH}"
LOGDIR="$VENV/.find_setup"
mkdir -p "$(dirname "$VENV")"

# One builder at a time per venv; a second caller waits instead of racing the first.
exec 9>"$VENV.lock"
if ! flock -n 9; then
    say "another setup_env.sh is building $VENV; waiting for it"
    flock 9
fi

if [ ! -x "$VENV/bin/python" ]; then
    if [ -n "${FIND_PLUGIN_PYTHON:-}" ]; then
        PY="$FIND_PLUGIN_PYTHON"
        "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null ||
            die "FIND_PLUGIN_PYTHON=$PY is not a working CPython 3.10"
    else
        PY="$(find_python310)" || die "CPython 3.10 not found: looked for python3.10/python3/python \
on PATH and under \$(pyenv root)/versions/3.10*. Install it (e.g. 'pyenv install 3.10.13') or set \
FIND_PLUGIN_PYTHON=/path/to/python3.10."
    fi
    say "creating virtual environment $VENV with $PY"
    "$PY" -m venv "$VENV" || die "could not create a venv with $PY (is the venv module installed?)"
fi
mkdir -p "$LOGDIR"
VPY="$VENV/bin/python"
"$VPY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' ||
    die "$VENV/bin/python is not CPython 3.10; delete $VENV and rerun"

# pip with the lock as constraints: every name installed is held to its pinned version.
pipi() { "$VPY" -m pip install --disable-pip-version-check --no-input -c "$LOCK" "$@"; }

# run_stage NAME DESCRIPTION COMMAND... : runs once, logs to $LOGDIR/NAME.log, names the failure.
run_stage() {
    local name="$1" desc="$2"
    shift 2
    if [ -f "$LOGDIR/$name.done" ]; then
        say "stage $name ($desc): already done"
        return 0
    fi
    say "stage $name: $desc (log: $LOGDIR/$name.log)"
    local t0=$SECONDS
    if ! "$@" >"$LOGDIR/$name.log" 2>&1; then
        tail -n 25 "$LOGDIR/$name.log" >&2 || true
        local hint=""
        if grep -qiE 'No matching distribution|Could not find a version|ERROR: No matching' \
            "$LOGDIR/$name.log"; then
            hint=" The package registry did not offer a pinned package (see the log above)."
        fi
        die "stage $name ($desc) failed after $((SECONDS - t0)) s.$hint Full log: $LOGDIR/$name.log"
    fi
    touch "$LOGDIR/$name.done"
    say "stage $name done in $((SECONDS - t0)) s"
}

build_mmcv() {
    # mmcv 2.1.0 ships only as an sdist; mmdet.models needs its compiled ops (mmcv.ops).
    # pip caches the built wheel, so later environments on the same machine skip the compile.
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
        pipi --no-build-isolation mmcv==2.1.0
}

rest_of_lock() {
    # Everything in the lock that earlier stages did not install (names only; versions from -c).
    local names
    names=$(grep -vE '^\s*(#|$)' "$LOCK" | sed -E 's/[=<>!~ ].*$//' |
        grep -vxE 'pip|setuptools|wheel|ninja|torch|torchvision|numpy|mmcv')
    # shellcheck disable=SC2086
    pipi $names
}

run_stage 1-tools "build tools" pipi pip setuptools wheel ninja
run_stage 2-torch "torch, torchvision, numpy (~2.5 GB, CUDA wheels run on CPU)" \
    pipi torch torchvision numpy
run_stage 3-detectron2 "detectron2 wheel, fvcore, iopath, opencv" \
    pipi sal-detectron2 fvcore iopath opencv-python opencv-python-headless
if [ "$D2_ONLY" = 1 ]; then
    say "stage 4-mmcv: skipped (--detectron2-only; the MMDetection side and the tests add it)"
else
    run_stage 4-mmcv "mmcv 2.1.0 with compiled ops (first build ~13 min on 2 cores)" build_mmcv
fi
run_stage 5-rest "mmengine, mmdet, transformers, evaluation and test tools" rest_of_lock

# --- 6. editable install of this clone (re-done whenever the clone moved) --------------------
# Run from / with no PYTHONPATH, so the answer comes from the venv's own install, not from the cwd.
current=$(cd / && env -u PYTHONPATH "$VPY" -c 'import find_plugin, os; print(os.path.dirname(os.path.dirname(os.path.abspath(find_plugin.__file__))))' 2>/dev/null || true)
if [ "$current" != "$ROOT" ]; then
    say "stage 6-find_plugin: editable install of $ROOT"
    "$VPY" -m pip install --disable-pip-version-check --no-input --no-deps --no-build-isolation \
        -e "$ROOT" >"$LOGDIR/6-find_plugin.log" 2>&1 ||
        { tail -n 25 "$LOGDIR/6-find_plugin.log" >&2; die "editable install of $ROOT failed"; }
else
    say "stage 6-find_plugin: editable install already points at $ROOT"
fi

# --- 7. smoke check: the compiled pieces load together ---------------------------------------
if ! (cd / && env -u PYTHONPATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 FIND_D2_ONLY=$D2_ONLY "$VPY" - >"$LOGDIR/7-check.log" 2>&1) <<'PY'; then
import os
import detectron2._C  # noqa: F401  compiled detectron2 ops
if os.environ["FIND_D2_ONLY"] != "1":
    import mmcv.ops  # noqa: F401  compiled mmcv ops
    import mmdet.models  # noqa: F401
import torch, transformers, find_plugin  # noqa: E401,F401
print("torch", torch.__version__, "transformers", transformers.__version__)
PY
    cat "$LOGDIR/7-check.log" >&2
    die "the environment at $VENV does not import its compiled pieces (log above). Delete it and rerun."
fi
say "environment ready: $(tail -n 1 "$LOGDIR/7-check.log")"
echo "$VENV"
