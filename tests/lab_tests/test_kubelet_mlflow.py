"""A real MLflow Deployment in the lab: kubernetes.core wait, port-forward, logs, exec, probes, restarts,
Endpoints following readiness, rollout. One Deployment (ghcr.io/mlflow/mlflow:v3.17.2, 1 worker, jobs off)
is shared by the tests of this module, in order."""

from __future__ import annotations

import copy
import json
import time

import pytest
import requests
import yaml
from asgardlab.kubelet.testing import (
    apply,
    delete_namespace,
    get,
    http_over_socket,
    kubectl,
    make_namespace,
    manifest,
    playbook,
    pods,
    ready,
    tagged_processes,
    wait_for,
)

SEL = "app.kubernetes.io%2Fname%3Dmlflow"


@pytest.fixture(scope="module")
def mlflow_ns(lab, tmp_path_factory):
    ns = make_namespace(lab, "mlf")
    tmp = tmp_path_factory.mktemp("mlflow")
    (tmp / "deploy.yaml").write_text(yaml.safe_dump(manifest("mlflow-deployment.yaml")))
    t0 = time.monotonic()
    res = playbook(lab, tmp, """
        - name: apply and wait
          kubernetes.core.k8s:
            state: present
            namespace: "{{ ns }}"
            src: "{{ src }}"
            wait: true
            wait_timeout: 180
    """, {"ns": ns, "src": str(tmp / "deploy.yaml")})
    elapsed = time.monotonic() - t0
    print(f"\nMLflow Deployment applied and Ready (kubernetes.core wait) in {elapsed:.1f}s")
    yield {"ns": ns, "apply": res["apply and wait"], "elapsed": elapsed, "tmp": tmp}
    delete_namespace(lab, ns, wait=90)


def _pod(lab, ns) -> dict:
    ps = [p for p in pods(lab, ns, SEL) if not p["metadata"].get("deletionTimestamp")]
    assert len(ps) == 1, [p["metadata"]["name"] for p in ps]
    return ps[0]


def test_wait_true_returns_a_rolled_out_deployment(lab, mlflow_ns):
    dep = mlflow_ns["apply"]["result"]
    st = dep["status"]
    assert st["observedGeneration"] == dep["metadata"]["generation"]
    assert st["availableReplicas"] == st["replicas"] == 1 and "unavailableReplicas" not in st
    pod = _pod(lab, mlflow_ns["ns"])
    cs = pod["status"]["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and "running" in cs["state"]
    assert cs["containerID"].startswith("asgardlab://") and cs["imageID"]
    assert pod["status"]["podIP"].startswith("10.244.") and pod["spec"]["nodeName"] == "asgard-lab-node"
    assert pod["metadata"]["labels"]["pod-template-hash"]
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    # the processes really run MLflow 3.17.2 from the image's runtime
    procs = tagged_processes(cs["containerID"].split("://")[1])
    assert any("mlflow-3.17.2" in cmd and "uvicorn" in cmd for _, cmd in procs), procs


def test_portforward_health_and_ui(lab, k8s_client, mlflow_ns):
    from kubernetes import client
    from kubernetes.stream import portforward

    v1 = client.CoreV1Api(k8s_client)
    name = _pod(lab, mlflow_ns["ns"])["metadata"]["name"]
    for path, expect in (("/health", b"OK"), ("/", b"<title>MLflow</title>")):
        pf = portforward(v1.connect_get_namespaced_pod_portforward, name, mlflow_ns["ns"], ports="5000")
        data = http_over_socket(pf.socket(5000), f"GET {path} HTTP/1.1\r\nHost: localhost:5000\r\nConnection: close\r\n\r\n".encode())
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert expect in data
        assert pf.error(5000) is None


def test_logs_k8s_log_and_kubectl(lab, mlflow_ns):
    ns = mlflow_ns["ns"]
    res = playbook(lab, mlflow_ns["tmp"], """
        - name: log
          kubernetes.core.k8s_log:
            namespace: "{{ ns }}"
            kind: Deployment
            name: mlflow
            tail_lines: 50
    """, {"ns": ns})
    text = "\n".join(res["log"]["log_lines"])
    assert "Uvicorn running on http://0.0.0.0:5000" in text or "GET /health" in text, text[-2000:]
    name = _pod(lab, ns)["metadata"]["name"]
    out = kubectl(lab, "-n", ns, "logs", name, "--tail=3", "--timestamps").stdout.splitlines()
    assert len(out) == 3 and all(line[:4].isdigit() and "T" in line.split(" ")[0] for line in out), out
    full = kubectl(lab, "-n", ns, "logs", "deploy/mlflow").stdout
    assert "Uvicorn running on http://0.0.0.0:5000" in full
    assert len(kubectl(lab, "-n", ns, "logs", name, "--limit-bytes=10").stdout) == 10
    assert "Uvicorn running" in kubectl(lab, "-n", ns, "logs", name, "--since=1h").stdout
    # follow: new lines arrive while the stream is open
    ip = _pod(lab, ns)["status"]["podIP"]
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}/log?follow=true&tailLines=0", stream=True, timeout=20)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    requests.get(f"http://{ip}:5000/version?from-follow-test=1", timeout=10)
    seen = b""
    for chunk in r.iter_content(chunk_size=None):
        seen += chunk
        if b"from-follow-test" in seen:
            break
    r.close()
    assert b"GET /version?from-follow-test=1" in seen


def test_exec_python_with_k8s_exec(lab, mlflow_ns):
    ns = mlflow_ns["ns"]
    name = _pod(lab, ns)["metadata"]["name"]
    res = playbook(lab, mlflow_ns["tmp"], """
        - name: exec ok
          kubernetes.core.k8s_exec:
            namespace: "{{ ns }}"
            pod: "{{ pod }}"
            command: python -c "import mlflow, os; print(mlflow.__version__, os.environ['MLFLOW_SERVER_ENABLE_JOB_EXECUTION'], os.path.exists('/mlflow/mlflow.db'))"
        - name: exec fails
          kubernetes.core.k8s_exec:
            namespace: "{{ ns }}"
            pod: "{{ pod }}"
            command: python -c "import sys; sys.stderr.write('bad'); sys.exit(4)"
          ignore_errors: true
    """, {"ns": ns, "pod": name})
    assert res["exec ok"]["stdout"].strip() == "3.17.2 false True", res["exec ok"]
    assert res["exec ok"]["rc"] == 0
    assert res["exec fails"]["rc"] == 4 and "bad" in res["exec fails"]["stderr"]


def test_endpoints_follow_readiness(lab, mlflow_ns):
    ns = mlflow_ns["ns"]
    apply(lab, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow-svc"},
                    "spec": {"selector": {"app.kubernetes.io/name": "mlflow"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    pod = _pod(lab, ns)
    ip, name = pod["status"]["podIP"], pod["metadata"]["name"]

    def subsets():
        r = lab.request("GET", f"/api/v1/namespaces/{ns}/endpoints/mlflow-svc")
        return r.json().get("subsets") or [] if r.status_code == 200 else []

    ok = wait_for(lambda: [s for s in subsets() if [a["ip"] for a in s.get("addresses", [])] == [ip]], 10, "ready endpoint")
    assert ok[0]["ports"] == [{"name": "http", "port": 5000, "protocol": "TCP"}]  # named targetPort resolved
    slices = get(lab, f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dmlflow-svc")["items"]
    assert slices and slices[0]["endpoints"][0]["addresses"] == [ip] and slices[0]["endpoints"][0]["conditions"]["ready"] is True
    # the readiness probe now gets "connection refused": the pod leaves the ready addresses
    r = lab.request("POST", f"/lab/pods/{ns}/{name}/fault", json={"refusePorts": [5000]})
    assert r.status_code == 201, r.text
    try:
        wait_for(lambda: any(a["ip"] == ip for s in subsets() for a in s.get("notReadyAddresses", [])), 20, "not-ready endpoint")
        assert not any(s.get("addresses") for s in subsets())
        events = kubectl(lab, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}").stdout
        assert "Readiness probe failed" in events and "connection refused" in events
    finally:
        lab.request("DELETE", f"/lab/pods/{ns}/{name}/fault")
    wait_for(lambda: [s for s in subsets() if [a["ip"] for a in s.get("addresses", [])] == [ip]], 20, "ready again")


def test_kill_container_restarts_and_crashloopbackoff(lab, mlflow_ns):
    ns = mlflow_ns["ns"]
    pod = _pod(lab, ns)
    name = pod["metadata"]["name"]
    old_cid = pod["status"]["containerStatuses"][0]["containerID"]
    assert lab.request("POST", f"/lab/pods/{ns}/{name}/fault", json={"kill": True}).status_code == 201

    def cs():
        return get(lab, f"/api/v1/namespaces/{ns}/pods/{name}")["status"]["containerStatuses"][0]

    first = wait_for(lambda: (c := cs())["restartCount"] == 1 and c["ready"] and c, 60, "restart 1 ready")
    assert first["lastState"]["terminated"]["exitCode"] == 137 and first["lastState"]["terminated"]["reason"] == "Error"
    assert first["containerID"] != old_cid and not tagged_processes(old_cid.split("://")[1])
    # the previous container's log is still there
    prev = kubectl(lab, "-n", ns, "logs", name, "--previous").stdout
    assert "Uvicorn running" in prev
    # a second crash right after: back-off
    assert lab.request("POST", f"/lab/pods/{ns}/{name}/fault", json={"kill": "mlflow"}).status_code == 201
    crash = wait_for(lambda: (c := cs()).get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff" and c, 10, "CrashLoopBackOff")
    assert crash["restartCount"] == 1 and "back-off 10s" in crash["state"]["waiting"]["message"]
    table = kubectl(lab, "-n", ns, "get", "pod", name).stdout
    assert "CrashLoopBackOff" in table, table
    again = wait_for(lambda: (c := cs())["restartCount"] == 2 and c["ready"] and c, 60, "restart 2 ready")
    assert again["lastState"]["terminated"]["exitCode"] == 137
    events = kubectl(lab, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}").stdout
    assert "BackOff" in events and "Back-off restarting failed container mlflow" in events


def test_rollout_replaces_pods_and_no_orphans(lab, mlflow_ns):
    ns = mlflow_ns["ns"]
    old = _pod(lab, ns)
    old_cid = old["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    dep = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow")
    d = copy.deepcopy(manifest("mlflow-deployment.yaml"))
    d["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "ROLL", "value": "2"})
    apply(lab, ns, d)
    seen_both = wait_for(lambda: len([p for p in pods(lab, ns, SEL)]) == 2, 15, "surge pod")
    assert seen_both
    new_dep = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow")
    assert new_dep["metadata"]["generation"] == dep["metadata"]["generation"] + 1
    # observedGeneration lags until the rollout is done
    assert new_dep["status"].get("observedGeneration") != new_dep["metadata"]["generation"]
    kubectl(lab, "-n", ns, "rollout", "status", "deploy/mlflow", "--timeout=120s", timeout=150)
    wait_for(lambda: [p["metadata"]["name"] for p in pods(lab, ns, SEL)] != [old["metadata"]["name"]] and len(pods(lab, ns, SEL)) == 1, 30, "old pod gone")
    new = _pod(lab, ns)
    assert ready(new) and new["metadata"]["name"] != old["metadata"]["name"]
    assert {"name": "ROLL", "value": "2"} in new["spec"]["containers"][0]["env"]
    rss = get(lab, f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
    revs = sorted(int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for r in rss)
    assert revs == [1, 2]
    assert not tagged_processes(old_cid), "processes of the replaced pod survived"
    events = kubectl(lab, "-n", ns, "get", "events").stdout
    assert "Scaled up replica set" in events and "Scaled down replica set" in events and "Stopping container mlflow" in events
    # the rollback (kubectl rollout undo) goes back to revision 1's template as revision 3
    kubectl(lab, "-n", ns, "rollout", "undo", "deploy/mlflow")
    kubectl(lab, "-n", ns, "rollout", "status", "deploy/mlflow", "--timeout=120s", timeout=150)
    dep = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert all(e["name"] != "ROLL" for e in dep["spec"]["template"]["spec"]["containers"][0]["env"])
    print("\nRSS per MLflow pod:", json.dumps(_rss(lab, ns)))


def _rss(lab, ns) -> dict:
    out = {}
    for p in pods(lab, ns, SEL):
        for c in p["status"].get("containerStatuses") or []:
            cid = (c.get("containerID") or "").split("://")[-1]
            total = 0
            for pid, _ in tagged_processes(cid) if cid else []:
                try:
                    for line in open(f"/proc/{pid}/status"):
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                except OSError:
                    pass
            out[p["metadata"]["name"]] = f"{total / 1024:.0f} MiB"
    return out
