"""Issue 14 for the verify role, against real MLflow pods in the lab:

- item 7: a Helm-managed Deployment (``app.kubernetes.io/managed-by: Helm``, ``meta.helm.sh/release-name``) whose
  fix is a patch is NOT patched by verify (the next ``helm upgrade`` would revert it): the run's final message says
  Helm and the chart values to set (HELM_MANAGED), the patch role never runs, and no later round retries it;
  ``verify_patch_vars.patch_allow_helm_managed=true`` patches anyway.
- item 2: a Deployment carrying a known password in every place a credential hides (an env literal, a URI's userinfo
  in an env value and in the args, a ConfigMap value it reads, kubectl's last-applied-configuration annotation):
  verify at ``-vvv`` (an audit, and check mode with ``--diff``) prints it 0 times, and writes it to no report.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.lab_objects import get_deployment  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_verify_config import create, server_args, wait_serving  # noqa: E402

pytestmark = pytest.mark.lab
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
PASSWORD = "Vf" + uuid.uuid4().hex[:18]


def deployment(ns: str, env: list[dict], labels_extra=None, annotations=None, args_extra=(), env_from=None) -> dict:
    labels = {"app": "mlflow"}
    c = {"name": "mlflow", "image": IMAGE, "command": ["mlflow"], "args": server_args(*args_extra),
         "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}, *env],
         "ports": [{"name": "http", "containerPort": 5000}],
         "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
         "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}]}
    if env_from:
        c["envFrom"] = env_from
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "mlflow-deployment", "labels": {**labels, **(labels_extra or {})},
                         "annotations": annotations or {}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 3, "enableServiceLinks": False,
                                           "containers": [c], "volumes": [{"name": "data", "emptyDir": {}}]}}}}


def service() -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow-service"},
            "spec": {"selector": {"app": "mlflow"}, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}}


def verify(lab, ns, tmp_path, name, check=False, verbosity=0, diff=False, **extra):
    rep_path = tmp_path / f"{name}.json"
    md_path = tmp_path / f"{name}.md"
    ev = {"verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(rep_path),
          "verify_markdown_report_path": str(md_path), "verify_min_workers": 1, "verify_rollout_timeout": 240,
          "verify_probe_deadline": 45, **extra}
    res = run_playbook("playbooks/verify.yml", extra_vars=ev, env=lab.env(), check=check, verbosity=verbosity,
                       diff=diff, json_output=not verbosity, timeout=900)
    rep = json.loads(rep_path.read_text()) if rep_path.exists() else {}
    files = (rep_path.read_text() if rep_path.exists() else "") + (md_path.read_text() if md_path.exists() else "")
    return res, rep, files


def test_helm_managed_deployment_gets_the_chart_values_not_a_patch(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    # MLflow's default allowed hosts reject the Service DNS name: INVALID_HOST (critical), fixed by a patch
    create(lab, ns, [deployment(ns, [{"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "localhost:*"}],
                                labels_extra={"app.kubernetes.io/managed-by": "Helm"},
                                annotations={"meta.helm.sh/release-name": "team-mlflow",
                                             "meta.helm.sh/release-namespace": ns}), service()])
    wait_serving(lab, ns)
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    res, rep, _ = verify(lab, ns, tmp_path, "helm")
    assert res.rc != 0, "verify passed although INVALID_HOST remains"
    assert res.changed == 0, res.changed_tasks()
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen
    assert rep["remediated"] == [] and rep["rounds"] == [], rep["remediated"]
    assert not [t for t in res.tasks() if "asgard.mlflow.patch" in t["task"]["name"]], "the patch role ran"
    [helm] = [f for f in rep["remaining"] if f["code"] == "HELM_MANAGED"]
    assert "team-mlflow" in helm["message"] and "MLFLOW_SERVER_ALLOWED_HOSTS including" in helm["message"]
    fail = next(h["msg"] for t in res.tasks() for h in t["hosts"].values() if h.get("failed"))
    assert "HELM_MANAGED: set these in the chart values of release team-mlflow" in fail, fail
    assert f"mlflow-service.{ns}.svc.cluster.local:5000" in fail

    # asked for explicitly, the patch is made (once)
    res, rep, _ = verify(lab, ns, tmp_path, "helm-allowed", verify_patch_vars={"patch_allow_helm_managed": True})
    assert res.rc == 0, res.output
    assert [(r["action"], r["changed"]) for r in rep["remediated"]] == [("patch", True)]
    assert get_deployment(lab, ns)["metadata"]["generation"] > gen


def test_a_password_everywhere_in_the_deployment_is_never_printed(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    uri = f"postgresql://mlflow:{PASSWORD}@db.example:5432/mlflow"
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mlflow-extra"},
        "data": {"EXTRA_DB_URL": uri, "DB_PASSWORD_COPY": PASSWORD}})
    assert r.status_code == 201, r.text
    dep = deployment(ns, [{"name": "DB_PASSWORD", "value": PASSWORD}, {"name": "ARCHIVE_STORE_URI", "value": uri},
                          {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "localhost:*"},
                          {"name": "EXTRA_FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "mlflow-extra",
                                                                                      "key": "EXTRA_DB_URL"}}}],
                     env_from=[{"configMapRef": {"name": "mlflow-extra"}}],
                     args_extra=(f"--gunicorn-opts=--timeout 2 --env DB={uri}",))
    dep["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(dep)
    create(lab, ns, [dep, service()])
    wait_serving(lab, ns)
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    # an audit at -vvv, and check mode with --diff at -vvv (the remediation path: patch role in check mode). The
    # asgard.mlflow.patch role's own task output is that role's promise (its tests); here: every task of verify
    for name, kw in (("audit-vvv", {"verify_remediate": False, "verify_fail_when_unhealthy": False}),
                     ("check-vvv", {"check": True, "diff": True, "verify_min_workers": 2})):
        res, rep, files = verify(lab, ns, tmp_path, name, verbosity=3, **kw)
        assert rep, f"{name}: no report\n{res.output[-3000:]}"
        text = "".join(sec for sec in re.split(r"(?m)^(?=TASK \[)", res.stdout)
                       if not sec.startswith("TASK [asgard.mlflow.patch : ")) + res.stderr + files
        assert PASSWORD not in text, f"{name}: the password is printed"
        assert "<TASK" not in text  # the run really printed at -vvv (task banners are "TASK [")
        assert "mlflow_verify" in res.stdout
    assert {"SHORT_WORKER_TIMEOUT", "INVALID_HOST"} <= {f["code"] for f in rep["findings_before"]}
    assert [a["action"] for a in rep["plan"]["actions"]] == ["patch"]
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen
