#!/usr/bin/env bash
# Create .venv (Python >= 3.12) and install the pinned dependencies. Fast when nothing changed:
# a stamp file records the hash of the requirement files and the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-packages.sh   # Debian packages of the local lab (nginx)
py=$(scripts/find-python.sh)
stamp=.venv/.asgard-setup-stamp
want=$( (cat requirements.txt requirements-dev.txt requirements-schemas.txt; "$py" -V; echo "$py") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/ansible-playbook ]; then
  echo "setup: .venv is up to date ($("$py" -V))"
else
  echo "setup: creating .venv with $py ($("$py" -V))"
  if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -V 2>&1)" != "$("$py" -V 2>&1)" ]; then
    echo "setup: .venv uses $(.venv/bin/python -V 2>&1), recreating it"; rm -rf .venv
  fi
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  echo "setup: installing requirements-dev.txt (ansible-core, kubernetes.core via ansible, molecule, MLflow, ...): a few minutes the first time"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' || true
  # kubernetes-validate apart from site-packages (why: requirements-schemas.txt); an older .venv had it inside
  .venv/bin/python -m pip uninstall -y -q kubernetes-validate 2>/dev/null || true
  rm -rf .venv/kubernetes-validate
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target .venv/kubernetes-validate \
    -r requirements-schemas.txt 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import ansible, kubernetes, mlflow, aiohttp' \
    && PYTHONPATH=.venv/kubernetes-validate .venv/bin/python -c 'import kubernetes_validate' \
    || { echo "setup: the install did not complete; see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
# .venv/ee: the Python that runs the collection's modules in the tests, with requirements.txt only (what an execution
# environment installs), at .venv's versions. Debian's /usr/bin/python3 when it is >= 3.10 (requires_ansible admits
# ansible-core 2.16, whose controllers start at 3.10): it is built with PGO and LTO, and without MLflow's
# dependencies (google-auth) nothing but the kubernetes client loads; a module process costs ~21% less CPU than on
# .venv's Python. Otherwise the controller's Python. The tests point ANSIBLE_PYTHON_INTERPRETER at it
# (tests/helpers/ansible_runner.py); inventory/localhost.yml honours that variable.
ee_py=$py
if /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  ee_py=/usr/bin/python3
fi
ee_stamp=.venv/ee/.asgard-setup-stamp
# .venv's own stamp already hashes requirements*.txt: .venv/ee follows it (no pip freeze on every make target)
ee_want=$( (echo "$want"; "$ee_py" -V; echo "$ee_py") | sha256sum | cut -d' ' -f1)
if [ -f "$ee_stamp" ] && [ "$(cat "$ee_stamp")" = "$ee_want" ] && [ -x .venv/ee/bin/python ]; then
  echo "setup: .venv/ee is up to date ($("$ee_py" -V))"
else
  echo "setup: creating .venv/ee (the modules' Python, requirements.txt only) with $ee_py ($("$ee_py" -V))"
  rm -rf .venv/ee
  "$ee_py" -m venv .venv/ee
  # the same versions as .venv (its pins, as constraints)
  .venv/bin/python -m pip freeze 2>/dev/null | grep '==' > .venv/ee-constraints.txt
  .venv/ee/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -c .venv/ee-constraints.txt \
    2>&1 | grep -v '^WARNING: Location' || true
  .venv/ee/bin/python -c 'import kubernetes, websocket, jmespath, yaml, cryptography' \
    || { echo "setup: .venv/ee did not install; see the pip output above" >&2; exit 1; }
  echo "$ee_want" > "$ee_stamp"
fi
# The collection, as ansible sees it: .collections/ansible_collections/asgard/mlflow -> repo root.
mkdir -p .collections/ansible_collections/asgard
ln -sfn ../../.. .collections/ansible_collections/asgard/mlflow
# awx.awx (for examples/awx, the AWX objects as code) is no longer in the ansible package.
scripts/awx-collection.sh
echo "setup: done. ansible-core $(.venv/bin/python -c 'import ansible.release as r; print(r.__version__)'), kubernetes.core $(.venv/bin/python - <<'PY'
import json, pathlib, ansible_collections.kubernetes.core as k
print(json.loads((pathlib.Path(k.__path__[0]) / "MANIFEST.json").read_text())["collection_info"]["version"])
PY
)"
