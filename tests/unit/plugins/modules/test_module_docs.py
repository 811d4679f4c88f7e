"""ansible-doc renders the modules completely (doc fragments from kubernetes.core and this collection resolve)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("module", ["mlflow_probe", "port_forward"])
def test_ansible_doc_renders(module):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", "module", "--json",
                          f"asgard.mlflow.{module}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)[f"asgard.mlflow.{module}"]
    options = doc["doc"]["options"]
    for opt in ("namespace", "service", "pod", "label_selectors", "remote_port", "kubeconfig", "context", "api_key"):
        assert opt in options, opt
    assert options["namespace"]["default"] == "asgard"
    assert doc["doc"]["version_added"] == "0.1.0"
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert doc["return"], "RETURN documented"
    for key, ret in doc["return"].items():
        assert {"description", "returned", "type"} <= set(ret), key
    if module == "mlflow_probe":
        assert {"healthy", "checks", "findings", "health_path", "mlflow_version", "server_header"} <= set(doc["return"])
    else:
        assert options["local_port"]["default"] == 5000 and options["address"]["default"] == "127.0.0.1"


def test_ansible_doc_renders_remediation_lock():
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", "module", "--json",
                          "asgard.mlflow.remediation_lock"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["asgard.mlflow.remediation_lock"]
    options = doc["doc"]["options"]
    assert {"namespace", "deployment", "state", "lease_duration", "wait_timeout", "fail_when_held", "owner_pid",
            "kubeconfig", "api_key"} <= set(options)
    assert options["state"]["choices"] == ["acquired", "released"] and options["lease_duration"]["default"] == 60
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert doc["doc"]["attributes"]["diff_mode"]["support"] == "full"
    for key, ret in doc["return"].items():
        assert {"description", "returned", "type"} <= set(ret), key
    assert {"acquired", "released", "held_by", "since", "took_over_from", "lease", "identity"} <= set(doc["return"])


def test_ansible_doc_renders_mlflow_verify_and_matches_its_argument_spec():
    sys.path.insert(0, str(REPO / ".collections"))
    from ansible_collections.asgard.mlflow.plugins.module_utils._verify_options import ARG_SPEC

    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", "module", "--json",
                          "asgard.mlflow.mlflow_verify"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["asgard.mlflow.mlflow_verify"]
    options = doc["doc"]["options"]
    assert doc["doc"]["version_added"] == "0.2.0"
    for name, spec in ARG_SPEC.items():
        assert name in options, f"option {name} is not documented"
        assert options[name]["type"] == spec["type"], name
        if spec.get("default") not in (None, "", [], {}):
            assert options[name]["default"] == spec["default"], name
    assert {"kubeconfig", "api_key"} <= set(options)
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert {"steps", "findings", "console", "plan", "state", "settings", "healthy", "api_requests"} <= set(doc["return"])
    for key, ret in doc["return"].items():
        assert {"description", "returned", "type", "sample"} <= set(ret), key
