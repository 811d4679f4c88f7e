#!/usr/bin/env bash
# Print the path of a Python >= 3.12 (ansible-core >= 2.20 needs it), or fail naming what was tried.
# The path printed is the real interpreter a virtualenv would be made from, never a virtualenv's own: make puts
# .venv/bin first on PATH, and `python3.12` found there would make setup.sh's stamp (which names the interpreter)
# differ from the one `make setup` wrote before .venv existed, so the next make target reinstalled everything, and a
# .venv to be recreated would have been made from its own deleted interpreter.
set -u
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=(python3.12)
for p in /root/.pyenv/versions/3.12.* "${HOME:-/nonexistent}"/.pyenv/versions/3.12.*; do
  [ -x "$p/bin/python3" ] && candidates+=("$p/bin/python3")
done
candidates+=(python3.13)
for p in /root/.pyenv/versions/3.13.* "${HOME:-/nonexistent}"/.pyenv/versions/3.13.*; do
  [ -x "$p/bin/python3" ] && candidates+=("$p/bin/python3")
done
candidates+=(python3)
tried=()
for c in "${candidates[@]}"; do
  path=$(command -v "$c" 2>/dev/null) || { tried+=("$c (not found)"); continue; }
  # a virtualenv's interpreter (or a pyenv shim) stands for the real one: its base executable, symlinks resolved
  real=$("$path" - 2>/dev/null <<'PY'
import os, sys, venv  # noqa: F401 - setup.sh makes the virtualenvs with venv
if sys.version_info < (3, 12):
    sys.exit(1)
print(os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable))
PY
  ) && [ -x "$real" ] && { echo "$real"; exit 0; }
  tried+=("$path ($("$path" -V 2>&1))")
done
echo "error: no Python >= 3.12 with the venv module found. Tried: ${tried[*]}" >&2
echo "Install one (e.g. 'apt-get install python3.12-venv' or pyenv 3.12), or set PYTHON=/path/to/python3.12." >&2
exit 1
