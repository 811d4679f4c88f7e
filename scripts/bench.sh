#!/usr/bin/env bash
# `make bench`: benchmarks on a private lab in .bench/lab (started here, stopped at the end, even on failure).
# Writes .bench/results.json, prints a table and rewrites docs/benchmarks.md (tests/bench/bench.py).
# Repetition counts: BENCH_* variables, see docs/benchmarks.md. Needs root (the lab's pods use network namespaces).
# BENCH_OUT (default .bench) and BENCH_LAB_DIR (default $BENCH_OUT/lab; it is wiped and stopped at the end) move the
# output and the lab, e.g. to run next to other people's labs on a shared machine; BENCH_DOC=none (or a path) keeps
# docs/benchmarks.md as it is.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PATH="$REPO/.venv/bin:$PATH" PYTHONPATH="$REPO/tests/lab" ANSIBLE_CONFIG="$REPO/ansible.cfg"
export ANSIBLE_NOCOLOR=1 ANSIBLE_DEPRECATION_WARNINGS=0
OUT="${BENCH_OUT:-$REPO/.bench}"
LAB_DIR="${BENCH_LAB_DIR:-$OUT/lab}"
export BENCH_OUT="$OUT" BENCH_LAB_DIR="$LAB_DIR"
T0=$SECONDS
lab() { python -m asgardlab --state-dir "$LAB_DIR" "$@"; }

mkdir -p "$OUT"
# a lab left over by an interrupted run: stop it, start from a clean state
if [ -f "$LAB_DIR/lab.pid" ]; then lab down >/dev/null 2>&1 || true; fi
rm -rf "$LAB_DIR" "$OUT/tmp" "$OUT/fleet"
mkdir -p "$OUT/tmp"

stop_lab() {
  echo "[bench] stopping the private lab ($LAB_DIR)"
  lab down || echo "[bench] WARNING: 'lab down' failed; run: PYTHONPATH=tests/lab .venv/bin/python -m asgardlab --state-dir $LAB_DIR down" >&2
}
trap stop_lab EXIT
trap 'exit 130' INT TERM

echo "[bench] starting a private lab in $LAB_DIR"
lab up || { echo "[bench] the lab did not start: read $LAB_DIR/lab.log" >&2; exit 1; }
python tests/bench/bench.py
rc=$?
echo "[bench] make bench took $((SECONDS - T0)) s (rc=$rc)"
exit $rc
