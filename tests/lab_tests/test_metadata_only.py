"""Metadata-only reads (``PartialObjectMetadata``), as client-go's metadata client asks for them.

Reference: kubernetes/website ``content/en/docs/reference/using-api/api-concepts.md`` (Receiving resources as
metadata only); client-go ``metadata/metadata.go`` (its Accept headers); apiserver
``pkg/endpoints/handlers/response.go`` (``asPartialObjectMetadata[List]``, 406 for the mismatched form).
"""

from __future__ import annotations

import json

import requests

SINGLE = ("application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,"
          "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json")
LIST = SINGLE.replace("PartialObjectMetadata;", "PartialObjectMetadataList;")


def test_get_and_list_as_partial_object_metadata(lab, lab_namespace):
    """The first media type the server can produce wins (protobuf is skipped): kind PartialObjectMetadata(List),
    apiVersion meta.k8s.io/v1, the whole ObjectMeta and nothing else; list metadata kept."""
    ns = lab_namespace
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m", "labels": {"a": "b"}}, "data": {"secret-ish": "x"}}
    assert lab.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json=cm).status_code == 201
    full = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps/m").json()
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps/m", headers={"Accept": SINGLE})
    assert r.status_code == 200
    assert r.json() == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": full["metadata"]}
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps", headers={"Accept": LIST}, params={"labelSelector": "a=b"})
    body = r.json()
    assert body["kind"] == "PartialObjectMetadataList" and body["apiVersion"] == "meta.k8s.io/v1"
    assert body["metadata"]["resourceVersion"]
    assert body["items"] == [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": full["metadata"]}]


def test_mismatched_form_is_406(lab, lab_namespace):
    """The single form on a list, or the list form on an object: 406 NotAcceptable naming the Go type."""
    ns = lab_namespace
    lab.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}})
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps", headers={"Accept": SINGLE})
    assert r.status_code == 406 and r.json()["reason"] == "NotAcceptable"
    assert r.json()["message"] == "you requested PartialObjectMetadata, but the requested object is a list (*core.ConfigMapList)"
    r = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/x", headers={"Accept": LIST})
    assert r.status_code == 404  # a missing object is still a 404
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/configmaps/m", headers={"Accept": LIST})
    assert r.status_code == 406
    assert r.json()["message"] == "you requested PartialObjectMetadataList, but the requested object is not a list (*core.ConfigMap)"


def test_watch_sends_partial_object_metadata(lab, lab_namespace):
    """A metadata informer's watch gets its events' objects as PartialObjectMetadata."""
    ns = lab_namespace
    lab.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}, "data": {"k": "v"}})
    with requests.get(f"{lab.api}/api/v1/namespaces/{ns}/configmaps", params={"watch": "1", "timeoutSeconds": "2", "fieldSelector": "metadata.name=w"},
                      headers={"Authorization": f"Bearer {lab.token}", "Accept": SINGLE}, verify=str(lab.ca), stream=True, timeout=10) as r:
        event = json.loads(next(r.iter_lines()))
    assert event["type"] == "ADDED" and event["object"]["kind"] == "PartialObjectMetadata"
    assert event["object"]["metadata"]["name"] == "w" and "data" not in event["object"]
