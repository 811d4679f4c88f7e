#!/usr/bin/env bash
# `make test-compat`: run the unit tests against other ansible-core releases than the pinned one, in
# throw-away virtualenvs, so that meta/runtime.yml's requires_ansible is proven, not claimed.
#
#   scripts/test-compat.sh                 the oldest ansible-core that meta/runtime.yml admits
#                                          (latest patch of that minor, e.g. >=2.16.0 -> 2.16.x)
#   scripts/test-compat.sh 2.16 2.18.3     these releases (X.Y means the latest X.Y.* patch)
#
# Each release gets .cache/compat/venv-<ver>/ (.cache is ignored by git, the galaxy build and ansible-lint),
# with ansible-core <ver> + every other pin of requirements-dev.txt (ansible-lint and molecule admit
# ansible-core >= 2.16.19); kubernetes.core comes from the same `ansible` wheel as in .venv, installed
# with --no-deps (that wheel itself requires the newest ansible-core). A stamp makes a rerun fast when nothing changed.
# Env: COMPAT_PYTHON (interpreter; default pyenv 3.12, the newest ansible-core 2.16 supports on the
#      controller), PYTEST_ARGS (default "-q"), COMPAT_TESTS (default tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

min=$(sed -nE "s/^requires_ansible:[[:space:]]*['\"]?>=[[:space:]]*([0-9]+\.[0-9]+(\.[0-9]+)?).*/\1/p" meta/runtime.yml)
[ -n "$min" ] || { echo "test-compat: cannot read requires_ansible '>=X.Y.Z' from meta/runtime.yml" >&2; exit 2; }
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=("$(echo "$min" | cut -d. -f1,2)")

pick_python() {
  if [ -n "${COMPAT_PYTHON:-}" ]; then echo "$COMPAT_PYTHON"; return; fi
  for p in /root/.pyenv/versions/3.12.* "${HOME:-/nonexistent}"/.pyenv/versions/3.12.*; do
    [ -x "$p/bin/python3" ] && { echo "$p/bin/python3"; return; }
  done
  scripts/find-python.sh
}
py=$(pick_python)
ansible_pin=$(grep -E '^ansible==' requirements-dev.txt | head -1)
[ -n "$ansible_pin" ] || { echo "test-compat: no 'ansible==' pin in requirements-dev.txt (kubernetes.core comes from it)" >&2; exit 2; }

results=()
failed=0
for ver in "${versions[@]}"; do
  [[ $ver =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || { echo "test-compat: '$ver' is not an ansible-core version; expected X.Y or X.Y.Z (e.g. 2.16 or 2.16.14)" >&2; exit 2; }
  if [[ $ver =~ ^[0-9]+\.[0-9]+$ ]]; then spec="ansible-core==$ver.*"; else spec="ansible-core==$ver"; fi
  venv=.cache/compat/venv-$ver
  t0=$SECONDS
  filtered=$(grep -vE '^(ansible-core|ansible)([=<>~! ;[]|$)' requirements-dev.txt | grep -vE '^-r ')
  want=$( (echo "$spec"; echo "$ansible_pin"; echo "$filtered"; cat requirements.txt; "$py" -V; echo "$py") | sha256sum | cut -d' ' -f1)
  if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$want" ]; then
    echo "test-compat: $venv is up to date"
  else
    echo "test-compat: creating $venv with $("$py" -V) and $spec (a few minutes the first time)"
    rm -rf "$venv"; mkdir -p .cache/compat
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    printf '%s\n' "$filtered" > "$venv/requirements-compat.txt"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -r "$venv/requirements-compat.txt" "$spec" 2>&1 | grep -v '^WARNING: Location' || true
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$ansible_pin" 2>&1 | grep -v '^WARNING: Location' || true
    "$venv/bin/python" -c 'import ansible, pytest, ansible_collections.kubernetes.core' \
      || { echo "test-compat: the install into $venv did not complete; see the pip output above" >&2; exit 1; }
    echo "$want" > "$venv/.stamp"
  fi
  core=$("$venv/bin/python" -c 'import ansible.release as r; print(r.__version__)')
  echo "==== [compat ansible-core $core, $("$venv/bin/python" -V)] pytest ${COMPAT_TESTS:-tests/unit}"
  # shellcheck disable=SC2086
  if PATH="$root/$venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" PYTHONPATH="$root/tests/lab" \
     ASGARD_COMPAT_VENV="$root/$venv" "$venv/bin/python" -m pytest ${COMPAT_TESTS:-tests/unit} -p no:cacheprovider ${PYTEST_ARGS:--q}; then
    results+=("PASS ansible-core $core ($((SECONDS - t0)) s)")
  else
    results+=("FAIL ansible-core $core ($((SECONDS - t0)) s)"); failed=1
  fi
done
echo "==== test-compat summary (requires_ansible >=$min)"
printf '  %s\n' "${results[@]}"
exit $failed
