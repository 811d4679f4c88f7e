"""MLflow fleets for the lab: the Deployments/Services the fleet tests and the bench create (plain dicts).

- :func:`healthy`: a small healthy MLflow (``sh -c "exec mlflow server ..."``, uvicorn, one worker, job execution off, SQLite on an emptyDir, allowed
  hosts incl. the Service DNS name, readiness on /health), with any Deployment/Service name and labels: an
  unlabelled one (``run: tracking``) or a renamed one is the point of discovery;
- :func:`lookalike`: a Deployment labelled ``app: mlflow`` whose container only tails MLflow's log (busybox): it
  must never be found;
- :func:`seed`: the seed incident's broken "Before" Deployment + Service (playbooks/files/seed-before.yml).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "playbooks" / "files" / "seed-before.yml"
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"


def seed() -> list[dict]:
    return [o for o in yaml.safe_load_all(SEED.read_text()) if o]


def healthy(ns: str, name: str = "mlflow-deployment", labels: dict | None = None, service: str = "mlflow-service",
            container: str = "mlflow", named_port: bool = False) -> list[dict]:
    labels = labels or {"app": "mlflow"}
    dep = copy.deepcopy(next(o for o in seed() if o["kind"] == "Deployment"))
    svc = copy.deepcopy(next(o for o in seed() if o["kind"] == "Service"))
    dep["metadata"] = {"name": name, "labels": dict(labels)}
    dep["spec"]["selector"] = {"matchLabels": dict(labels)}
    dep["spec"]["template"]["metadata"] = {"labels": dict(labels)}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["name"] = container
    # `exec`: MLflow, not sh, is the container's PID 1 (a shell wrapper without it is SHELL_WRAPPER_NO_EXEC)
    c["args"] = [
        "exec mlflow server --host=0.0.0.0 --port=5000 --backend-store-uri=${MLFLOW_BACKEND_STORE_URI} "
        "--default-artifact-root=${MLFLOW_DEFAULT_ARTIFACT_ROOT} --serve-artifacts --workers 1"
    ]
    c["env"].append({"name": "MLFLOW_SERVER_ALLOWED_HOSTS",
                     "value": f"localhost:*,127.0.0.1:*,10.*,{service}.{ns}.svc.cluster.local:5000"})
    c["readinessProbe"] = {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 1, "failureThreshold": 3}
    svc["metadata"] = {"name": service, "labels": dict(labels)}
    svc["spec"]["selector"] = dict(labels)
    svc["spec"]["ports"] = [{"name": "http", "port": 5000, "targetPort": "http" if named_port else 5000}]
    return [dep, svc]


def lookalike(name: str = "mlflow-log-shipper") -> list[dict]:
    """Labelled app=mlflow and mentioning mlflow everywhere, but no container runs `mlflow server`."""
    labels = {"app": "mlflow", "component": "log-shipper"}
    return [{
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "mlflow-logs", "image": "busybox:1.36",
                "command": ["/bin/sh", "-c", "exec tail -F /mlflow/logs/server.log  # ships the mlflow server log"],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow-service:5000"}],
            }]}}},
    }]


def apply(lab, ns: str, objs: list[dict], create_namespace: bool = True) -> None:
    """Create ``objs`` in ``ns`` through ``lab.request`` (a LabHandle or anything with the same method)."""
    if create_namespace:
        r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": ns}})
        assert r.status_code in (201, 409), r.text
    for obj in objs:
        path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "Service": f"/api/v1/namespaces/{ns}/services"}[obj["kind"]]
        r = lab.request("POST", path, json=obj)
        assert r.status_code == 201, r.text


def wait_serving(lab, ns: str, selector: str, path: str = "/health", timeout: float = 600) -> None:
    """Until a pod of ``selector`` in ``ns`` answers ``GET path`` with 200 on its pod IP (the tests run in the
    labs' network namespace, where pod IPs are reachable)."""
    import http.client
    import time

    end = time.monotonic() + timeout
    last = "no pod yet"
    while time.monotonic() < end:
        r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": selector})
        for p in r.json().get("items", []) if r.status_code == 200 else []:
            ip = p.get("status", {}).get("podIP")
            if not ip or p["metadata"].get("deletionTimestamp"):
                continue
            try:
                conn = http.client.HTTPConnection(ip, 5000, timeout=3)
                conn.request("GET", path, headers={"Host": "localhost:5000"})
                status = conn.getresponse().status
                conn.close()
            except OSError as exc:
                last = f"{p['metadata']['name']}: {exc}"
                continue
            if status == 200:
                return
            last = f"{p['metadata']['name']}: HTTP {status}"
        time.sleep(1)
    raise AssertionError(f"no MLflow in {ns} ({selector}) answered {path} within {timeout:.0f}s: {last}")


def snapshot(lab, namespaces) -> dict:
    """Every Deployment of ``namespaces`` (name -> generation, resourceVersion, spec): equal before and after a run
    that must change nothing."""
    out = {}
    for ns in namespaces:
        r = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments")
        assert r.status_code == 200, r.text
        for d in r.json()["items"]:
            m = d["metadata"]
            out[f"{ns}/{m['name']}"] = (m.get("generation"), m["resourceVersion"], d["spec"])
    return out


def delete_namespaces(lab, namespaces) -> None:
    for ns in namespaces:
        lab.request("DELETE", f"/api/v1/namespaces/{ns}")
