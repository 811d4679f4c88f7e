#!/usr/bin/env bash
# The whole suite. Used by `make test` and therefore by CI (.ci/run).
#
# The lab steps (lab+integration under pytest-xdist, then molecule) mostly wait on rollouts and probes, so they run
# in the background against one lab while the CPU-bound checks (ansible-lint, sanity, galaxy-importer, unit) run in
# the foreground. Each step's output goes to .build/test-logs/<step>.log; a foreground step is also shown live, a
# background step's log is shown whole when it ends (so the terminal reads step by step). The summary gives each
# step's time and the total wall time, and repeats the failing test ids (pytest's FAILED/ERROR lines, molecule's
# failed scenarios), since CI often shows only the tail.
#
# Knobs: LAB_WORKERS (pytest-xdist workers for lab+integration, default 3: on 2 cores every process that shares a
# core costs more CPU, and 4 workers cost ~6% more time; docs/HACKING.md), SERIAL=1 (one step after another, as
# before: for debugging a step that fails only under load).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg" PYTHONPATH="$PWD/tests/lab"
LAB_WORKERS=${LAB_WORKERS:-3}
SERIAL=${SERIAL:-0}
results=()
failures=()
failed=0
logs=.build/test-logs
mkdir -p "$logs"
t_start=$SECONDS

log_of() { echo "$logs/${1//[^a-z]/_}.log"; }

# record NAME RC SECONDS: the summary line, and the failing ids from the step's log
record() {
  local name=$1 rc=$2 secs=$3 log
  log=$(log_of "$name")
  if [ "$rc" -eq 0 ]; then
    results+=("PASS $name ($secs s)")
  else
    results+=("FAIL $name ($secs s)  log: $log")
    failed=1
    mapfile -t -O "${#failures[@]}" failures < <(sed -E 's/\x1b\[[0-9;]*m//g' "$log" \
      | grep -E '^(FAILED|ERROR) |Scenario .* failed|CRITICAL|^fatal:' | head -20)
  fi
}

# step NAME CMD...: run in the foreground, output live and in the step's log
step() {
  local name=$1; shift
  local t0=$SECONDS rc=0
  echo
  echo "==== [$name] $*"
  "$@" 2>&1 | tee "$(log_of "$name")" || rc=$?
  record "$name" "$rc" $((SECONDS - t0))
}

# bg_step NAME CMD...: start in the background, output only in the step's log; bg_wait NAME shows and records it
declare -A bg_pid bg_cmd
bg_step() {
  local name=$1; shift
  if [ "$SERIAL" = 1 ]; then step "$name" "$@"; return; fi
  local log; log=$(log_of "$name")
  echo
  echo "==== [$name] started in the background: $*  (log: $log)"
  bg_cmd[$name]="$*"
  ( t0=$SECONDS; rc=0; "$@" > "$log" 2>&1 < /dev/null || rc=$?; echo "$rc $((SECONDS - t0))" > "$log.status" ) &
  bg_pid[$name]=$!
}
bg_wait() {
  local name=$1 log rc secs
  [ -n "${bg_pid[$name]:-}" ] || return 0
  log=$(log_of "$name")
  wait "${bg_pid[$name]}"
  read -r rc secs < "$log.status" || { rc=1; secs=0; }
  rm -f "$log.status"
  echo
  echo "==== [$name] ${bg_cmd[$name]}  (ran in the background, ${secs} s; log: $log)"
  cat "$log"
  record "$name" "$rc" "$secs"
}

step ruff ruff check .
step runtimes python -m asgardlab.runtimes install
# The lab steps first, in the background. Molecule's dashboard forward takes a free port (5000 may be in use).
bg_step lab+integration python -m pytest tests/lab_tests tests/integration -q -rfE -n "$LAB_WORKERS" --dist loadgroup
if [ -d molecule ] && ls molecule/*/molecule.yml >/dev/null 2>&1; then
  MOLECULE_FORWARD_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export MOLECULE_FORWARD_PORT
  bg_step molecule molecule test --all --exclude kind
fi
step ansible-lint ansible-lint --profile production
step sanity scripts/sanity.sh
step galaxy-importer scripts/galaxy-importer.sh
step unit python -m pytest tests/unit tests/repo -q -rfE
bg_wait lab+integration
bg_wait molecule
echo
echo "==== summary"
printf '  %s\n' "${results[@]}"
echo "  total wall time: $((SECONDS - t_start)) s"
if [ ${#failures[@]} -gt 0 ]; then
  echo "  what failed:"
  printf '    %s\n' "${failures[@]}"
fi
exit $failed
