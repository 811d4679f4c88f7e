"""The modules import on the oldest Python that meta/runtime.yml admits.

The modules run on the controller's Python (tests/config.yml: ``python_requires: controller``), and
``requires_ansible`` admits ansible-core releases whose controllers start below the Python the project itself runs
on (ansible-core 2.16: Python 3.10). The rest of the suite runs them on 3.11 (.venv/ee) and 3.12 only, so a name
that only newer Pythons have (``datetime.UTC``, 3.11+) broke every module on 3.10 without a failing test. This test
imports each module and module_util with that oldest Python: the module files themselves (their ``main()`` does not
run), ansible-core's module_utils and kubernetes.core's as installed in .venv, no third-party package (the modules
import those lazily or guard them, and their errors name what is missing).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import ansible
import ansible_collections.kubernetes.core as kubernetes_core
import yaml

REPO = Path(__file__).resolve().parents[2]
# the oldest controller Python of each ansible-core release (ansible-core's support matrix)
OLDEST_CONTROLLER_PYTHON = {"2.16": "3.10", "2.17": "3.10", "2.18": "3.11", "2.19": "3.11", "2.20": "3.12",
                            "2.21": "3.12"}

IMPORT_ALL = r"""
import importlib, pathlib, sys
failed, imported = [], 0
for kind in ("module_utils", "modules"):
    for path in sorted(pathlib.Path("plugins", kind).glob("[!_]*.py" if kind == "modules" else "*.py")):
        name = f"ansible_collections.asgard.mlflow.plugins.{kind}.{path.stem}"
        try:
            importlib.import_module(name)
            imported += 1
        except Exception as exc:
            failed.append(f"{kind}/{path.name}: {type(exc).__name__}: {exc}")
print(sys.version.split()[0], imported)
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _oldest_python() -> tuple[str, str | None]:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    floor = re.match(r"\s*>=\s*(\d+\.\d+)", runtime["requires_ansible"])
    assert floor, f"meta/runtime.yml requires_ansible has no '>=' floor: {runtime['requires_ansible']!r}"
    assert floor.group(1) in OLDEST_CONTROLLER_PYTHON, (
        f"requires_ansible starts at ansible-core {floor.group(1)}: add its oldest controller Python to this test")
    version = OLDEST_CONTROLLER_PYTHON[floor.group(1)]
    candidates = []
    for root in (os.environ.get("PYENV_ROOT"), "/root/.pyenv", os.path.expanduser("~/.pyenv")):
        if root:
            candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    candidates.append(shutil.which(f"python{version}"))  # last: it may be a pyenv shim that refuses to run
    for c in filter(None, candidates):
        ok = subprocess.run([c, "-c", f"import sys; sys.exit(not sys.version.startswith('{version}.'))"],
                            capture_output=True, timeout=30)
        if ok.returncode == 0:
            return version, c
    return version, None


def test_modules_import_on_the_oldest_admitted_python(tmp_path):
    version, python = _oldest_python()
    assert python, (f"no Python {version} found (python{version} on PATH or pyenv): it is the oldest controller "
                    f"Python meta/runtime.yml admits; install it (pyenv install {version}) to run this test")
    # a path with the collection, kubernetes.core and ansible-core's own package, and nothing else of .venv
    (tmp_path / "ansible_collections" / "asgard").mkdir(parents=True)
    (tmp_path / "ansible_collections" / "kubernetes").mkdir()
    (tmp_path / "ansible_collections" / "asgard" / "mlflow").symlink_to(REPO)
    (tmp_path / "ansible_collections" / "kubernetes" / "core").symlink_to(Path(kubernetes_core.__path__[0]))
    (tmp_path / "ansible").symlink_to(Path(ansible.__file__).parent)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    res = subprocess.run([python, "-B", "-c", IMPORT_ALL], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    ran_on, _, imported = res.stdout.split("\n", 1)[0].partition(" ")
    assert ran_on.startswith(version + "."), f"ran on {ran_on!r}, not {version}: {res.stderr}"
    assert res.returncode == 0, f"on Python {ran_on}:\n{res.stdout.split(chr(10), 1)[-1]}{res.stderr}"
    # exit 0 means every module and module_util imported (none in the failed list): that they were found at all
    assert int(imported) > 40, f"only {imported} modules and module_utils imported from plugins/"
