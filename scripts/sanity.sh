#!/usr/bin/env bash
# ansible-test sanity on the collection exactly as it ships: build the tarball, install it into
# .build/ansible_collections, run the sanity tests there (ansible-test needs that directory layout).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
rm -rf .build/sanity && mkdir -p .build/sanity
ansible-galaxy collection build --force --output-path .build/sanity . >/dev/null
tarball=$(ls .build/sanity/asgard-mlflow-*.tar.gz)
ansible-galaxy collection install --force --no-deps -p .build/sanity "$tarball" >/dev/null
cd .build/sanity/ansible_collections/asgard/mlflow
# tests/unit and tests/sanity ship with the collection; git is not needed by ansible-test here.
pyver=$("$root/.venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
exec ansible-test sanity --venv --requirements --python "$pyver" --color no "$@"
