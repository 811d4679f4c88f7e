"""The asgard.mlflow.mlflow_server_settings / mlflow_compliance filters, called directly and through a real
ansible-playbook run (FQCN lookup, Ansible's own data types, error reporting)."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

_TESTS = pathlib.Path(__file__).resolve().parents[3]
for _p in (_TESTS, _TESTS.parent / ".collections"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.filter import mlflow_settings as F  # noqa: E402
from helpers.ansible_runner import run_playbook  # noqa: E402

SCRIPT = (
    'mlflow server \\\n  --host=0.0.0.0 \\\n  --port=5000 \\\n  --gunicorn-opts="--timeout 120 --workers 2 '
    '--worker-class sync" \\\n  --static-prefix=/static\n'
)
DEP = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "mlflow-deployment", "namespace": "asgard"},
    "spec": {
        "template": {
            "metadata": {"labels": {"app": "mlflow"}},
            "spec": {
                "containers": [
                    {
                        "name": "mlflow",
                        "image": "ghcr.io/mlflow/mlflow:v3.17.2",
                        "command": ["/bin/sh", "-c"],
                        "args": [SCRIPT],
                        "env": [
                            {"name": "MLFLOW_WORKERS", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "w"}}}
                        ],
                    }
                ]
            },
        }
    },
}
CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"w": "2"}}


def test_filters_are_registered():
    assert set(F.FilterModule().filters()) == {"mlflow_server_settings", "mlflow_compliance"}


def test_accepts_a_k8s_info_result_and_configmaps_result():
    s = F.mlflow_server_settings({"resources": [DEP]}, {"resources": [CM]})
    assert s["sources"]["workers"]["value"] == "2"
    assert s["workers"] == 2
    with pytest.raises(AnsibleFilterError, match="holds 0 objects; expected exactly one Deployment"):
        F.mlflow_server_settings({"resources": []})
    with pytest.raises(AnsibleFilterError, match="configmaps: expected a list of ConfigMap objects"):
        F.mlflow_server_settings(DEP, "cfg")


def test_errors_are_filter_errors_naming_the_filter():
    dep = json.loads(json.dumps(DEP))
    dep["spec"]["template"]["spec"]["containers"][0]["args"] = ["sleep infinity"]
    with pytest.raises(AnsibleFilterError, match=r"asgard.mlflow.mlflow_compliance: no container runs `mlflow server`"):
        F.mlflow_compliance(dep, {})
    with pytest.raises(AnsibleFilterError, match="targets: expected a dict"):
        F.mlflow_compliance(DEP, ["workers"])


PLAYBOOK = """
- name: Filters through ansible-playbook
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    dep: {dep}
    cms: [{cm}]
  tasks:
    - name: Read and check
      ansible.builtin.set_fact:
        settings: "{{{{ dep | asgard.mlflow.mlflow_server_settings(cms) }}}}"
        plan: "{{{{ dep | asgard.mlflow.mlflow_compliance({{'workers': 4, 'probes': false}}, cms) }}}}"
    - name: Show
      ansible.builtin.debug:
        msg: "{{{{ {{'settings': settings, 'plan': plan}} | to_json }}}}"
    - name: Bad input fails with the filter's message
      ansible.builtin.set_fact:
        broken: "{{{{ {{'kind': 'Deployment', 'spec': {{'template': {{'spec': {{'containers': [{{'name': 'x', 'command': ['sleep']}}]}}}}}}}} | asgard.mlflow.mlflow_server_settings }}}}"
      ignore_errors: true
      register: bad
    - name: Report the failure
      ansible.builtin.debug:
        msg: "{{{{ bad.msg }}}}"
"""


def test_through_ansible_playbook(tmp_path):
    pb = tmp_path / "pb.yml"
    pb.write_text(PLAYBOOK.format(dep=json.dumps(DEP), cm=json.dumps(CM)))
    res = run_playbook(pb)
    assert res.rc == 0, res.output
    shown = json.loads(res.task("Show")[0]["msg"])
    assert shown["settings"]["server"] == "gunicorn"
    assert shown["settings"]["workers"] == 2
    assert shown["settings"]["static_prefix"] == "/static"
    plan = shown["plan"]
    assert plan["compliant"] is False
    new_args = [op for op in plan["patch"] if op["op"] == "replace" and op["path"].endswith("/args/0")][0]["value"]
    assert new_args == (
        'mlflow server \\\n  --host=0.0.0.0 \\\n  --port=5000 \\\n  --gunicorn-opts="--timeout 300 --workers 4 '
        '--worker-class sync --keep-alive 5" \\\n  --workers=4\n'
    )
    assert "no container runs `mlflow server`" in res.task("Report the failure")[0]["msg"]
