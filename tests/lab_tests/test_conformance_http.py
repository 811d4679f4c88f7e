"""Raw HTTP conformance of the lab API server: status codes, reasons and messages as kube-apiserver words them."""

from __future__ import annotations

import json
import time

import pytest
import requests


def deployment(ns: str, name: str = "web", labels: dict | None = None, args: list | None = None) -> dict:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)},
                         "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1.0", "args": args or ["a"],
                                                  "ports": [{"containerPort": 8080}],
                                                  "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}},
        },
    }


def dpath(ns, name=""):
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def settled(lab, path: str) -> dict:
    """The object once controllers (if any) stopped touching it."""
    last = lab.request("GET", path).json()
    for _ in range(40):
        time.sleep(0.1)
        cur = lab.request("GET", path).json()
        if cur["metadata"]["resourceVersion"] == last["metadata"]["resourceVersion"]:
            return cur
        last = cur
    return last


def put_status(lab, path: str, status: dict):
    for _ in range(10):
        cur = lab.request("GET", path).json()
        r = lab.request("PUT", path + "/status", json=dict(cur, status=status))
        if r.status_code != 409:
            return r
    return r


def smp(lab, path, body, **kw):
    return lab.request("PATCH", path, data=json.dumps(body), headers={"Content-Type": "application/strategic-merge-patch+json"}, **kw)


# --------------------------------------------------------------------------- auth, discovery
def test_missing_or_wrong_token_is_401_status(lab):
    for token in (None, "wrong"):
        r = lab.request("GET", "/api/v1/namespaces", token=token)
        assert r.status_code == 401
        body = r.json()
        assert body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401
    assert requests.get(lab.api + "/readyz", verify=str(lab.ca), timeout=5).status_code == 200


def test_tls_is_verified_with_the_lab_ca(lab):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(lab.api + "/readyz", timeout=5)  # system CAs do not know the lab CA


def test_discovery_documents(lab):
    v = lab.request("GET", "/version").json()
    assert v["major"] == "1" and v["gitVersion"].startswith("v1.32.")
    assert lab.request("GET", "/api").json()["versions"] == ["v1"]
    groups = {g["name"] for g in lab.request("GET", "/apis").json()["groups"]}
    assert {"apps", "batch", "networking.k8s.io", "policy", "rbac.authorization.k8s.io", "discovery.k8s.io",
            "coordination.k8s.io"} <= groups
    core = {r["name"]: r for r in lab.request("GET", "/api/v1").json()["resources"]}
    assert core["pods"]["namespaced"] is True and core["pods"]["shortNames"] == ["po"] and "all" in core["pods"]["categories"]
    assert core["namespaces"]["namespaced"] is False
    assert core["pods/log"]["verbs"] == ["get"] and core["pods/exec"]["kind"] == "PodExecOptions"
    assert core["pods/portforward"]["verbs"] == ["create", "get"]
    assert core["pods/status"]["verbs"] == ["get", "patch", "update"]
    apps = {r["name"]: r for r in lab.request("GET", "/apis/apps/v1").json()["resources"]}
    assert apps["deployments"]["kind"] == "Deployment" and "watch" in apps["deployments"]["verbs"]
    assert apps["deployments/scale"]["group"] == "autoscaling" and apps["deployments/scale"]["kind"] == "Scale"
    # aggregated discovery is not served: the plain form comes back, as clients accept
    r = lab.request("GET", "/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"})
    assert r.json()["kind"] == "APIGroupList"


# --------------------------------------------------------------------------- errors
def test_unknown_kinds_and_groups_are_404(lab, lab_namespace):
    for path in ("/apis/example.com/v1/namespaces/x/widgets", "/api/v1/namespaces/x/widgets", "/apis/apps/v9/deployments",
                 "/apis/example.com/v1"):
        r = lab.request("GET", path)
        assert r.status_code == 404, path
        assert r.json()["reason"] == "NotFound"
    r = lab.request("GET", dpath(lab_namespace, "nope"))
    assert r.status_code == 404
    assert r.json()["message"] == 'deployments.apps "nope" not found'
    assert r.json()["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


@pytest.mark.parametrize("name,path,kind_msg", [
    ("Bad_Name", "deployments", 'Deployment.apps "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'),
    ("1svc", "services", 'Service "1svc" is invalid: metadata.name: Invalid value: "1svc": a DNS-1035 label'),
])
def test_invalid_names_are_422(lab, lab_namespace, name, path, kind_msg):
    if path == "deployments":
        body = deployment(lab_namespace, "x")
        body["metadata"]["name"] = name
        r = lab.request("POST", dpath(lab_namespace), json=body)
    else:
        r = lab.request("POST", f"/api/v1/namespaces/{lab_namespace}/services",
                        json={"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}})
    assert r.status_code == 422
    assert r.json()["reason"] == "Invalid"
    assert r.json()["message"].startswith(kind_msg)
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}})
    assert r.status_code == 422 and "RFC 1123 label" in r.json()["message"]


def test_malformed_json_is_400(lab, lab_namespace):
    r = lab.request("POST", dpath(lab_namespace), data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"


def test_wrong_patch_content_type_is_415(lab, lab_namespace):
    assert lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace)).status_code == 201
    r = lab.request("PATCH", dpath(lab_namespace, "web"), data="{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    assert r.json()["reason"] == "UnsupportedMediaType"
    assert "application/strategic-merge-patch+json" in r.json()["message"]


def test_schema_validation_names_the_field(lab, lab_namespace):
    bad = deployment(lab_namespace)
    bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    r = lab.request("POST", dpath(lab_namespace), json=bad)
    assert r.status_code == 422 and "spec.template.spec.containers[0].bogus" in r.json()["message"]
    bad = deployment(lab_namespace)
    bad["spec"]["replicas"] = "two"
    r = lab.request("POST", dpath(lab_namespace), json=bad)
    assert r.status_code == 422 and "spec.replicas" in r.json()["message"] and "integer" in r.json()["message"]
    bad = deployment(lab_namespace)
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]
    r = lab.request("POST", dpath(lab_namespace), json=bad)
    assert r.status_code == 422
    assert "spec.template.spec.containers[0].name: Required value" in r.json()["message"]
    assert r.json()["details"]["causes"][0]["field"] == "spec.template.spec.containers[0].name"


def test_selector_change_is_422_immutable(lab, lab_namespace):
    assert lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace)).status_code == 201
    r = smp(lab, dpath(lab_namespace, "web"), {"spec": {"selector": {"matchLabels": {"app": "web", "x": "y"}},
                                                        "template": {"metadata": {"labels": {"x": "y"}}}}})
    assert r.status_code == 422
    msg = r.json()["message"]
    assert msg.startswith('Deployment.apps "web" is invalid: spec.selector: Invalid value: ')
    assert msg.endswith("field is immutable")


def test_create_conflicts_and_missing_namespace(lab, lab_namespace):
    assert lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace)).status_code == 201
    r = lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace))
    assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"
    assert r.json()["message"] == 'deployments.apps "web" already exists'
    r = lab.request("POST", dpath("no-such-ns"), json=deployment("no-such-ns"))
    assert r.status_code == 404 and r.json()["message"] == 'namespaces "no-such-ns" not found'
    cur = lab.request("GET", dpath(lab_namespace, "web")).json()
    stale = dict(cur, metadata=dict(cur["metadata"], resourceVersion="1"))
    r = lab.request("PUT", dpath(lab_namespace, "web"), json=stale)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    assert "the object has been modified" in r.json()["message"]


# --------------------------------------------------------------------------- semantics
def test_resource_version_and_generation_semantics(lab, lab_namespace):
    assert lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace)).status_code == 201
    created = settled(lab, dpath(lab_namespace, "web"))
    md = created["metadata"]
    assert md["generation"] == 1 and md["uid"] and md["creationTimestamp"]
    # defaults as a real cluster returns them
    spec = created["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["dnsPolicy"] == "ClusterFirst" and pod["terminationGracePeriodSeconds"] == 30
    c = pod["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent" and c["terminationMessagePath"] == "/dev/termination-log"
    assert c["ports"][0]["protocol"] == "TCP"
    # whole-object strategic merge patch with nothing new: identical object back
    same = smp(lab, dpath(lab_namespace, "web"), deployment(lab_namespace)).json()
    assert same == created
    # label change: new resourceVersion, same generation
    lab_only = smp(lab, dpath(lab_namespace, "web"), {"metadata": {"labels": {"extra": "1"}}}).json()
    assert lab_only["metadata"]["resourceVersion"] != md["resourceVersion"] and lab_only["metadata"]["generation"] == 1
    # spec change: generation bumps
    spec_change = smp(lab, dpath(lab_namespace, "web"), {"spec": {"replicas": 3}}).json()
    assert spec_change["metadata"]["generation"] == 2
    # status writes through the main resource are ignored, through /status they land
    r = put_status(lab, dpath(lab_namespace, "web"), {"observedGeneration": 2, "replicas": 0})
    assert r.status_code == 200 and r.json()["status"]["observedGeneration"] == 2 and r.json()["metadata"]["generation"] == 2


def test_dry_run_does_not_persist(lab, lab_namespace):
    r = lab.request("POST", dpath(lab_namespace) + "?dryRun=All", json=deployment(lab_namespace))
    assert r.status_code == 201 and r.json()["spec"]["revisionHistoryLimit"] == 10
    assert lab.request("GET", dpath(lab_namespace, "web")).status_code == 404
    lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace))
    r = smp(lab, dpath(lab_namespace, "web") + "?dryRun=All", {"spec": {"replicas": 5}})
    assert r.json()["spec"]["replicas"] == 5
    assert lab.request("GET", dpath(lab_namespace, "web")).json()["spec"]["replicas"] == 0
    r = lab.request("DELETE", dpath(lab_namespace, "web") + "?dryRun=All")
    assert r.status_code == 200
    assert lab.request("GET", dpath(lab_namespace, "web")).status_code == 200


def test_strategic_merge_patch_directives(lab, lab_namespace):
    lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace))
    p = dpath(lab_namespace, "web")
    # env merged by name, containers by name
    r = smp(lab, p, {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}}}})
    env = r.json()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
    # $patch: delete of one element, $setElementOrder
    r = smp(lab, p, {"spec": {"template": {"spec": {"containers": [{"name": "web", "$setElementOrder/env": [{"name": "C"}, {"name": "B"}],
                                                                     "env": [{"name": "A", "$patch": "delete"}]}]}}}})
    assert [e["name"] for e in r.json()["spec"]["template"]["spec"]["containers"][0]["env"]] == ["C", "B"]
    # args (atomic list) replaced; a second container appended
    r = smp(lab, p, {"spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["z"]}, {"name": "side", "image": "busybox"}]}}}})
    cs = r.json()["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["web", "side"] and cs[0]["args"] == ["z"] and cs[1]["imagePullPolicy"] == "Always"
    # $patch: replace on the list
    r = smp(lab, p, {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "busybox:1"}, {"$patch": "replace"}]}}}})
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["only"]
    # null deletes a key
    r = smp(lab, p, {"metadata": {"labels": {"app": None}}})
    assert "app" not in r.json()["metadata"]["labels"]


def test_json_merge_and_json_patch(lab, lab_namespace):
    lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace))
    p = dpath(lab_namespace, "web")
    r = lab.request("PATCH", p, data=json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:2"}]}}}}),
                    headers={"Content-Type": "application/merge-patch+json"})
    c = r.json()["spec"]["template"]["spec"]["containers"]
    assert len(c) == 1 and "env" not in c[0]  # merge patch replaces lists wholesale
    ops = [{"op": "test", "path": "/spec/replicas", "value": 0}, {"op": "replace", "path": "/spec/replicas", "value": 1},
           {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}}, {"op": "copy", "from": "/metadata/annotations/a~1b", "path": "/metadata/labels/copied"}]
    r = lab.request("PATCH", p, data=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 1 and r.json()["metadata"]["labels"]["copied"] == "c"
    r = lab.request("PATCH", p, data=json.dumps([{"op": "test", "path": "/spec/replicas", "value": 7}]),
                    headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422


def test_server_side_apply_creates_then_merges(lab, lab_namespace):
    import yaml

    p = f"/api/v1/namespaces/{lab_namespace}/configmaps/ssa"
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}}
    hdr = {"Content-Type": "application/apply-patch+yaml"}
    r = lab.request("PATCH", p + "?fieldManager=test&force=true", data=yaml.safe_dump(doc), headers=hdr)
    assert r.status_code == 201 and r.json()["data"] == {"a": "1"}
    rv = r.json()["metadata"]["resourceVersion"]
    r = lab.request("PATCH", p + "?fieldManager=test", data=yaml.safe_dump(doc), headers=hdr)
    assert r.status_code == 200 and r.json()["metadata"]["resourceVersion"] == rv
    r = lab.request("PATCH", p, data=yaml.safe_dump(doc), headers=hdr)
    assert r.status_code == 400 and "fieldManager" in r.json()["message"]


def test_service_defaults_and_immutable_cluster_ip(lab, lab_namespace):
    p = f"/api/v1/namespaces/{lab_namespace}/services"
    r = lab.request("POST", p, json={"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                                     "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}})
    spec = r.json()["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["clusterIP"].startswith("10.") and spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    r = smp(lab, p + "/svc", {"spec": {"clusterIP": "10.96.0.99"}})
    assert r.status_code == 422 and "may not change once set" in r.json()["message"]


def test_namespace_defaults_and_termination(lab):
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-term-test"}})
    assert r.status_code == 201
    ns = r.json()
    assert ns["status"]["phase"] == "Active" and ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "ns-term-test"
    lab.request("POST", "/api/v1/namespaces/ns-term-test/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    import time

    for _ in range(50):
        if lab.request("GET", "/api/v1/namespaces/ns-term-test/serviceaccounts/default").status_code == 200:
            break
        time.sleep(0.05)
    else:
        pytest.fail("default ServiceAccount not created")
    r = lab.request("DELETE", "/api/v1/namespaces/ns-term-test")
    assert r.status_code == 200 and r.json()["status"]["phase"] == "Terminating"
    r = lab.request("POST", "/api/v1/namespaces/ns-term-test/configmaps", json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}})
    assert r.status_code in (403, 404)
    for _ in range(100):
        if lab.request("GET", "/api/v1/namespaces/ns-term-test").status_code == 404:
            break
        time.sleep(0.05)
    else:
        pytest.fail("namespace never went away")
    assert lab.request("GET", "/api/v1/namespaces/ns-term-test/configmaps/c").status_code == 404


def test_owner_references_cascade(lab, lab_namespace):
    owner = lab.request("POST", f"/api/v1/namespaces/{lab_namespace}/configmaps",
                        json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}).json()
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    lab.request("POST", f"/api/v1/namespaces/{lab_namespace}/configmaps",
                json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "ownerReferences": [ref]}})
    r = lab.request("DELETE", f"/api/v1/namespaces/{lab_namespace}/configmaps/owner")
    assert r.json()["kind"] == "Status" and r.json()["status"] == "Success"
    assert lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps/child").status_code == 404


# --------------------------------------------------------------------------- lists, watch
def test_list_selectors_and_paging(lab, lab_namespace):
    p = f"/api/v1/namespaces/{lab_namespace}/configmaps"
    for i in range(5):
        lab.request("POST", p, json={"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": f"cm{i}", "labels": {"i": str(i), "even": str(i % 2 == 0).lower()}}})
    names = lambda r: [o["metadata"]["name"] for o in r.json()["items"]]  # noqa: E731
    assert names(lab.request("GET", p, params={"labelSelector": "even=true"})) == ["cm0", "cm2", "cm4"]
    assert names(lab.request("GET", p, params={"labelSelector": "i in (1,3),even!=true"})) == ["cm1", "cm3"]
    assert names(lab.request("GET", p, params={"labelSelector": "i,i notin (0,1,2)"})) == ["cm3", "cm4"]
    assert names(lab.request("GET", p, params={"fieldSelector": "metadata.name=cm2"})) == ["cm2"]
    assert lab.request("GET", p, params={"fieldSelector": "spec.bogus=1"}).status_code == 400
    first = lab.request("GET", p, params={"limit": 2, "labelSelector": "i"}).json()
    assert [o["metadata"]["name"] for o in first["items"]] == ["cm0", "cm1"] and first["metadata"]["remainingItemCount"] == 3
    second = lab.request("GET", p, params={"limit": 2, "labelSelector": "i", "continue": first["metadata"]["continue"]}).json()
    assert [o["metadata"]["name"] for o in second["items"]] == ["cm2", "cm3"]
    all_ns = lab.request("GET", "/api/v1/configmaps", params={"labelSelector": "i=4"}).json()
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in all_ns["items"]] == [(lab_namespace, "cm4")]
    r = lab.request("DELETE", p, params={"labelSelector": "even=true"})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    assert names(lab.request("GET", p, params={"labelSelector": "i"})) == ["cm1", "cm3"]


def test_watch_stream_events_bookmark_and_gone(lab, lab_namespace):
    p = f"/api/v1/namespaces/{lab_namespace}/configmaps"
    rv = lab.request("GET", p).json()["metadata"]["resourceVersion"]
    lab.request("POST", p, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}, "data": {"a": "1"}})
    smp(lab, p + "/w", {"data": {"a": "2"}})
    lab.request("DELETE", p + "/w")
    r = lab.request("GET", p, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": 1}, stream=True)
    events = [json.loads(line) for line in r.iter_lines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert events[1]["object"]["data"] == {"a": "2"}
    r = lab.request("GET", p, params={"watch": "true", "resourceVersion": "1", "timeoutSeconds": 1}, stream=True)
    events = [json.loads(line) for line in r.iter_lines() if line]
    if events and events[0]["type"] == "ERROR":  # history still reaches back to rv 1 on a young lab
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    r = lab.request("GET", p, params={"watch": "1", "sendInitialEvents": "true", "allowWatchBookmarks": "true",
                                      "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": 1}, stream=True)
    events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[-1]["type"] == "BOOKMARK"
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_table_printing(lab, lab_namespace):
    lab.request("POST", dpath(lab_namespace), json=deployment(lab_namespace))
    r = lab.request("GET", dpath(lab_namespace), headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    t = r.json()
    assert t["kind"] == "Table"
    assert [c["name"] for c in t["columnDefinitions"] if c["priority"] == 0] == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    assert t["rows"][0]["cells"][:4] == ["web", "0/0", 0, 0]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_openapi_documents(lab):
    r = lab.request("GET", "/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert r.status_code == 200 and r.content.startswith(b"\x0a\x032.0")
    v2 = lab.request("GET", "/openapi/v2", headers={"Accept": "application/json"}).json()
    assert v2["swagger"] == "2.0" and "io.k8s.api.apps.v1.Deployment" in v2["definitions"]
    root = lab.request("GET", "/openapi/v3").json()
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    doc = lab.request("GET", url).json()
    assert doc["openapi"].startswith("3.") and "io.k8s.api.apps.v1.Deployment" in doc["components"]["schemas"]
    patch_ops = [op["patch"] for op in doc["paths"].values() if "patch" in op]
    assert any(p["x-kubernetes-group-version-kind"]["kind"] == "Deployment" and
               any(q["name"] == "fieldValidation" for q in p["parameters"]) for p in patch_ops)


# --------------------------------------------------------------------------- request log, faults
def test_request_log_records_each_request(lab, lab_namespace):
    mark = lab.log_mark()
    lab.request("GET", f"/api/v1/namespaces/{lab_namespace}/configmaps", params={"labelSelector": "a=b"})
    entries = lab.requests_since(mark)
    e = [x for x in entries if x["path"] == f"/api/v1/namespaces/{lab_namespace}/configmaps"][-1]
    assert e["method"] == "GET" and e["status"] == 200 and e["query"] == "labelSelector=a%3Db" and e["user"] == "asgard-lab-admin"
    assert set(e) >= {"ts", "method", "path", "query", "content_type", "status", "user", "duration_ms"}
    assert lab.token not in lab.requests_log.read_text()


def test_fault_injection(lab, lab_namespace):
    path = f"/api/v1/namespaces/{lab_namespace}/configmaps"
    try:
        f = lab.faults.add(kind="http_status", status=429, count=2, path_regex=f"{lab_namespace}/configmaps", method="GET")
        assert f["id"] and lab.faults.list()
        r1, r2, r3 = (lab.request("GET", path) for _ in range(3))
        assert (r1.status_code, r2.status_code, r3.status_code) == (429, 429, 200)
        assert r1.headers["Retry-After"] == "1" and r1.json()["reason"] == "TooManyRequests"
        lab.faults.add(kind="http_status", status=503, count=1, path_regex=f"/namespaces/{lab_namespace}/configmaps")
        r = lab.request("POST", path, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
        assert r.status_code == 503 and r.json()["reason"] == "ServiceUnavailable"
        lab.faults.add(kind="drop_connection", count=1, path_regex=f"{lab_namespace}/configmaps")
        with pytest.raises(requests.exceptions.ConnectionError):
            lab.request("GET", path)
        assert lab.request("GET", path).status_code == 200
        bad = lab.request("POST", "/lab/faults", json={"kind": "explode"})
        assert bad.status_code == 400 and "fault.kind" in bad.json()["message"]
        lab.faults.add(kind="http_status", status=500, count=None, path_regex="never-matches-anything")
    finally:
        lab.faults.clear()
    assert lab.faults.list() == []
