"""Containers behave like containers: the command is PID 1 of its own PID namespace, and pods stop as the
kubelet stops them (preStop hook, SIGTERM to PID 1 only, SIGKILL when the grace period is over).

Kubernetes documentation (kubernetes/website):
- content/en/docs/concepts/workloads/pods/pod-lifecycle.md, "Termination of Pods": the kubelet runs the preStop
  hook, then "triggers the container runtime to send a TERM signal to process 1 inside each container"; when
  the grace period expires "the container runtime sends SIGKILL to any processes still running in any container
  in the Pod"; default grace period 30 s; a preStop hook that overruns gets "a small, one-off grace period
  extension of 2 seconds".
- content/en/docs/concepts/containers/container-lifecycle-hooks.md: PreStop "must complete before the TERM
  signal to stop the container can be sent"; a failing hook gives a `FailedPreStopHook` event.
- content/en/docs/tasks/configure-pod-container/share-process-namespace.md: without process namespace sharing
  each container has its own PID namespace and its command is PID 1 ("container processes no longer have
  PID 1" only when sharing is enabled).
- Linux pid_namespaces(7): the init of a PID namespace only gets signals it has a handler for (SIGKILL and
  SIGSTOP from an ancestor namespace excepted), so a PID 1 without a SIGTERM handler ignores SIGTERM.
"""

from __future__ import annotations

import datetime
import time

import pytest
from asgardlab.kubelet.testing import apply, delete_namespace, get, kubectl, make_namespace, tagged_processes, wait_for

BB = "busybox:1.36"
# a PID 1 that handles SIGTERM: says so on stdout (with the pid it sees) and exits 0
HANDLER = ("import os, signal, sys, time\n"
           "def term(*_):\n"
           "    print('TERM received by pid', os.getpid(), flush=True)\n"
           "    sys.exit(0)\n"
           "signal.signal(signal.SIGTERM, term)\n"
           "print('up', flush=True)\n"
           "while True: time.sleep(1)\n")


@pytest.fixture
def ns(lab):
    name = make_namespace(lab, "term")
    yield name
    delete_namespace(lab, name, wait=90)


def pod(name: str, containers: list[dict], grace: int | None = None, **spec) -> dict:
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers, **spec}}


def running(lab, ns: str, name: str) -> dict:
    return wait_for(lambda: (p := get(lab, f"/api/v1/namespaces/{ns}/pods/{name}"))["status"].get("phase") == "Running"
                    and all(c.get("started") for c in p["status"]["containerStatuses"]) and p, 60, f"pod {name} running")


def cid(p: dict, i: int = 0) -> str:
    return p["status"]["containerStatuses"][i]["containerID"].split("://")[1]


def gone(lab, ns: str, name: str) -> bool:
    return lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}").status_code == 404


def test_container_command_is_pid_1_with_its_own_proc(lab, ns):
    """share-process-namespace.md: without shareProcessNamespace each container has its own PID namespace and
    its command is PID 1; /proc inside shows only the container's processes; `kubectl exec` joins it."""
    apply(lab, ns, pod("p", [{"name": "c", "image": BB, "command": ["sleep", "3600"]}], grace=1))
    p = running(lab, ns, "p")
    out = kubectl(lab, "-n", ns, "exec", "p", "--", "sh", "-c",
                  "tr '\\0' ' ' </proc/1/cmdline; echo; echo self=$$; ls /proc | grep -cE '^[0-9]+$'").stdout.splitlines()
    assert out[0].strip() == "sleep 3600", out
    assert 1 < int(out[1].split("=")[1]) < 20, out  # the exec'd shell is in the container's PID namespace
    assert int(out[2]) < 10, out  # sleep, the shell, ls, grep: not the host's processes
    host = [pid for pid, cmd in tagged_processes(cid(p)) if cmd.strip() == "sleep 3600"]
    assert len(host) == 1
    with open(f"/proc/{host[0]}/status") as fh:
        nspid = next(line for line in fh if line.startswith("NSpid:")).split()
    assert nspid[-1] == "1" and nspid[1] != "1", nspid  # a host pid, and 1 in its own namespace


def test_sigterm_goes_to_pid_1_only_and_is_ignored_without_a_handler(lab, ns):
    """pod-lifecycle.md "Termination of Pods": TERM to process 1 of the container, KILL when the grace period
    ends. A liveness failure stops the container the same way (container-lifecycle-hooks.md). Three
    containers: `sleep` as PID 1 (no handler: SIGTERM ignored, killed: 137), a Python PID 1 with a handler
    (exits 0 on TERM), and the same Python under `sh -c '...; echo'` (the shell is PID 1 and ignores TERM;
    its child is never told: 137, no "TERM received" in its log)."""
    live = {"exec": {"command": ["sh", "-c", "test ! -f /tmp/stop"]}, "periodSeconds": 1, "failureThreshold": 1}
    cs = [
        {"name": "plain", "image": BB, "command": ["sleep", "3600"], "livenessProbe": live},
        {"name": "handler", "image": BB, "command": ["python3", "-c", HANDLER], "livenessProbe": live},
        {"name": "wrapped", "image": BB, "command": ["/bin/sh", "-c", f"python3 -c \"{HANDLER}\"; echo after"], "livenessProbe": live},
    ]
    apply(lab, ns, pod("p", cs, grace=3))
    running(lab, ns, "p")
    for c in ("plain", "handler", "wrapped"):
        kubectl(lab, "-n", ns, "exec", "p", "-c", c, "--", "touch", "/tmp/stop")

    def restarted():
        st = {s["name"]: s for s in get(lab, f"/api/v1/namespaces/{ns}/pods/p")["status"]["containerStatuses"]}
        return all(s["restartCount"] >= 1 for s in st.values()) and st

    st = wait_for(restarted, 60, "all three containers restarted by the liveness probe")
    assert st["plain"]["lastState"]["terminated"]["exitCode"] == 137
    assert st["handler"]["lastState"]["terminated"]["exitCode"] == 0
    assert st["wrapped"]["lastState"]["terminated"]["exitCode"] == 137
    assert "TERM received by pid 1" in kubectl(lab, "-n", ns, "logs", "p", "-c", "handler", "--previous").stdout
    wrapped_log = kubectl(lab, "-n", ns, "logs", "p", "-c", "wrapped", "--previous").stdout
    assert "up" in wrapped_log and "TERM received" not in wrapped_log and "after" not in wrapped_log


def test_pod_stays_terminating_for_the_grace_period_when_pid_1_ignores_sigterm(lab, ns):
    """pod-lifecycle.md "Termination of Pods": the pod is Terminating until its containers are gone; a
    container that ignores TERM is killed only when the grace period is over, one that handles it goes at once.
    Both pods are deleted together; the one with a handler has the longer grace period (30 s, the default)."""
    apply(lab, ns, pod("stuck", [{"name": "c", "image": BB, "command": ["sleep", "3600"]}], grace=6))
    apply(lab, ns, pod("polite", [{"name": "c", "image": BB, "command": ["python3", "-c", HANDLER]}]))
    stuck, polite = running(lab, ns, "stuck"), running(lab, ns, "polite")
    # started is not yet handling: python prints "up" after it installed its handler (on a loaded machine the TERM
    # could otherwise come first, and a PID 1 without a handler ignores it for the whole 30 s)
    wait_for(lambda: "up" in kubectl(lab, "-n", ns, "logs", "polite").stdout, 30, "polite's SIGTERM handler installed")
    t0 = time.monotonic()
    kubectl(lab, "-n", ns, "delete", "pod", "stuck", "polite", "--wait=false")
    wait_for(lambda: gone(lab, ns, "polite"), 20, "the pod whose PID 1 handles SIGTERM to go")
    p = get(lab, f"/api/v1/namespaces/{ns}/pods/stuck")
    assert p["metadata"]["deletionTimestamp"] and p["metadata"]["deletionGracePeriodSeconds"] == 6
    assert "Terminating" in kubectl(lab, "-n", ns, "get", "pod", "stuck").stdout
    assert tagged_processes(cid(stuck)), "SIGTERM stopped a PID 1 that has no handler"
    wait_for(lambda: gone(lab, ns, "stuck"), 30, "the pod that ignores SIGTERM to go")
    assert time.monotonic() - t0 >= 5.5  # held for its whole grace period (a lower bound: a slow machine only adds)
    assert not tagged_processes(cid(stuck)) and not tagged_processes(cid(polite))
    events = kubectl(lab, "-n", ns, "get", "events", "--field-selector", "involvedObject.name=stuck").stdout
    assert "Stopping container c" in events


def test_force_delete_cuts_a_running_grace_period(lab, ns):
    """pod-lifecycle.md "Forced Pod termination": `--grace-period=0 --force` removes the pod at once, and the
    kubelet kills its containers with a short grace period (kubelet pod_workers: at least 1 s; kuberuntime
    killContainer: at least 2 s) even while a longer one is running."""
    apply(lab, ns, pod("p", [{"name": "c", "image": BB, "command": ["sleep", "3600"]}], grace=120))
    c = cid(running(lab, ns, "p"))
    kubectl(lab, "-n", ns, "delete", "pod", "p", "--wait=false")
    wait_for(lambda: "Stopping container c" in kubectl(lab, "-n", ns, "get", "events").stdout, 10, "Killing event")
    assert tagged_processes(c)
    kubectl(lab, "-n", ns, "delete", "pod", "p", "--grace-period=0", "--force")
    assert gone(lab, ns, "p")
    wait_for(lambda: not tagged_processes(c), 20, "the force-deleted pod's processes to be killed (not 120 s later)")


def test_prestop_exec_runs_before_sigterm_and_failures_are_events(lab, ns, tmp_path):
    """container-lifecycle-hooks.md: PreStop "must complete before the TERM signal to stop the container can be
    sent"; a failing hook gives a `FailedPreStopHook` event (message "PreStopHook failed": the kubelet does not
    record the hook's output "so that secrets won't leak"), and the container is stopped anyway."""
    tmp_path.chmod(0o777)
    log = tmp_path / "order.log"
    write = ("import os, signal, sys, time\n"
             "def term(*_):\n"
             "    open('/out/order.log', 'a').write(os.environ['NAME'] + ' term\\n')\n"
             "    sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, term)\n"
             "while True: time.sleep(1)\n")
    cs = [{"name": n, "image": BB, "command": ["python3", "-c", write], "env": [{"name": "NAME", "value": n}],
           "volumeMounts": [{"name": "out", "mountPath": "/out"}],
           "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", f"echo {n} prestop >> /out/order.log; exit {rc}"]}}}}
          for n, rc in (("good", 0), ("bad", 3))]
    apply(lab, ns, pod("p", cs, grace=20, volumes=[{"name": "out", "hostPath": {"path": str(tmp_path)}}]))
    p = running(lab, ns, "p")
    kubectl(lab, "-n", ns, "delete", "pod", "p", "--wait=true", timeout=40)
    lines = log.read_text().splitlines()
    for n in ("good", "bad"):
        assert lines.index(f"{n} prestop") < lines.index(f"{n} term"), lines
        assert not tagged_processes(cid(p, 0 if n == "good" else 1))
    events = [e for e in get(lab, f"/api/v1/namespaces/{ns}/events")["items"] if e["reason"] == "FailedPreStopHook"]
    assert [(e["involvedObject"]["fieldPath"], e["message"]) for e in events] == [("spec.containers{bad}", "PreStopHook failed")]


def _ts(value: str) -> float:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


def test_deletion_timestamp_is_when_the_grace_period_ends_and_only_shortens(lab, ns):
    """ObjectMeta API reference (kubernetes/website content/en/docs/reference/kubernetes-api/common-definitions/
    object-meta.md, deletionTimestamp): "RFC 3339 date and time at which this resource will be deleted ... Once
    the deletionTimestamp is set, this value may not be unset or be set further into the future, although it may
    be shortened"; deletionGracePeriodSeconds: "Number of seconds allowed for this object to gracefully terminate
    before it will be removed from the system. Only set when deletionTimestamp is also set. May only be shortened."
    The apiserver (k8s.io/apiserver registry/rest/delete.go BeforeDelete) sets now + the grace period; a second
    delete with a shorter grace period moves both earlier, a longer one changes nothing."""
    apply(lab, ns, pod("p", [{"name": "c", "image": BB, "command": ["sleep", "3600"]}], grace=60))
    running(lab, ns, "p")
    t0 = time.time()
    kubectl(lab, "-n", ns, "delete", "pod", "p", "--wait=false")
    md = get(lab, f"/api/v1/namespaces/{ns}/pods/p")["metadata"]
    assert md["deletionGracePeriodSeconds"] == 60
    assert t0 + 60 - 2 <= _ts(md["deletionTimestamp"]) <= time.time() + 60 + 1, md["deletionTimestamp"]
    first = md["deletionTimestamp"]
    kubectl(lab, "-n", ns, "delete", "pod", "p", "--wait=false", "--grace-period=90")
    md = get(lab, f"/api/v1/namespaces/{ns}/pods/p")["metadata"]
    assert (md["deletionTimestamp"], md["deletionGracePeriodSeconds"]) == (first, 60)  # never further into the future
    kubectl(lab, "-n", ns, "delete", "pod", "p", "--wait=false", "--grace-period=3")
    md = get(lab, f"/api/v1/namespaces/{ns}/pods/p")["metadata"]
    assert md["deletionGracePeriodSeconds"] == 3 and _ts(md["deletionTimestamp"]) == _ts(first) - 57
    wait_for(lambda: gone(lab, ns, "p"), 20, "the pod to go once its shortened grace period is over")


def test_an_object_held_by_a_finalizer_is_marked_now_with_no_grace_period(lab, ns):
    """ObjectMeta API reference, finalizers/deletionTimestamp: an object with finalizers is not removed on delete;
    its deletionTimestamp is set and it stays until the finalizers are removed. The apiserver
    (k8s.io/apiserver registry/generic/registry/store.go markAsDeleting) sets deletionTimestamp to now,
    deletionGracePeriodSeconds to 0 and bumps a generation it has."""
    apply(lab, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/keep"]}})
    t0 = time.time()
    kubectl(lab, "-n", ns, "delete", "configmap", "held", "--wait=false")
    md = get(lab, f"/api/v1/namespaces/{ns}/configmaps/held")["metadata"]
    assert md["deletionGracePeriodSeconds"] == 0
    assert t0 - 2 <= _ts(md["deletionTimestamp"]) <= time.time() + 1, md["deletionTimestamp"]
    kubectl(lab, "-n", ns, "patch", "configmap", "held", "--type=merge", "-p", '{"metadata": {"finalizers": null}}')
    assert lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps/held").status_code == 404
    apply(lab, ns, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "held", "finalizers": ["example.com/keep"]},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "held"}},
                             "template": {"metadata": {"labels": {"app": "held"}}, "spec": {"containers": [{"name": "c", "image": BB}]}}}})
    generation = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/held")["metadata"]["generation"]
    kubectl(lab, "-n", ns, "delete", "deployment", "held", "--wait=false")
    md = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/held")["metadata"]
    assert md["generation"] == generation + 1 and md["deletionGracePeriodSeconds"] == 0
    kubectl(lab, "-n", ns, "patch", "deployment", "held", "--type=merge", "-p", '{"metadata": {"finalizers": null}}')
