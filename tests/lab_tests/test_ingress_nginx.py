"""The lab's ingress controller: Ingress objects served by a real nginx, the way ingress-nginx serves them.

Backends are tiny HTTP servers in pods (``helpers.ingress.ECHO_SERVER``) that answer JSON about the request they
received, so each test sees what nginx forwarded. Every test uses hostnames unique to its namespace and waits on
the Ingress status or on ``synced.json`` (never a fixed sleep). References: Kubernetes "Ingress" concept page
(https://kubernetes.io/docs/concepts/services-networking/ingress/), the networking/v1 API
(https://kubernetes.io/docs/reference/kubernetes-api/service-resources/ingress-v1/), ingress-nginx's annotation
and ConfigMap docs (https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/,
.../configmap/) and nginx's ngx_http_core_module / ngx_http_proxy_module documentation.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import trustme
from asgardlab.kubelet.testing import delete_namespace, kubectl, make_namespace
from cryptography import x509
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ingress import (  # noqa: E402
    backend,
    create,
    current_rv,
    deploy_echo,
    endpoints,
    events,
    get,
    ingress,
    merge_patch,
    read,
    ready_endpoints,
    request,
    rule,
    served_certificate,
    tls_secret,
    wait_for,
    wait_synced,
)



def lb(lab) -> dict:
    """What the controller publishes in ``status.loadBalancer``: the lab's own load balancer address."""
    return {"ingress": [{"ip": endpoints(lab)["address"]}]}


@pytest.fixture(scope="module")
def ns(lab):
    """A namespace with two echo backends, Services ``a`` and ``b`` (port 80)."""
    name = make_namespace(lab, "ing")
    deploy_echo(lab, name, "a")
    deploy_echo(lab, name, "b")
    yield name
    delete_namespace(lab, name, wait=60)


def serve(lab, ns: str, obj: dict) -> dict:
    """Create an Ingress and wait until the controller published its status (nginx serves it by then)."""
    created = create(lab, ns, obj)
    name = obj["metadata"]["name"]
    want = lb(lab)
    wait_for(lambda: read(lab, ns, obj).get("status", {}).get("loadBalancer") == want, 30, what=f"status of Ingress {name}")
    return created


def who(r) -> str:
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.json()["name"]


# --------------------------------------------------------------------------- class, status, API rules
def test_default_ingress_class_is_assigned_and_status_published(lab, ns):
    """IngressClass ``nginx`` (controller k8s.io/ingress-nginx) is the default class of a new lab: the API server's
    DefaultIngressClass admission sets ``spec.ingressClassName`` on an Ingress created without one (Ingress
    concept page, "Default IngressClass"; annotation ``ingressclass.kubernetes.io/is-default-class``), and the
    controller publishes ``status.loadBalancer.ingress`` (ingress-nginx ``internal/ingress/status/status.go``,
    with --publish-status-address), which ``kubectl get ingress`` shows as ADDRESS. The address serves the standard
    ports, as a cloud load balancer's does (Ingress concept page: "An Ingress ... exposes HTTP and HTTPS routes";
    Service type LoadBalancer, ``status.loadBalancer.ingress[].ip``): a client that reads the status (verify does)
    reaches the host on port 80 and, with SNI, on 443."""
    ic = lab.request("GET", "/apis/networking.k8s.io/v1/ingressclasses/nginx").json()
    assert ic["spec"]["controller"] == "k8s.io/ingress-nginx"
    assert ic["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    created = serve(lab, ns, ingress("web", [rule(f"web.{ns}.test", ("/", "Prefix", "a"))]))
    assert created["spec"]["ingressClassName"] == "nginx"
    address = endpoints(lab)["address"]
    assert read(lab, ns, created)["status"]["loadBalancer"] == lb(lab)
    assert address.startswith("127.") and address != "127.0.0.1", "the lab runs as root: its own address on 80/443"
    out = kubectl(lab, "-n", ns, "get", "ingress", "web", "--no-headers").stdout.split()
    assert out[:4] == ["web", "nginx", f"web.{ns}.test", address], out
    assert who(get(lab, f"web.{ns}.test", "/")) == "a"
    r = requests.get(f"http://{address}/", headers={"Host": f"web.{ns}.test"}, timeout=10)
    assert who(r) == "a"
    # ingress-nginx serves every host on 443 too (with its default certificate when the Ingress has no TLS)
    with socket.create_connection((address, 443), timeout=10) as raw:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(raw, server_hostname=f"web.{ns}.test") as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: web.{ns}.test\r\nConnection: close\r\n\r\n".encode())
            assert tls.recv(64).startswith(b"HTTP/1.1 200")
    assert any(e["reason"] == "Sync" and e["message"] == "Scheduled for sync" for e in events(lab, ns, "web"))


def test_ingress_of_another_class_is_not_served(lab, ns):
    """An Ingress whose class names another controller's IngressClass is ignored by ingress-nginx (store.go: the
    class must name an IngressClass with ``spec.controller: k8s.io/ingress-nginx``): no status, no route."""
    cls = f"other-{ns}"
    create(lab, None, {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": cls},
                       "spec": {"controller": "example.com/other-controller"}})
    try:
        create(lab, ns, ingress("foreign", [rule(f"foreign.{ns}.test", ("/", "Prefix", "a"))], class_name=cls))
        wait_synced(lab)
        assert "loadBalancer" not in (read(lab, ns, ingress("foreign")).get("status") or {}) or \
            read(lab, ns, ingress("foreign"))["status"]["loadBalancer"] == {}
        r = get(lab, f"foreign.{ns}.test", "/")
        assert r.status_code == 404 or r.json().get("ns") != ns
    finally:
        lab.request("DELETE", f"/apis/networking.k8s.io/v1/ingressclasses/{cls}")


@pytest.mark.parametrize("spec,field,message", [
    ({"rules": [{"host": "x.test", "http": {"paths": [{"path": "rel", "pathType": "Prefix", "backend": backend("a")}]}}]},
     "spec.rules[0].http.paths[0].path", "must be an absolute path"),
    ({"rules": [{"host": "10.1.2.3", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend("a")}]}}]},
     "spec.rules[0].host", "must be a DNS name, not an IP address"),
    ({"rules": [{"host": "x.test", "http": {"paths": [{"path": "/", "backend": backend("a")}]}}]},
     "spec.rules[0].http.paths[0].pathType", "Required value"),
    ({"rules": [{"host": "x.test", "http": {"paths": [{"path": "/", "pathType": "Regex", "backend": backend("a")}]}}]},
     "spec.rules[0].http.paths[0].pathType", 'Unsupported value: "Regex"'),
    ({"rules": [{"host": "x.test", "http": {"paths": [{"path": "/a//b", "pathType": "Exact", "backend": backend("a")}]}}]},
     "spec.rules[0].http.paths[0].path", "must not contain '//'"),
    ({"tls": [{"hosts": ["x.test"], "secretName": "s"}]}, "spec", "either `defaultBackend` or `rules` must be specified"),
    ({"defaultBackend": {"service": {"name": "a", "port": {"name": "http", "number": 80}}}}, "spec.defaultBackend",
     "cannot set both port name & port number"),
])
def test_invalid_ingress_is_refused(lab, ns, spec, field, message):
    """The API server validates Ingress objects (pkg/apis/networking/validation/validation.go; the networking/v1
    reference: pathType required, Exact/Prefix paths absolute without '//', hosts DNS names not IPs, either rules or
    defaultBackend, a port name or a number): 422 naming the field, nothing created."""
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "bad"}, "spec": spec}
    r = lab.request("POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses", json=obj)
    assert r.status_code == 422, r.text
    msg = r.json()["message"]
    assert f"{field}: " in msg and message in msg, msg
    assert lab.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/bad").status_code == 404


# --------------------------------------------------------------------------- routing
def test_routing_by_host_and_path(lab, ns):
    """Name-based virtual hosting and path fan-out (Ingress concept page, "Simple fanout", "Name based virtual
    hosting"): the Host header picks the rule, the longest matching path picks the backend; a path no rule
    matches gets the default backend's 404."""
    serve(lab, ns, ingress("fanout", [rule(f"one.{ns}.test", ("/", "Prefix", "a"), ("/b", "Prefix", "b")),
                                      rule(f"two.{ns}.test", ("/", "Prefix", "b")),
                                      rule(f"three.{ns}.test", ("/only", "Exact", "a"))]))
    assert who(get(lab, f"one.{ns}.test", "/")) == "a"
    assert who(get(lab, f"one.{ns}.test", "/b/c")) == "b"
    assert who(get(lab, f"one.{ns}.test", "/bc")) == "a"
    assert who(get(lab, f"two.{ns}.test", "/anything")) == "b"
    assert get(lab, f"three.{ns}.test", "/elsewhere").status_code == 404
    r = get(lab, f"one.{ns}.test", "/b/c?x=1", headers={"X-Test": "1"})
    seen = r.json()
    assert seen["path"] == "/b/c?x=1" and seen["headers"]["Host"] == f"one.{ns}.test"
    assert seen["headers"]["X-Forwarded-Host"] == f"one.{ns}.test" and seen["headers"]["X-Forwarded-Proto"] == "http"
    assert seen["headers"]["X-Request-ID"] and seen["headers"]["X-Test"] == "1"


def test_synced_reaches_a_change_the_controller_does_not_watch(lab, ns):
    """``synced.json`` means "nginx serves every change up to RV": after a change nothing nginx serves depends on (a
    ConfigMap; a Lease, a pod's status or an Event alike), RV reaches the store's resourceVersion without waiting for
    a change of an Ingress, Service, EndpointSlice or Secret. Before, it stayed at the last watched change, so
    ``wait_synced(lab)`` ("every change so far") timed out when another pytest-xdist worker's write to such an object
    landed between a test's deploy and its wait (a failed `make test`: test_deploy_ingress waited 30 s for 5139,
    synced said 5138)."""
    serve(lab, ns, ingress("then-unwatched", [rule(f"unwatched.{ns}.test", ("/", "Prefix", "a"))]))
    wait_synced(lab)
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                    json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "not-watched"}, "data": {"k": "v"}})
    assert r.status_code == 201, r.text
    want = current_rv(lab)
    s = wait_synced(lab, timeout=5)
    assert int(s["resourceVersion"]) >= want and s["ok"] is True, s
    assert who(get(lab, f"unwatched.{ns}.test", "/")) == "a"


def test_path_types(lab, ns):
    """pathType semantics (Ingress concept page, "Path types" and its "Examples" table): Exact matches the path
    only; Prefix matches element-wise (``/pre`` matches ``/pre``, ``/pre/``, ``/pre/x`` but not ``/prefix``);
    ImplementationSpecific is a plain nginx prefix for ingress-nginx. ingress-nginx builds a Prefix path as
    ``location /pre/`` plus ``location = /pre`` (internal/ingress/controller/location.go), so a Prefix path written
    with a trailing slash (``/dir/``) does not serve ``/dir`` itself: nginx redirects it to ``/dir/`` with a 301
    (ngx_http_core_module "location": a proxied prefix ending in a slash), without the port
    (``port_in_redirect off`` unless use-port-in-redirects). ingress-nginx's behaviour, which the lab keeps."""
    serve(lab, ns, ingress("types", [rule(f"types.{ns}.test", ("/exact", "Exact", "a"), ("/pre", "Prefix", "a"),
                                          ("/dir/", "Prefix", "a"), ("/impl", "ImplementationSpecific", "a"),
                                          ("/", "Prefix", "b"))]))
    host = f"types.{ns}.test"
    expect = {"/exact": "a", "/exact/": "b", "/exactly": "b", "/pre": "a", "/pre/": "a", "/pre/x/y": "a",
              "/prefix": "b", "/dir/": "a", "/dir/x": "a", "/impl": "a", "/implx": "a", "/other": "b"}
    seen = {path: who(get(lab, host, path)) for path in expect}
    assert seen == expect
    r = get(lab, host, "/dir")
    assert r.status_code == 301 and r.headers["Location"] == f"http://{host}/dir/"


def test_default_backend_of_an_ingress_with_rules(lab, ns):
    """``spec.defaultBackend`` handles requests that match no rule (networking/v1 IngressSpec); ingress-nginx uses
    an Ingress's defaultBackend for the unmatched paths of that Ingress's hosts (controller.go createServers)."""
    serve(lab, ns, ingress("withdefault", [rule(f"dflt.{ns}.test", ("/only", "Exact", "a"))], default_backend=backend("b")))
    assert who(get(lab, f"dflt.{ns}.test", "/only")) == "a"
    assert who(get(lab, f"dflt.{ns}.test", "/something/else")) == "b"


def test_default_backend_without_rules_serves_unknown_hosts(lab, ns):
    """An Ingress with only ``spec.defaultBackend`` is the catch-all (Ingress concept page, "Single Service
    Ingress" / "Ingress rules": "if none of the hosts or paths match ... the traffic is routed to your default
    backend"): a host no Ingress names reaches it. The catch-all is lab-wide but only for hosts no Ingress names
    (ingress-nginx's default server): the other tests send such hosts only where either answer is accepted."""
    serve(lab, ns, ingress("catchall", default_backend=backend("b")))
    try:
        r = get(lab, f"unknown-{ns}.test", "/whatever")
        assert r.status_code == 200 and r.json()["ns"] == ns and r.json()["name"] == "b"
    finally:
        lab.request("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/catchall")
        wait_synced(lab)


# --------------------------------------------------------------------------- TLS
@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def _cert(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def test_tls_with_sni_and_hsts(lab, ns, ca, tmp_path):
    """TLS from a ``kubernetes.io/tls`` Secret named in ``spec.tls`` (Ingress concept page, "TLS"): nginx presents
    that certificate for SNI = the host, the controller's fake certificate for other names and for a host whose
    Secret does not exist (ingress-nginx "Default SSL Certificate"), and adds HSTS on HTTPS (ConfigMap ``hsts``
    true, max-age 31536000, includeSubDomains)."""
    host, nosecret = f"secure.{ns}.test", f"nosecret.{ns}.test"
    leaf = ca.issue_cert(host)
    create(lab, ns, tls_secret("secure-tls", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()))
    serve(lab, ns, ingress("secure", [rule(host, ("/", "Prefix", "a")), rule(nosecret, ("/", "Prefix", "b"))],
                           tls=[{"hosts": [host], "secretName": "secure-tls"}, {"hosts": [nosecret], "secretName": "absent"}]))
    cert = _cert(served_certificate(lab, host))
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [host]
    fake = _cert(served_certificate(lab, nosecret))
    assert fake.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Kubernetes Ingress Controller Fake Certificate"
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    r = get(lab, host, "/x", https=True, verify=str(ca_file))
    assert who(r) == "a" and r.json()["headers"]["X-Forwarded-Proto"] == "https"
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert who(get(lab, nosecret, "/", https=True)) == "b"
    assert any("absent" in e["message"] and e["type"] == "Warning" for e in events(lab, ns, "secure"))


def test_ssl_redirect(lab, ns, ca):
    """With TLS for the host, ingress-nginx answers plain HTTP with a 308 to https (annotation ``ssl-redirect``,
    default true; the Location drops a trailing slash unless ``preserve-trailing-slash``, and carries the HTTPS
    port only with ``use-port-in-redirects``: rootfs/etc/nginx/lua/lua_ingress.lua); ``ssl-redirect: "false"``
    serves HTTP."""
    hosts = {k: f"{k}.{ns}.test" for k in ("redir", "noredir", "portredir")}
    for k, h in hosts.items():
        leaf = ca.issue_cert(h)
        create(lab, ns, tls_secret(f"{k}-tls", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()))
    ann = {"noredir": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
           "portredir": {"nginx.ingress.kubernetes.io/use-port-in-redirects": "true"}}
    for k, h in hosts.items():
        serve(lab, ns, ingress(k, [rule(h, ("/", "Prefix", "a"))], tls=[{"hosts": [h], "secretName": f"{k}-tls"}],
                               annotations=ann.get(k)))
    r = get(lab, hosts["redir"], "/some/path/?q=1")
    assert r.status_code == 308 and r.headers["Location"] == f"https://{hosts['redir']}/some/path/?q=1"
    r = get(lab, hosts["redir"], "/some/path/")
    assert r.status_code == 308 and r.headers["Location"] == f"https://{hosts['redir']}/some/path"
    assert who(get(lab, hosts["noredir"], "/plain")) == "a"
    from helpers.ingress import port

    r = get(lab, hosts["portredir"], "/p")
    assert r.status_code == 308 and r.headers["Location"] == f"https://{hosts['portredir']}:{port(lab, https=True)}/p"


# --------------------------------------------------------------------------- annotations
def test_proxy_body_size(lab, ns):
    """``proxy-body-size`` is nginx's client_max_body_size (default "1m"): a request whose Content-Length exceeds it
    gets 413 before the backend sees it (ngx_http_core_module client_max_body_size); under it, the body reaches the
    backend. An invalid value keeps the default (ingress-nginx annotations/proxy: parse error -> default) and the
    lab records a Warning event; an annotation the lab does not implement is reported the same way."""
    serve(lab, ns, ingress("size-default", [rule(f"size1.{ns}.test", ("/", "Prefix", "a"))]))
    serve(lab, ns, ingress("size-8m", [rule(f"size8.{ns}.test", ("/", "Prefix", "a"))],
                           annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "8m"}))
    serve(lab, ns, ingress("size-bad", [rule(f"sizebad.{ns}.test", ("/", "Prefix", "a"))],
                           annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "lots",
                                        "nginx.ingress.kubernetes.io/auth-type": "basic"}))
    two_mib, half_mib = b"x" * (2 << 20), b"y" * (512 << 10)
    r = request(lab, "POST", f"size1.{ns}.test", "/upload", data=two_mib)
    assert r.status_code == 413 and "413 Request Entity Too Large" in r.text
    r = request(lab, "POST", f"size1.{ns}.test", "/upload", data=half_mib)
    assert r.status_code == 200 and r.json()["body_len"] == len(half_mib)
    r = request(lab, "POST", f"size8.{ns}.test", "/upload", data=two_mib)
    assert r.status_code == 200 and r.json()["body_len"] == len(two_mib)
    assert request(lab, "POST", f"sizebad.{ns}.test", "/upload", data=two_mib).status_code == 413
    msgs = [e["message"] for e in events(lab, ns, "size-bad") if e["type"] == "Warning"]
    assert any("proxy-body-size" in m and "'lots'" in m for m in msgs), msgs
    assert any("auth-type" in m and "not implemented" in m for m in msgs), msgs


def test_proxy_read_timeout_gives_504(lab, ns):
    """``proxy-read-timeout`` (seconds, default 60) is nginx's proxy_read_timeout: a backend silent for longer gets
    the client a 504 Gateway Timeout (ngx_http_upstream.c: timeout before the response header). Values are
    unitless: "1s" is not an integer, so ingress-nginx keeps the 60 s default."""
    serve(lab, ns, ingress("slow", [rule(f"slow.{ns}.test", ("/", "Prefix", "a"))],
                           annotations={"nginx.ingress.kubernetes.io/proxy-read-timeout": "1"}))
    serve(lab, ns, ingress("slow-unit", [rule(f"slowunit.{ns}.test", ("/", "Prefix", "a"))],
                           annotations={"nginx.ingress.kubernetes.io/proxy-read-timeout": "1s"}))
    r = get(lab, f"slow.{ns}.test", "/?sleep=2.5")
    assert r.status_code == 504 and "504 Gateway Time-out" in r.text
    assert who(get(lab, f"slow.{ns}.test", "/?sleep=0")) == "a"
    assert who(get(lab, f"slowunit.{ns}.test", "/?sleep=1.5")) == "a"


def test_rewrite_target_with_regex_path(lab, ns):
    """``rewrite-target`` with a regex path and capture groups (ingress-nginx docs, examples/rewrite: path
    ``/something(/|$)(.*)``, pathType ImplementationSpecific, target ``/$2``): the backend receives the rewritten
    URI; matching is case-insensitive (``location ~* "^<path>"``, ``rewrite "(?i)<path>" <target> break``)."""
    serve(lab, ns, ingress("rewrite", [rule(f"rw.{ns}.test", ("/something(/|$)(.*)", "ImplementationSpecific", "a"))],
                           annotations={"nginx.ingress.kubernetes.io/use-regex": "true",
                                        "nginx.ingress.kubernetes.io/rewrite-target": "/$2"}))
    host = f"rw.{ns}.test"
    assert get(lab, host, "/something/new?x=1").json()["path"] == "/new?x=1"
    assert get(lab, host, "/something").json()["path"] == "/"
    assert get(lab, host, "/SOMETHING/Deep/er").json()["path"] == "/Deep/er"
    assert get(lab, host, "/other").status_code == 404


def test_backend_protocol_https(lab, ns, ca):
    """``backend-protocol: HTTPS`` makes nginx talk TLS to the Service port (ingress-nginx annotations,
    "Backend Protocol"); without it nginx speaks plain HTTP to the TLS port and the client gets 502."""
    leaf = ca.issue_cert(f"secure-backend.{ns}.svc")
    create(lab, ns, tls_secret("backend-tls", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()))
    deploy_echo(lab, ns, "tlsb", tls_secret="backend-tls")
    wait_for(lambda: len(ready_endpoints(lab, ns, "tlsb")) == 1, 60, what="tlsb endpoints")
    serve(lab, ns, ingress("to-https", [{"host": f"bp.{ns}.test", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": backend("tlsb", "https")}]}}],
        annotations={"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}))
    serve(lab, ns, ingress("to-https-plain", [{"host": f"bpplain.{ns}.test", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": backend("tlsb", 443)}]}}]))
    assert who(get(lab, f"bp.{ns}.test", "/x")) == "tlsb"
    assert get(lab, f"bpplain.{ns}.test", "/x").status_code == 502


def test_an_ingress_nginx_refuses_is_left_out(lab, ns):
    """ingress-nginx tests every configuration with ``nginx -t`` before reloading, and its admission webhook refuses
    an Ingress nginx would reject; the lab has no webhook: an Ingress whose locations nginx refuses (here a regex
    PCRE2 rejects: ``\\u`` escapes) is left out, with a Warning event quoting nginx, and every other Ingress keeps
    being served and updated."""
    bad = ingress("pcre-bad", [rule(f"pcrebad.{ns}.test", ("/x\\u0061", "ImplementationSpecific", "a"))],
                  annotations={"nginx.ingress.kubernetes.io/use-regex": "true"})
    create(lab, ns, bad)
    try:
        serve(lab, ns, ingress("after-bad", [rule(f"afterbad.{ns}.test", ("/", "Prefix", "b"))]))
        assert who(get(lab, f"afterbad.{ns}.test", "/")) == "b"
        wait_for(lambda: [e for e in events(lab, ns, "pcre-bad") if "nginx refused" in e["message"]], 30, what="Warning event")
        assert not (read(lab, ns, bad).get("status") or {}).get("loadBalancer")
        assert get(lab, f"pcrebad.{ns}.test", "/xa").status_code == 404 or get(lab, f"pcrebad.{ns}.test", "/xa").json()["ns"] != ns
    finally:
        lab.request("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/pcre-bad")
        wait_synced(lab)


# --------------------------------------------------------------------------- changes
def test_reload_on_change_without_failed_requests(lab, ns):
    """Editing an Ingress reconfigures nginx with a graceful reload (nginx -t, then SIGHUP: old workers finish
    their requests, new connections get the new configuration; nginx "Controlling nginx"): the new path serves,
    and requests to an existing path made during the change all succeed."""
    obj = serve(lab, ns, ingress("live", [rule(f"live.{ns}.test", ("/", "Prefix", "a"))]))
    failures, codes, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                codes.append(get(lab, f"live.{ns}.test", "/steady", timeout=10).status_code)
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))

    t = threading.Thread(target=hammer)
    t.start()
    try:
        wait_for(lambda: len(codes) >= 5, 30, what="requests before the change")
        before = read(lab, ns, obj)["metadata"]["generation"]
        merge_patch(lab, ns, obj, {"spec": {"rules": [rule(f"live.{ns}.test", ("/", "Prefix", "a"), ("/new", "Prefix", "b"))]}})
        wait_synced(lab)
        assert who(get(lab, f"live.{ns}.test", "/new")) == "b"
        n = len(codes)
        wait_for(lambda: len(codes) >= n + 5, 30, what="requests after the change")
    finally:
        stop.set()
        t.join(30)
    assert read(lab, ns, obj)["metadata"]["generation"] == before + 1
    assert not failures and set(codes) == {200}, (failures[:3], sorted(set(codes)))


def test_upstreams_follow_a_rollout(lab, ns):
    """The upstream servers are the ready endpoints of the Service port (EndpointSlices, as ingress-nginx's
    dynamic backends use): after a rolling update only the new pod serves."""
    deploy_echo(lab, ns, "roll")
    serve(lab, ns, ingress("roll", [rule(f"roll.{ns}.test", ("/", "Prefix", "roll"))]))
    first = get(lab, f"roll.{ns}.test", "/").json()["pod"]
    old_ips = ready_endpoints(lab, ns, "roll")
    r = lab.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/roll",
                    json={"spec": {"template": {"metadata": {"annotations": {"rollout": str(time.time())}}}}},
                    headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 200, r.text
    wait_for(lambda: (eps := ready_endpoints(lab, ns, "roll")) and not set(eps) & set(old_ips) and len(eps) == 1, 90,
             what="the new pod as the only ready endpoint")
    wait_synced(lab)
    pods = {get(lab, f"roll.{ns}.test", "/").json()["pod"] for _ in range(5)}
    assert first not in pods and len(pods) == 1
