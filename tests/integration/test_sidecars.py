"""Issue 14 item 4: one container rule, everywhere: the container that runs `mlflow server` as parsed (or
`verify_container` when set).

The field case (two log-shipping sidecars listed before MLflow, `tail -F /mlflow/logs/server.log` and
`sh -c 'exec sleep infinity # fluent-bit -c /etc/mlflow/server.conf'`, both with "mlflow" and "server" in their
command; verify must scan MLflow's log, probe its port and patch its container) is the fault matrix row
`sidecars_before_mlflow` (tests/integration/test_fault_matrix.py). Here: a pod with no container running
`mlflow server`, or with two, is a clear, critical finding naming the containers, nothing is touched, and
`verify_container` settles the two. fluent-bit is not an image the lab runs (docs/lab.md): the command line is
what matters, run by busybox.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.lab_objects import get_deployment, live_pods  # noqa: E402
from fault_matrix_lab import create  # noqa: E402

pytestmark = pytest.mark.lab

IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
SCHEMA_LINE = ("alembic: Detected out-of-date database schema (found version 4465047574b1, but expected "
               "0584bdc529eb). Take a backup of your database, then run 'mlflow db upgrade <database_uri>'")


def tail_shipper() -> dict:
    return {"name": "log-shipper", "image": "busybox:1.36",
            "command": ["sh", "-c", f"mkdir -p /mlflow/logs && echo \"{SCHEMA_LINE}\" >> /mlflow/logs/server.log "
                                    "&& exec tail -F /mlflow/logs/server.log"],
            "volumeMounts": [{"name": "logs", "mountPath": "/mlflow/logs"}]}


def fluent_bit() -> dict:
    return {"name": "config-watch", "image": "busybox:1.36",
            "command": ["sh", "-c", "exec sleep infinity # fluent-bit -c /etc/mlflow/server.conf"]}


def mlflow(name: str = "mlflow", port: int = 8080, extra=()) -> dict:
    return {"name": name, "image": IMAGE, "command": ["mlflow", "server"],
            "args": ["--host=0.0.0.0", f"--port={port}", "--workers=1",
                     f"--backend-store-uri=sqlite:////mlflow/{name}.db", "--default-artifact-root=/mlflow/artifacts",
                     *extra],
            "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
                    {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "localhost:*,127.0.0.1:*,10.*,mlflow-service*"}],
            "ports": [{"name": "http" if name == "mlflow" else f"http-{name[-1]}", "containerPort": port}],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
            "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}]}


def dep(name: str, app: str, containers: list[dict]) -> dict:
    labels = {"app": app}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 3, "enableServiceLinks": False,
                                           "containers": containers,
                                           "volumes": [{"name": "data", "emptyDir": {}},
                                                       {"name": "logs", "emptyDir": {}}]}}}}


def svc(name: str, app: str, target="http") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 5000, "targetPort": target}]}}


def ready_pod(lab, ns: str, app: str, timeout: float = 240) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in live_pods(lab, ns, f"app={app}"):
            st = p.get("status", {}).get("containerStatuses") or []
            if st and all(c.get("ready") for c in st):
                return p
        time.sleep(1)
    raise AssertionError(f"no ready pod for app={app} in {ns}")


def verify(lab, ns, tmp_path, name, *argv):
    rep = tmp_path / f"{name}.json"
    res = run_playbook("playbooks/verify.yml", env=lab.env(), timeout=900, argv=[
        "-e", f"verify_namespace={ns}", "-e", "verify_port_forward=false", "-e", "verify_min_workers=1",
        "-e", "verify_rollout_timeout=240", "-e", f"verify_report_path={rep}", *argv])
    return res, (json.loads(rep.read_text()) if rep.exists() else {})


def writes_in(lab, mark, ns):
    return [f"{r['method']} {r['path']}" for r in lab.requests_since(mark)
            if r["method"] in WRITES and f"/namespaces/{ns}/" in r["path"]]


@pytest.mark.parametrize("case", ["none", "two"])
def test_no_mlflow_container_or_two_is_a_clear_finding(lab, lab_namespace, tmp_path, case):
    ns = lab_namespace
    if case == "none":
        containers = [tail_shipper(), fluent_bit()]
        names = ["log-shipper", "config-watch"]
    else:
        containers = [tail_shipper(), mlflow("mlflow-a", 5000), mlflow("mlflow-b", 5001)]
        names = ["mlflow-a", "mlflow-b"]
    create(lab, ns, dep("mlflow-deployment", "mlflow", containers),
           svc("mlflow-service", "mlflow", target=5000))
    ready_pod(lab, ns, "mlflow")
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    mark = lab.log_mark()
    res, rep = verify(lab, ns, tmp_path, case)
    assert rep, res.output[-4000:]
    clear = [f for f in rep["findings_before"]
             if "mlflow server" in f["message"].lower() and all(n in f["message"] for n in names)]
    assert clear, f"no finding says which containers and why: {[(f['code'], f['message']) for f in rep['findings_before']]}"
    assert clear[0]["severity"] == "critical", clear[0]
    assert rep["remediated"] == [] and writes_in(lab, mark, ns) == [], rep["remediated"]
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen
    assert res.rc != 0 and res.changed == 0, res.changed_tasks()
    if case == "two":  # the operator names the container: no ambiguity left
        res, rep = verify(lab, ns, tmp_path, "two-named", "-e", "verify_container=mlflow-a", "-e", "verify_remediate=false")
        assert not [f for f in rep["findings_before"] if "mlflow-b" in f["message"] and "mlflow server" in f["message"].lower()], \
            rep["findings_before"]
