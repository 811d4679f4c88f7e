"""fieldValidation Strict / Warn / Ignore, compared with what kube-apiserver does.

Reference: kubernetes/website ``content/en/docs/reference/using-api/api-concepts.md`` (Field validation: absent
means ``Warn`` on the server, kubectl sends ``Strict``); apiserver ``pkg/endpoints/handlers/rest.go``
(``fieldValidation``), ``create.go``/``update.go`` (``transformDecodeError``), ``patch.go``
(``applyPatchToObject``, ``jsonPatcher``, and apply's typed conversion); apimachinery
``pkg/util/net/http.go`` (``NewWarningHeader``); kubernetes-sigs/json (``unknown field``/``duplicate field``).
"""

from __future__ import annotations

import json
import subprocess

import yaml

KUBECTL = "/usr/bin/kubectl"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def deployment(name: str = "web") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}


def typo(name: str = "web") -> dict:
    d = deployment(name)
    d["spec"]["replicaz"] = 1
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    return d


def warnings(r) -> list[str]:
    return r.raw.headers.getlist("Warning")


def dpath(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def test_create_warns_by_default_and_drops_the_unknown_fields(lab, lab_namespace):
    """No fieldValidation means Warn: 201, the unknown fields dropped, one ``Warning: 299 - "..."`` header each."""
    r = lab.request("POST", dpath(lab_namespace), json=typo())
    assert r.status_code == 201, r.text
    assert warnings(r) == ['299 - "unknown field \\"spec.template.spec.containers[0].imagePullPolice\\""',  # document order
                           '299 - "unknown field \\"spec.replicaz\\""']
    stored = lab.request("GET", dpath(lab_namespace, "web")).json()
    assert "replicaz" not in stored["spec"] and stored["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_strict_fails_and_ignore_is_silent(lab, lab_namespace):
    """Strict: 400 BadRequest ``<Kind> in version "<v>" cannot be handled as a <Kind>: strict decoding error: ...``
    on create and update; Ignore: the fields are dropped without a warning."""
    r = lab.request("POST", dpath(lab_namespace), json=typo(), params={"fieldValidation": "Strict"})
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
    assert r.json()["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
                                   'unknown field "spec.template.spec.containers[0].imagePullPolice", unknown field "spec.replicaz"')
    assert lab.request("GET", dpath(lab_namespace, "web")).status_code == 404
    r = lab.request("POST", dpath(lab_namespace), json=typo(), params={"fieldValidation": "Ignore"})
    assert r.status_code == 201 and warnings(r) == []
    current = r.json()
    current["spec"]["bogus"] = True
    r = lab.request("PUT", dpath(lab_namespace, "web"), json=current, params={"fieldValidation": "Strict"})
    assert r.status_code == 400
    assert r.json()["message"] == 'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.bogus"'


def test_duplicate_json_fields(lab, lab_namespace):
    """A JSON body with a repeated key: Strict fails with ``duplicate field "<path>"``, Warn keeps the last value."""
    raw = json.dumps(deployment()).replace('"replicas": 0', '"replicas": 0, "replicas": 0')
    r = lab.request("POST", dpath(lab_namespace), data=raw, headers={"Content-Type": "application/json"}, params={"fieldValidation": "Strict"})
    assert r.status_code == 400
    assert r.json()["message"].endswith('strict decoding error: duplicate field "spec.replicas"')
    r = lab.request("POST", dpath(lab_namespace), data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 201 and warnings(r) == ['299 - "duplicate field \\"spec.replicas\\""']


def test_patches(lab, lab_namespace):
    """Patches: Strict fails with 422 on ``patch`` (quoting the strategic merge patch as Go prints it), Warn
    applies the rest with a warning, Ignore applies it silently."""
    assert lab.request("POST", dpath(lab_namespace), json=deployment()).status_code == 201
    p = dpath(lab_namespace, "web")
    r = lab.request("PATCH", p, data=json.dumps({"spec": {"foo": 1}}), headers=SMP, params={"fieldValidation": "Strict"})
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    assert r.json()["message"] == ' "" is invalid: patch: Invalid value: "map[spec:map[foo:1]]": strict decoding error: unknown field "spec.foo"'
    assert r.json()["details"]["causes"][0]["field"] == "patch"
    r = lab.request("PATCH", p, data=json.dumps({"spec": {"foo": 1, "paused": True}}), headers=MERGE)
    assert r.status_code == 200 and r.json()["spec"]["paused"] is True and "foo" not in r.json()["spec"]
    assert warnings(r) == ['299 - "unknown field \\"spec.foo\\""']
    r = lab.request("PATCH", p, data=json.dumps({"spec": {"foo": 1}}), headers=SMP, params={"fieldValidation": "Ignore"})
    assert r.status_code == 200 and warnings(r) == []


def test_schema_violations_stay_422_and_bad_directives_are_refused(lab, lab_namespace):
    """Wrong types and missing required fields are validation errors (422 Invalid) whatever the directive; an
    unsupported directive is a 422 on the request options."""
    bad = deployment()
    bad["spec"]["replicas"] = "two"
    r = lab.request("POST", dpath(lab_namespace), json=bad, params={"fieldValidation": "Ignore"})
    assert r.status_code == 422 and "spec.replicas" in r.json()["message"]
    r = lab.request("POST", dpath(lab_namespace), json=deployment(), params={"fieldValidation": "Loose"})
    assert r.status_code == 422
    assert r.json()["message"] == ('CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loose": '
                                   'supported values: "", "Ignore", "Strict", "Warn"')


def test_server_side_apply_rejects_unknown_fields_whatever_the_directive(lab, lab_namespace):
    """Server-side apply converts the configuration to a typed value first: an unknown field is the apiserver's
    500 ``failed to create typed patch object`` (structuredmerge.go), even with fieldValidation=Ignore."""
    r = lab.request("PATCH", dpath(lab_namespace, "web"), data=yaml.safe_dump(typo()),
                    headers={"Content-Type": "application/apply-patch+yaml"}, params={"fieldManager": "t", "fieldValidation": "Ignore"})
    assert r.status_code == 500 and "reason" not in r.json()
    assert r.json()["message"] == (f"failed to create typed patch object ({lab_namespace}/web; apps/v1, Kind=Deployment): errors:\n"
                                   '  .spec.replicaz: field not declared in schema\n'
                                   '  .spec.template.spec.containers[name="c"].imagePullPolice: field not declared in schema')


def test_kubectl_validate_modes(lab, lab_namespace):
    """kubectl sends fieldValidation=Strict by default (``--validate=strict``) and Warn with ``--validate=warn``,
    which it prints as ``Warning: unknown field ...``."""
    doc = typo()
    doc["metadata"]["namespace"] = lab_namespace
    text = yaml.safe_dump(doc)
    env = lab.env()
    r = subprocess.run([KUBECTL, "create", "-f", "-"], input=text, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert ('Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" cannot be handled as a '
            'Deployment: strict decoding error: unknown field "spec.replicaz"') in r.stderr, r.stderr
    r = subprocess.run([KUBECTL, "apply", "--validate=warn", "-f", "-"], input=text, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "deployment.apps/web created" in r.stdout, r.stderr
    assert 'Warning: unknown field "spec.replicaz"' in r.stderr
