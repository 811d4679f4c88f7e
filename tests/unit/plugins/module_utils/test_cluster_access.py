"""The one cluster-access preflight (plugins/module_utils/_cluster_access.py): the credential source named as
kubernetes.core resolves it, the cause, what to do; permissions asked with SelfSubjectAccessReview, or by reading
the object where that API cannot be asked. The API is faked at the module_utils boundary (KubeAPI.get/send); the
same code runs against the lab in tests/integration/test_bad_input.py (kubeconfig, 401, 403 rows)."""

from __future__ import annotations

import pytest
import yaml
from ansible_collections.asgard.mlflow.plugins.module_utils._cluster_access import (
    AccessError,
    check_kubeconfig_file,
    check_permissions,
    credential_source,
    explain,
    run,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError


@pytest.mark.parametrize(("params", "env", "path", "desc"), [
    ({}, {}, "~/.kube/config", "the kubeconfig ~/.kube/config (none of deploy_kubeconfig, K8S_AUTH_KUBECONFIG, KUBECONFIG is set)"),
    ({}, {"KUBECONFIG": "/k"}, "/k", "the kubeconfig KUBECONFIG=/k"),
    ({}, {"KUBECONFIG": "/k", "K8S_AUTH_KUBECONFIG": "/a"}, "/a", "the kubeconfig K8S_AUTH_KUBECONFIG=/a"),
    ({"kubeconfig": "/v"}, {"KUBECONFIG": "/k"}, "/v", "the kubeconfig deploy_kubeconfig=/v"),
    ({"kubeconfig": {"clusters": []}}, {}, "", "the kubeconfig given inline as deploy_kubeconfig"),
    ({}, {"K8S_AUTH_HOST": "https://k:6443", "K8S_AUTH_API_KEY": "t"}, "",
     "the API server https://k:6443 with the bearer token of K8S_AUTH_API_KEY (e.g. AWX's Kubernetes credential)"),
    ({"host": "https://h", "api_key": "t"}, {}, "", "the API server https://h with the bearer token of deploy_api_key"),
    ({"context": "prod"}, {"KUBECONFIG": "/k"}, "/k", "the kubeconfig KUBECONFIG=/k (context prod)"),
])
def test_credential_source(params, env, path, desc):
    assert credential_source(params, env, "deploy_") == (path, desc)


def test_kubeconfig_file_problems(tmp_path):
    with pytest.raises(AccessError) as exc:
        check_kubeconfig_file(str(tmp_path), "the kubeconfig KUBECONFIG=x", "patch_")
    assert f"{tmp_path} is a directory, not a kubeconfig file" in str(exc.value) and "set patch_kubeconfig" in str(exc.value)
    with pytest.raises(AccessError, match="does not exist.*Nothing was changed"):
        check_kubeconfig_file(str(tmp_path / "nope"), "d")
    check_kubeconfig_file(f"{tmp_path}/a:{tmp_path}/b", "d")  # a KUBECONFIG list: merged by the client


def _raise(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no exception")


def test_explain_causes():
    bad = _raise(lambda: yaml.safe_load("apiVersion: v1\nclusters: [\n  - {cluster: : :\n"))
    e = explain(bad, "the kubeconfig KUBECONFIG=/k")
    assert e.code == "KUBECONFIG_INVALID" and "is not a valid kubeconfig: invalid YAML" in str(e) and "line 3" in str(e)
    e = explain(KubeError("GET /version: HTTP 401: Unauthorized", status=401), "S", "patch_")
    assert e.code == "UNAUTHORIZED" and "rejected the credentials from S (401 Unauthorized)" in str(e) and "Renew" in str(e)
    e = explain(ValueError("Invalid kube-config file. No configuration found."), "S")
    assert e.code == "KUBECONFIG_INVALID" and str(e).startswith("cannot load S: Invalid kube-config file")
    e = explain(KubeError("GET /version: MaxRetryError: Connection refused"), "S", "deploy_")
    assert e.code == "UNREACHABLE" and "cannot reach the Kubernetes API with S" in str(e) and "deploy_ca_cert" in str(e)


class FakeAPI:
    """KubeAPI at the module_utils boundary: SSAR answers by verb, GETs by path."""

    def __init__(self, ssar=None, gets=None):
        self.ssar = ssar  # None: the API has no SSAR (404); else verb -> allowed
        self.gets = gets or {}  # path -> status
        self.requests = 0
        self.sent = []

    def send(self, method, path, body, content_type="application/json", query=None):
        self.requests += 1
        self.sent.append((method, path, body))
        if self.ssar is None:
            raise KubeError(f"{method} {path}: HTTP 404", status=404)
        attrs = body["spec"]["resourceAttributes"]
        return {"status": {"allowed": self.ssar.get(attrs["verb"], False), "reason": "RBAC: test"}}

    def get(self, path, query=None):
        self.requests += 1
        status = self.gets.get(path, 200)
        if status != 200:
            raise KubeError(f"GET {path}: HTTP {status}", status=status)
        return {"gitVersion": "v1.32.3"} if path == "/version" else {}


PERMS = [
    {"verb": "get", "group": "apps", "resource": "deployments", "namespace": "ns", "name": "mlflow"},
    {"verb": "patch", "group": "apps", "resource": "deployments", "namespace": "ns", "name": "mlflow"},
    {"verb": "list", "resource": "pods", "namespace": "ns"},
    {"verb": "get", "resource": "pods", "subresource": "log", "namespace": "ns"},
]


def test_permissions_through_self_subject_access_review():
    api = FakeAPI(ssar={"get": True, "list": True, "patch": False})
    res, how = check_permissions(api, PERMS)
    assert how == "SelfSubjectAccessReview"
    assert [r["allowed"] for r in res] == [True, False, True, True]
    want = {"verb": "patch", "group": "apps", "resource": "deployments", "namespace": "ns", "name": "mlflow"}
    assert api.sent[1][2]["spec"]["resourceAttributes"] == want


def test_without_ssar_reads_check_what_can_be_read_and_say_so():
    api = FakeAPI(ssar=None, gets={"/apis/apps/v1/namespaces/ns/deployments/mlflow": 404,
                                   "/api/v1/namespaces/ns/pods": 403})
    res, how = check_permissions(api, PERMS)
    assert how.startswith("unavailable (HTTP 404")
    assert [(r["allowed"], r["checked_by"]) for r in res] == [(True, "GET"), (None, None), (False, "GET"), (None, None)]
    assert "not checked" in res[1]["reason"]
    assert len(api.sent) == 1  # SSAR is not asked again once it is known to be missing


class Module:
    def __init__(self, **params):
        self.params = {"permissions": PERMS, "option_prefix": "patch_", "rbac_hint": "Grant deploy/rbac/role.yaml."}
        self.params.update(params)


def test_run_fails_before_acting_with_what_is_forbidden(tmp_path):
    kc = tmp_path / "kc"
    kc.write_text("x")
    api = FakeAPI(ssar={"get": True, "list": True, "patch": False})
    with pytest.raises(AccessError) as exc:
        run(Module(kubeconfig=str(kc)), lambda: api, env={})
    msg = str(exc.value)
    assert exc.value.code == "FORBIDDEN"
    assert msg.startswith(f"the Kubernetes API server accepted the credentials from the kubeconfig patch_kubeconfig={kc}")
    assert "but they may not patch deployment ns/mlflow (RBAC: test) (403 Forbidden)" in msg
    assert "(403 Forbidden)" in msg and msg.endswith("Grant deploy/rbac/role.yaml. Nothing was changed.")


def test_run_reports_the_review_and_the_server(tmp_path):
    kc = tmp_path / "kc"
    kc.write_text("x")
    out = run(Module(kubeconfig=str(kc)), lambda: FakeAPI(ssar={"get": True, "list": True, "patch": True}), env={})
    assert out["changed"] is False and out["server_version"] == "v1.32.3"
    assert out["access_review"] == "SelfSubjectAccessReview" and all(p["allowed"] for p in out["permissions"])
    with pytest.raises(AccessError, match="401 Unauthorized"):
        run(Module(kubeconfig=str(kc)), lambda: FakeAPI(gets={"/version": 401}), env={})
