"""Gateway API (gateway.networking.k8s.io/v1) in the lab: GatewayClass, Gateway and HTTPRoute served by the API
server with the CRDs' validation, programmed into the same nginx as Ingress objects, with the status a Gateway
API implementation reports. References: https://gateway-api.sigs.k8s.io/reference/spec/ (API reference and the
condition types/reasons), https://gateway-api.sigs.k8s.io/api-types/httproute/ and .../gateway/, the guides
"HTTP routing", "HTTP timeouts", "TLS", and the CRDs in kubernetes-sigs/gateway-api config/crd/standard/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trustme
from asgardlab.kubelet.testing import delete_namespace, kubectl, make_namespace
from cryptography import x509

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ingress import (  # noqa: E402
    create,
    deploy_echo,
    endpoints,
    get,
    read,
    served_certificate,
    tls_secret,
    wait_for,
    wait_synced,
)

GW = "gateway.networking.k8s.io/v1"
CONTROLLER = "asgard.mlflow/lab-gateway-controller"


@pytest.fixture(scope="module")
def ns(lab):
    name = make_namespace(lab, "gw")
    deploy_echo(lab, name, "a")
    deploy_echo(lab, name, "b")
    yield name
    delete_namespace(lab, name, wait=60)


def gateway(name: str, listeners: list[dict], cls: str = "asgard-lab") -> dict:
    return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": name},
            "spec": {"gatewayClassName": cls, "listeners": listeners}}


def route(name: str, gw: str, hostnames: list[str], rules: list[dict], **parent) -> dict:
    return {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": gw, **parent}], "hostnames": hostnames, "rules": rules}}


def conds(obj_status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in obj_status.get("conditions") or []}


def programmed(lab, ns: str, name: str) -> dict:
    def check():
        gw = read(lab, ns, gateway(name, []))
        c = conds(gw.get("status") or {})
        return gw if c.get("Programmed", {}).get("observedGeneration") == gw["metadata"]["generation"] else None
    return wait_for(check, 30, what=f"Gateway {name} status")


def parent_status(lab, ns: str, name: str) -> dict:
    def check():
        rt = read(lab, ns, route(name, "", [], []))
        mine = [p for p in (rt.get("status") or {}).get("parents", []) if p["controllerName"] == CONTROLLER]
        if mine and all(c["observedGeneration"] == rt["metadata"]["generation"] for c in mine[0]["conditions"]):
            return mine[0]
        return None
    return wait_for(check, 30, what=f"HTTPRoute {name} status")


def who(r) -> str:
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.json()["name"]


def test_gatewayclass_of_the_lab_is_accepted(lab):
    """Every new lab has GatewayClass ``asgard-lab`` for its controller; the controller sets Accepted=True
    (GatewayClass status, "Accepted" condition, reason Accepted) with observedGeneration, and ``kubectl get
    gatewayclass`` prints the CRD's columns (CONTROLLER, ACCEPTED)."""
    gc = wait_for(lambda: (g := lab.request("GET", f"/apis/{GW}/gatewayclasses/asgard-lab").json())
                  .get("status", {}).get("conditions", [{}])[0].get("reason") == "Accepted" and g, 30, what="asgard-lab Accepted")
    assert gc["spec"]["controllerName"] == CONTROLLER
    c = conds(gc["status"])["Accepted"]
    assert c["status"] == "True" and c["observedGeneration"] == gc["metadata"]["generation"] and c["lastTransitionTime"]
    out = kubectl(lab, "get", "gatewayclass", "asgard-lab", "--no-headers").stdout.split()
    assert out[:3] == ["asgard-lab", CONTROLLER, "True"], out


def test_gateway_and_route_status_and_routing(lab, ns):
    """A Gateway of the lab's class is Accepted and Programmed with ``status.addresses`` and per-listener status
    (supportedKinds, attachedRoutes, Accepted/ResolvedRefs/Programmed); an attached HTTPRoute gets
    ``status.parents[]`` with Accepted and ResolvedRefs, controllerName and observedGeneration (HTTPRoute API,
    "RouteParentStatus"); requests route by hostname and path match (PathPrefix element-wise, Exact), and a
    new Gateway starts with the CRD's default status (Accepted/Programmed Unknown, reason Pending)."""
    created = create(lab, ns, gateway("web", [{"name": "http", "port": 80, "protocol": "HTTP",
                                               "hostname": f"*.{ns}.test"}]))
    assert {c["type"]: c["reason"] for c in created["status"]["conditions"]} == {"Accepted": "Pending", "Programmed": "Pending"}
    assert created["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    create(lab, ns, route("r", "web", [f"app.{ns}.test"], [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "b", "port": 80}]},
        {"matches": [{"path": {"type": "Exact", "value": "/exact"}}], "backendRefs": [{"name": "b", "port": 80}]},
        {"backendRefs": [{"name": "a", "port": 80}]},
    ]))
    p = parent_status(lab, ns, "r")
    assert p["parentRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}
    assert {t: (c["status"], c["reason"]) for t, c in conds(p).items()} == {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    gw = programmed(lab, ns, "web")
    st = gw["status"]
    assert {t: (c["status"], c["reason"]) for t, c in conds(st).items()} == {
        "Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}
    assert st["addresses"] == [{"type": "IPAddress", "value": endpoints(lab)["address"]}]
    (ls,) = st["listeners"]
    assert ls["name"] == "http" and ls["attachedRoutes"] == 1
    assert ls["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
    assert {t: c["status"] for t, c in conds(ls).items()} == {"Accepted": "True", "ResolvedRefs": "True",
                                                              "Programmed": "True", "Conflicted": "False"}
    host = f"app.{ns}.test"
    assert [who(get(lab, host, p)) for p in ("/api", "/api/x", "/apix", "/exact", "/exact/", "/")] == ["b", "b", "a", "b", "a", "a"]
    assert get(lab, f"other.{ns}.test", "/").status_code == 404 or get(lab, f"other.{ns}.test", "/").json().get("ns") != ns
    out = kubectl(lab, "-n", ns, "get", "gateway", "web", "--no-headers").stdout.split()
    assert out[:4] == ["web", "asgard-lab", endpoints(lab)["address"], "True"], out
    # a spec change: generation 2, observed by the new conditions
    r = lab.request("PATCH", f"/apis/{GW}/namespaces/{ns}/httproutes/r", json={"spec": {"hostnames": [f"app2.{ns}.test"]}},
                    headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["metadata"]["generation"] == 2
    assert conds(parent_status(lab, ns, "r"))["Accepted"]["observedGeneration"] == 2
    assert who(get(lab, f"app2.{ns}.test", "/api")) == "b"


def test_missing_backend_is_reported_and_answers_500(lab, ns):
    """A backendRef to a Service that does not exist: ResolvedRefs=False with reason BackendNotFound, and the
    requests it would get are answered 500 (HTTPRoute API, HTTPBackendRef: "500 status codes MUST be returned for
    requests that would have otherwise been routed to an invalid backend"); creating the Service resolves it."""
    create(lab, ns, gateway("gw-missing", [{"name": "http", "port": 80, "protocol": "HTTP"}]))
    create(lab, ns, route("to-missing", "gw-missing", [f"missing.{ns}.test"], [{"backendRefs": [{"name": "nosuch", "port": 80}]}]))
    c = conds(parent_status(lab, ns, "to-missing"))
    assert c["Accepted"]["status"] == "True"
    assert (c["ResolvedRefs"]["status"], c["ResolvedRefs"]["reason"]) == ("False", "BackendNotFound")
    assert "nosuch" in c["ResolvedRefs"]["message"]
    wait_synced(lab)
    assert get(lab, f"missing.{ns}.test", "/").status_code == 500
    create(lab, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nosuch"},
                     "spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    wait_for(lambda: conds(parent_status(lab, ns, "to-missing"))["ResolvedRefs"]["status"] == "True", 30, what="ResolvedRefs")
    wait_for(lambda: get(lab, f"missing.{ns}.test", "/").status_code == 200, 30, what="the Service serving")


def test_request_timeout_gives_504(lab, ns):
    """``rules[].timeouts.request``: a backend slower than the timeout gets the client a 504 (HTTP timeouts
    guide: "the gateway MUST return a timeout error"); backendRequest longer than request is refused by the CRD's
    validation rule."""
    create(lab, ns, gateway("gw-timeout", [{"name": "http", "port": 80, "protocol": "HTTP"}]))
    create(lab, ns, route("slow", "gw-timeout", [f"slow.{ns}.test"],
                          [{"backendRefs": [{"name": "a", "port": 80}], "timeouts": {"request": "1s"}}]))
    assert conds(parent_status(lab, ns, "slow"))["Accepted"]["status"] == "True"
    wait_synced(lab)
    assert get(lab, f"slow.{ns}.test", "/?sleep=2.5").status_code == 504
    assert who(get(lab, f"slow.{ns}.test", "/?sleep=0")) == "a"
    bad = route("bad-timeouts", "gw-timeout", [], [{"backendRefs": [{"name": "a", "port": 80}],
                                                     "timeouts": {"request": "1s", "backendRequest": "5s"}}])
    r = lab.request("POST", f"/apis/{GW}/namespaces/{ns}/httproutes", json=bad)
    assert r.status_code == 422 and "backendRequest timeout cannot be longer than request timeout" in r.json()["message"]


def test_https_listener_terminates_tls(lab, ns, tmp_path):
    """An HTTPS listener terminates TLS with the ``kubernetes.io/tls`` Secret of its certificateRefs (Gateway API
    TLS guide): SNI = the listener hostname gets that certificate. A certificateRef to a missing Secret makes the
    listener ResolvedRefs=False (InvalidCertificateRef) and Programmed=False (Invalid)."""
    ca = trustme.CA()
    host = f"tls.{ns}.test"
    leaf = ca.issue_cert(host)
    create(lab, ns, tls_secret("gw-tls", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()))
    create(lab, ns, gateway("gw-https", [
        {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": host,
         "tls": {"certificateRefs": [{"name": "gw-tls"}]}},
        {"name": "broken", "port": 443, "protocol": "HTTPS", "hostname": f"broken.{ns}.test",
         "tls": {"certificateRefs": [{"name": "absent"}]}}]))
    create(lab, ns, route("secure", "gw-https", [], [{"backendRefs": [{"name": "b", "port": 80}]}], sectionName="https"))
    gw = programmed(lab, ns, "gw-https")
    ls = {x["name"]: conds(x) for x in gw["status"]["listeners"]}
    assert ls["https"]["Programmed"]["status"] == "True" and ls["https"]["ResolvedRefs"]["status"] == "True"
    assert (ls["broken"]["ResolvedRefs"]["status"], ls["broken"]["ResolvedRefs"]["reason"]) == ("False", "InvalidCertificateRef")
    assert (ls["broken"]["Programmed"]["status"], ls["broken"]["Programmed"]["reason"]) == ("False", "Invalid")
    assert (conds(gw["status"])["Accepted"]["status"], conds(gw["status"])["Accepted"]["reason"]) == ("True", "ListenersNotValid")
    assert conds(parent_status(lab, ns, "secure"))["Accepted"]["status"] == "True"
    wait_synced(lab)
    cert = x509.load_der_x509_certificate(served_certificate(lab, host))
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [host]
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    r = get(lab, host, "/s", https=True, verify=str(ca_file))
    assert who(r) == "b" and r.json()["headers"]["X-Forwarded-Proto"] == "https"


def test_route_attachment_rules(lab, ns):
    """Route attachment (Gateway API "Route attachment" / ParentRef): allowedRoutes ``from: Same`` refuses a route
    from another namespace (Accepted=False, NotAllowedByListeners); hostnames that do not intersect the listener's
    give NoMatchingListenerHostname; a sectionName naming no listener gives NoMatchingParent."""
    create(lab, ns, gateway("gw-strict", [{"name": "only", "port": 80, "protocol": "HTTP", "hostname": f"only.{ns}.test"}]))
    other = make_namespace(lab, "gwo")
    try:
        create(lab, other, route("foreign", "gw-strict", [], [{"backendRefs": [{"name": "a", "port": 80}]}], namespace=ns))
        create(lab, ns, route("wronghost", "gw-strict", [f"elsewhere.{ns}.test"], [{"backendRefs": [{"name": "a", "port": 80}]}]))
        create(lab, ns, route("nosection", "gw-strict", [], [{"backendRefs": [{"name": "a", "port": 80}]}], sectionName="nope"))
        got = {n: conds(parent_status(lab, x, n))["Accepted"] for x, n in ((other, "foreign"), (ns, "wronghost"), (ns, "nosection"))}
        assert {n: (c["status"], c["reason"]) for n, c in got.items()} == {
            "foreign": ("False", "NotAllowedByListeners"), "wronghost": ("False", "NoMatchingListenerHostname"),
            "nosection": ("False", "NoMatchingParent")}
        assert programmed(lab, ns, "gw-strict")["status"]["listeners"][0]["attachedRoutes"] == 0
    finally:
        delete_namespace(lab, other, wait=60)


def test_filters_rewrite_and_redirect(lab, ns):
    """Core/extended filters the lab implements (HTTPRoute API, HTTPRouteFilter): URLRewrite with
    ReplacePrefixMatch (``/app/x`` -> ``/x``), RequestHeaderModifier set/remove, RequestRedirect to https with
    a status code; a rule with a header match (not implemented by the lab) is reported with PartiallyInvalid."""
    create(lab, ns, gateway("gw-filters", [{"name": "http", "port": 80, "protocol": "HTTP"}]))
    create(lab, ns, route("filters", "gw-filters", [f"f.{ns}.test"], [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/app"}}],
         "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
                     {"type": "RequestHeaderModifier",
                      "requestHeaderModifier": {"set": [{"name": "X-Env", "value": "lab$1"}], "remove": ["X-Drop"]}}],
         "backendRefs": [{"name": "a", "port": 80}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
         "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/hdr"}, "headers": [{"name": "X-V", "value": "2"}]}],
         "backendRefs": [{"name": "b", "port": 80}]},
    ]))
    c = conds(parent_status(lab, ns, "filters"))
    assert c["Accepted"]["status"] == "True"
    assert (c["PartiallyInvalid"]["status"], c["PartiallyInvalid"]["reason"]) == ("True", "UnsupportedValue")
    assert "rules[2]" in c["PartiallyInvalid"]["message"]
    wait_synced(lab)
    host = f"f.{ns}.test"
    seen = get(lab, host, "/app/deep/x?q=1", headers={"X-Drop": "1"}).json()
    assert seen["path"] == "/deep/x?q=1" and seen["headers"]["X-Env"] == "lab$1" and "X-Drop" not in seen["headers"]
    assert get(lab, host, "/app").json()["path"] == "/"
    r = get(lab, host, "/old/page?x=1")
    assert r.status_code == 301 and r.headers["Location"] == f"https://{host}/old/page?x=1"


def test_backend_weights(lab, ns):
    """backendRefs weights (HTTPRoute API, HTTPBackendRef ``weight``: proportional split, 0 = no traffic): weights
    1/0 send everything to the first backend, 1/1 share the requests (nginx's weighted round robin alternates)."""
    create(lab, ns, gateway("gw-weights", [{"name": "http", "port": 80, "protocol": "HTTP"}]))
    create(lab, ns, route("weighted", "gw-weights", [f"w10.{ns}.test"], [
        {"backendRefs": [{"name": "a", "port": 80, "weight": 1}, {"name": "b", "port": 80, "weight": 0}]}]))
    create(lab, ns, route("even", "gw-weights", [f"w11.{ns}.test"], [
        {"backendRefs": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}]))
    assert conds(parent_status(lab, ns, "weighted"))["Accepted"]["status"] == "True"
    assert conds(parent_status(lab, ns, "even"))["Accepted"]["status"] == "True"
    wait_synced(lab)
    assert {who(get(lab, f"w10.{ns}.test", "/")) for _ in range(6)} == {"a"}
    assert sorted(who(get(lab, f"w11.{ns}.test", "/")) for _ in range(4)) == ["a", "a", "b", "b"]


def test_kubernetes_core_manages_gateway_api_objects(lab, ns, tmp_path):
    """kubernetes.core (dynamic client, discovery of gateway.networking.k8s.io/v1) creates an HTTPRoute, updates it
    (its strategic merge patch is refused with 415 for a custom resource, and it falls back to a JSON merge patch,
    as against a real cluster), is idempotent, and reads it back with k8s_info. (k8s_info's ``wait_condition``
    reads ``status.conditions``, which an HTTPRoute does not have: its conditions are per parent.)"""
    from asgardlab.kubelet.testing import playbook

    create(lab, ns, gateway("gw-ansible", [{"name": "http", "port": 80, "protocol": "HTTP"}]))
    tasks = """
        - name: create
          kubernetes.core.k8s:
            namespace: "{{ ns }}"
            definition: "{{ route }}"
        - name: update
          kubernetes.core.k8s:
            namespace: "{{ ns }}"
            definition: "{{ route | combine({'spec': route.spec | combine({'hostnames': [host2]})}) }}"
        - name: again
          kubernetes.core.k8s:
            namespace: "{{ ns }}"
            definition: "{{ route | combine({'spec': route.spec | combine({'hostnames': [host2]})}) }}"
        - name: info
          kubernetes.core.k8s_info:
            api_version: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            namespace: "{{ ns }}"
            name: by-ansible
    """
    rt = route("by-ansible", "gw-ansible", [f"ans.{ns}.test"], [{"backendRefs": [{"name": "a", "port": 80}]}])
    res = playbook(lab, tmp_path, tasks, {"ns": ns, "route": rt, "host2": f"ans2.{ns}.test"})
    assert res["create"]["changed"] and res["update"]["changed"] and not res["again"]["changed"]
    assert res["update"]["result"]["spec"]["hostnames"] == [f"ans2.{ns}.test"]
    (obj,) = res["info"]["resources"]
    assert obj["spec"]["hostnames"] == [f"ans2.{ns}.test"] and obj["metadata"]["generation"] == 2
    assert conds(parent_status(lab, ns, "by-ansible"))["Accepted"]["status"] == "True"
    wait_synced(lab)
    assert who(get(lab, f"ans2.{ns}.test", "/")) == "a"


def test_route_nginx_refuses_is_not_accepted(lab, ns):
    """A RegularExpression path match is implementation-specific (HTTPRoute API, PathMatchType): the lab's nginx
    uses PCRE2, and a route whose regex nginx refuses is not programmed (Accepted=False, UnsupportedValue, with
    nginx's message) while the other routes of the Gateway keep working."""
    create(lab, ns, gateway("gw-regex", [{"name": "http", "port": 80, "protocol": "HTTP"}]))
    create(lab, ns, route("bad-regex", "gw-regex", [f"regex.{ns}.test"], [
        {"matches": [{"path": {"type": "RegularExpression", "value": "/y\\u0061"}}], "backendRefs": [{"name": "a", "port": 80}]}]))
    create(lab, ns, route("good-regex", "gw-regex", [f"goodregex.{ns}.test"], [
        {"matches": [{"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}}], "backendRefs": [{"name": "b", "port": 80}]}]))
    c = conds(parent_status(lab, ns, "bad-regex"))["Accepted"]
    assert (c["status"], c["reason"]) == ("False", "UnsupportedValue") and "nginx refused" in c["message"]
    assert conds(parent_status(lab, ns, "good-regex"))["Accepted"]["status"] == "True"
    wait_synced(lab)
    assert who(get(lab, f"goodregex.{ns}.test", "/v2/x")) == "b"
    assert get(lab, f"goodregex.{ns}.test", "/vx/x").status_code == 404
    lab.request("DELETE", f"/apis/{GW}/namespaces/{ns}/httproutes/bad-regex")


@pytest.mark.parametrize("mutate,status,message", [
    (lambda g: g["spec"]["listeners"][0].update(protcol="HTTP"), 400, 'strict decoding error: unknown field "spec.listeners[0].protcol"'),
    (lambda g: g["spec"]["listeners"][0].update(port="eighty"), 422, "spec.listeners[0].port"),
    (lambda g: g["spec"]["listeners"][0].update(hostname="Bad_Host"), 422, "spec.listeners[0].hostname in body should match"),
    (lambda g: g["spec"]["listeners"][0].update(port=70000), 422, "should be less than or equal to 65535"),
    (lambda g: g["spec"]["listeners"][0].update(tls={"certificateRefs": [{"name": "x"}]}), 422,
     "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"),
    (lambda g: g["spec"].pop("gatewayClassName"), 422, "spec.gatewayClassName: Required value"),
    (lambda g: g["spec"]["listeners"].append(dict(g["spec"]["listeners"][0])), 422,
     "Listener name must be unique within the Gateway"),
])
def test_gateway_schema_validation(lab, ns, mutate, status, message):
    """The lab validates Gateway API objects with the CRDs' schema (kubernetes-sigs/gateway-api
    config/crd/standard/gateway.networking.k8s.io_gateways.yaml: types, patterns, bounds, required fields and the
    x-kubernetes-validations rules): a typo or a wrong type is refused and nothing is created (an unknown field with
    fieldValidation=Strict, as kubectl sends it: 400; see test_field_validation.py for Warn and Ignore)."""
    obj = gateway("invalid", [{"name": "http", "port": 80, "protocol": "HTTP"}])
    mutate(obj)
    r = lab.request("POST", f"/apis/{GW}/namespaces/{ns}/gateways", json=obj, params={"fieldValidation": "Strict"})
    assert r.status_code == status, r.text
    assert message in r.json()["message"], r.json()["message"]
    assert lab.request("GET", f"/apis/{GW}/namespaces/{ns}/gateways/invalid").status_code == 404


def test_custom_resources_take_merge_not_strategic_patches(lab, ns):
    """Gateway API kinds are custom resources in a real cluster: strategic merge patch is refused with 415 (API
    concepts, "Patch": "Strategic merge patch is not supported for custom resources"), JSON merge patch works, and
    kubectl apply creates and updates them."""
    create(lab, ns, gateway("gw-patch", [{"name": "http", "port": 80, "protocol": "HTTP"}]))
    path = f"/apis/{GW}/namespaces/{ns}/gateways/gw-patch"
    r = lab.request("PATCH", path, json={"metadata": {"labels": {"x": "1"}}},
                    headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 415 and "application/merge-patch+json" in r.json()["message"]
    r = lab.request("PATCH", path, json={"metadata": {"labels": {"x": "1"}}}, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["metadata"]["labels"] == {"x": "1"}
    import yaml

    doc = yaml.safe_dump(route("applied", "gw-patch", [f"applied.{ns}.test"], [{"backendRefs": [{"name": "a", "port": 80}]}]))
    kubectl(lab, "-n", ns, "apply", "-f", "-", stdin=doc)
    kubectl(lab, "-n", ns, "apply", "-f", "-", stdin=doc.replace(f"applied.{ns}.test", f"applied2.{ns}.test"))
    assert read(lab, ns, route("applied", "", [], []))["spec"]["hostnames"] == [f"applied2.{ns}.test"]
    wait_for(lambda: get(lab, f"applied2.{ns}.test", "/").status_code == 200, 30, what="the applied route serving")
