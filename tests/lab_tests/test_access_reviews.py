"""Access reviews, "who am I" and impersonation against the lab's RBAC, with real kubectl and raw HTTP.

Reference: kubernetes/website ``content/en/docs/reference/access-authn-authz/authorization.md`` (Checking API
access: SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectRulesReview) and
``authentication.md`` (``kubectl auth whoami``, User impersonation); k/k ``pkg/apis/authorization/validation``,
``plugin/pkg/auth/authorizer/rbac`` (allow reasons), ``plugin/pkg/auth/authorizer/rbac/bootstrappolicy``
(``system:basic-user``); apiserver ``pkg/endpoints/filters/impersonation.go``, ``handlers/responsewriters``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

KUBECTL = "/usr/bin/kubectl"
AUTHZ = "/apis/authorization.k8s.io/v1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def user_token(lab, name: str | None = None, groups: list[str] | None = None) -> tuple[str, str]:
    name = name or f"u-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/lab/tokens", json={"user": name, "groups": groups or []})
    assert r.status_code == 201, r.text
    return name, r.json()["token"]


def grant(lab, ns: str | None, name: str, rules: list[dict], subject: dict) -> None:
    """A Role/ClusterRole with ``rules`` bound to ``subject``."""
    base = f"{RBAC}/namespaces/{ns}" if ns else RBAC
    role_kind = "Role" if ns else "ClusterRole"
    r = lab.request("POST", f"{base}/{role_kind.lower()}s", json={"metadata": {"name": name}, "rules": rules})
    assert r.status_code == 201, r.text
    r = lab.request("POST", f"{base}/{'rolebindings' if ns else 'clusterrolebindings'}", json={
        "metadata": {"name": name}, "subjects": [subject],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name}})
    assert r.status_code == 201, r.text


@pytest.fixture
def cluster_cleanup(lab):
    names: list[str] = []
    yield names
    for n in names:
        lab.request("DELETE", f"{RBAC}/clusterrolebindings/{n}")
        lab.request("DELETE", f"{RBAC}/clusterroles/{n}")


def kubectl(lab, *args: str, kubeconfig=None) -> subprocess.CompletedProcess:
    cmd = [KUBECTL, *(["--kubeconfig", str(kubeconfig)] if kubeconfig else []), *args]
    return subprocess.run(cmd, env=lab.env(), capture_output=True, text=True, timeout=60)


def test_discovery_serves_the_review_kinds(lab):
    """authorization.k8s.io/v1 and authentication.k8s.io/v1 list the reviews, create-only; other verbs are 405."""
    res = {r["name"]: r for r in lab.request("GET", AUTHZ).json()["resources"]}
    assert set(res) >= {"selfsubjectaccessreviews", "subjectaccessreviews", "localsubjectaccessreviews", "selfsubjectrulesreviews"}
    assert res["localsubjectaccessreviews"]["namespaced"] is True and res["subjectaccessreviews"]["verbs"] == ["create"]
    authn = {r["name"] for r in lab.request("GET", "/apis/authentication.k8s.io/v1").json()["resources"]}
    assert "selfsubjectreviews" in authn
    r = lab.request("GET", f"{AUTHZ}/selfsubjectaccessreviews")
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"


def test_kubectl_auth_as_the_admin_and_as_a_restricted_identity(lab, lab_namespace, tmp_path):
    """``kubectl auth can-i`` / ``whoami`` (protobuf reviews) answer from RBAC: the admin may everything; a user
    may what its bindings grant, and every authenticated identity may review itself (system:basic-user)."""
    ns = lab_namespace
    r = kubectl(lab, "auth", "can-i", "patch", "deployments", "-n", ns)
    assert r.returncode == 0 and r.stdout.strip() == "yes", r.stderr
    r = kubectl(lab, "auth", "whoami")
    assert r.returncode == 0 and "asgard-lab-admin" in r.stdout and "system:masters" in r.stdout, r.stderr

    user = f"cli-{uuid.uuid4().hex[:6]}"
    cfg = tmp_path / "user.kubeconfig"
    p = subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(lab.state_dir), "token", "--user", user,
                        "--kubeconfig", str(cfg)], env=lab.env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    r = kubectl(lab, "auth", "can-i", "patch", "deployments", "-n", ns, kubeconfig=cfg)
    assert r.returncode == 1 and r.stdout.strip() == "no", r.stderr
    grant(lab, ns, "patcher", [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}],
          {"kind": "User", "name": user})
    r = kubectl(lab, "auth", "can-i", "patch", "deployments", "-n", ns, kubeconfig=cfg)
    assert r.returncode == 0 and r.stdout.strip() == "yes", r.stderr
    assert kubectl(lab, "auth", "can-i", "delete", "deployments", "-n", ns, kubeconfig=cfg).stdout.strip() == "no"
    r = kubectl(lab, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}", kubeconfig=cfg)
    assert r.returncode == 0 and r.stdout == f'{user} ["system:authenticated"]', (r.stdout, r.stderr)
    r = kubectl(lab, "auth", "can-i", "--list", "-n", ns, kubeconfig=cfg)
    assert r.returncode == 0 and "deployments.apps" in r.stdout and "[get patch]" in r.stdout, r.stdout


def test_access_reviews_over_http(lab, lab_namespace):
    """201 with the posted review and its ``status``; RBAC's allow reason; SubjectAccessReview validation (422)."""
    ns = lab_namespace
    user, token = user_token(lab)
    grant(lab, ns, "reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}], {"kind": "User", "name": user})
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"namespace": ns, "verb": "get", "resource": "configmaps"}}}
    r = lab.request("POST", f"{AUTHZ}/selfsubjectaccessreviews", token=token, json=review)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == {"allowed": True, "reason": f'RBAC: allowed by RoleBinding "reader/{ns}" of Role "reader" to User "{user}"'}
    assert r.json()["spec"] == review["spec"]
    review["spec"]["resourceAttributes"]["verb"] = "delete"
    assert lab.request("POST", f"{AUTHZ}/selfsubjectaccessreviews", token=token, json=review).json()["status"] == {"allowed": False}

    sar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
           "spec": {"user": user, "resourceAttributes": {"namespace": ns, "verb": "get", "resource": "configmaps"}}}
    assert lab.request("POST", f"{AUTHZ}/subjectaccessreviews", json=sar).json()["status"]["allowed"] is True
    r = lab.request("POST", f"{AUTHZ}/subjectaccessreviews", token=token, json=sar)  # reviewing others needs RBAC
    assert r.status_code == 403
    sar["spec"].pop("user")
    r = lab.request("POST", f"{AUTHZ}/subjectaccessreviews", json=sar)
    assert r.status_code == 422
    assert r.json()["message"] == ('SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user: Invalid value: "": '
                                   'at least one of user or group must be specified')
    local = dict(sar, kind="LocalSubjectAccessReview", spec={"user": user, "resourceAttributes": {"namespace": "other", "verb": "get"}})
    r = lab.request("POST", f"{AUTHZ}/namespaces/{ns}/localsubjectaccessreviews", json=local)
    assert r.status_code == 422 and "spec.resourceAttributes.namespace: Invalid value: \"other\": must match metadata.namespace" in r.json()["message"]

    r = lab.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token,
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert r.status_code == 201 and r.json()["status"]["userInfo"] == {"username": user, "groups": ["system:authenticated"]}


def test_impersonation_is_authorized_with_the_impersonate_verb(lab, lab_namespace, cluster_cleanup):
    """Impersonate-* headers need ``impersonate`` on users/groups/serviceaccounts/userextras (403 worded by the
    apiserver); the request then runs as the impersonated identity, which RBAC and whoami see."""
    ns = lab_namespace
    caller, token = user_token(lab)
    target = f"t-{uuid.uuid4().hex[:6]}"
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps", token=token, headers={"Impersonate-User": target})
    assert r.status_code == 403
    assert r.json()["message"] == (f'users "{target}" is forbidden: User "{caller}" cannot impersonate resource "users" '
                                   'in API group "" at the cluster scope')
    name = f"imp-{uuid.uuid4().hex[:6]}"
    cluster_cleanup.append(name)
    grant(lab, None, name, [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}],
          {"kind": "User", "name": caller})
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps", token=token, headers={"Impersonate-User": target})
    assert r.status_code == 403 and f'User "{target}" cannot list resource "configmaps"' in r.json()["message"]
    r = lab.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token,
                    headers={"Impersonate-User": target, "Impersonate-Group": "devs", "Impersonate-Extra-Scopes": "view"},
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert r.status_code == 403  # extras need userextras/scopes
    assert r.json()["message"] == (f'userextras.authentication.k8s.io "view" is forbidden: User "{caller}" cannot impersonate '
                                   'resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope')
    r = lab.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token,
                    headers={"Impersonate-User": target, "Impersonate-Group": "devs"},
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert r.json()["status"]["userInfo"] == {"username": target, "groups": ["devs", "system:authenticated"]}
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps", token=token, headers={"Impersonate-User": target, "Impersonate-Uid": "42"})
    assert r.status_code == 403
    assert r.json()["message"] == (f'uids.authentication.k8s.io "42" is forbidden: User "{caller}" cannot impersonate resource '
                                   '"uids" in API group "authentication.k8s.io" at the cluster scope')
    r = lab.request("GET", "/api/v1/namespaces", headers={"Impersonate-Group": "devs"})
    assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == 'Internal Server Error: "/api/v1/namespaces": requested [{Group  devs    }] without impersonating a user\n'


def test_kubectl_as_a_service_account(lab, lab_namespace):
    """``kubectl --as system:serviceaccount:<ns>:<name>`` impersonates the ServiceAccount (checked in its namespace)
    with its groups."""
    ns = lab_namespace
    r = kubectl(lab, "auth", "whoami", "--as", f"system:serviceaccount:{ns}:default", "-o", "jsonpath={.status.userInfo.groups}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f'["system:serviceaccounts","system:serviceaccounts:{ns}","system:authenticated"]'
    r = kubectl(lab, "get", "pods", "-n", ns, "--as", f"system:serviceaccount:{ns}:default")
    assert r.returncode == 1
    assert f'User "system:serviceaccount:{ns}:default" cannot list resource "pods" in API group "" in the namespace "{ns}"' in r.stderr
