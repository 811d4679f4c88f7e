#!/usr/bin/env bash
# Print the path of a Python >= 3.12 (ansible-core >= 2.20 needs it), or fail naming what was tried.
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
  if "$path" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    echo "$path"; exit 0
  fi
  tried+=("$path ($("$path" -V 2>&1))")
done
echo "error: no Python >= 3.12 with the venv module found. Tried: ${tried[*]}" >&2
echo "Install one (e.g. 'apt-get install python3.12-venv' or pyenv 3.12), or set PYTHON=/path/to/python3.12." >&2
exit 1
