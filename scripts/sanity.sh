#!/usr/bin/env bash
# ansible-test sanity on the collection exactly as it ships: build the tarball, install it into
# .build/sanity/ansible_collections (ansible-test needs that layout, and a git tree to list files),
# and run the sanity tests from .venv-sanity, which holds ansible-core plus ansible-test's own pinned
# sanity requirements (ansible-test --venv would bootstrap pip from a server that is not reachable here).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=$root/.venv/bin/python
core=$("$py" -c 'import ansible.release as r; print(r.__version__)')
reqdir=$("$py" -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_data", "requirements"))')
sv=$root/.venv-sanity
want=$( (echo "$core"; cat "$reqdir"/sanity.*.txt) | sha256sum | cut -d' ' -f1)
if [ ! -x "$sv/bin/ansible-test" ] || [ "$(cat "$sv/.stamp" 2>/dev/null)" != "$want" ]; then
  echo "sanity: preparing .venv-sanity (ansible-core $core + ansible-test sanity requirements)"
  rm -rf "$sv"
  "$("$root/scripts/find-python.sh")" -m venv "$sv"
  grep -hv '^#' "$reqdir"/sanity.*.txt | sort -u > "$sv/requirements.txt"
  "$sv/bin/pip" install -q --disable-pip-version-check "ansible-core==$core" -r "$sv/requirements.txt" 2>&1 | grep -v '^WARNING: Location' || true
  echo "$want" > "$sv/.stamp"
fi
export PATH="$sv/bin:$PATH"
# ansible-test bootstraps pip in its per-test venvs with a get-pip script it downloads from a host that is
# not reachable here. Put a stand-in where it caches that script: ensurepip, then `pip install` the
# requested pip version from the package index (get-pip's own --no-setuptools/--no-wheel flags dropped).
pipver=$("$sv/bin/python" - <<'PY' 2>/dev/null || echo ""
import inspect, re
from ansible_test._internal import python_requirements as pr
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(pr.get_venv_packages)).group(1))
PY
)
if [ -n "$pipver" ]; then
  cache=$HOME/.ansible/test/cache/get_pip_${pipver//./_}.py
  if [ ! -s "$cache" ] || ! grep -q 'asgard-mlflow stand-in v2' "$cache"; then
    mkdir -p "$(dirname "$cache")"
    cat > "$cache" <<'PY'
# asgard-mlflow stand-in v2 for ansible-test's get-pip bootstrap script (see scripts/sanity.sh).
import subprocess
import sys

# In a subprocess: ensurepip points PIP_CONFIG_FILE at /dev/null in its own process, which would drop
# the machine's pip configuration (index, CA bundle) for the install below.
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
PY
  fi
fi
out=$root/.build/sanity
rm -rf "$out" && mkdir -p "$out"
"$sv/bin/ansible-galaxy" collection build --force --output-path "$out" . >/dev/null
"$sv/bin/ansible-galaxy" collection install --force --no-deps -p "$out" "$out"/asgard-mlflow-*.tar.gz >/dev/null 2>&1
# Dependencies live beside the collection, as ansible-test expects (kubernetes.core from the ansible package).
kcore=$("$py" -c 'import os, ansible_collections.kubernetes.core as k; print(os.path.dirname(k.__file__) if k.__file__ else list(k.__path__)[0])')
mkdir -p "$out/ansible_collections/kubernetes"
cp -a "$kcore" "$out/ansible_collections/kubernetes/core"
cd "$out/ansible_collections/asgard/mlflow"
git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm sanity
pyver=$("$sv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
exec "$sv/bin/ansible-test" sanity --python "$pyver" --color no "$@"
