"""RBAC in the lab (tests/lab/asgardlab/rbac.py): real HTTP requests with real bearer tokens.

Every identity but the lab admin is authorized by Role/ClusterRole + RoleBinding/ClusterRoleBinding, with the
apiserver's 403 wording; tokens come from the TokenRequest API (ServiceAccounts), from service-account-token
Secrets, or from the lab's ``POST /lab/tokens`` (Users) and ``python -m asgardlab token``.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid

import pytest
import yaml

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _user(lab, name: str | None = None, **kw) -> tuple[str, str]:
    name = name or f"u-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/lab/tokens", json={"user": name, **kw})
    assert r.status_code == 201, r.text
    return name, r.json()["token"]


def _create(lab, path: str, obj: dict) -> dict:
    r = lab.request("POST", path, json=obj)
    assert r.status_code == 201, r.text
    return r.json()


def _role(lab, ns: str, name: str, rules: list[dict]) -> None:
    _create(lab, f"{RBAC}/namespaces/{ns}/roles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                                   "metadata": {"name": name}, "rules": rules})


def _bind(lab, ns: str | None, name: str, role_kind: str, role: str, subjects: list[dict]) -> None:
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    path = f"{RBAC}/namespaces/{ns}/rolebindings" if ns else f"{RBAC}/clusterrolebindings"
    _create(lab, path, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                        "subjects": subjects})


def _cm(lab, ns: str, name: str) -> None:
    _create(lab, f"/api/v1/namespaces/{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})


def _ns(lab) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    _create(lab, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def _forbidden(r, message: str) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Forbidden" and body["code"] == 403, body
    assert body["message"] == message, body["message"]


@pytest.fixture
def other_namespace(lab):
    name = _ns(lab)
    yield name
    lab.request("DELETE", f"/api/v1/namespaces/{name}")


def test_admin_stays_all_powerful(lab, lab_namespace):
    for path in ("/api/v1/secrets", f"{RBAC}/clusterroles", "/api/v1/nodes", "/lab/faults",
                 f"/api/v1/namespaces/{lab_namespace}/pods"):
        assert lab.request("GET", path).status_code == 200, path


def test_no_binding_means_forbidden_with_apiserver_wording(lab, lab_namespace):
    user, tok = _user(lab)
    _cm(lab, lab_namespace, "cfg")
    _forbidden(lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps/cfg", token=tok),
               f'configmaps "cfg" is forbidden: User "{user}" cannot get resource "configmaps" in API group "" '
               f'in the namespace "{lab_namespace}"')
    r = lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps", token=tok)
    _forbidden(r, f'configmaps is forbidden: User "{user}" cannot list resource "configmaps" in API group "" '
                  f'in the namespace "{lab_namespace}"')
    assert r.json()["details"] == {"group": "", "kind": "configmaps"}
    r = lab.request("PATCH", f"/apis/apps/v1/namespaces/{lab_namespace}/deployments/x", token=tok,
                    json={"spec": {}}, headers={"Content-Type": "application/strategic-merge-patch+json"})
    _forbidden(r, f'deployments.apps "x" is forbidden: User "{user}" cannot patch resource "deployments" in API group '
                  f'"apps" in the namespace "{lab_namespace}"')
    assert r.json()["details"] == {"name": "x", "group": "apps", "kind": "deployments"}
    _forbidden(lab.request("POST", f"{RBAC}/clusterroles", token=tok, json={"metadata": {"name": "x"}, "rules": []}),
               f'clusterroles.rbac.authorization.k8s.io is forbidden: User "{user}" cannot create resource '
               f'"clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope')
    _forbidden(lab.request("DELETE", f"/api/v1/namespaces/{lab_namespace}", token=tok),
               f'namespaces "{lab_namespace}" is forbidden: User "{user}" cannot delete resource "namespaces" in API '
               f'group "" in the namespace "{lab_namespace}"')
    _forbidden(lab.request("GET", "/api/v1/namespaces/default/pods?watch=true", token=tok),
               f'pods is forbidden: User "{user}" cannot watch resource "pods" in API group "" in the namespace "default"')
    # nothing was changed by the refused calls
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}").json()["status"]["phase"] == "Active"


def test_discovery_open_lab_admin_endpoints_closed(lab):
    _, tok = _user(lab)
    for path in ("/version", "/api", "/api/v1", "/apis", "/apis/apps/v1"):
        assert lab.request("GET", path, token=tok).status_code == 200, path
    user, tok = _user(lab)
    never = f"/never-{uuid.uuid4().hex}"  # a fault no other (parallel) test adds, matching no request
    _forbidden(lab.request("POST", "/lab/faults", token=tok, json={"kind": "http_status", "status": 503, "path_regex": never}),
               f'forbidden: User "{user}" cannot post path "/lab/faults"')
    _forbidden(lab.request("POST", "/lab/tokens", token=tok, json={"user": "mallory"}),
               f'forbidden: User "{user}" cannot post path "/lab/tokens"')
    assert [f for f in lab.faults.list_all() if f["path_regex"] == never] == []


def test_unknown_and_expired_tokens_are_401(lab, lab_namespace):
    assert lab.request("GET", "/api/v1/namespaces", token="not-a-token").status_code == 401
    assert lab.request("GET", "/api/v1/namespaces", token=None).status_code == 401
    _, tok = _user(lab, expirationSeconds=1)
    assert lab.request("GET", "/version", token=tok).status_code == 200
    time.sleep(1.5)
    r = lab.request("GET", "/version", token=tok)
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"


def test_role_binding_grants_exactly_its_rules(lab, lab_namespace, other_namespace):
    user, tok = _user(lab)
    _role(lab, lab_namespace, "cm-reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}])
    _bind(lab, lab_namespace, "cm-reader", "Role", "cm-reader", [{"kind": "User", "name": user}])
    _cm(lab, lab_namespace, "a")
    _cm(lab, other_namespace, "a")
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps/a", token=tok).status_code == 200
    names = [i["metadata"]["name"] for i in lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps", token=tok).json()["items"]]
    assert "a" in names
    # other verbs, other resources, other namespaces, all namespaces: no
    _forbidden(lab.request("DELETE", f"/api/v1/namespaces/{lab_namespace}/configmaps/a", token=tok),
               f'configmaps "a" is forbidden: User "{user}" cannot delete resource "configmaps" in API group "" '
               f'in the namespace "{lab_namespace}"')
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/secrets", token=tok).status_code == 403
    assert lab.request("GET", f"/api/v1/namespaces/{other_namespace}/configmaps/a", token=tok).status_code == 403
    _forbidden(lab.request("GET", "/api/v1/configmaps", token=tok),
               f'configmaps is forbidden: User "{user}" cannot list resource "configmaps" in API group "" at the cluster scope')
    # another user is not bound
    _, tok2 = _user(lab)
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps/a", token=tok2).status_code == 403
    # revoking the binding revokes the access
    assert lab.request("DELETE", f"{RBAC}/namespaces/{lab_namespace}/rolebindings/cm-reader").status_code == 200
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps/a", token=tok).status_code == 403


def test_resource_names(lab, lab_namespace):
    user, tok = _user(lab)
    _role(lab, lab_namespace, "one-cm", [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mine"],
                                          "verbs": ["get", "patch", "list"]}])
    _bind(lab, lab_namespace, "one-cm", "Role", "one-cm", [{"kind": "User", "name": user}])
    _cm(lab, lab_namespace, "mine")
    _cm(lab, lab_namespace, "theirs")
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps/mine", token=tok).status_code == 200
    r = lab.request("PATCH", f"/api/v1/namespaces/{lab_namespace}/configmaps/mine", token=tok, json={"data": {"k": "v"}},
                    headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["data"] == {"k": "v"}, r.text
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps/theirs", token=tok).status_code == 403
    # a list names no object: resourceNames never allow it
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps", token=tok).status_code == 403


def test_subresources_and_wildcards(lab, lab_namespace):
    user, tok = _user(lab)
    _role(lab, lab_namespace, "pods", [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]},
    ])
    _bind(lab, lab_namespace, "pods", "Role", "pods", [{"kind": "User", "name": user}])
    ns = lab_namespace
    # pods does not cover pods/log nor pods/portforward
    _forbidden(lab.request("GET", f"/api/v1/namespaces/{ns}/pods/p/log", token=tok),
               f'pods "p" is forbidden: User "{user}" cannot get resource "pods/log" in API group "" in the namespace "{ns}"')
    # the port-forward WebSocket upgrade is a GET, authorized as create on pods/portforward
    _forbidden(lab.request("GET", f"/api/v1/namespaces/{ns}/pods/p/portforward?ports=5000", token=tok),
               f'pods "p" is forbidden: User "{user}" cannot create resource "pods/portforward" in API group "" '
               f'in the namespace "{ns}"')
    _forbidden(lab.request("POST", f"/api/v1/namespaces/{ns}/pods/p/exec?command=id", token=tok),
               f'pods "p" is forbidden: User "{user}" cannot create resource "pods/exec" in API group "" in the namespace "{ns}"')
    # */scale: any group-matching resource's scale subresource, but not the resource itself
    _create(lab, f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    r = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/d/scale", token=tok)
    assert r.status_code == 200 and r.json()["kind"] == "Scale", r.text
    _forbidden(lab.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/d/scale", token=tok, json={"spec": {"replicas": 1}},
                           headers={"Content-Type": "application/merge-patch+json"}),
               f'deployments.apps "d" is forbidden: User "{user}" cannot patch resource "deployments/scale" in API group '
               f'"apps" in the namespace "{ns}"')
    assert lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/d", token=tok).status_code == 403
    # pods/log and pods/portforward granted: the request reaches the handler (404: there is no such pod)
    _role(lab, ns, "streams", [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                               {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]}])
    _bind(lab, ns, "streams", "Role", "streams", [{"kind": "User", "name": user}])
    for path in (f"/api/v1/namespaces/{ns}/pods/p/log", f"/api/v1/namespaces/{ns}/pods/p/portforward?ports=5000"):
        r = lab.request("GET", path, token=tok)
        assert r.status_code == 404 and r.json()["reason"] == "NotFound", (path, r.text)


def test_clusterrole_via_rolebinding_is_namespace_scoped(lab, lab_namespace, other_namespace):
    user, tok = _user(lab)
    cr = f"all-{uuid.uuid4().hex[:6]}"
    _create(lab, f"{RBAC}/clusterroles", {"metadata": {"name": cr},
                                          "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
    try:
        _bind(lab, lab_namespace, "admin", "ClusterRole", cr, [{"kind": "User", "name": user}])
        ns = lab_namespace
        _cm(lab, ns, "x")
        assert lab.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/x", token=tok).status_code == 200
        assert lab.request("GET", f"/api/v1/namespaces/{ns}/secrets", token=tok).status_code == 200
        assert lab.request("GET", f"/api/v1/namespaces/{ns}", token=tok).status_code == 200  # its own Namespace
        assert lab.request("GET", f"/api/v1/namespaces/{other_namespace}/secrets", token=tok).status_code == 403
        assert lab.request("GET", "/api/v1/namespaces", token=tok).status_code == 403
        assert lab.request("GET", f"{RBAC}/clusterroles", token=tok).status_code == 403
        # the same ClusterRole bound cluster-wide (to a group of the user) reaches everything
        _, tok2 = _user(lab, groups=["ops"])
        crb = f"ops-{uuid.uuid4().hex[:6]}"
        _bind(lab, None, crb, "ClusterRole", cr, [{"kind": "Group", "name": "ops"}])
        try:
            assert lab.request("GET", f"/api/v1/namespaces/{other_namespace}/secrets", token=tok2).status_code == 200
            assert lab.request("GET", f"{RBAC}/clusterroles", token=tok2).status_code == 200
            assert lab.request("GET", f"/api/v1/namespaces/{other_namespace}/secrets", token=tok).status_code == 403
        finally:
            lab.request("DELETE", f"{RBAC}/clusterrolebindings/{crb}")
    finally:
        lab.request("DELETE", f"{RBAC}/clusterroles/{cr}")


def test_service_account_tokens_and_subjects(lab, lab_namespace, other_namespace):
    ns = lab_namespace
    _create(lab, f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "bot"}})
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/bot/token",
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}})
    assert r.status_code == 201, r.text
    tr = r.json()
    assert tr["kind"] == "TokenRequest" and tr["spec"]["expirationSeconds"] == 600 and tr["status"]["expirationTimestamp"]
    tok = tr["status"]["token"]
    ident = f"system:serviceaccount:{ns}:bot"
    _forbidden(lab.request("GET", f"/api/v1/namespaces/{ns}/pods", token=tok),
               f'pods is forbidden: User "{ident}" cannot list resource "pods" in API group "" in the namespace "{ns}"')
    _role(lab, ns, "pods", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    _bind(lab, ns, "bot", "Role", "pods", [{"kind": "ServiceAccount", "name": "bot", "namespace": ns}])
    assert lab.request("GET", f"/api/v1/namespaces/{ns}/pods", token=tok).status_code == 200
    # the same SA name in another namespace is another identity
    _create(lab, f"/api/v1/namespaces/{other_namespace}/serviceaccounts", {"metadata": {"name": "bot"}})
    other = lab.request("POST", f"/api/v1/namespaces/{other_namespace}/serviceaccounts/bot/token", json={}).json()["status"]["token"]
    assert lab.request("GET", f"/api/v1/namespaces/{ns}/pods", token=other).status_code == 403
    # group subjects: system:serviceaccounts:<ns>
    _role(lab, ns, "cms", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    _bind(lab, ns, "sa-group", "Role", "cms", [{"kind": "Group", "name": f"system:serviceaccounts:{other_namespace}"}])
    assert lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps", token=other).status_code == 200
    assert lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps", token=tok).status_code == 403
    # TokenRequest validation, and the SA must exist
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/bot/token", json={"spec": {"expirationSeconds": 5}})
    assert r.status_code == 422 and "spec.expirationSeconds" in r.json()["message"], r.text
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/ghost/token", json={})
    assert r.status_code == 404 and r.json()["message"] == 'serviceaccounts "ghost" not found'
    # minting a token is itself RBAC-controlled: the bot may not mint one for itself
    _forbidden(lab.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/bot/token", token=tok, json={}),
               f'serviceaccounts "bot" is forbidden: User "{ident}" cannot create resource "serviceaccounts/token" in '
               f'API group "" in the namespace "{ns}"')


def test_service_account_token_secret_is_filled(lab, lab_namespace):
    ns = lab_namespace
    _create(lab, f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "awx"}})
    _create(lab, f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": "awx-token", "annotations": {
        "kubernetes.io/service-account.name": "awx"}}, "type": "kubernetes.io/service-account-token"})
    data = {}
    for _ in range(50):
        data = lab.request("GET", f"/api/v1/namespaces/{ns}/secrets/awx-token").json().get("data") or {}
        if "token" in data:
            break
        time.sleep(0.1)
    assert set(data) >= {"token", "ca.crt", "namespace"}, data
    assert base64.b64decode(data["namespace"]).decode() == ns
    tok = base64.b64decode(data["token"]).decode()
    _forbidden(lab.request("GET", f"/api/v1/namespaces/{ns}/pods", token=tok),
               f'pods is forbidden: User "system:serviceaccount:{ns}:awx" cannot list resource "pods" in API group "" '
               f'in the namespace "{ns}"')


def test_cli_token_kubeconfig_with_kubectl(lab, lab_namespace, tmp_path):
    user = f"cli-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "alice.kubeconfig"
    env = lab.env()
    p = subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(lab.state_dir), "token", "--user", user,
                        "--kubeconfig", str(out)], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out)
    cfg = yaml.safe_load(out.read_text())
    assert cfg["users"][0]["user"]["token"] != lab.token
    assert cfg["clusters"][0]["cluster"]["certificate-authority-data"]  # TLS verification stays on
    k = subprocess.run(["kubectl", "--kubeconfig", str(out), "get", "pods", "-n", lab_namespace], env=env,
                       capture_output=True, text=True, timeout=30)
    assert k.returncode != 0
    assert (f'Error from server (Forbidden): pods is forbidden: User "{user}" cannot list resource "pods" in API group "" '
            f'in the namespace "{lab_namespace}"') in k.stderr, k.stderr
    _role(lab, lab_namespace, "pods", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    _bind(lab, lab_namespace, "cli", "Role", "pods", [{"kind": "User", "name": user}])
    k = subprocess.run(["kubectl", "--kubeconfig", str(out), "get", "pods", "-n", lab_namespace], env=env,
                       capture_output=True, text=True, timeout=30)
    assert k.returncode == 0, k.stderr
    assert "No resources found" in k.stderr
    # ServiceAccount identity through the same CLI (TokenRequest), and its input check
    _create(lab, f"/api/v1/namespaces/{lab_namespace}/serviceaccounts", {"metadata": {"name": "robot"}})
    p = subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(lab.state_dir), "token",
                        "--service-account", f"{lab_namespace}/robot", "--print-token"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    r = lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/pods", token=p.stdout.strip())
    assert r.status_code == 403 and f"system:serviceaccount:{lab_namespace}:robot" in r.json()["message"]
    p = subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(lab.state_dir), "token",
                        "--service-account", "robot"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--service-account must be NAMESPACE/NAME" in p.stderr
