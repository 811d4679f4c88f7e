"""Controllers and kubelet with cheap host-image containers: Jobs, Deployment strategies and history,
rollback, progress deadline, Endpoints, PVCs, container spec (env, volumes, uid), probes, termination."""

from __future__ import annotations

import base64
import time

import pytest
from asgardlab.kubelet.testing import (
    apply,
    delete_namespace,
    get,
    kubectl,
    make_namespace,
    playbook,
    pods,
    ready,
    tagged_processes,
    wait_for,
)

BB = "busybox:1.36"


@pytest.fixture
def ns(lab):
    name = make_namespace(lab, "ctl")
    yield name
    delete_namespace(lab, name, wait=60)


def deployment(name: str, cmd: str, replicas: int = 1, **spec) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, **spec,
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "c", "image": BB, "command": ["/bin/sh", "-c", cmd],
                                     "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}}},
    }


def test_job_runs_to_completion_and_failing_job_hits_backoff_limit(lab, ns):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok"},
           "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": "python:3.11-slim", "command": ["python3", "-c", "print('migrated', 6 * 7)"]}]}}}}
    apply(lab, ns, job)
    bad = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"},
           "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": BB, "command": ["sh", "-c", "echo boom >&2; exit 3"]}]}}}}
    apply(lab, ns, bad)
    kubectl(lab, "-n", ns, "wait", "--for=condition=complete", "job/ok", "--timeout=60s", timeout=70)
    st = get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs/ok")["status"]
    assert st["succeeded"] == 1 and "active" not in st and st["completionTime"]
    assert "migrated 42" in kubectl(lab, "-n", ns, "logs", "job/ok").stdout
    pod = pods(lab, ns, "job-name%3Dok")[0]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    kubectl(lab, "-n", ns, "wait", "--for=condition=failed", "job/bad", "--timeout=60s", timeout=70)
    st = get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs/bad")["status"]
    failed = [c for c in st["conditions"] if c["type"] == "Failed"][0]
    assert st["failed"] == 1 and failed["reason"] == "BackoffLimitExceeded"
    term = pods(lab, ns, "job-name%3Dbad")[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"


def test_recreate_strategy_never_overlaps(lab, ns):
    d = deployment("rec", "sleep 3600", replicas=2, strategy={"type": "Recreate"})
    apply(lab, ns, d)
    kubectl(lab, "-n", ns, "rollout", "status", "deploy/rec", "--timeout=60s", timeout=70)
    old = {p["metadata"]["name"] for p in pods(lab, ns, "app%3Drec")}
    d["spec"]["template"]["metadata"]["annotations"] = {"rev": "2"}
    apply(lab, ns, d)
    deadline = time.monotonic() + 60
    done = False
    while time.monotonic() < deadline and not done:
        names = {p["metadata"]["name"] for p in pods(lab, ns, "app%3Drec")}
        assert not (names & old and names - old), f"Recreate ran old and new pods together: {names}"
        done = bool(names) and not names & old and all(ready(p) for p in pods(lab, ns, "app%3Drec")) and len(names) == 2
        time.sleep(0.2)
    assert done


def test_rollback_history_limit_and_k8s_rollback(lab, ns, tmp_path):
    d = deployment("hist", "sleep 3600", revisionHistoryLimit=1,
                   strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}})
    for i in range(3):
        d["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": str(i)}]
        apply(lab, ns, d)
        kubectl(lab, "-n", ns, "rollout", "status", "deploy/hist", "--timeout=60s", timeout=70)
    rss = wait_for(lambda: len(r := get(lab, f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]) == 2 and r, 20, "history trimmed")
    assert sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for r in rss) == ["2", "3"]
    playbook(lab, tmp_path, """
        - name: rollback
          kubernetes.core.k8s_rollback:
            api_version: apps/v1
            kind: Deployment
            name: hist
            namespace: "{{ ns }}"
    """, {"ns": ns})
    kubectl(lab, "-n", ns, "rollout", "status", "deploy/hist", "--timeout=60s", timeout=70)
    dep = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/hist")
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "V", "value": "1"}]
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    p = [p for p in pods(lab, ns, "app%3Dhist") if not p["metadata"].get("deletionTimestamp")]
    assert kubectl(lab, "-n", ns, "exec", p[0]["metadata"]["name"], "--", "printenv", "V").stdout.strip() == "1"


def test_unknown_image_image_pull_backoff_and_progress_deadline(lab, ns):
    d = deployment("ghost", "true", progressDeadlineSeconds=3)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/example/nope:1.0"
    apply(lab, ns, d)
    res = kubectl(lab, "-n", ns, "rollout", "status", "deploy/ghost", "--timeout=60s", check=False, timeout=70)
    assert res.returncode != 0 and "exceeded its progress deadline" in res.stderr, res.stderr
    cond = {c["type"]: c for c in get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/ghost")["status"]["conditions"]}
    assert cond["Progressing"]["status"] == "False" and cond["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    assert cond["Available"]["status"] == "False"
    pod = pods(lab, ns, "app%3Dghost")[0]
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] in ("ErrImagePull", "ImagePullBackOff") and pod["status"]["phase"] == "Pending"
    events = kubectl(lab, "-n", ns, "describe", "pod", pod["metadata"]["name"]).stdout
    assert "Failed to pull image" in events


def test_undeclared_tag_of_a_known_image_does_not_run(lab, ns):
    """A registry has only the tags that were pushed: a pod naming another tag of a known repository gets
    ErrImagePull then ImagePullBackOff, with containerd's error in the container status (kubernetes/website
    content/en/docs/concepts/containers/images.md "ImagePullBackOff"; kubelet pkg/kubelet/images/image_manager.go
    reports the runtime's error as the ErrImagePull message). The lab declares its tags (docs/lab.md, Images)."""
    for name, image in (("bb", "busybox:2"), ("mlf", "ghcr.io/mlflow/mlflow:v9.9.9"), ("ok", BB)):
        apply(lab, ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}})
    wait_for(lambda: ready(get(lab, f"/api/v1/namespaces/{ns}/pods/ok")), 30, "a declared tag running")
    for name, ref in (("bb", "docker.io/library/busybox:2"), ("mlf", "ghcr.io/mlflow/mlflow:v9.9.9")):
        def pulling_error(n=name):
            # one read per poll: the status moves on to ImagePullBackOff between two reads
            state = (get(lab, f"/api/v1/namespaces/{ns}/pods/{n}")["status"].get("containerStatuses") or [{}])[0].get("state", {})
            return state.get("waiting", {}).get("reason") == "ErrImagePull" and state["waiting"]
        waiting = wait_for(pulling_error, 60, f"{name}: ErrImagePull")
        assert waiting["message"] == (f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
                                      f'failed to resolve reference "{ref}": {ref}: not found')
        wait_for(lambda n=name: get(lab, f"/api/v1/namespaces/{ns}/pods/{n}")["status"]["containerStatuses"][0]["state"]
                 .get("waiting", {}).get("reason") == "ImagePullBackOff", 30, f"{name}: ImagePullBackOff")
        assert get(lab, f"/api/v1/namespaces/{ns}/pods/{name}")["status"]["phase"] == "Pending"


def test_endpoints_named_port_and_selector_matching_nothing(lab, ns):
    d = deployment("web", "python3 -m http.server 8080", replicas=2)
    d["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "web", "containerPort": 8080}]
    apply(lab, ns, d)
    apply(lab, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "web"}]}})
    apply(lab, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "none"},
                    "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80}]}})
    kubectl(lab, "-n", ns, "rollout", "status", "deploy/web", "--timeout=60s", timeout=70)

    def addrs():
        r = lab.request("GET", f"/api/v1/namespaces/{ns}/endpoints/web")
        subs = r.json().get("subsets") or [] if r.status_code == 200 else []
        return sorted(a["ip"] for s in subs for a in s.get("addresses", [])) if subs and subs[0]["ports"][0]["port"] == 8080 else []
    ips = sorted(p["status"]["podIP"] for p in pods(lab, ns, "app%3Dweb"))
    assert wait_for(lambda: addrs() == ips and ips, 15, "endpoints of both pods")
    none = wait_for(lambda: (r := lab.request("GET", f"/api/v1/namespaces/{ns}/endpoints/none")).status_code == 200 and r.json(), 10, "empty endpoints")
    assert "subsets" not in none or not none["subsets"]
    # pods reach each other by pod IP, and the host sees them too
    client = pods(lab, ns, "app%3Dweb")[0]["metadata"]["name"]
    out = kubectl(lab, "-n", ns, "exec", client, "--", "python3", "-c",
                  f"import urllib.request;print(urllib.request.urlopen('http://{ips[-1]}:8080/').status)").stdout
    assert out.strip() == "200"
    kubectl(lab, "-n", ns, "scale", "deploy/web", "--replicas=1")
    assert wait_for(lambda: len(addrs()) == 1, 20, "endpoints after scale down")


def test_container_spec_env_volumes_uid_and_pvc_survives(lab, ns):
    apply(lab, ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                    "data": {"password": base64.b64encode(b"s3cr3t").decode()}})
    apply(lab, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                    "data": {"LEVEL": "debug", "app.ini": "[x]\nk=v\n"}})
    apply(lab, ns, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    script = "echo $(GREETING) ${GREETING} $MY_NS; id -u; id -g; pwd; cat /mnt/asgardlab/app/app.ini; cat /data/count 2>/dev/null; " \
             "echo run >> /data/count; sleep 3600"
    d = deployment("spec", script)
    podspec = d["spec"]["template"]["spec"]
    podspec["securityContext"] = {"runAsUser": 1234, "runAsGroup": 2345}
    podspec["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "app.ini", "path": "app.ini"}]}},
                          {"name": "sec", "secret": {"secretName": "db"}},
                          {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    c = podspec["containers"][0]
    c["workingDir"] = "/data/wd"
    c["env"] = [{"name": "GREETING", "value": "hi"},
                {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "URI", "value": "postgresql://u:$(PW)@10.244.0.1/db"}]
    c["envFrom"] = [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}]
    c["volumeMounts"] = [{"name": "cfg", "mountPath": "/mnt/asgardlab/app"}, {"name": "sec", "mountPath": "/mnt/asgardlab/secret", "readOnly": True},
                         {"name": "data", "mountPath": "/data"}]
    apply(lab, ns, d)
    kubectl(lab, "-n", ns, "rollout", "status", "deploy/spec", "--timeout=60s", timeout=70)
    assert get(lab, f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data")["status"]["phase"] == "Bound"
    name = pods(lab, ns, "app%3Dspec")[0]["metadata"]["name"]
    log = wait_for(lambda: (t := kubectl(lab, "-n", ns, "logs", name).stdout).count("\n") >= 6 and t, 10, "log lines")
    lines = log.splitlines()
    assert lines[0] == f"hi hi {ns}" and lines[1:4] == ["1234", "2345", "/data/wd"] and "k=v" in log
    env = kubectl(lab, "-n", ns, "exec", name, "--", "env").stdout
    assert "PW=s3cr3t" in env and "URI=postgresql://u:s3cr3t@10.244.0.1/db" in env and "CFG_LEVEL=debug" in env
    assert kubectl(lab, "-n", ns, "exec", name, "--", "cat", "/mnt/asgardlab/secret/password").stdout == "s3cr3t"
    wr = kubectl(lab, "-n", ns, "exec", name, "--", "sh", "-c", "echo x > /mnt/asgardlab/secret/new", check=False)
    assert wr.returncode != 0 and "Read-only file system" in wr.stderr
    # PVC data survives the pod's replacement
    kubectl(lab, "-n", ns, "delete", "pod", name)
    new = wait_for(lambda: [p for p in pods(lab, ns, "app%3Dspec") if p["metadata"]["name"] != name and ready(p)], 30, "replacement pod")
    log2 = wait_for(lambda: (t := kubectl(lab, "-n", ns, "logs", new[0]["metadata"]["name"]).stdout).count("\n") >= 7 and t, 10, "log lines")
    assert log2.splitlines()[-1] == "run"


def test_liveness_exec_restart_and_graceful_termination_kills_everything(lab, ns):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stubborn"},
           "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
               "name": "c", "image": BB,
               # ignores SIGTERM, and leaves a grandchild in its own session (as a daemonising server would)
               "command": ["python3", "-c", "import signal, subprocess, time\n"
                           "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                           "subprocess.Popen(['setsid', 'sleep', '7777'])\n"
                           "print('started', flush=True)\n"
                           "while True: time.sleep(1)\n"],
               "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -f /tmp/kill-me"]}, "periodSeconds": 1, "failureThreshold": 1},
           }]}}
    apply(lab, ns, pod)
    p = wait_for(lambda: (x := get(lab, f"/api/v1/namespaces/{ns}/pods/stubborn"))["status"].get("phase") == "Running" and x, 30, "running")
    cid = p["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    wait_for(lambda: any("sleep 7777" in cmd for _, cmd in tagged_processes(cid)), 10, "grandchild")
    kubectl(lab, "-n", ns, "exec", "stubborn", "--", "touch", "/tmp/kill-me")
    cs = wait_for(lambda: (x := get(lab, f"/api/v1/namespaces/{ns}/pods/stubborn")["status"]["containerStatuses"][0])["restartCount"] >= 1 and x,
                  30, "liveness restart")
    assert cs["lastState"]["terminated"]["exitCode"] == 137  # SIGTERM ignored: SIGKILL after the grace period
    assert not tagged_processes(cid), "the old container's processes survived the restart"
    # the restarted container has a fresh /tmp (a new writable layer): the marker is gone, liveness passes
    wait_for(lambda: kubectl(lab, "-n", ns, "exec", "stubborn", "--", "test", "!", "-e", "/tmp/kill-me", check=False).returncode == 0,
             20, "fresh /tmp in the restarted container")
    events = kubectl(lab, "-n", ns, "get", "events", "--field-selector", "involvedObject.name=stubborn").stdout
    assert "Liveness probe failed" in events and "failed liveness probe, will be restarted" in events
    cid2 = get(lab, f"/api/v1/namespaces/{ns}/pods/stubborn")["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    t0 = time.monotonic()
    kubectl(lab, "-n", ns, "delete", "pod", "stubborn", "--wait=true", timeout=30)
    took = time.monotonic() - t0
    assert 1.5 < took < 10, took
    assert not tagged_processes(cid2)


def test_namespace_termination_removes_pods_gracefully(lab):
    name = make_namespace(lab, "term")
    apply(lab, name, deployment("a", "sleep 3600", replicas=2))
    kubectl(lab, "-n", name, "rollout", "status", "deploy/a", "--timeout=60s", timeout=70)
    cids = [p["status"]["containerStatuses"][0]["containerID"].split("://")[1] for p in pods(lab, name)]
    r = lab.request("DELETE", f"/api/v1/namespaces/{name}")
    assert r.status_code == 200 and r.json()["status"]["phase"] == "Terminating"
    delete_namespace(lab, name, wait=30)
    assert all(not tagged_processes(c) for c in cids)
