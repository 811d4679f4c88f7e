"""The seed incident's MLflow failure modes, reproduced with real MLflow processes in the lab."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from asgardlab.kubelet.testing import apply, delete_namespace, get, kubectl, make_namespace, tagged_processes, wait_for

IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"


def mlflow_pod(name: str, args: list[str], probe_path: str | None = "/health", **spec) -> dict:
    c = {
        "name": "mlflow",
        "image": IMAGE,
        "command": ["mlflow", "server"],
        "args": args,
        "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}],
        "ports": [{"name": "http", "containerPort": 5000}],
    }
    if probe_path:
        c["startupProbe"] = {"httpGet": {"path": probe_path, "port": "http"}, "periodSeconds": 1, "failureThreshold": 90}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"case": name}},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [c], **spec}}


@pytest.fixture(scope="module")
def cases(lab):
    ns = make_namespace(lab, "seed")
    # a Service named "mlflow" first: its service-link env MLFLOW_PORT=tcp://<ip>:5000 reaches later pods
    apply(lab, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow"},
                    "spec": {"selector": {"case": "nothing"}, "ports": [{"port": 5000, "targetPort": 5000}]}})
    base = ["--host=0.0.0.0", "--workers=1", "--backend-store-uri=sqlite:////tmp/mlflow-$(POD).db"]
    pods = [
        mlflow_pod("prefix", [*base, "--port=5000", "--static-prefix=/static"], "/static/health"),
        mlflow_pod("gunicorn", [*base, "--port=5000", "--gunicorn-opts=--timeout 2"], "/health"),
        mlflow_pod("noport", base, None),
        dict(mlflow_pod("v2", [*base, "--port=5000"], "/health"), spec={
            **mlflow_pod("v2", [], None)["spec"],
            "containers": [{**mlflow_pod("v2", [*base, "--port=5000"], "/health")["spec"]["containers"][0], "image": "ghcr.io/mlflow/mlflow:v2.22.5"}]}),
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "links"},
         "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}], "terminationGracePeriodSeconds": 1}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nolinks"},
         "spec": {"enableServiceLinks": False, "terminationGracePeriodSeconds": 1,
                  "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}},
    ]
    for p in pods:
        for c in p["spec"]["containers"]:
            c.setdefault("env", []).insert(0, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        apply(lab, ns, p)
    yield ns
    delete_namespace(lab, ns, wait=90)


def _pod(lab, ns, name):
    return get(lab, f"/api/v1/namespaces/{ns}/pods/{name}")


def _ready(lab, ns, name, timeout=150):
    return wait_for(lambda: (p := _pod(lab, ns, name))["status"].get("containerStatuses", [{}])[0].get("started") and p, timeout, f"{name} started")


def test_static_prefix_gives_404_on_root(lab, cases):
    ip = _ready(lab, cases, "prefix")["status"]["podIP"]
    # the host reaches the pod at its IP (pod network 10.244.0.0/16 on the asgardlab0 bridge)
    assert requests.get(f"http://{ip}:5000/", timeout=10).status_code == 404
    assert requests.get(f"http://{ip}:5000/health", timeout=10).status_code == 404
    r = requests.get(f"http://{ip}:5000/static/health", timeout=10)
    assert r.status_code == 200 and r.text == "OK"
    assert "<title>MLflow</title>" in requests.get(f"http://{ip}:5000/static/", timeout=10).text


def test_gunicorn_short_timeout_kills_worker_on_slow_upload(lab, cases):
    ip = _ready(lab, cases, "gunicorn")["status"]["podIP"]
    s = socket.create_connection((ip, 5000), timeout=10)
    body = b'{"name": "slow-upload-experiment"}' + b" " * 40
    s.sendall(b"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: localhost:5000\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode())
    answer = b""
    try:
        for i in range(0, len(body), 10):  # ~8 s for the body: beyond gunicorn's 2 s worker timeout
            s.sendall(body[i: i + 10])
            time.sleep(1)
        s.settimeout(10)
        answer = s.recv(4096)
    except OSError:  # the killed worker dropped the connection
        pass
    s.close()
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]

    def logged():
        return "[CRITICAL] WORKER TIMEOUT" in kubectl(lab, "-n", cases, "logs", "gunicorn").stdout
    wait_for(logged, 20, "WORKER TIMEOUT in the log")
    assert "Booting worker" in kubectl(lab, "-n", cases, "logs", "gunicorn").stdout


def test_service_named_mlflow_breaks_server_without_port(lab, cases):
    def crashed():
        p = _pod(lab, cases, "noport")
        cs = (p["status"].get("containerStatuses") or [{}])[0]
        return cs.get("lastState", {}).get("terminated") and cs
    cs = wait_for(crashed, 90, "noport to crash")
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert cs["restartCount"] >= 1 or cs["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
    logs = kubectl(lab, "-n", cases, "logs", "noport", "--previous" if cs["restartCount"] >= 1 and "running" in cs["state"] else "--tail=-1").stdout
    assert "Invalid value for '--port'" in logs and "tcp://" in logs, logs[-1500:]
    svc_ip = get(lab, f"/api/v1/namespaces/{cases}/services/mlflow")["spec"]["clusterIP"]
    env = kubectl(lab, "-n", cases, "exec", "links", "--", "env").stdout
    assert f"MLFLOW_PORT=tcp://{svc_ip}:5000" in env and f"MLFLOW_SERVICE_HOST={svc_ip}" in env
    assert "MLFLOW_PORT_5000_TCP_ADDR=" in env
    assert "MLFLOW_PORT" not in kubectl(lab, "-n", cases, "exec", "nolinks", "--", "env").stdout


def test_mlflow_2_runtime_serves_and_leaves_no_gunicorn_behind(lab, cases):
    pod = _ready(lab, cases, "v2")
    ip = pod["status"]["podIP"]
    assert requests.get(f"http://{ip}:5000/version", timeout=10).text == "2.22.5"
    assert requests.get(f"http://{ip}:5000/health", timeout=10).status_code == 200
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    procs = tagged_processes(cid)
    assert any("gunicorn" in cmd for _, cmd in procs) and any("mlflow-2.22.5" in cmd for _, cmd in procs), procs
    # MLflow 2.x orphans gunicorn on SIGTERM; the kubelet must still leave nothing behind
    kubectl(lab, "-n", cases, "delete", "pod", "v2", "--wait=true", timeout=60)
    assert not tagged_processes(cid)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{ip}:5000/health", timeout=3)
