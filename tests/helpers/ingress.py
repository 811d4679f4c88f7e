"""Reaching the lab's ingress controller / Gateway from tests (through the ``lab`` fixture).

The lab's nginx listens on two ports of 127.0.0.1 written to ``<state>/ingress.json``
(``{"http": "http://127.0.0.1:<port>", "https": "https://127.0.0.1:<port>", "address": "127.x.y.z"}``; ``address``,
the published load balancer address, serves ports 80/443 too); a client picks the virtual host
with the Host header (HTTP) or SNI + Host (HTTPS), as it would with DNS pointing the host at the load balancer::

    from helpers.ingress import get, wait_synced
    wait_synced(lab)                                   # every change made so far is live in nginx
    r = get(lab, "mlflow.example.test", "/health")      # http, Host: mlflow.example.test
    r = get(lab, "mlflow.example.test", "/", https=True, verify=ca_path)   # SNI mlflow.example.test

``wait_synced`` reads ``<state>/ingress/synced.json`` (the store resourceVersion the running nginx
configuration reflects) instead of sleeping.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import warnings

import requests
import urllib3
from requests.adapters import HTTPAdapter


def endpoints(lab) -> dict[str, str]:
    return json.loads((lab.state_dir / "ingress.json").read_text())


def port(lab, https: bool = False) -> int:
    return int(endpoints(lab)["https" if https else "http"].rsplit(":", 1)[1])


def current_rv(lab) -> int:
    r = lab.request("GET", "/api/v1/namespaces", params={"limit": 1})
    r.raise_for_status()
    return int(r.json()["metadata"]["resourceVersion"])


def synced(lab) -> dict:
    try:
        return json.loads((lab.state_dir / "ingress" / "synced.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_synced(lab, timeout: float = 30.0, rv: int | None = None) -> dict:
    """Wait until nginx serves a configuration that includes every API change made before this call, or, with
    ``rv``, the change of that resourceVersion. (A change of an object the controller does not watch, e.g. verify's
    Lease or another test's pod, moves synced.json on too, once the watched ones are live: asgardlab.ingress.controller.)"""
    want = current_rv(lab) if rv is None else int(rv)
    deadline = time.monotonic() + timeout
    while True:
        s = synced(lab)
        if int(s.get("resourceVersion") or 0) >= want:
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"the lab's ingress controller did not sync resourceVersion {want} within {timeout}s: {s}")
        time.sleep(0.02)


class _SNIAdapter(HTTPAdapter):
    def __init__(self, server_hostname: str) -> None:
        self._sni = server_hostname
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self._sni
        kwargs["assert_hostname"] = self._sni
        super().init_poolmanager(*args, **kwargs)


def request(lab, method: str, host: str, path: str = "/", https: bool = False, verify=False, timeout: float = 30,
            **kw) -> requests.Response:
    """One request to ``host`` through the lab's nginx (a fresh connection each time); redirects not followed."""
    base = endpoints(lab)["https" if https else "http"]
    headers = {"Host": host, **kw.pop("headers", {})}
    with requests.Session() as s, warnings.catch_warnings():
        if verify is False:  # the caller means it (e.g. the controller's fake certificate)
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        if https:
            s.mount(base, _SNIAdapter(host))
        return s.request(method, base + path, headers=headers, verify=verify, timeout=timeout, allow_redirects=False, **kw)


def get(lab, host: str, path: str = "/", **kw) -> requests.Response:
    return request(lab, "GET", host, path, **kw)


def served_certificate(lab, sni: str | None) -> bytes:
    """The DER certificate nginx presents on the HTTPS port for this SNI (None: no SNI)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port(lab, https=True)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            return tls.getpeercert(binary_form=True)


def wait_for(fn, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``fn`` until it returns a truthy value; return it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


# --------------------------------------------------------------------------- backends and objects for tests
ECHO_SERVER = r'''
import http.server, json, os, ssl, time
from urllib.parse import parse_qs, urlparse

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        q = parse_qs(urlparse(self.path).query)
        n = int(self.headers.get("Content-Length") or 0)
        got = 0
        while got < n:
            chunk = self.rfile.read(min(65536, n - got))
            if not chunk:
                break
            got += len(chunk)
        if "sleep" in q:
            time.sleep(float(q["sleep"][0]))
        out = json.dumps({"name": os.environ.get("NAME"), "pod": os.environ.get("POD"), "ns": os.environ.get("NS"),
                          "path": self.path,
                          "method": self.command, "headers": dict(self.headers), "body_len": got}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass

srv = http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), H)
if os.environ.get("TLS_DIR"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.environ["TLS_DIR"] + "/tls.crt", os.environ["TLS_DIR"] + "/tls.key")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
'''

_PATHS = {
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("networking.k8s.io/v1", "Ingress"): "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses",
    ("networking.k8s.io/v1", "IngressClass"): "/apis/networking.k8s.io/v1/ingressclasses",
    ("gateway.networking.k8s.io/v1", "GatewayClass"): "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
    ("gateway.networking.k8s.io/v1", "Gateway"): "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes",
}


def path_of(obj: dict, ns: str | None = None, name: bool = False) -> str:
    base = _PATHS[(obj["apiVersion"], obj["kind"])].format(ns=ns or obj["metadata"].get("namespace"))
    return base + (f"/{obj['metadata']['name']}" if name else "")


def create(lab, ns: str | None, obj: dict) -> dict:
    r = lab.request("POST", path_of(obj, ns), json=obj)
    assert r.status_code == 201, r.text
    return r.json()


def read(lab, ns: str | None, obj_or_kind: dict) -> dict:
    r = lab.request("GET", path_of(obj_or_kind, ns, name=True))
    assert r.status_code == 200, r.text
    return r.json()


def merge_patch(lab, ns: str | None, obj: dict, patch: dict) -> dict:
    r = lab.request("PATCH", path_of(obj, ns, name=True), json=patch,
                    headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    return r.json()


def echo_backend(name: str, replicas: int = 1, tls_secret: str | None = None, env: dict | None = None) -> list[dict]:
    """A Deployment of tiny HTTP servers answering JSON about the request they got (path, headers, body
    length; ``?sleep=S`` waits first) and its Service (port 80 -> 8080; 443 -> 8443 over TLS with ``tls_secret``)."""
    envs = [{"name": "NAME", "value": name}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    envs += [{"name": k, "value": v} for k, v in (env or {}).items()]
    containers = [{"name": "http", "image": "python:3.11", "command": ["python3", "-c", ECHO_SERVER], "env": envs,
                   "ports": [{"name": "http", "containerPort": 8080}],
                   "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]
    volumes = []
    ports = [{"name": "http", "port": 80, "targetPort": "http"}]
    if tls_secret:
        containers.append({"name": "https", "image": "python:3.11", "command": ["python3", "-c", ECHO_SERVER],
                           "env": envs + [{"name": "PORT", "value": "8443"}, {"name": "TLS_DIR", "value": "/tls"}],
                           "ports": [{"name": "https", "containerPort": 8443}],
                           "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": True}]})
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret}})
        ports.append({"name": "https", "port": 443, "targetPort": "https"})
    labels = {"app": name}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
           "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"terminationGracePeriodSeconds": 2, "containers": containers, "volumes": volumes}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": labels, "ports": ports}}
    return [dep, svc]


def ready_endpoints(lab, ns: str, service: str) -> list[str]:
    r = lab.request("GET", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                    params={"labelSelector": f"kubernetes.io/service-name={service}"})
    out = []
    for sl in r.json().get("items", []):
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") and not (ep.get("conditions") or {}).get("terminating"):
                out += ep.get("addresses") or []
    return sorted(out)


def deploy_echo(lab, ns: str, name: str, replicas: int = 1, timeout: float = 120, **kw) -> None:
    for obj in echo_backend(name, replicas, **kw):
        create(lab, ns, obj)
    wait_for(lambda: len(ready_endpoints(lab, ns, name)) == replicas, timeout, 0.1, f"{replicas} ready endpoints of {ns}/{name}")


def ingress(name: str, rules: list[dict] | None = None, tls: list[dict] | None = None, annotations: dict | None = None,
            default_backend: dict | None = None, class_name: str | None = None) -> dict:
    spec: dict = {}
    if class_name:
        spec["ingressClassName"] = class_name
    if rules:
        spec["rules"] = rules
    if tls:
        spec["tls"] = tls
    if default_backend:
        spec["defaultBackend"] = default_backend
    md: dict = {"name": name}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": md, "spec": spec}


def backend(service: str, port: int | str = 80) -> dict:
    return {"service": {"name": service, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def rule(host: str | None, *paths: tuple[str, str, str]) -> dict:
    """``paths``: (path, pathType, service) triples, service port 80."""
    r: dict = {"http": {"paths": [{"path": p, "pathType": t, "backend": backend(s)} for p, t, s in paths]}}
    if host:
        r["host"] = host
    return r


def tls_secret(name: str, cert_pem: bytes, key_pem: bytes) -> dict:
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}}


def events(lab, ns: str, name: str, kind: str = "Ingress") -> list[dict]:
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/events")
    return [e for e in r.json().get("items", []) if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == kind]
