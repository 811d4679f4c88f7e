#!/usr/bin/env bash
# The whole suite, in order of cost. Used by `make test` and therefore by CI (.ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg" PYTHONPATH="$PWD/tests/lab"
results=()
failed=0
step() {
  local name=$1; shift
  local t0=$SECONDS
  echo
  echo "==== [$name] $*"
  if "$@"; then results+=("PASS $name ($((SECONDS - t0)) s)"); else results+=("FAIL $name ($((SECONDS - t0)) s)"); failed=1; fi
}
step ruff ruff check .
step ansible-lint ansible-lint --profile production
step sanity scripts/sanity.sh
step unit python -m pytest tests/unit tests/repo -q
step runtimes python -m asgardlab.runtimes install
step lab+integration python -m pytest tests/lab_tests tests/integration -q
if [ -d molecule ] && ls molecule/*/molecule.yml >/dev/null 2>&1; then
  step molecule molecule test --all --exclude kind
fi
echo
echo "==== summary"
printf '  %s\n' "${results[@]}"
exit $failed
