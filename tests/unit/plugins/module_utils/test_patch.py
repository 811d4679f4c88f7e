"""The patch role's work in one typed call (plugins/module_utils/_patch.py, the asgard.mlflow.mlflow_patch module).

The Kubernetes API is faked at the module_utils boundary (KubeAPI.get/get_text/send/list_pods); the same code runs
against the lab in tests/integration/test_patch_role.py. Every result and message is checked for the password."""

from __future__ import annotations

import copy
import json

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError
from ansible_collections.asgard.mlflow.plugins.module_utils._patch import PatchFailed, run, typed_targets

PW = "S3cr3t-pw"
DEP_PATH = "/apis/apps/v1/namespaces/ns/deployments/mlflow"


def deployment(**meta):
    container = {"name": "mlflow", "image": "ghcr.io/mlflow/mlflow:v3.17.2", "command": ["mlflow", "server"],
                 "args": ["--port=5000", "--workers=2", f"--backend-store-uri=postgresql://u:{PW}@db/x"],
                 "env": [{"name": "DB_PASSWORD", "value": PW}, {"name": "W", **{"valueFrom": {"configMapKeyRef":
                                                                                              {"name": "cfg", "key": "w"}}}}]}
    sidecar = {"name": "log-tail", "image": "busybox", "command": ["tail", "-F", "/mlflow/logs/server.log"]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "mlflow", "namespace": "ns", "uid": "u1", "generation": 1,
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps({"pw": PW}),
                                         "deployment.kubernetes.io/revision": "2"}, **meta},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "mlflow"}},
                     "template": {"metadata": {"labels": {"app": "mlflow"}},
                                  "spec": {"containers": [sidecar, container]}}}}


def replicaset(rev, container):
    return {"metadata": {"ownerReferences": [{"uid": "u1"}],
                         "annotations": {"deployment.kubernetes.io/revision": str(rev)}},
            "spec": {"template": {"metadata": {"labels": {"app": "mlflow", "pod-template-hash": "h"}},
                                  "spec": {"containers": [{"name": container}]}}}}


class FakeAPI:
    def __init__(self, dep):
        self.dep = dep
        self.writes = []
        self.reads = []

    def get(self, path, query=None):
        self.reads.append(path)
        if path == DEP_PATH:
            if self.dep is None:
                raise KubeError("GET: HTTP 404", status=404)
            return copy.deepcopy(self.dep)
        if path.endswith("/configmaps/cfg"):
            return {"metadata": {"name": "cfg"}, "data": {"w": "x"}}
        if path.endswith("/events"):
            return {"items": [{"involvedObject": {"name": "mlflow-abc"}, "reason": "BackOff",
                               "message": f"Back-off restarting; DB_PASSWORD={PW}", "lastTimestamp": "2026-01-01T00:00:01Z"}]}
        if path.endswith("/replicasets"):
            return {"items": [replicaset(1, "one"), replicaset(2, "two"), replicaset(3, "three")]}
        raise AssertionError(path)

    def get_text(self, path, query=None, accept=None):
        previous = ("previous", "true") in (query or [])
        return f"{'old' if previous else 'new'} line; postgresql://u:{PW}@db/x\nError: class uri 'nosuchworker' invalid\n"

    def list_pods(self, ns, selector):
        return [{"metadata": {"name": "mlflow-abc", "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "status": {"containerStatuses": [{"name": "mlflow", "restartCount": 2,
                                                   "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}]

    def send(self, method, path, body, content_type="application/json", query=None):
        self.writes.append((method, path, body, content_type))
        self.dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"  # the controller's new RS
        return {"metadata": {"generation": 2}}


TARGETS = {"workers": "4", "port": "5000", "probes": "false", "enable_service_links": "null", "static_prefix": ""}


def params(**kw):
    p = {"namespace": "ns", "name": "mlflow", "targets": dict(TARGETS), "option_prefix": "patch_", "wait": True,
         "wait_timeout": 60, "read_configmaps": True, "rollback": True, "rollback_method": "patch"}
    p.update(kw)
    return p


def no_password(*objs):
    text = json.dumps([o if not isinstance(o, BaseException) else str(o) for o in objs], default=str)
    assert PW not in text


def test_check_mode_writes_nothing_and_diffs_the_mlflow_container_redacted():
    api = FakeAPI(deployment())
    r = run(api, params(), check_mode=True, diff=True, waiter=lambda *a: True)
    assert r["changed"] is True and r["container"] == "mlflow" and r["container_index"] == 1  # sidecar listed first
    assert api.writes == []
    assert "--workers=2" in r["diff"]["before"] and "--workers=4" in r["diff"]["after"]
    assert "value: '***'" in r["diff"]["before"] and "postgresql://u:***@db/x" in r["diff"]["before"]
    no_password(r)


def test_patch_wait_ok():
    api = FakeAPI(deployment())
    r = run(api, params(), waiter=lambda ns, name, timeout, sleep: (ns, name, timeout) == ("ns", "mlflow", 60))
    assert r["patched"] is True and r["generation"] == 2 and r["rolled_back"] is False
    [(method, path, body, ctype)] = api.writes
    assert (method, path, ctype) == ("PATCH", DEP_PATH, "application/json-patch+json")
    assert body[0] == {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "mlflow"}
    no_password(r)


@pytest.mark.parametrize(("method", "restored"), [("patch", None), ("k8s_rollback", "two")])
def test_failed_rollout_is_rolled_back_with_redacted_evidence(method, restored):
    api = FakeAPI(deployment())
    with pytest.raises(PatchFailed) as exc:
        run(api, params(rollback_method=method), waiter=lambda *a: False)
    msg = str(exc.value)
    assert "did not become ready within 60s" in msg and "Waiting containers: CrashLoopBackOff" in msg
    assert "Events: mlflow-abc BackOff" in msg and "DB_PASSWORD=***" in msg
    # the previous (crashed) instance's log comes first
    assert "Last log lines: old line; postgresql://u:***@db/x / Error: class uri 'nosuchworker'" in msg
    assert "Rolled back to the previous" in msg and exc.value.result["rolled_back"] is True
    assert len(api.writes) == 2
    if restored:
        tmpl = api.writes[1][2][0]["value"]
        assert tmpl["spec"]["containers"][0]["name"] == restored and "pod-template-hash" not in tmpl["metadata"]["labels"]
    no_password(msg, exc.value.result)


def test_no_rollback_when_told_so():
    api = FakeAPI(deployment())
    with pytest.raises(PatchFailed, match=r"NOT rolled back \(patch_rollback is false\)"):
        run(api, params(rollback=False), waiter=lambda *a: False)
    assert len(api.writes) == 1


def test_helm_managed_is_refused_with_the_chart_values_and_nothing_written():
    api = FakeAPI(deployment(labels={"app.kubernetes.io/managed-by": "Helm"}))
    with pytest.raises(PatchFailed) as exc:
        run(api, params(), waiter=lambda *a: True)
    assert "is managed by Helm (release unknown); nothing was changed" in str(exc.value)
    assert "set these in the chart values instead: --workers: 2 -> 4" in str(exc.value)
    assert "patch_allow_helm_managed=true" in str(exc.value) and api.writes == []
    r = run(FakeAPI(deployment(labels={"app.kubernetes.io/managed-by": "Helm"})), params(allow_helm_managed="yes"),
            waiter=lambda *a: True)
    assert any("the next `helm upgrade` reverts this patch" in w for w in r["warnings"])


def test_compliant_and_not_found():
    api = FakeAPI(deployment())
    run(api, params(), waiter=lambda *a: True)
    done = deployment()
    done["spec"]["template"]["spec"]["containers"][1]["args"][1] = "--workers=4"
    done["spec"]["template"]["metadata"]["annotations"] = {}
    r = run(FakeAPI(done), params(targets={**TARGETS, "static_prefix": "null"}), waiter=lambda *a: True)
    assert r["compliant"] is True and r["changed"] is False
    with pytest.raises(PatchFailed, match="Deployment ns/mlflow not found; nothing was changed. Set patch_namespace"):
        run(FakeAPI(None), params(), waiter=lambda *a: True)


@pytest.mark.parametrize(("given", "typed"), [
    ({"workers": "5"}, {"workers": 5}),
    ({"workers": "null", "port": "None", "gunicorn_timeout": ""}, {"workers": None, "port": None, "gunicorn_timeout": None}),
    ({"probes": "false", "enable_service_links": "no"}, {"probes": False, "enable_service_links": False}),
    ({"probes": "True", "enable_service_links": "1"}, {"probes": True, "enable_service_links": True}),
    ({"static_prefix": ""}, {"static_prefix": ""}),
    ({"static_prefix": "null"}, {"static_prefix": None}),
    ({"startup_probe": {"periodSeconds": "5"}}, {"startup_probe": {"periodSeconds": 5}}),
    ({"allowed_hosts": "a:*,b"}, {"allowed_hosts": ["a:*", "b"]}),
])
def test_command_line_strings_mean_what_they_say(given, typed):
    assert typed_targets(given, "patch_") == typed


@pytest.mark.parametrize(("given", "message"), [
    ({"workers": "0"}, "patch_workers=0 is invalid; expected an integer >= 1"),
    ({"workers": "four"}, 'patch_workers="four" is invalid; expected an integer >= 1'),
    ({"port": "70000"}, "patch_port=70000 is invalid; expected an integer 1-65535"),
    ({"probes": "maybe"}, 'patch_probes="maybe" is invalid; expected true or false'),
    ({"workers_mode": "more"}, 'patch_workers_mode="more" is invalid; expected one of exact, at_least'),
    ({"bogus": 1}, "patch_bogus: unknown target"),
])
def test_bad_strings_name_the_variable(given, message):
    with pytest.raises(PatchFailed, match=message.replace("(", r"\(")):
        typed_targets(given, "patch_")
