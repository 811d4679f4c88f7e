"""What the apiserver enforces on Pods: ServiceAccount admission, the ``serviceAccount`` alias, and the fields a
Pod update may change; and how a ReplicaSet reports pods it may not create.

Reference: kubernetes/website ``content/en/docs/concepts/security/service-accounts.md`` and
``content/en/docs/concepts/workloads/pods/_index.md`` (Pod update and replacement); k/k
``plugin/pkg/admission/serviceaccount/admission.go``, apiserver ``pkg/admission/errors.go``,
``pkg/apis/core/v1/conversion.go`` (``serviceAccount``), ``pkg/apis/core/validation/validation.go``
(``ValidatePodUpdate``), ``pkg/controller/replicaset/replica_set_utils.go`` (``ReplicaFailure``) and
``pkg/controller/deployment/sync.go`` (``getReplicaFailures``).
"""

from __future__ import annotations

import json
import time

SMP = {"Content-Type": "application/strategic-merge-patch+json"}
IMAGE = "example.invalid/app:1"  # never pulled: these pods are objects, not processes


def pod(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": IMAGE}], **spec}}


def pods(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods"


def wait_for(fn, timeout: float = 20):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.1)


def test_every_namespace_has_a_default_service_account_that_pods_get(lab, lab_namespace):
    """The ServiceAccount controller makes ``default`` in each namespace; admission gives it to pods that name none."""
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/serviceaccounts/default").status_code == 200
    r = lab.request("POST", pods(lab_namespace), json=pod("p"))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["serviceAccountName"] == "default" and r.json()["spec"]["serviceAccount"] == "default"


def test_a_pod_naming_a_missing_service_account_is_forbidden(lab, lab_namespace):
    """403 ``pods "<name>" is forbidden: service account <ns>/<sa> was not found, retry after the service account is
    created``; with generateName, the message names the prefix (the server has not generated a name yet)."""
    ns = lab_namespace
    r = lab.request("POST", pods(ns), json=pod("p", serviceAccountName="ghost"))
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
    assert r.json()["message"] == f'pods "p" is forbidden: service account {ns}/ghost was not found, retry after the service account is created'
    assert r.json()["details"] == {"name": "p", "kind": "pods"}
    body = pod("", serviceAccountName="ghost")
    body["metadata"] = {"generateName": "gen-"}
    r = lab.request("POST", pods(ns), json=body)
    assert r.status_code == 403 and r.json()["message"].startswith('pods "gen-" is forbidden: service account')


def test_service_account_is_a_deprecated_alias(lab, lab_namespace):
    """``spec.serviceAccount`` is used only when ``serviceAccountName`` is empty, and always reads back as it."""
    ns = lab_namespace
    assert lab.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", json={"metadata": {"name": "robot"}}).status_code == 201
    r = lab.request("POST", pods(ns), json=pod("alias", serviceAccount="robot"))
    assert (r.json()["spec"]["serviceAccountName"], r.json()["spec"]["serviceAccount"]) == ("robot", "robot")
    r = lab.request("POST", pods(ns), json=pod("both", serviceAccount="ghost", serviceAccountName="robot"))
    assert r.status_code == 201 and (r.json()["spec"]["serviceAccountName"], r.json()["spec"]["serviceAccount"]) == ("robot", "robot")


def test_a_deployment_whose_service_account_is_missing_never_gets_pods(lab, lab_namespace):
    """The Deployment is accepted; its ReplicaSet records ``ReplicaFailure``/``FailedCreate`` with the admission
    error and a ``FailedCreate`` event, the Deployment copies the condition; once the ServiceAccount exists the
    pods come and the condition goes."""
    ns = lab_namespace
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"serviceAccountName": "runner", "containers": [{"name": "c", "image": IMAGE}]}}}}
    assert lab.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", json=dep).status_code == 201

    def failure(kind: str):
        items = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/{kind}").json()["items"]
        return next((c for o in items for c in (o.get("status") or {}).get("conditions") or [] if c["type"] == "ReplicaFailure"), None)

    cond = wait_for(lambda: failure("replicasets"))
    [rs] = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets").json()["items"]
    rs_name = rs["metadata"]["name"]
    message = f'pods "{rs_name}-" is forbidden: service account {ns}/runner was not found, retry after the service account is created'
    assert cond is not None and (cond["status"], cond["reason"], cond["message"]) == ("True", "FailedCreate", message)
    assert set(cond) == {"type", "status", "lastTransitionTime", "reason", "message"}
    dcond = wait_for(lambda: failure("deployments"))
    assert dcond is not None and (dcond["reason"], dcond["message"]) == ("FailedCreate", message)
    events = lab.request("GET", f"/api/v1/namespaces/{ns}/events").json()["items"]
    assert any(e["reason"] == "FailedCreate" and e["type"] == "Warning" and e["message"] == f"Error creating: {message}" for e in events)
    assert lab.request("GET", pods(ns)).json()["items"] == []

    assert lab.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", json={"metadata": {"name": "runner"}}).status_code == 201
    assert wait_for(lambda: lab.request("GET", pods(ns)).json()["items"])
    assert wait_for(lambda: failure("replicasets") is None and failure("deployments") is None)


def test_pod_updates_may_change_only_what_the_apiserver_allows(lab, lab_namespace):
    """Images, activeDeadlineSeconds (set, or lowered) and added tolerations may change; anything else in the
    spec is 422 ``spec: Forbidden: pod updates may not change fields other than ...``."""
    ns = lab_namespace
    assert lab.request("POST", pods(ns), json=pod("p", tolerations=[{"key": "a", "operator": "Exists"}])).status_code == 201
    p = f"{pods(ns)}/p"

    def patch(body: dict):
        return lab.request("PATCH", p, data=json.dumps(body), headers=SMP)

    assert patch({"spec": {"containers": [{"name": "c", "image": "example.invalid/app:2"}]}}).status_code == 200
    r = patch({"spec": {"containers": [{"name": "c", "args": ["x"]}]}})
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    assert r.json()["message"].startswith(
        'Pod "p" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,'
        '`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing '
        'tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)')
    assert patch({"spec": {"activeDeadlineSeconds": 100}}).status_code == 200
    r = patch({"spec": {"activeDeadlineSeconds": 200}})
    assert r.status_code == 422
    assert r.json()["message"] == 'Pod "p" is invalid: spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value'
    assert patch({"spec": {"activeDeadlineSeconds": 50}}).status_code == 200
    def json_patch(op: dict):
        return lab.request("PATCH", p, data=json.dumps([op]), headers={"Content-Type": "application/json-patch+json"})

    assert json_patch({"op": "add", "path": "/spec/tolerations/-", "value": {"key": "b", "operator": "Exists"}}).status_code == 200
    r = patch({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}})  # an atomic list: replaced, "a" removed
    assert r.status_code == 422
    assert r.json()["message"] == 'Pod "p" is invalid: spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds'
