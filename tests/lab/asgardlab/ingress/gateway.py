"""Gateway API (``gateway.networking.k8s.io/v1``) GatewayClass, Gateway, HTTPRoute -> the same nginx data plane,
and the status a Gateway API implementation reports (https://gateway-api.sigs.k8s.io/reference/spec/, the
condition types/reasons of ``apis/v1/gateway_types.go``, ``gatewayclass_types.go``, ``shared_types.go``).

The lab's controller (``spec.controllerName: asgard.mlflow/lab-gateway-controller``; GatewayClass ``asgard-lab``
exists in every new lab) programs every Gateway of a class naming it:

- Listeners share the lab's two nginx ports (``<state>/ingress.json``): protocol HTTP on the ``http`` port,
  HTTPS on the ``https`` port, whatever ``port`` says; hostnames (Host header / SNI) tell them apart.
  Protocols other than HTTP/HTTPS: listener Accepted=False UnsupportedProtocol. HTTPS listeners terminate TLS
  with their first certificateRef (a ``kubernetes.io/tls`` Secret in the Gateway's namespace; other namespaces
  need a ReferenceGrant, which the lab does not serve: RefNotPermitted).
- HTTPRoute: parentRefs (sectionName, port), allowedRoutes (Same/All/Selector, kinds), hostname intersection,
  path matches Exact / PathPrefix (element-wise) / RegularExpression (PCRE, nginx ``~``), backendRefs to
  Services (weights spread over the endpoints), filters RequestHeaderModifier, RequestRedirect, URLRewrite,
  ``timeouts.request`` / ``timeouts.backendRequest`` (nginx proxy_send/read_timeout: the time between two
  reads/writes, not a total deadline; "0s" = no limit). Rules with header/query/method matches or other filters
  are not programmed (route condition PartiallyInvalid, or Accepted=False UnsupportedValue when none is left).
- A backendRef to a missing Service: ResolvedRefs=False BackendNotFound and 500 for its requests; a Service
  without ready endpoints: 503.
"""

from __future__ import annotations

import hashlib
import math
import re

from .. import resources as R
from ..selectors import match_selector_dict
from ..store import now_iso
from .common import Builder
from .ingresses import _pcre_ok
from .model import CATCH_ALL, Location, lit, q


def lit_join(var: str, literal: str) -> str:
    """A quoted token: the variable expression ``var`` followed by ``literal`` (its ``$`` kept literal)."""
    return '"' + var + lit(literal)[1:]

GROUP = "gateway.networking.k8s.io"
CONTROLLER_NAME = "asgard.mlflow/lab-gateway-controller"
CLASS_NAME = "asgard-lab"
ADDRESS = "127.0.0.1"
SUPPORTED_FILTERS = ("RequestHeaderModifier", "RequestRedirect", "URLRewrite")
NO_TIMEOUT = "2147483s"  # the longest nginx accepts: "0s" means no timeout

GATEWAYCLASSES = R.lookup(GROUP, "gatewayclasses")
GATEWAYS = R.lookup(GROUP, "gateways")
HTTPROUTES = R.lookup(GROUP, "httproutes")
_DURATION = re.compile(r"(\d+)(h|ms|m|s)")


def seconds(duration: str) -> float:
    """GEP-2257 duration ("1h30m", "500ms") in seconds."""
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * scale[u] for n, u in _DURATION.findall(duration))


def nginx_time(duration: str) -> str:
    ms = round(seconds(duration) * 1000)
    return NO_TIMEOUT if ms == 0 or ms >= 2147483000 else f"{ms}ms"


def cond(ctype: str, ok: bool, reason: str, message: str, generation: int) -> dict:
    return {"type": ctype, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation}


def merge_conditions(old: list[dict] | None, new: list[dict]) -> list[dict]:
    """New conditions keep lastTransitionTime when their status did not change (meta.SetStatusCondition)."""
    prev = {c.get("type"): c for c in old or []}
    out = []
    ts = now_iso()
    for c in new:
        p = prev.get(c["type"])
        c = dict(c)
        c["lastTransitionTime"] = p["lastTransitionTime"] if p and p.get("status") == c["status"] and p.get("lastTransitionTime") else ts
        out.append(c)
    return out


def _key(obj: dict) -> tuple[str, str]:
    md = obj["metadata"]
    return md.get("namespace", ""), md["name"]


def _order(objs) -> list[dict]:
    return sorted(objs, key=lambda o: (o["metadata"].get("creationTimestamp", ""), *_key(o)))


# --------------------------------------------------------------------------- hostnames
def _host_matches(pattern: str, host: str) -> bool:
    """Listener/route hostname semantics: ``*.example.com`` matches any name (any depth) under example.com."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def intersect(listener: str | None, route_hosts: list[str]) -> list[str | None]:
    if not route_hosts:
        return [listener]
    if listener is None:
        return list(route_hosts)
    out: list[str | None] = []
    for h in route_hosts:
        if h == listener:
            out.append(h)
        elif listener.startswith("*.") and _host_matches(listener, h.lstrip("*.") if h.startswith("*.") else h):
            out.append(h)
        elif h.startswith("*.") and not listener.startswith("*.") and _host_matches(h, listener):
            out.append(listener)
    return out


def _has_control(value) -> bool:
    """Control characters (a newline in a header value...) cannot be written into nginx.conf."""
    if isinstance(value, str):
        return re.search(r"[\x00-\x1f\x7f]", value) is not None
    if isinstance(value, dict):
        return any(_has_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_control(v) for v in value)
    return False


def nginx_host(host: str | None) -> str:
    return CATCH_ALL if host is None else host


# --------------------------------------------------------------------------- the translation
class GatewayTranslation:
    """One pass over the Gateway API objects: data plane locations and the status to publish."""

    def __init__(self, b: Builder, store, excluded: dict[tuple[str, str], str] | None = None, address: str = ADDRESS) -> None:
        self.address = address  # the lab's load balancer address (Gateway status.addresses)
        self.b = b
        self.store = store
        self.excluded = excluded or {}  # routes nginx refused: (ns, name) -> nginx's error
        self.class_status: dict[str, dict] = {}
        self.gateway_status: dict[tuple[str, str], dict] = {}
        self.route_parents: dict[tuple[str, str], list[dict]] = {}
        self._listener_state: dict[tuple[str, str], dict[str, dict]] = {}
        self._gateways: dict[tuple[str, str], dict] = {}

    # ------------------------------------------------------------------ classes and gateways
    def run(self) -> None:
        accepted = set()
        for gc in self.store.iter_refs(GATEWAYCLASSES):
            spec = gc.get("spec") or {}
            if spec.get("controllerName") != CONTROLLER_NAME:
                continue
            gen = gc["metadata"].get("generation", 1)
            if spec.get("parametersRef"):
                c = cond("Accepted", False, "InvalidParameters", "the lab's gateway controller takes no parameters "
                         "(spec.parametersRef must be unset)", gen)
            else:
                c = cond("Accepted", True, "Accepted", "handled by the asgard lab's nginx", gen)
                accepted.add(gc["metadata"]["name"])
            self.class_status[gc["metadata"]["name"]] = {"conditions": [c]}
        ours = {n for n in self.class_status}
        gateways = _order(g for g in self.store.iter_refs(GATEWAYS) if (g.get("spec") or {}).get("gatewayClassName") in ours)
        for gw in gateways:
            self._gateway(gw, gw["spec"]["gatewayClassName"] in accepted)
        for route in _order(self.store.iter_refs(HTTPROUTES)):
            self._route(route)
        for key, st in self.gateway_status.items():
            for ls in st["listeners"]:
                ls["attachedRoutes"] = self._listener_state[key][ls["name"]]["attached"]

    def _gateway(self, gw: dict, class_ok: bool) -> None:
        key = _key(gw)
        ns = key[0]
        gen = gw["metadata"].get("generation", 1)
        spec = gw.get("spec") or {}
        self._gateways[key] = gw
        states: dict[str, dict] = {}
        statuses = []
        for lst in spec.get("listeners") or []:
            name = lst.get("name")
            proto = (lst.get("protocol") or "").upper()
            st = {"name": name, "listener": lst, "ok": False, "https": proto == "HTTPS", "cert": None, "attached": 0,
                  "kinds": []}
            conds = []
            kinds = (lst.get("allowedRoutes") or {}).get("kinds")
            bad_kinds = []
            if proto not in ("HTTP", "HTTPS"):
                conds.append(cond("Accepted", False, "UnsupportedProtocol",
                                  f"protocol {lst.get('protocol')} is not supported by the lab (HTTP and HTTPS are)", gen))
            else:
                conds.append(cond("Accepted", True, "Accepted", "listener accepted", gen))
                if kinds:
                    for k in kinds:
                        if k.get("group", GROUP) == GROUP and k.get("kind") == "HTTPRoute":
                            st["kinds"] = [{"group": GROUP, "kind": "HTTPRoute"}]
                        else:
                            bad_kinds.append(f"{k.get('group', GROUP)}/{k.get('kind')}")
                else:
                    st["kinds"] = [{"group": GROUP, "kind": "HTTPRoute"}]
            resolved = (True, "ResolvedRefs", "all references resolved")
            if bad_kinds:
                resolved = (False, "InvalidRouteKinds", "route kinds not supported: " + ", ".join(bad_kinds))
            if proto == "HTTPS":
                resolved = self._listener_cert(ns, lst, st) or resolved
            conds.append(cond("ResolvedRefs", *resolved, gen))
            st["ok"] = proto in ("HTTP", "HTTPS") and (proto == "HTTP" or st["cert"] is not None) and bool(st["kinds"])
            conds.append(cond("Programmed", st["ok"], "Programmed" if st["ok"] else "Invalid",
                              "programmed in the lab's nginx" if st["ok"] else "listener is not valid: see Accepted/ResolvedRefs", gen))
            conds.append(cond("Conflicted", False, "NoConflicts", "no conflicts", gen))
            states[name] = st
            statuses.append({"name": name, "supportedKinds": st["kinds"], "attachedRoutes": 0, "conditions": conds})
        self._listener_state[key] = states
        valid = [s for s in states.values() if s["ok"]]
        addr_problem = None
        for a in spec.get("addresses") or []:
            if a.get("type", "IPAddress") != "IPAddress":
                addr_problem = ("Accepted", "UnsupportedAddress", f"address type {a.get('type')} is not supported (IPAddress is)")
            elif a.get("value") not in (None, "", self.address):
                addr_problem = ("Programmed", "AddressNotUsable", f"the lab's gateway listens on {self.address} only")
        if not class_ok:
            accepted = cond("Accepted", False, "Invalid", f'GatewayClass "{spec.get("gatewayClassName")}" is not accepted', gen)
        elif addr_problem and addr_problem[0] == "Accepted":
            accepted = cond("Accepted", False, addr_problem[1], addr_problem[2], gen)
        elif not valid:
            accepted = cond("Accepted", False, "ListenersNotValid", "no listener is valid", gen)
        elif len(valid) < len(states):
            accepted = cond("Accepted", True, "ListenersNotValid", "some listeners are not valid: see status.listeners", gen)
        else:
            accepted = cond("Accepted", True, "Accepted", "gateway accepted", gen)
        ok = accepted["status"] == "True" and not addr_problem
        if ok:
            for s in valid:
                s["served"] = True
        self.gateway_status[key] = {
            "accepted": accepted, "programmable": ok,
            "programmed_reason": addr_problem[1:] if addr_problem and addr_problem[0] == "Programmed" else None,
            "addresses": [{"type": "IPAddress", "value": self.address}] if ok else [],
            "listeners": statuses, "generation": gen,
        }

    def _listener_cert(self, ns: str, lst: dict, st: dict):
        refs = (lst.get("tls") or {}).get("certificateRefs") or []
        if not refs:
            return (False, "InvalidCertificateRef", "no certificateRefs")
        ref = refs[0]
        if ref.get("group", "") != "" or ref.get("kind", "Secret") != "Secret":
            return (False, "InvalidCertificateRef", f"certificateRefs[0]: kind {ref.get('group', '')}/{ref.get('kind')} is not supported (core Secret is)")
        if ref.get("namespace") not in (None, ns):
            return (False, "RefNotPermitted", f'certificateRefs[0]: Secret in namespace "{ref["namespace"]}" needs a ReferenceGrant, '
                    "which the lab does not serve")
        pair, why = self.b.keypair(ns, ref.get("name", ""), require_tls_type=True)
        if pair is None:
            return (False, "InvalidCertificateRef", f'certificateRefs[0]: Secret "{ns}/{ref.get("name")}" {why}')
        st["cert"] = self.b.files(ns, ref.get("name", ""), pair)
        return None

    # ------------------------------------------------------------------ routes
    def _route(self, route: dict) -> None:
        rns, rname = _key(route)
        gen = route["metadata"].get("generation", 1)
        spec = route.get("spec") or {}
        parents = []
        for pref in spec.get("parentRefs") or []:
            if pref.get("group", GROUP) != GROUP or pref.get("kind", "Gateway") != "Gateway":
                continue
            gkey = (pref.get("namespace") or rns, pref.get("name"))
            if gkey not in self._gateways:
                continue  # not a Gateway of this controller: its own controller reports (or nobody)
            parents.append(self._attach(route, pref, gkey, gen))
        self.route_parents[(rns, rname)] = parents

    def _attach(self, route: dict, pref: dict, gkey: tuple[str, str], gen: int) -> dict:
        rns, rname = _key(route)
        spec = route.get("spec") or {}
        gw = self._gateways[gkey]
        gst = self.gateway_status[gkey]
        states = self._listener_state[gkey]
        entry = {"parentRef": dict(pref), "controllerName": CONTROLLER_NAME}
        conds = []
        cands = [s for s in states.values() if s.get("served")]
        if pref.get("sectionName"):
            cands = [s for s in cands if s["name"] == pref["sectionName"]]
        if pref.get("port"):
            cands = [s for s in cands if s["listener"].get("port") == pref["port"]]
        resolved = self._resolved(route, gen)
        if not gst["programmable"] or not cands:
            why = "the Gateway is not accepted" if not gst["programmable"] else "no listener matches sectionName/port"
            conds.append(cond("Accepted", False, "NoMatchingParent", why, gen))
            entry["conditions"] = conds + [resolved]
            return entry
        allowed = [s for s in cands if self._allows(s["listener"], gw, rns) and s["kinds"]]
        if not allowed:
            conds.append(cond("Accepted", False, "NotAllowedByListeners", "no listener allows routes from this namespace/kind", gen))
            entry["conditions"] = conds + [resolved]
            return entry
        hosts = {s["name"]: intersect(s["listener"].get("hostname"), spec.get("hostnames") or []) for s in allowed}
        attached = [s for s in allowed if hosts[s["name"]]]
        if not attached:
            conds.append(cond("Accepted", False, "NoMatchingListenerHostname", "no hostname intersects a listener's hostname", gen))
            entry["conditions"] = conds + [resolved]
            return entry
        rules, problems = self._supported_rules(spec.get("rules") or [])
        if (rns, rname) in self.excluded:
            rules, problems = [], [f"nginx refused the configuration of this route: {self.excluded[(rns, rname)][:300]}"]
        if not rules:
            conds.append(cond("Accepted", False, "UnsupportedValue", "; ".join(problems), gen))
            entry["conditions"] = conds + [resolved]
            return entry
        conds.append(cond("Accepted", True, "Accepted", "route accepted", gen))
        conds.append(resolved)
        if problems:
            conds.append(cond("PartiallyInvalid", True, "UnsupportedValue", "rules not programmed: " + "; ".join(problems), gen))
        entry["conditions"] = conds
        for s in attached:
            s["attached"] += 1
            for host in hosts[s["name"]]:
                srv = self.b.cfg.server(nginx_host(host), https=s["https"])
                if s["https"] and srv.cert is None:
                    srv.cert = s["cert"]
                for i, rule in rules:
                    self._program(srv, route, i, rule, s)
        return entry

    def _allows(self, lst: dict, gw: dict, route_ns: str) -> bool:
        ns_rule = ((lst.get("allowedRoutes") or {}).get("namespaces") or {})
        frm = ns_rule.get("from", "Same")
        if frm == "All":
            return True
        if frm == "Same":
            return route_ns == gw["metadata"]["namespace"]
        if frm == "Selector":
            nsobj = self.store.get_ref(R.NAMESPACES, None, route_ns)
            sel = ns_rule.get("selector") or {}
            return nsobj is not None and bool(sel) and match_selector_dict(sel, nsobj["metadata"].get("labels") or {})
        return False

    def _supported_rules(self, rules: list[dict]) -> tuple[list[tuple[int, dict]], list[str]]:
        ok, problems = [], []
        for i, rule in enumerate(rules):
            why = []
            for m in rule.get("matches") or []:
                for f in ("headers", "queryParams", "method"):
                    if m.get(f):
                        why.append(f"{f} matches")
                path = m.get("path") or {}
                if path.get("type") == "RegularExpression" and _pcre_ok(path.get("value", "")):
                    why.append(f"path regex {path.get('value')!r} does not compile")
            for f in rule.get("filters") or []:
                if f.get("type") not in SUPPORTED_FILTERS:
                    why.append(f"filter {f.get('type')}")
                elif _has_control(f):
                    why.append(f"filter {f.get('type')} with control characters")
            for br in rule.get("backendRefs") or []:
                if br.get("filters"):
                    why.append("backendRef filters")
            for f in ("retry", "sessionPersistence"):
                if rule.get(f):
                    why.append(f)
            if why:
                problems.append(f"rules[{i}]: " + ", ".join(sorted(set(why))) + " (not implemented by the lab's gateway)")
            else:
                ok.append((i, rule))
        return ok, problems

    def _resolved(self, route: dict, gen: int) -> dict:
        rns, _ = _key(route)
        for rule in (route.get("spec") or {}).get("rules") or []:
            for br in rule.get("backendRefs") or []:
                if br.get("group", "") != "" or br.get("kind", "Service") != "Service":
                    return cond("ResolvedRefs", False, "InvalidKind", f"backendRef {br.get('group', '')}/{br.get('kind')} "
                                f"{br.get('name')}: only core Services are supported", gen)
                if br.get("namespace") not in (None, rns):
                    return cond("ResolvedRefs", False, "RefNotPermitted", f'backendRef to Service "{br["namespace"]}/{br.get("name")}" '
                                "needs a ReferenceGrant, which the lab does not serve", gen)
                svc = self.b.snap.service(rns, br.get("name", ""))
                if svc is None:
                    return cond("ResolvedRefs", False, "BackendNotFound", f'Service "{rns}/{br.get("name")}" not found', gen)
                if not any(p.get("port") == br.get("port") for p in (svc.get("spec") or {}).get("ports") or []):
                    return cond("ResolvedRefs", False, "BackendNotFound", f'Service "{rns}/{br.get("name")}" has no port {br.get("port")}', gen)
        return cond("ResolvedRefs", True, "ResolvedRefs", "all references resolved", gen)

    # ------------------------------------------------------------------ data plane
    def _program(self, srv, route: dict, i: int, rule: dict, lst_state: dict) -> None:
        rns, rname = _key(route)
        owner = f"HTTPRoute {rns}/{rname} rules[{i}]"
        timeouts = rule.get("timeouts") or {}
        per_try = timeouts.get("backendRequest") or timeouts.get("request")
        base = Location(path="/", modifier="", owner=owner, body_size="0")
        if per_try:
            base.send_timeout = base.read_timeout = nginx_time(per_try)
            if timeouts.get("request") and seconds(timeouts["request"]) and seconds(timeouts["request"]) < 5:
                base.connect_timeout = base.read_timeout
        self._backends(base, route, i, rule)
        filters = rule.get("filters") or []
        matches = rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
        for m in matches:
            path = m.get("path") or {"type": "PathPrefix", "value": "/"}
            ptype, value = path.get("type", "PathPrefix"), path.get("value", "/")
            if ptype == "Exact":
                keys = [("=", value)]
            elif ptype == "RegularExpression":
                keys = [("~", value)]
            else:
                v = value.rstrip("/")
                keys = [("", "/")] if not v else [("", v + "/"), ("=", v)]
            for modifier, p in keys:
                loc = Location(**{**base.__dict__, "modifier": modifier, "path": p, "rewrites": [], "headers": list(base.headers)})
                self._filters(loc, filters, ptype, value, lst_state)
                srv.add(loc)

    def _backends(self, loc: Location, route: dict, i: int, rule: dict) -> None:
        rns, rname = _key(route)
        refs = rule.get("backendRefs") or []
        if not refs:
            loc.status = 500
            return
        groups = []
        invalid = 0
        for br in refs:
            weight = br.get("weight", 1)
            if br.get("group", "") != "" or br.get("kind", "Service") != "Service" or br.get("namespace") not in (None, rns):
                invalid += 1
                continue
            eps, why = self.b.endpoints(rns, br.get("name", ""), br.get("port"))
            if why.endswith("not found") or "has no port" in why:
                invalid += 1
                continue
            if weight and eps:
                groups.append((weight, eps))
        if invalid == len(refs):
            loc.status = 500
            return
        if not groups:
            loc.status = 503
            return
        lcm = math.lcm(*(len(e) for _, e in groups))
        servers: dict[tuple[str, int], int] = {}
        for weight, eps in groups:
            for ip, port in eps:
                servers[(ip, port)] = servers.get((ip, port), 0) + weight * lcm // len(eps)
        g = math.gcd(*servers.values())
        name = f"route-{rns}-{rname}-{i}".replace(".", "-")
        loc.upstream = self.b.upstream(name, [(ip, port, w // g) for (ip, port), w in sorted(servers.items())])

    def _filters(self, loc: Location, filters: list[dict], ptype: str, prefix: str, lst_state: dict) -> None:
        for f in filters:
            t = f.get("type")
            if t == "RequestHeaderModifier":
                mod = f.get("requestHeaderModifier") or {}
                for h in mod.get("set") or []:
                    loc.headers.append((h["name"], lit(h.get("value", ""))))
                for h in mod.get("add") or []:  # appended to the client's value, if any
                    var = "$http_" + h["name"].lower().replace("-", "_")
                    mvar = self._map(var, [('""', lit(h.get("value", ""))),
                                           ("default", lit_join(var + ",", h.get("value", "")))])
                    loc.headers.append((h["name"], mvar))
                for name in mod.get("remove") or []:
                    loc.headers.append((name, '""'))
            elif t == "URLRewrite":
                rw = f.get("urlRewrite") or {}
                if rw.get("hostname"):
                    loc.headers.append(("Host", lit(rw["hostname"])))
                path = rw.get("path") or {}
                if path.get("type") == "ReplaceFullPath":
                    loc.rewrites.append(("^", lit(path.get("replaceFullPath", "/"))))
                elif path.get("type") == "ReplacePrefixMatch" and ptype == "PathPrefix":
                    loc.rewrites.append(("^", self._prefix_replaced(prefix, path.get("replacePrefixMatch", "/"))))
            elif t == "RequestRedirect":
                loc.redirect = self._redirect(f.get("requestRedirect") or {}, ptype, prefix, lst_state)
                loc.upstream, loc.status = None, None

    def _map(self, source: str, entries: list[tuple[str, str]]) -> str:
        """Register an nginx map; returns its variable."""
        body = "".join(f"{k} {v};" for k, v in entries)
        name = "$asgard_map_" + hashlib.sha256((source + body).encode()).hexdigest()[:12]
        text = f"    map {source} {name} {{ " + " ".join(f"{k} {v};" for k, v in entries) + " }"
        if text not in self.b.cfg.maps:
            self.b.cfg.maps.append(text)
        return name

    def _prefix_replaced(self, prefix: str, replacement: str) -> str:
        """The request path with the matched PathPrefix replaced (GEP-726: ``/foo`` -> ``/bar`` turns ``/foo/x``
        into ``/bar/x``; a replacement of ``/`` turns it into ``/x``), as an nginx variable."""
        p = prefix.rstrip("/")
        r = replacement.rstrip("/")
        cap = "asgard_rest_" + hashlib.sha256(p.encode()).hexdigest()[:10]
        entries = [(q("~^" + re.escape(p) + "$"), lit(replacement or "/")),
                   (q("~^" + re.escape(p) + f"(?<{cap}>/.*)$"), lit(r)[:-1] + f"${{{cap}}}" + '"'),
                   ("default", "$uri")]
        return self._map("$uri", entries)

    def _redirect(self, rd: dict, ptype: str, prefix: str, lst_state: dict) -> tuple[int, str]:
        """RequestRedirect (GEP-726 for the path): scheme, hostname, port, path, statusCode (default 302)."""
        code = rd.get("statusCode", 302)
        scheme = rd.get("scheme")
        host = lit(rd["hostname"])[1:-1] if rd.get("hostname") else "$host"
        port = rd.get("port")
        if port is None and not scheme:
            port = lst_state["listener"].get("port")
        eff_scheme = scheme or ("https" if lst_state["https"] else "http")
        port_part = "" if port in (None, {"http": 80, "https": 443}.get(eff_scheme)) else f":{port}"
        path = rd.get("path") or {}
        if path.get("type") == "ReplaceFullPath":
            uri = lit(path.get("replaceFullPath", "/"))[1:-1] + "$is_args$args"
        elif path.get("type") == "ReplacePrefixMatch" and ptype == "PathPrefix":
            uri = self._prefix_replaced(prefix, path.get("replacePrefixMatch", "/")) + "$is_args$args"
        else:
            uri = "$request_uri"
        return code, f'"{eff_scheme}://{host}{port_part}{uri}"'
