"""StatefulSet and DaemonSet controllers, compared with what the real ones report.

Kubernetes documentation (kubernetes/website):
- content/en/docs/concepts/workloads/controllers/statefulset.md: pods ``<statefulset name>-<ordinal>``, "Pod
  Identity" labels ``statefulset.kubernetes.io/pod-name`` and ``apps.kubernetes.io/pod-index``, stable storage
  ``<volumeClaimTemplate name>-<statefulset name>-<ordinal>`` (kept on scale-down, whenScaled: Retain),
  "Deployment and Scaling Guarantees" (OrderedReady: pod N+1 only after 0..N are Running and Ready; scale-down
  from the highest ordinal), "Rolling Updates" (highest ordinal first, one at a time; ``partition``).
- content/en/docs/tasks/manage-daemon/update-daemon-set.md: RollingUpdate replaces the node's pod; kubectl
  rollout status works on DaemonSets; content/en/docs/concepts/workloads/controllers/daemonset.md: the pod is
  pinned to its node with node affinity ``matchFields metadata.name``.
- Status fields as in the API reference (StatefulSetStatus, DaemonSetStatus); kubernetes.core
  plugins/module_utils/k8s/waiter.py statefulset_ready / daemonset_ready read them.
"""

from __future__ import annotations

import pytest
from asgardlab.kubelet.testing import delete_namespace, get, kubectl, make_namespace, playbook, pods, wait_for

BB = "busybox:1.36"


@pytest.fixture
def ns(lab):
    name = make_namespace(lab, "sets")
    yield name
    delete_namespace(lab, name, wait=90)


def container(value: str) -> dict:
    return {"name": "c", "image": BB, "command": ["sleep", "3600"], "env": [{"name": "V", "value": value}],
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}


def statefulset(value: str, replicas: int = 2) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {
        "replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
            "terminationGracePeriodSeconds": 1, "containers": [{**container(value), "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                  "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}


def sts_events(lab, ns: str) -> list[dict]:
    """The StatefulSet controller's events in the order they were recorded."""
    items = get(lab, f"/api/v1/namespaces/{ns}/events")["items"]
    return sorted((e for e in items if e["involvedObject"]["kind"] == "StatefulSet"), key=lambda e: int(e["metadata"]["resourceVersion"]))


def k8s_wait(lab, tmp_path, ns: str, obj: dict) -> dict:
    """kubernetes.core.k8s with wait: true (its StatefulSet / DaemonSet waiters read the controller's status)."""
    res = playbook(lab, tmp_path, """
        - name: apply and wait
          kubernetes.core.k8s:
            namespace: "{{ ns }}"
            definition: "{{ obj }}"
            wait: true
            wait_timeout: 120
    """, {"ns": ns, "obj": obj})
    return res["apply and wait"]


def test_statefulset_ordered_pods_claims_status_and_rolling_update(lab, ns, tmp_path):
    r = k8s_wait(lab, tmp_path, ns, statefulset("1"))
    st = r["result"]["status"]
    assert st["replicas"] == st["readyReplicas"] == st["currentReplicas"] == st["updatedReplicas"] == st["availableReplicas"] == 2
    assert st["currentRevision"] == st["updateRevision"] and st["currentRevision"].startswith("db-")
    assert st["observedGeneration"] == r["result"]["metadata"]["generation"]
    ps = {p["metadata"]["name"]: p for p in pods(lab, ns)}
    assert sorted(ps) == ["db-0", "db-1"]
    for i, name in enumerate(("db-0", "db-1")):
        labels = ps[name]["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == name and labels["apps.kubernetes.io/pod-index"] == str(i)
        assert labels["controller-revision-hash"] == st["updateRevision"]
        assert ps[name]["spec"]["hostname"] == name and ps[name]["spec"]["subdomain"] == "db"
        claim = get(lab, f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-db-{i}")
        assert claim["status"]["phase"] == "Bound"
    # OrderedReady: db-1 was created only after db-0 was Running and Ready
    events = [e for e in sts_events(lab, ns) if e["reason"] == "SuccessfulCreate"]
    created = [e["message"] for e in events if e["message"].startswith("create Pod")]
    assert created == ["create Pod db-0 in StatefulSet db successful", "create Pod db-1 in StatefulSet db successful"]
    assert get(lab, f"/api/v1/namespaces/{ns}/pods/db-1")["metadata"]["creationTimestamp"] >= \
        next(c["lastTransitionTime"] for c in ps["db-0"]["status"]["conditions"] if c["type"] == "Ready")
    # data survives the pod: write, roll the template, read it back
    kubectl(lab, "-n", ns, "exec", "db-0", "--", "sh", "-c", "echo kept > /data/f")
    r = k8s_wait(lab, tmp_path, ns, statefulset("2"))
    st2 = r["result"]["status"]
    assert st2["updateRevision"] != st["updateRevision"] and st2["currentRevision"] == st2["updateRevision"]
    assert st2["updatedReplicas"] == st2["readyReplicas"] == 2
    for name in ("db-0", "db-1"):
        assert kubectl(lab, "-n", ns, "exec", name, "--", "printenv", "V").stdout.strip() == "2"
    assert kubectl(lab, "-n", ns, "exec", "db-0", "--", "cat", "/data/f").stdout.strip() == "kept"
    deletes = [e["message"] for e in sts_events(lab, ns) if e["reason"] == "SuccessfulDelete"]
    assert deletes == ["delete Pod db-1 in StatefulSet db successful", "delete Pod db-0 in StatefulSet db successful"]
    # kubectl's StatefulSetStatusViewer, with the apiserver's default partition 0
    assert kubectl(lab, "-n", ns, "rollout", "status", "sts/db", "--timeout=60s", timeout=70).stdout == \
        "partitioned roll out complete: 2 new pods have been updated...\n"
    revs = get(lab, f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
    assert sorted(r["revision"] for r in revs) == [1, 2]
    # scale down: the highest ordinal goes, its claim stays
    k8s_wait(lab, tmp_path, ns, statefulset("2", replicas=1))
    wait_for(lambda: [p["metadata"]["name"] for p in pods(lab, ns)] == ["db-0"], 30, "db-1 removed")
    assert get(lab, f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-db-1")["status"]["phase"] == "Bound"


def test_daemonset_one_pod_on_the_node_status_and_rolling_update(lab, ns, tmp_path):
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": {
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [container("1")]}}}}
    r = k8s_wait(lab, tmp_path, ns, ds)
    st = r["result"]["status"]
    assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"], st["numberAvailable"],
            st["updatedNumberScheduled"], st["numberMisscheduled"]) == (1, 1, 1, 1, 1, 0)
    assert "numberUnavailable" not in st and st["observedGeneration"] == r["result"]["metadata"]["generation"]
    [p] = pods(lab, ns)
    terms = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["asgard-lab-node"]}]}]
    assert p["spec"]["nodeName"] == "asgard-lab-node" and p["metadata"]["labels"]["pod-template-generation"] == "1"
    ds["spec"]["template"]["spec"]["containers"] = [container("2")]
    k8s_wait(lab, tmp_path, ns, ds)
    assert "successfully rolled out" in kubectl(lab, "-n", ns, "rollout", "status", "ds/agent", "--timeout=60s", timeout=70).stdout
    [p2] = [p for p in pods(lab, ns) if not p["metadata"].get("deletionTimestamp")]
    assert p2["metadata"]["name"] != p["metadata"]["name"]
    assert kubectl(lab, "-n", ns, "exec", p2["metadata"]["name"], "--", "printenv", "V").stdout.strip() == "2"
    # a nodeSelector no node matches: nothing desired, the pod goes
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    k8s_wait(lab, tmp_path, ns, ds)
    st = wait_for(lambda: (s := get(lab, f"/apis/apps/v1/namespaces/{ns}/daemonsets/agent")["status"])["desiredNumberScheduled"] == 0
                  and s["currentNumberScheduled"] == 0 and s, 30, "desired 0")
    assert st["numberReady"] == 0
    wait_for(lambda: not pods(lab, ns), 30, "the daemon pod removed")
