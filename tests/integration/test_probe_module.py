"""asgard.mlflow.mlflow_probe through real ansible-playbook against the lab with real MLflow pods."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import fleet_objects  # noqa: E402
from helpers.ansible_runner import run_playbook  # noqa: E402

pytestmark = pytest.mark.lab
MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"


# ------------------------------------------------------------------ lab helpers (shared with test_port_forward_module)


def create_namespace(lab) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


def deploy_mlflow(lab, ns: str, name: str, args=(), env=None, service: str | None = None, image: str = MLFLOW_IMAGE):
    labels = {"app": name}
    container = {
        "name": "mlflow", "image": image, "command": ["mlflow", "server"],
        "args": ["--host=0.0.0.0", "--port=5000", "--workers=1", "--backend-store-uri=sqlite:////mlflow/mlflow.db",
                 "--default-artifact-root=/mlflow/artifacts", *args],
        "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}]
               + [{"name": k, "value": v} for k, v in (env or {}).items()],
        "ports": [{"name": "http", "containerPort": 5000}],
        "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
        "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}],
    }
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
           "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"terminationGracePeriodSeconds": 5, "enableServiceLinks": False,
                                          "containers": [container],
                                          "volumes": [{"name": "data", "emptyDir": {}}]}}}}
    r = lab.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", json=dep)
    assert r.status_code == 201, r.text
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service or f"{name}-service"},
           "spec": {"selector": labels, "ports": [{"name": "http", "port": 5000, "targetPort": "http"}]}}
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/services", json=svc)
    assert r.status_code == 201, r.text


def ready_pods(lab, ns: str, app: str) -> list[str]:
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": f"app={app}"})
    out = []
    for p in r.json().get("items", []):
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and not p["metadata"].get("deletionTimestamp"):
            out.append(p["metadata"]["name"])
    return out


def wait_ready(lab, ns: str, app: str, timeout: float = 180, exclude=()) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pods = [p for p in ready_pods(lab, ns, app) if p not in exclude]
        if pods:
            return pods[0]
        time.sleep(0.5)
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": f"app={app}"})
    raise AssertionError(f"no Ready pod for {app} in {ns}: {json.dumps(r.json())[:3000]}")


def wait_serving(lab, ns: str, app: str, path: str = "/health", timeout: float = 180) -> None:
    """TCP readiness comes before MLflow answers: wait until a pod of ``app`` answers ``GET path`` with 200 on its
    pod IP (the tests run in the lab's network namespace), without a playbook run."""
    fleet_objects.wait_serving(lab, ns, f"app={app}", path, timeout)


def play(tmp_path: Path, module: str, args: dict, check: bool = False, name: str = "run") -> Path:
    pb = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.yml"
    pb.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": name, module: args, "register": "out", "ignore_errors": True}],
    }]))
    return pb


def run_module(lab, tmp_path: Path, module: str, args: dict, check: bool = False, env: dict | None = None) -> dict:
    res = run_playbook(play(tmp_path, module, args), kubeconfig=lab.kubeconfig, check=check,
                       tmpdir=str(lab.env()["TMPDIR"]), env=env)
    hosts = res.task("run")
    assert hosts, res.output
    return hosts[0]


def run_module_tasks(lab, tmp_path: Path, module: str, args_list: list[dict], check: bool = False) -> list[dict]:
    """One ansible-playbook run, one task per ``args`` (each ignore_errors, so every one runs): the results in order.
    For module calls that do not depend on each other (one playbook start instead of one per call)."""
    pb = tmp_path / f"tasks-{uuid.uuid4().hex[:6]}.yml"
    pb.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": f"call {i}", module: args, "register": f"out{i}", "ignore_errors": True}
                  for i, args in enumerate(args_list)],
    }]))
    res = run_playbook(pb, kubeconfig=lab.kubeconfig, check=check, tmpdir=str(lab.env()["TMPDIR"]))
    out = []
    for i in range(len(args_list)):
        hosts = res.task(f"call {i}")
        assert hosts, res.output
        out.append(hosts[0])
    return out


def probe(lab, tmp_path, check=False, **args) -> dict:
    args.setdefault("timeout", 10)
    args.setdefault("deadline", 90)
    return run_module(lab, tmp_path, "asgard.mlflow.mlflow_probe", args, check=check)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def mlflows(lab):
    """One namespace with three MLflow 3.17 servers: allowed hosts set, Host-restricted, static prefix; yielded once
    each answers its health path (so no test needs a warm-up probe run). The last test deletes good's pod."""
    ns = create_namespace(lab)
    deploy_mlflow(lab, ns, "good", service="mlflow-service",
                  env={"MLFLOW_SERVER_ALLOWED_HOSTS": f"mlflow-service.{ns}.svc.cluster.local:5000,localhost:*"})
    deploy_mlflow(lab, ns, "strict", env={"MLFLOW_SERVER_ALLOWED_HOSTS": "localhost:*"})
    deploy_mlflow(lab, ns, "prefixed", args=["--static-prefix=/static"])
    for app, path in (("good", "/health"), ("strict", "/health"), ("prefixed", "/static/health")):
        wait_ready(lab, ns, app)
        wait_serving(lab, ns, app, path)
    yield ns
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def codes(r: dict) -> list[str]:
    return [f["code"] for f in r.get("findings", [])]


def healthy_eventually(lab, tmp_path, **args) -> dict:
    """MLflow answers /health a few seconds after its port opens: probe with retries until healthy."""
    end = time.monotonic() + 90
    while True:
        r = probe(lab, tmp_path, **args)
        if r.get("checks", {}).get("health", {}).get("ok") or time.monotonic() > end:
            return r
        time.sleep(2)


# ------------------------------------------------------------------ tests


def test_healthy_server_and_check_mode(lab, mlflows, tmp_path):
    r = healthy_eventually(lab, tmp_path, namespace=mlflows)
    assert r["healthy"] is True, r
    assert r["changed"] is False and not r.get("failed")
    assert r["pod"].startswith("good-")
    assert r["health_path"] == "/health" and r["mlflow_version"] == "3.17.2"
    assert r["server_header"] == "uvicorn"
    assert r["checks"]["root"]["title_found"] is True
    for name in ("health", "root", "version", "api"):
        assert r["checks"][name]["status"] == 200 and r["checks"][name]["latency_ms"] > 0
    assert r["checks"]["api"]["host_header"] == f"mlflow-service.{mlflows}.svc.cluster.local:5000"
    c = probe(lab, tmp_path, check=True, namespace=mlflows)
    assert c["healthy"] is True and c["changed"] is False


def test_host_restricted_server_gives_invalid_host(lab, mlflows, tmp_path):
    r = healthy_eventually(lab, tmp_path, namespace=mlflows, service="strict-service")
    assert r["healthy"] is False and not r.get("failed")
    f = next(f for f in r["findings"] if f["code"] == "INVALID_HOST")
    assert f["evidence"]["status"] == 403
    assert f["evidence"]["host_header"] == f"strict-service.{mlflows}.svc.cluster.local:5000"
    assert r["checks"]["health"]["ok"] is True  # /health is exempt from the Host check


def test_static_prefix_root_not_found_health_under_prefix(lab, mlflows, tmp_path):
    r = healthy_eventually(lab, tmp_path, namespace=mlflows, service="prefixed-service")
    assert r["healthy"] is False and not r.get("failed")
    assert "ROOT_NOT_FOUND" in codes(r)
    assert r["health_path"] == "/static/health" and r["static_prefix"] == "/static"
    assert r["checks"]["root"]["status"] == 404
    root = next(f for f in r["findings"] if f["code"] == "ROOT_NOT_FOUND")
    assert root["evidence"]["ui_path"] == "/static/" and root["evidence"]["ui_title_found"] is True


def test_kube_api_429_and_503_are_retried(lab, mlflows, tmp_path):
    lab.faults.add(kind="http_status", status=429, count=2, path_regex=f"/namespaces/{mlflows}/services/mlflow-service")
    lab.faults.add(kind="http_status", status=503, count=2, path_regex=f"/namespaces/{mlflows}/pods/[^/]+/portforward")
    mark = lab.log_mark()
    try:
        r = probe(lab, tmp_path, namespace=mlflows)
    finally:
        lab.faults.clear()
    assert r["healthy"] is True, r
    sent = [(e["status"], e["path"]) for e in lab.requests_since(mark, namespace=mlflows)]
    assert sum(1 for st, p in sent if st == 429 and "/services/mlflow-service" in p) == 2, sent
    assert sum(1 for st, p in sent if st == 503 and p.endswith("/portforward")) == 2, sent
    # REST 429s are retried by the kubernetes client (urllib3 honours Retry-After); tunnel 503s by the probe
    retried = next(f for f in r["findings"] if f["code"] == "RETRIED")
    reasons = [e["reason"] for e in retried["evidence"]["retries"]]
    assert len(reasons) == 2 and all("503" in x for x in reasons)


def test_retries_exhausted_is_a_tunnel_error_result(lab, mlflows, tmp_path):
    lab.faults.add(kind="http_status", status=503, count=None, path_regex=f"/namespaces/{mlflows}/pods/[^/]+/portforward")
    try:
        r = probe(lab, tmp_path, namespace=mlflows, retries=1)
    finally:
        lab.faults.clear()
    assert r["healthy"] is False and not r.get("failed")
    assert "TUNNEL_ERROR" in codes(r)


def test_no_ready_pod(lab, mlflows, tmp_path):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty-service"},
           "spec": {"selector": {"app": "nothing-here"}, "ports": [{"port": 5000, "targetPort": 5000}]}}
    assert lab.request("POST", f"/api/v1/namespaces/{mlflows}/services", json=svc).status_code == 201
    base = {"namespace": mlflows, "service": "empty-service", "timeout": 10, "deadline": 90}
    r, r2 = run_module_tasks(lab, tmp_path, "asgard.mlflow.mlflow_probe", [
        {**base, "retries": 1}, {**base, "retries": 0, "fail_on_unhealthy": True}])
    assert r["healthy"] is False and not r.get("failed")
    assert codes(r)[0] == "NO_READY_POD"
    assert r2["failed"] is True and "NO_READY_POD" in r2["msg"]


BAD_INPUT = [
    ({"namespace": "no-such-ns-x1"}, "namespace 'no-such-ns-x1' does not exist"),
    ({"service": "missing-svc"}, "service 'missing-svc' not found in namespace"),
    ({"remote_port": 70000}, "remote_port: 70000 is out of range"),
    ({"namespace": "Bad_Name"}, "namespace: 'Bad_Name' is not a valid namespace name"),
]


def test_bad_input_fails_clearly(lab, mlflows, tmp_path):
    """The four bad inputs as four tasks of one playbook run (each its own module call and result)."""
    calls = [{"namespace": mlflows, "timeout": 10, "deadline": 90, **args} for args, _needle in BAD_INPUT]
    results = run_module_tasks(lab, tmp_path, "asgard.mlflow.mlflow_probe", calls)
    for (args, needle), r in zip(BAD_INPUT, results, strict=True):
        assert r["failed"] is True, (args, r)
        assert needle in r["msg"], (args, r["msg"])


# ------------------------------------------------------------------ an already-resolved target (option resolved)


def _by_path(entries: list[dict], ns: str) -> list[str]:
    return [f"{e['method']} {e['path'].replace(ns, '{ns}')}" for e in entries if f"/namespaces/{ns}/" in e["path"]]


def test_resolved_target_reads_neither_service_nor_pods(lab, mlflows, tmp_path):
    first = healthy_eventually(lab, tmp_path, namespace=mlflows)
    assert first["healthy"] is True, first
    res = first["resolved"]
    assert res["pod"] == first["pod"] and res["port"] == 5000 and res["service_port"] == 5000
    assert res["static_prefix"] == "" and res["uid"] and res["pod_ip"]
    mark = lab.log_mark()
    r = probe(lab, tmp_path, namespace=mlflows, resolved=res)
    paths = _by_path(lab.requests_since(mark), mlflows)
    assert r["healthy"] is True, r
    assert r["pod"] == res["pod"] and r["api_requests"] == 1 and r["tunnels_opened"] == 1
    assert paths == [f"GET /api/v1/namespaces/{{ns}}/pods/{res['pod']}/portforward"], paths
    assert r["checks"]["api"]["host_header"] == f"mlflow-service.{mlflows}.svc.cluster.local:5000"


def test_resolved_pod_that_is_gone_falls_back_to_the_service(lab, mlflows, tmp_path):
    mark = lab.log_mark()
    r = probe(lab, tmp_path, namespace=mlflows, resolved={"pod": "good-gone-0", "port": 5000})
    paths = _by_path(lab.requests_since(mark), mlflows)
    assert r["healthy"] is True, r
    assert r["pods_seen"][0] == "good-gone-0" and r["pod"].startswith("good-")
    assert "POD_REPLACED" in codes(r)
    assert "GET /api/v1/namespaces/{ns}/services/mlflow-service" in paths


def test_fail_on_unhealthy_message_names_codes_and_messages(lab, mlflows, tmp_path):
    r = probe(lab, tmp_path, namespace=mlflows, service="prefixed-service", fail_on_unhealthy=True)
    assert r["failed"] is True
    assert r["msg"].startswith("MLflow is unhealthy (pod prefixed-")
    assert "ROOT_NOT_FOUND: GET / answers 404: the UI is served under the static prefix /static/" in r["msg"]


def test_expired_token_says_the_credentials_were_rejected(lab, mlflows, tmp_path):
    import yaml

    cfg = yaml.safe_load(lab.kubeconfig.read_text())
    cfg["users"][0]["user"]["token"] = "expired-or-revoked-token"
    kc = tmp_path / "expired-kubeconfig"
    kc.write_text(yaml.safe_dump(cfg))
    r = probe(lab, tmp_path, namespace=mlflows, kubeconfig=str(kc), retries=0)
    # the first request with the credentials is kubernetes.core's discovery (the task fails), or with a warm
    # discovery cache the probe's read of the Service (a KUBE_API_ERROR finding): worded the same either way
    texts = [r.get("msg", "")] + [f["message"] for f in r.get("findings", []) if f["code"] == "KUBE_API_ERROR"]
    said = " ".join(texts)
    assert r.get("failed") or r.get("healthy") is False, r
    assert "rejected the credentials (HTTP 401 Unauthorized)" in said and "refresh the kubeconfig" in said, r
    assert "not allowed" not in said
    assert "expired-or-revoked-token" not in json.dumps(r)


def test_pod_deleted_during_probe_recovers(lab, mlflows, tmp_path):
    """Last in this module: it deletes good's pod (the Deployment starts another; no later test uses it)."""
    old = wait_ready(lab, mlflows, "good")
    try:
        # the pod disappears under the probe: the first tunnel is refused as the kubelet does for a gone pod
        lab.faults.add(kind="http_status", status=404, count=1,
                       path_regex=f"/namespaces/{mlflows}/pods/[^/]+/portforward")
        assert lab.request("DELETE", f"/api/v1/namespaces/{mlflows}/pods/{old}").status_code in (200, 202)
        r = probe(lab, tmp_path, namespace=mlflows, api_check=False, retries=10, deadline=120)
        assert r["healthy"] is True, r
        assert r["pod"] != old
        assert "RETRIED" in codes(r)
    finally:
        lab.faults.clear()
