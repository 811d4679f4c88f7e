"""Which Python runs the collection's modules, from inventory/localhost.yml, the way an operator's shell sets it.

The inventory pins ``ansible_python_interpreter`` (interpreter discovery would pick /usr/bin/python3, which seldom
has the kubernetes client), but it honours ``ANSIBLE_PYTHON_INTERPRETER``: ansible's standard setting, which an
inventory variable would otherwise outrank. The tests rely on it to run the modules on .venv/ee (requirements.txt
only, as in an execution environment). The fact is read from a real module process (``ansible.builtin.setup``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.ansible_runner import EE_PYTHON

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _module_python(*argv: str, interpreter: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_PYTHON_INTERPRETER"}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    if interpreter is not None:
        env["ANSIBLE_PYTHON_INTERPRETER"] = interpreter
    p = subprocess.run([str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.setup", "-a", "gather_subset=!all",
                        *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    facts = json.loads(p.stdout.split("=>", 1)[1])["ansible_facts"]
    return facts["ansible_python"]["executable"]


def test_modules_run_on_ansibles_own_python_by_default():
    assert _module_python(interpreter=None) == sys.executable


def test_ansible_python_interpreter_names_the_modules_python():
    assert EE_PYTHON.exists(), "make setup makes .venv/ee"
    assert _module_python(interpreter=str(EE_PYTHON)) == str(EE_PYTHON)


def test_extra_var_wins_over_the_environment():
    assert _module_python("-e", f"ansible_python_interpreter={sys.executable}", interpreter="/nonexistent/python") \
        == sys.executable
