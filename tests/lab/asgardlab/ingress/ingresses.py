"""Ingress objects -> the data plane model, the way ingress-nginx (controller-v1.x) builds its servers.

Which Ingresses: ingress-nginx's ``internal/ingress/controller/store/store.go`` (``spec.ingressClassName`` naming
an IngressClass whose ``spec.controller`` is ``k8s.io/ingress-nginx``; else the deprecated
``kubernetes.io/ingress.class: nginx`` annotation; Ingresses without either are ignored, as with the default
``--watch-ingress-without-class=false``). New Ingresses without a class get the default class from the API
server's DefaultIngressClass admission (``asgardlab.ingress.admission``).

Servers and locations: ``internal/ingress/controller/controller.go`` (createServers, getBackendServers: the
oldest Ingress wins a duplicate host/path; TLS from ``spec.tls`` (a host listed there, else a Secret whose
certificate covers the host) with the fake certificate when the Secret is missing or invalid or does not cover
the host), ``location.go`` updateServerLocations (a Prefix path ``/foo`` becomes ``location /foo/`` plus
``location = /foo``), ``template.go`` buildLocation (``use-regex`` or a ``rewrite-target`` on any path of a
host turns every location of that host into ``~* "^<path>"``), ``rewrite "(?i)<path>" <target> break;``.
A Service with no ready endpoints answers 503.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import annotations as A
from .common import Builder
from .model import CATCH_ALL, Location, upstream_name

CONTROLLER = "k8s.io/ingress-nginx"
CLASS_NAME = "nginx"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


@dataclass
class IngressResult:
    served: bool = False
    warnings: list[str] = field(default_factory=list)


def is_ours(ing: dict, classes: dict[str, dict]) -> bool:
    spec = ing.get("spec") or {}
    name = spec.get("ingressClassName")
    if name:
        ic = classes.get(name)
        return ic is not None and (ic.get("spec") or {}).get("controller") == CONTROLLER
    ann = (ing["metadata"].get("annotations") or {}).get(CLASS_ANNOTATION)
    if ann is not None:
        return ann == CLASS_NAME
    return False


def server_host(host: str | None) -> str:
    """nginx server_name for an Ingress host (template.go buildServerName: ``*.x`` matches one label)."""
    if not host:
        return CATCH_ALL
    if host.startswith("*."):
        return r"~^(?<subdomain>[\w-]+)\." + re.escape(host[2:]).replace("\\-", "-") + "$"
    return host


def _key(ing: dict) -> tuple[str, str]:
    return ing["metadata"]["namespace"], ing["metadata"]["name"]


def _pcre_ok(pattern: str) -> str:
    """'' when Python's re (close enough to PCRE for the paths people write) compiles the pattern."""
    try:
        re.compile(re.sub(r"\(\?<([A-Za-z_])", r"(?P<\1", pattern))
    except re.error as exc:
        return str(exc)
    return ""


def translate(b: Builder, ingresses: list[dict], excluded: dict[tuple[str, str], str] | None = None) -> dict[tuple[str, str], IngressResult]:
    """``excluded``: Ingresses whose configuration nginx refused ((ns, name) -> nginx's error): not served."""
    results: dict[tuple[str, str], IngressResult] = {}
    ordered = sorted(ingresses, key=lambda i: (i["metadata"].get("creationTimestamp", ""), *_key(i)))
    anns: dict[tuple[str, str], A.Annotations] = {}
    valid = []
    for ing in ordered:
        res = results[_key(ing)] = IngressResult()
        ann = A.parse(ing["metadata"].get("annotations"))
        anns[_key(ing)] = ann
        res.warnings += ann.warnings
        res.warnings += [f"annotation {k} is not implemented by the lab's ingress controller (ignored)" for k in ann.unsupported]
        if _key(ing) in (excluded or {}):
            res.warnings.append(f"nginx refused the configuration of this Ingress: the Ingress is not served: "
                                f"{excluded[_key(ing)][:300]}")
            continue
        if ann.backend_protocol not in A.LAB_PROTOCOLS:
            res.warnings.append(f"backend-protocol {ann.backend_protocol} is not supported by the lab's ingress controller: "
                                "the Ingress is not served")
            continue
        bad = ""
        for rule in (ing.get("spec") or {}).get("rules") or []:
            for p in ((rule.get("http") or {}).get("paths") or []):
                if ann.use_regex or ann.needs_rewrite:
                    err = _pcre_ok("^" + (p.get("path") or "/"))
                    if err:
                        bad = f"path {p.get('path')!r} is not a valid regular expression ({err})"
        if bad:
            res.warnings.append(bad + ": the Ingress is not served (ingress-nginx's admission webhook rejects it)")
            continue
        res.served = True
        valid.append(ing)

    def rules(ing):
        return (ing.get("spec") or {}).get("rules") or []

    # hosts whose locations are all regular expressions (template.go enforceRegexModifier)
    regex_hosts = set()
    for ing in valid:
        ann = anns[_key(ing)]
        for rule in rules(ing):
            paths = (rule.get("http") or {}).get("paths") or []
            if ann.use_regex or any(ann.rewrite_target and ann.rewrite_target != (p.get("path") or "/") for p in paths):
                regex_hosts.add(server_host(rule.get("host")))

    # TLS: the first (oldest) Ingress with a usable certificate for a host sets it
    for ing in valid:
        ns, _ = _key(ing)
        tls = (ing.get("spec") or {}).get("tls") or []
        res = results[_key(ing)]
        for host in {r.get("host") for r in rules(ing) if r.get("host")}:
            srv = b.cfg.server(server_host(host), https=True)
            if srv.cert is not None:
                continue
            cands = [t for t in tls if host in (t.get("hosts") or [])] or [t for t in tls if not t.get("hosts")]
            for t in cands:
                if not t.get("secretName"):
                    continue
                pair, why = b.keypair(ns, t["secretName"])
                if pair is None:
                    res.warnings.append(f'TLS secret "{ns}/{t["secretName"]}" for host {host} {why}: using the default certificate')
                    continue
                if not pair.covers(host):
                    res.warnings.append(f'TLS secret "{ns}/{t["secretName"]}" has no certificate for host {host}: '
                                        "using the default certificate")
                    continue
                srv.cert = b.files(ns, t["secretName"], pair)
                srv.hsts = True
                break

    generated_exact: list[tuple[tuple[bool, str], Location]] = []
    for ing in valid:
        ns, name = _key(ing)
        ann = anns[_key(ing)]
        owner = f"Ingress {ns}/{name}"
        for rule in rules(ing):
            host = server_host(rule.get("host"))
            for https in (False, True):
                b.cfg.server(host, https)
            for p in ((rule.get("http") or {}).get("paths") or []):
                path = p.get("path") or "/"
                ptype = p.get("pathType") or "ImplementationSpecific"
                base = _location(b, ns, owner, ann, p.get("backend") or {}, path, results[_key(ing)])
                if host in regex_hosts:
                    locs = [(base, "~*", path)]
                elif ptype == "Exact":
                    locs = [(base, "=", path)]
                elif ptype == "Prefix" and path != "/":
                    locs = [(base, "", path if path.endswith("/") else path + "/")]
                else:
                    locs = [(base, "", path)]
                for loc, modifier, lpath in locs:
                    copy = _with(loc, modifier, lpath if modifier != "~*" else "^" + lpath)
                    if ann.needs_rewrite and ann.rewrite_target != path:
                        copy.rewrites = [("(?i)" + path, ann.rewrite_target)]
                    for https in (False, True):
                        b.cfg.server(host, https).add(_with(copy, copy.modifier, copy.path))
                if ptype == "Prefix" and path != "/" and host not in regex_hosts:
                    for https in (False, True):
                        generated_exact.append(((https, host), _with(base, "=", path)))
    # the extra exact location of a Prefix path, unless an Exact path exists (location.go)
    for (https, host), loc in generated_exact:
        b.cfg.server(host, https).add(loc)

    # default backends: an Ingress without rules serves the catch-all; with rules, the root of its hosts
    for ing in valid:
        ns, name = _key(ing)
        ann = anns[_key(ing)]
        backend = (ing.get("spec") or {}).get("defaultBackend")
        if not backend:
            continue
        hosts = {server_host(r.get("host")) for r in rules(ing)} or {CATCH_ALL}
        loc = _location(b, ns, f"Ingress {ns}/{name} (defaultBackend)", ann, backend, "/", results[_key(ing)])
        for host in sorted(hosts):
            for https in (False, True):
                srv = b.cfg.server(host, https)
                modifier, lpath = ("~*", "^/") if host in regex_hosts else ("", "/")
                if not any(k[1] in ("/", "^/") and k[0] in ("", "~*") for k in srv.locations):
                    srv.add(_with(loc, modifier, lpath))
    return results


def _with(loc: Location, modifier: str, path: str) -> Location:
    return Location(**{**loc.__dict__, "modifier": modifier, "path": path, "rewrites": list(loc.rewrites),
                       "headers": list(loc.headers)})


def _location(b: Builder, ns: str, owner: str, ann: A.Annotations, backend: dict, path: str, res: IngressResult) -> Location:
    loc = Location(path=path, modifier="", owner=owner, body_size=ann.body_size,
                   connect_timeout=f"{ann.connect_timeout}s", send_timeout=f"{ann.send_timeout}s",
                   read_timeout=f"{ann.read_timeout}s", ssl_redirect=ann.ssl_redirect,
                   force_ssl_redirect=ann.force_ssl_redirect, redirect_port=1 if ann.use_port_in_redirects else None,
                   preserve_trailing_slash=ann.preserve_trailing_slash,
                   scheme="https" if ann.backend_protocol == "HTTPS" else "http")
    svc = backend.get("service")
    if not svc:
        res.warnings.append(f"path {path}: resource backends are not supported by the lab's ingress controller (503)")
        loc.status = 503
        return loc
    port = svc.get("port") or {}
    pref: int | str = port["number"] if port.get("number") else port.get("name", "")
    eps, why = b.endpoints(ns, svc.get("name", ""), pref)
    if not eps:
        loc.status = 503
        return loc
    loc.upstream = b.upstream(upstream_name(ns, svc.get("name", ""), pref), [(ip, p, 1) for ip, p in eps])
    return loc
