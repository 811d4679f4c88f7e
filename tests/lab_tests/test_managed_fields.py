"""metadata.managedFields and server-side apply, compared with what kube-apiserver does.

Reference: kubernetes/website ``content/en/docs/reference/using-api/server-side-apply.md`` (field management,
conflicts, merge strategy, "Using server-side apply in a controller"); apimachinery
``pkg/util/managedfields/internal/`` (``fieldmanager.go``, ``managedfieldsupdater.go``, ``structuredmerge.go``,
``conflict.go``, ``lastappliedmanager.go``); apiserver ``pkg/endpoints/handlers/create.go`` (``managerOrUserAgent``)
and ``patch.go``; apimachinery ``pkg/apis/meta/v1/validation`` (``ValidatePatchOptions``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402

KUBECTL = "/usr/bin/kubectl"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
APPLY = {"Content-Type": "application/apply-patch+yaml"}
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


def cm_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def configmap(name: str, data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def entries(obj: dict) -> dict[tuple, dict]:
    """managedFields by (manager, operation, subresource)."""
    return {(e["manager"], e["operation"], e.get("subresource", "")): e for e in obj["metadata"].get("managedFields", [])}


def apply(lab, path: str, doc: dict, manager: str, **params):
    return lab.request("PATCH", path, data=yaml.safe_dump(doc), headers=APPLY, params={"fieldManager": manager, **params})


def kubectl(lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, *args], input=stdin, env=lab.env(), capture_output=True, text=True, timeout=60)


def test_create_records_an_update_entry_named_by_field_manager_or_user_agent(lab, lab_namespace, k8s_client):
    """A create is an ``Update`` by the fieldManager parameter, else by the User-Agent up to its first "/"
    (handlers/create.go managerOrUserAgent); entry keys and FieldsV1 as the API reference describes them."""
    r = lab.request("POST", cm_path(lab_namespace), json=configmap("a", {"k": "v"}), params={"fieldManager": "alpha"})
    assert r.status_code == 201, r.text
    [entry] = r.json()["metadata"]["managedFields"]
    assert list(entry) == ["manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1"]
    assert entry["manager"] == "alpha" and entry["operation"] == "Update" and entry["apiVersion"] == "v1"
    assert RFC3339.match(entry["time"]) and entry["fieldsType"] == "FieldsV1"
    assert entry["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}

    r = lab.request("POST", cm_path(lab_namespace), json=configmap("b", {"k": "v"}), headers={"User-Agent": "my-tool/1.2 (linux)"})
    assert [e["manager"] for e in r.json()["metadata"]["managedFields"]] == ["my-tool"]

    from kubernetes import client

    created = client.CoreV1Api(k8s_client).create_namespaced_config_map(lab_namespace, configmap("c", {"k": "v"}))
    assert [e.manager for e in created.metadata.managed_fields] == ["OpenAPI-Generator"]  # "OpenAPI-Generator/<v>/python"


def test_update_moves_only_changed_fields_and_a_noop_write_changes_nothing(lab, lab_namespace):
    """An Update takes the fields whose values it changed from every other manager; a write that changes no value
    leaves the object byte-identical: same resourceVersion, same managedFields times (managedfieldsupdater.go),
    which is what kubernetes.core's changed-detection (GET vs PATCH response) relies on."""
    p = cm_path(lab_namespace, "cfg")
    lab.request("POST", cm_path(lab_namespace), json=configmap("cfg", {"a": "1", "b": "2"}), params={"fieldManager": "alpha"})
    r = lab.request("PATCH", p, data=json.dumps({"data": {"a": "changed"}}), headers=SMP, params={"fieldManager": "beta"})
    got = entries(r.json())
    assert got[("alpha", "Update", "")]["fieldsV1"] == {"f:data": {".": {}, "f:b": {}}}
    assert got[("beta", "Update", "")]["fieldsV1"] == {"f:data": {"f:a": {}}}
    before = lab.request("GET", p)
    for method, body, headers in (("PATCH", json.dumps({"data": {"a": "changed"}}), SMP),
                                  ("PATCH", json.dumps({"data": {"b": "2"}}), MERGE),
                                  ("PUT", json.dumps(before.json()), {"Content-Type": "application/json"})):
        r = lab.request(method, p, data=body, headers=headers, params={"fieldManager": "gamma"})
        assert r.status_code == 200, r.text
        assert r.json() == before.json(), f"{method} {headers} was not a no-op"
    assert lab.request("GET", p).content == before.content


def test_subresource_writes_have_their_own_entries(lab, lab_namespace):
    """Status and scale writes are recorded with ``subresource`` (apiVersion stays the main resource's); the lab's
    controllers write Deployment status as kube-controller-manager through the status subresource, and main-resource
    writes own no status (the strategies' reset fields, ``GetResetFields``)."""
    ns = lab_namespace
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}
    p = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    assert lab.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", json=dep, params={"fieldManager": "deployer"}).status_code == 201
    r = lab.request("PATCH", p + "/scale", data=json.dumps({"spec": {"replicas": 0}}), headers=MERGE, params={"fieldManager": "scaler"})
    assert r.status_code == 200
    r = lab.request("PATCH", p + "/scale", data=json.dumps({"spec": {"replicas": 0}}), headers=MERGE, params={"fieldManager": "scaler"})
    assert ("scaler", "Update", "scale") not in entries(lab.request("GET", p).json())  # unchanged: nothing recorded
    r = kubectl(lab, "scale", "deployment/web", "-n", ns, "--replicas=0")
    assert r.returncode == 0, r.stderr
    for _ in range(100):
        got = entries(lab.request("GET", p).json())
        if ("kube-controller-manager", "Update", "status") in got:
            break
    status_entry = got[("kube-controller-manager", "Update", "status")]
    assert status_entry["apiVersion"] == "apps/v1" and "f:status" in status_entry["fieldsV1"]
    assert got[("deployer", "Update", "")]["fieldsV1"]["f:spec"]["f:replicas"] == {}
    assert "f:status" not in got[("deployer", "Update", "")]["fieldsV1"]  # status is a reset field of the main resource


def test_kubectl_records_its_own_managers(lab, lab_namespace):
    """kubectl names itself per command (``kubectl-create``, ``kubectl-client-side-apply``, ``kubectl-label``, ...)
    through the fieldManager parameter; the server records what it is given."""
    ns = lab_namespace
    cm = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: k, namespace: {ns}}}\ndata: {{a: '1'}}\n"
    assert kubectl(lab, "create", "-f", "-", stdin=cm).returncode == 0
    assert kubectl(lab, "apply", "-f", "-", stdin=cm.replace("'1'", "'2'")).returncode == 0
    assert kubectl(lab, "label", "configmap", "k", "-n", ns, "team=x").returncode == 0
    got = entries(lab.request("GET", cm_path(ns, "k")).json())
    assert {m for m, _, _ in got} == {"kubectl-create", "kubectl-client-side-apply", "kubectl-label"}
    assert got[("kubectl-label", "Update", "")]["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:team": {}}}}
    assert "f:a" in got[("kubectl-client-side-apply", "Update", "")]["fieldsV1"]["f:data"]


def test_managed_fields_can_be_set_and_reset_by_a_request(lab, lab_namespace):
    """A non-apply write may set managedFields itself (kubectl's client-side to server-side apply migration
    does); ``[{}]`` or ``[]`` resets them (fieldmanager.go isResetManagedFields)."""
    p = cm_path(lab_namespace, "m")
    lab.request("POST", cm_path(lab_namespace), json=configmap("m", {"a": "1"}), params={"fieldManager": "alpha"})
    mine = [{"manager": "owner", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]
    r = lab.request("PATCH", p, data=json.dumps([{"op": "replace", "path": "/metadata/managedFields", "value": mine}]), headers=JSONPATCH)
    assert r.json()["metadata"]["managedFields"] == mine
    for reset in ([{}], []):
        lab.request("PATCH", p, data=json.dumps([{"op": "add", "path": "/metadata/managedFields", "value": mine}]), headers=JSONPATCH)
        r = lab.request("PATCH", p, data=json.dumps([{"op": "add", "path": "/metadata/managedFields", "value": reset}]), headers=JSONPATCH)
        assert r.status_code == 200 and "managedFields" not in r.json()["metadata"], r.json()["metadata"]


# --------------------------------------------------------------------------- server-side apply
def test_apply_conflicts_are_409_with_the_apiservers_message_and_causes(lab, lab_namespace):
    """Applying a value another manager owns is a 409 Conflict worded as conflict.go does (one conflict, and
    several grouped by manager); ``force`` takes the fields over and removes them from the other manager."""
    p = cm_path(lab_namespace, "c")
    lab.request("POST", cm_path(lab_namespace), json=configmap("c", {"a": "1", "b": "2"}), params={"fieldManager": "editor"})
    r = apply(lab, p, configmap("c", {"a": "x"}), "deployer")
    assert r.status_code == 409
    body = r.json()
    assert body["reason"] == "Conflict" and body["code"] == 409 and body["status"] == "Failure"
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "editor" using v1: .data.a'
    assert body["details"] == {"causes": [{"reason": "FieldManagerConflict", "message": 'conflict with "editor" using v1', "field": ".data.a"}]}
    r = apply(lab, p, configmap("c", {"a": "x", "b": "y"}), "deployer")
    assert r.json()["message"] == 'Apply failed with 2 conflicts: conflicts with "editor" using v1:\n- .data.a\n- .data.b'
    assert apply(lab, p, configmap("c", {"a": "x"}), "deployer", force="true").status_code == 200
    got = entries(lab.request("GET", p).json())
    assert got[("deployer", "Apply", "")]["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert got[("editor", "Update", "")]["fieldsV1"] == {"f:data": {".": {}, "f:b": {}}}
    r = apply(lab, p, configmap("c", {"a": "again"}), "third")
    assert r.json()["message"] == 'Apply failed with 1 conflict: conflict with "deployer": .data.a'  # Apply owners: no "using"


def test_apply_shares_equal_values_and_removes_only_fields_nobody_else_owns(lab, lab_namespace):
    """Two appliers setting the same value share it without conflict; a field an applier stops sending is removed
    only when no other manager owns it (server-side-apply.md, "Merge strategy"/"Field management")."""
    p = cm_path(lab_namespace, "s")
    assert apply(lab, p, configmap("s", {"shared": "1", "mine": "1"}), "a").status_code == 201
    assert apply(lab, p, configmap("s", {"shared": "1"}), "b").status_code == 200
    r = apply(lab, p, configmap("s", {}), "a")  # a stops sending both
    assert r.json()["data"] == {"shared": "1"}, r.json()
    r = apply(lab, p, configmap("s", {"other": "1"}), "b")  # b stops sending "shared": nobody owns it now
    assert r.json()["data"] == {"other": "1"}


def test_apply_dry_run_and_noop(lab, lab_namespace):
    """``dryRun=All`` answers what would be stored and stores nothing; re-applying the same configuration leaves
    the object as it is, managedFields time included (structuredmerge.go returns no object on a no-op)."""
    p = cm_path(lab_namespace, "d")
    assert apply(lab, p, configmap("d", {"a": "1"}), "a", dryRun="All").status_code == 201
    assert lab.request("GET", p).status_code == 404
    first = apply(lab, p, configmap("d", {"a": "1"}), "a").json()
    r = apply(lab, p, configmap("d", {"a": "2"}), "a", dryRun="All")
    assert r.json()["data"] == {"a": "2"}
    assert lab.request("GET", p).json() == first
    assert apply(lab, p, configmap("d", {"a": "1"}), "a").json() == first


def test_apply_and_patch_options_are_validated(lab, lab_namespace):
    """ValidatePatchOptions: apply needs a fieldManager, force only goes with apply (422 on PatchOptions);
    an applied configuration may not carry managedFields (400)."""
    p = cm_path(lab_namespace, "o")
    r = lab.request("PATCH", p, data=yaml.safe_dump(configmap("o", {})), headers=APPLY)
    assert r.status_code == 422
    assert r.json()["message"] == 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    lab.request("POST", cm_path(lab_namespace), json=configmap("o", {}))
    r = lab.request("PATCH", p, data="{}", headers=MERGE, params={"force": "true"})
    assert r.status_code == 422
    assert r.json()["message"] == 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch'
    doc = configmap("o", {})
    doc["metadata"]["managedFields"] = []
    r = apply(lab, p, doc, "a")
    assert r.status_code == 400 and r.json()["message"] == "metadata.managedFields must be nil"


def test_kubectl_server_side_apply_after_client_side_apply(lab, lab_namespace):
    """``kubectl apply --server-side`` after ``kubectl apply`` takes over what the last-applied annotation still
    says (lastappliedmanager.go); another field manager changing those fields gets kubectl's conflict error."""
    ns = lab_namespace
    doc = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: busybox:1}}]}}
"""
    assert kubectl(lab, "apply", "-f", "-", stdin=doc).returncode == 0
    r = kubectl(lab, "apply", "--server-side", "-f", "-", stdin=doc.replace("replicas: 0", "replicas: 1"))
    assert r.returncode == 0 and "deployment.apps/web serverside-applied" in r.stdout, r.stderr
    r = kubectl(lab, "apply", "--server-side", "--field-manager=other", "-f", "-", stdin=doc.replace("replicas: 0", "replicas: 2"))
    assert r.returncode == 1
    assert 'error: Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas' in r.stderr, r.stderr
    got = entries(lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/web").json())
    assert "f:replicas" in got[("kubectl", "Apply", "")]["fieldsV1"]["f:spec"]
    assert ("kubectl-client-side-apply", "Update", "") not in got  # migrated by kubectl (csaupgrade)


def test_kubernetes_core_second_run_is_unchanged_and_unknown_fields_warn(lab, lab_namespace):
    """kubernetes.core sends the whole definition as a strategic merge patch and reports ``changed`` from the diff
    of GET and PATCH responses: with managedFields recorded (manager ``OpenAPI-Generator``, its User-Agent) a
    second run is still unchanged, because a no-op write changes nothing. It sends no fieldValidation, so an unknown
    field is the apiserver's default Warn: dropped, and shown as an Ansible warning, not a failure."""
    res = run_playbook(Path(__file__).parent / "playbooks" / "k8s_field_management.yml", kubeconfig=lab.kubeconfig,
                       extra_vars={"ns": lab_namespace}, tmpdir=str(lab.env()["TMPDIR"]))
    assert res.rc == 0, res.output
    assert [h["changed"] for h in res.task("First run")] == [True]
    assert [h["changed"] for h in res.task("Second run")] == [False]
    [typo] = res.task("With a typo")
    assert typo["changed"] is False and 'unknown field "spec.replicaz"' in typo.get("warnings", []), typo
    dep = lab.request("GET", f"/apis/apps/v1/namespaces/{lab_namespace}/deployments/web").json()
    assert "replicaz" not in dep["spec"]
    assert ("OpenAPI-Generator", "Update", "") in entries(dep)
