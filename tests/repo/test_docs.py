# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every plugin and role of the collection is documented and the documentation renders.

scripts/docs-lint.sh discovers the plugins (every type under plugins/) and roles, renders each with
ansible-doc, and runs `antsibull-docs lint-collection-docs --plugin-docs`; this test runs it. The role
argument specs are also kept in step with the roles' defaults (the prometheus.prometheus habit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def test_docs_lint_script_passes():
    assert (BIN / "antsibull-docs").exists(), "antsibull-docs is not installed; it is pinned in requirements-dev.txt"
    env = dict(os.environ, VENV_BIN=str(BIN))
    proc = subprocess.run([str(ROOT / "scripts" / "docs-lint.sh")], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # it really looked at the collection: the modules and every role rendered
    assert "docs-lint: ok ansible-doc -t module:" in out, out
    for role in ROLES:
        assert f"docs-lint: ok ansible-doc -t role asgard.mlflow.{role}" in out, out
    assert "docs-lint: ok antsibull-docs lint-collection-docs --plugin-docs" in out, out


@pytest.mark.parametrize("role", ROLES)
def test_role_argument_specs_document_every_default(role):
    defaults_file = ROOT / "roles" / role / "defaults" / "main.yml"
    specs_file = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    assert specs_file.is_file(), f"roles/{role}/meta/argument_specs.yml is missing"
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.is_file() else {}
    options = yaml.safe_load(specs_file.read_text())["argument_specs"]["main"].get("options") or {}
    undocumented = sorted(set(defaults) - set(options))
    no_default = sorted(k for k in set(options) - set(defaults) if not options[k].get("required"))
    assert not undocumented, f"roles/{role}: defaults not in meta/argument_specs.yml: {undocumented}"
    assert not no_default, f"roles/{role}: optional argument_specs options with no default in defaults/main.yml: {no_default}"
    for name, spec in options.items():
        assert spec.get("description"), f"roles/{role}: option {name} has no description"
