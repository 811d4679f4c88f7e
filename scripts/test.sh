#!/usr/bin/env bash
# The whole suite, in order of cost. Used by `make test` and therefore by CI (.ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg" PYTHONPATH="$PWD/tests/lab"
results=()
failures=()
failed=0
logs=.build/test-logs
mkdir -p "$logs"
# Each step's output goes to the terminal and to $logs/<step>.log; the summary at the end repeats the failing
# test ids (pytest's FAILED/ERROR lines, molecule's failed scenarios), since CI often shows only the tail.
step() {
  local name=$1; shift
  local t0=$SECONDS log="$logs/${name//[^a-z]/_}.log"
  echo
  echo "==== [$name] $*"
  if "$@" 2>&1 | tee "$log"; then
    results+=("PASS $name ($((SECONDS - t0)) s)")
  else
    results+=("FAIL $name ($((SECONDS - t0)) s)  log: $log")
    failed=1
    mapfile -t -O "${#failures[@]}" failures < <(sed -E 's/\x1b\[[0-9;]*m//g' "$log" \
      | grep -E '^(FAILED|ERROR) |Scenario .* failed|CRITICAL|^fatal:' | head -20)
  fi
}
step ruff ruff check .
step ansible-lint ansible-lint --profile production
step sanity scripts/sanity.sh
step galaxy-importer scripts/galaxy-importer.sh
step unit python -m pytest tests/unit tests/repo -q -rfE
step runtimes python -m asgardlab.runtimes install
step lab+integration python -m pytest tests/lab_tests tests/integration -q -rfE
if [ -d molecule ] && ls molecule/*/molecule.yml >/dev/null 2>&1; then
  step molecule molecule test --all --exclude kind
fi
echo
echo "==== summary"
printf '  %s\n' "${results[@]}"
if [ ${#failures[@]} -gt 0 ]; then
  echo "  what failed:"
  printf '    %s\n' "${failures[@]}"
fi
exit $failed
