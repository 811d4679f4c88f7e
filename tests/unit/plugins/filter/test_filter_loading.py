"""What loading the collection's filters costs a playbook process.

To find one filter (``asgard.mlflow.redact``), ansible-core's Jinja2Loader loads every file of the collection's
``plugins/filter`` package, in each process that templates one, and its collection loader compiles module_utils from
source every time. So a filter file imports its rules when a filter runs (plugin_utils/_filters.py ``rules``): here,
through the same loader ansible-playbook uses, finding a filter of each file imports only the two tiny helpers, and
calling one imports its own rules, not those of the other roles. Before, finding any filter imported 24 module_utils
(the verify, patch, deploy and fleet rules), ~0.26 cpu-s of compiling in an idempotent deploy.yml.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[4]

PROBE = r"""
import json, sys
from ansible.plugins.loader import filter_loader, init_plugin_loader

init_plugin_loader([sys.argv[1]])
prefix = "ansible_collections.asgard.mlflow.plugins.module_utils."
def loaded():
    return sorted(m[len(prefix):] for m in sys.modules if m.startswith(prefix))
found = filter_loader.get(sys.argv[2])
after_lookup = loaded()
result = found.j2_function(*json.loads(sys.argv[3]))
print(json.dumps({"after_lookup": after_lookup, "after_call": loaded(), "result": result}))
"""

# one filter of each filter file, with arguments it accepts
CASES = {
    "asgard.mlflow.redact": (["postgresql://mlflow:s3cret@db:5432/mlflow"], "_redact"),
    "asgard.mlflow.mlflow_proxy_settings": ([300], "_mlflow_rules"),
    "asgard.mlflow.verify_unattended": ([{}, {"AWX_HOST": "awx.example"}], "_verify_env"),
    "asgard.mlflow.patch_preflight": ([{"patch_namespace": "asgard"}], "_patch_preflight"),
    "asgard.mlflow.mlflow_server_settings": ([{"spec": {"template": {"spec": {"containers": [
        {"name": "mlflow", "image": "ghcr.io/mlflow/mlflow:v3.17.2", "command": ["mlflow", "server"]}]}}}}],
        "_settings"),
    "asgard.mlflow.fleet_report": ([[]], "_fleet_report"),
}


def probe(name: str, args: list) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / ".collections"), name, json.dumps(args)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", sorted(CASES))
def test_finding_a_filter_imports_no_rules_and_calling_it_only_its_own(name):
    args, own = CASES[name]
    got = probe(name, args)
    assert got["after_lookup"] == ["_errors", "_plain"], got["after_lookup"]
    new = set(got["after_call"]) - set(got["after_lookup"])
    assert own in new, (own, new)
    # never the rules of another role or of the fleet
    foreign = {"_verify_finish", "_verify_render", "_verify_plan", "_deploy_preflight", "_fleet_report", "_compliance"}
    assert not (new & (foreign - {own})), new


def test_redact_still_masks_through_the_loader():
    got = probe("asgard.mlflow.redact", ["postgresql://mlflow:s3cret@db:5432/mlflow"])
    assert "s3cret" not in got["result"] and "mlflow:" in got["result"], got["result"]
