"""What every fault-matrix module shares (tests/integration/test_fault_matrix*.py): cheap MLflow pods (1 worker,
job execution off, SQLite on a PVC so the store survives pod replacement), a store seeded through the pod IP and
compared after the fault (API and SQLite file), verify.yml with its JSON report, and the row recorder."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fault_matrix_report as report  # noqa: E402
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.lab_objects import live_pods  # noqa: E402

IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
LOCAL_HOST = "localhost:5000"  # a Host header every MLflow allow-list of the matrix accepts


def new_namespace(lab) -> str:
    ns = f"fm-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    return ns


def server_args(port: bool = True, extra=()) -> list[str]:
    return (["server", "--host=0.0.0.0"] + (["--port=5000"] if port else [])
            + ["--workers=1", "--backend-store-uri=sqlite:////mlflow/mlflow.db",
               "--default-artifact-root=/mlflow/artifacts", *extra])


def allowed_hosts(ns: str) -> str:
    """What verify/patch compute, so that only the injected fault is wrong (MLflow 3.17's defaults reject the
    Service DNS name, which verify would report as INVALID_HOST on top of the fault)."""
    names = ["mlflow-service", f"mlflow-service.{ns}", f"mlflow-service.{ns}.svc", f"mlflow-service.{ns}.svc.cluster.local"]
    return ",".join([f"{n}:5000" for n in names] + ["localhost:*", "127.0.0.1:*", "10.*"])


def deployment(image=IMAGE, args=None, env=None, liveness=None, service_links=False, ns=None) -> dict:
    labels = {"app": "mlflow"}
    if ns and "MLFLOW_SERVER_ALLOWED_HOSTS" not in (env or {}):
        env = {**(env or {}), "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts(ns)}
    c = {"name": "mlflow", "image": image, "command": ["mlflow"], "args": args or server_args(),
         "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}]
         + [{"name": k, "value": v} for k, v in (env or {}).items()],
         "ports": [{"name": "http", "containerPort": 5000}],
         "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
         "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}]}
    if liveness:  # behind a startup probe, so that the liveness probe only starts once MLflow answers
        c["livenessProbe"] = liveness
        c["startupProbe"] = {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 2, "timeoutSeconds": 5,
                             "failureThreshold": 90}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow-deployment", "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 3, "enableServiceLinks": service_links,
                                           "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
                                           "containers": [c],
                                           "volumes": [{"name": "data",
                                                        "persistentVolumeClaim": {"claimName": "data"}}]}}}}


def service(name="mlflow-service", selector=None) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector or {"app": "mlflow"},
                     "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}}


PVC = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
       "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


def create(lab, ns: str, *objs: dict) -> None:
    for obj in objs:
        path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "Service": f"/api/v1/namespaces/{ns}/services",
                "PersistentVolumeClaim": f"/api/v1/namespaces/{ns}/persistentvolumeclaims"}[obj["kind"]]
        r = lab.request("POST", path, json=obj)
        assert r.status_code == 201, r.text








def serving_pod(lab, ns: str, prefix: str = "", timeout: float = 240, exclude=(), port: int = 5000) -> tuple[str, str]:
    """(pod name, base URL at the pod IP) of a pod whose MLflow answers {prefix}/health 200."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in live_pods(lab, ns):
            ip = p.get("status", {}).get("podIP")
            if not ip or p["metadata"]["name"] in exclude:
                continue
            base = f"http://{ip}:{port}{prefix}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/health", headers={"Host": LOCAL_HOST}, timeout=3).status_code == 200:
                    return p["metadata"]["name"], base
        time.sleep(1)
    raise AssertionError(f"no serving MLflow pod in {ns}: {json.dumps(live_pods(lab, ns))[:3000]}")


def pod_log(lab, ns: str, pod: str, previous: bool = False) -> str:
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{pod}/log",
                    params={"container": "mlflow", **({"previous": "true"} if previous else {})})
    return r.text if r.status_code == 200 else ""


def api(base: str, method: str, path: str, body: dict | None = None) -> dict:
    r = requests.request(method, f"{base}/api/2.0/mlflow/{path}", json=body, headers={"Host": LOCAL_HOST}, timeout=30)
    assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text[:300]}"
    return r.json()


def seed_store(base: str) -> dict:
    """One experiment and one run, created through the pod IP; returns the ids in the store."""
    exp = api(base, "POST", "experiments/create", {"name": f"fault-matrix-{uuid.uuid4().hex[:6]}"})["experiment_id"]
    api(base, "POST", "runs/create", {"experiment_id": exp, "run_name": "before-the-fault"})
    return store_via_api(base)


def store_via_api(base: str) -> dict:
    exps = sorted(e["experiment_id"] for e in api(base, "POST", "experiments/search", {"max_results": 1000})["experiments"])
    runs = sorted(r["info"]["run_id"] for r in
                  api(base, "POST", "runs/search", {"experiment_ids": exps, "max_results": 1000}).get("runs", []))
    return {"experiments": exps, "runs": runs}


def store_via_file(lab, ns: str) -> dict:
    [db] = list((lab.state_dir / "pvcs" / ns).glob("data-*/mlflow.db"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        exps = sorted(str(r[0]) for r in con.execute("SELECT experiment_id FROM experiments WHERE lifecycle_stage='active'"))
        runs = sorted(r[0] for r in con.execute("SELECT run_uuid FROM runs WHERE lifecycle_stage='active'"))
    finally:
        con.close()
    return {"experiments": exps, "runs": runs}


def assert_store(lab, ns: str, before: dict, base: str | None) -> str:
    assert len(before["runs"]) >= 1 and len(before["experiments"]) >= 2, before
    assert store_via_file(lab, ns) == before
    if base:
        assert store_via_api(base) == before
    n_runs = len(before["runs"])
    return f"yes ({len(before['experiments'])} experiments, {n_runs} run{'s' if n_runs > 1 else ''}; ids equal" + \
        (", API + file)" if base else ", file)")


def verify(lab, ns: str, tmp_path: Path, name: str, **extra):
    rep_path = tmp_path / f"verify-{name}.json"
    ev = {"verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(rep_path),
          "verify_min_workers": 1, "verify_rollout_timeout": 240, "verify_probe_deadline": 45}
    ev.update(extra)
    res = run_playbook("playbooks/verify.yml", extra_vars=ev, env=lab.env(), timeout=900)
    rep = json.loads(rep_path.read_text()) if rep_path.exists() else {}
    return res, rep




def start_healthy(lab, ns: str, dep: dict | None = None, prefix: str = "", svc: dict | None = None):
    create(lab, ns, PVC, dep or deployment(), svc or service())
    pod, base = serving_pod(lab, ns, prefix)
    return pod, base, seed_store(base)


def healed_row(case, t0, **kw):
    report.record(case, seconds=time.monotonic() - t0, **kw)


def slow_post(ip: str, seconds: int, port: int = 5000) -> int | None:
    body = json.dumps({"max_results": 1}).ljust(4 * seconds).encode()
    with socket.create_connection((ip, port), timeout=seconds + 30) as s:
        s.sendall(b"POST /api/2.0/mlflow/experiments/search HTTP/1.1\r\nHost: localhost:5000\r\n"
                  b"Content-Type: application/json\r\nConnection: close\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode())
        try:
            for i in range(0, len(body), 4):  # 4 bytes a second
                s.sendall(body[i:i + 4])
                time.sleep(1)
            data = s.recv(200)
        except OSError:
            return None
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split()[1])
