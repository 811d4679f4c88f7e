"""scripts/find-python.sh names the same real interpreter whether or not make has put .venv/bin first on PATH.

setup.sh makes .venv from it and keeps a stamp that names it. Before 2026-12-05 the first `make setup` (no .venv yet)
found pyenv's python3 and every later make target found `python3.12` in .venv/bin (make exports PATH with it first):
the stamp differed, so `make demo` then `make test` (the README's two commands) reinstalled .venv's requirements and
rebuilt .venv/ee (~21 s), and a .venv to be recreated would have been made from its own deleted interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "find-python.sh"


def _find(path: str, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"} | {"PATH": path, **extra}
    p = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.strip()


def _is_virtualenv(python: str) -> bool:
    out = subprocess.run([python, "-c", "import sys; print(sys.prefix != sys.base_prefix)"], capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    return out == "True"


def test_the_same_real_interpreter_with_and_without_the_venv_on_path():
    venv_bin = Path(sys.executable).parent
    assert _is_virtualenv(sys.executable), "the tests run from .venv (make test)"
    base_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != venv_bin)
    # as make runs it: .venv/bin first, where `python3.12` is the virtualenv's own
    assert (venv_bin / "python3.12").exists() or (venv_bin / "python3").exists()
    found_with_venv = _find(f"{venv_bin}{os.pathsep}{base_path}")
    found_without = _find(base_path)
    assert found_with_venv == found_without
    assert not found_with_venv.startswith(str(venv_bin.parent)), found_with_venv
    assert not _is_virtualenv(found_with_venv), found_with_venv
    assert Path(found_with_venv).resolve() == Path(found_with_venv), "symlinks resolved: one name per interpreter"


def test_python_naming_a_virtualenv_gives_its_base_interpreter():
    found = _find(os.environ["PATH"], PYTHON=sys.executable)
    assert found == os.path.realpath(sys._base_executable), found  # type: ignore[attr-defined]
    assert not _is_virtualenv(found)
