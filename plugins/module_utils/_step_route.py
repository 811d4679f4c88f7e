# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the Gateway API HTTPRoutes (gateway.networking.k8s.io/v1) in front of the MLflow Service, judged
beside the Ingresses in the verify role's ingress step (step 4c).

Per HTTPRoute whose rules' backendRefs name the Service (kind Service, the route's namespace): each parent the
route names reports ``Accepted`` and ``ResolvedRefs`` with status ``"True"`` in ``status.parents[].conditions``
and its Gateway reports ``Programmed`` ``"True"`` in ``status.conditions`` (Gateway API spec,
https://gateway-api.sigs.k8s.io/reference/spec/: RouteConditionType, GatewayConditionType); the backendRef port
is a port of the Service; the path matches fit the server's static prefix; the hostnames are in the server's
allowed hosts (MLflow >= 3.5); ``timeouts.request`` / ``timeouts.backendRequest`` (GEP-2257 durations) are not
shorter than the server's worker timeout. The rules are the Ingress step's (``_proxy_fit``, ``_mlflow_rules``).

A short timeout is reported, not patched: the finding names the JSON patch of only the short fields (Gateway API
timeouts are an Extended feature an implementation may not support, and the route is often owned by whoever runs
the Gateway). Gateways are handed in reduced to their Programmed condition.
"""

from __future__ import annotations

import json
import re

from ansible_collections.asgard.mlflow.plugins.module_utils import _step_settings as S
from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._proxy_fit import needed_timeout, path_fits, refused_hosts
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import condition, condition_in, helm_release, obj, objs

GROUP = "gateway.networking.k8s.io"
_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")  # GEP-2257, as the HTTPRoute CRD validates it
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_SCALE = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_REWRITE_FILTERS = ("URLRewrite",)


def duration_seconds(value) -> float | None:
    """A Gateway API duration ("1h30m", "500ms", "0s") in seconds; None when it is not one."""
    text = str(value or "").strip()
    if not _DURATION.match(text):
        return None
    return sum(int(n) * _SCALE[u] for n, u in _PART.findall(text))


def _ns(route: dict) -> str:
    return (route.get("metadata") or {}).get("namespace") or ""


def _name(route: dict) -> str:
    return (route.get("metadata") or {}).get("name") or "?"


def service_refs(route: dict, service: str):
    """(rule index, rule, backendRef) of every backendRef naming the Service (core group, kind Service, the route's
    namespace or none)."""
    for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        for ref in rule.get("backendRefs") or []:
            if (ref.get("group") or "") == "" and (ref.get("kind") or "Service") == "Service" \
                    and ref.get("name") == service and ref.get("namespace") in (None, "", _ns(route) or None):
                yield i, rule, ref


def routes_to(route: dict, service: str) -> bool:
    return next(service_refs(route, service), None) is not None


def selected(routes, service: str, route_name: str = "") -> list[dict]:
    """The HTTPRoutes the step judges: the one named ``route_name``, else those whose backendRefs name the Service."""
    items = objs(routes, "routes")
    if route_name:
        return [r for r in items if _name(r) == route_name]
    return [r for r in items if routes_to(r, service)]


def gateway_parents(route: dict) -> list[dict]:
    """The parentRefs that are Gateways: ``{namespace, name, sectionName, port}`` (namespace defaulted)."""
    out = []
    for p in (route.get("spec") or {}).get("parentRefs") or []:
        if (p.get("group") or GROUP) == GROUP and (p.get("kind") or "Gateway") == "Gateway" and p.get("name"):
            out.append({"namespace": p.get("namespace") or _ns(route), "name": p["name"],
                        "sectionName": p.get("sectionName"), "port": p.get("port")})
    return out


def gateway_keys(routes) -> list[str]:
    """``namespace/name`` of every Gateway the routes name (sorted, once each): the reader gets each once."""
    return sorted({f"{p['namespace']}/{p['name']}" for r in routes for p in gateway_parents(r)})


def gateway_summary(gateway: dict | None) -> dict | None:
    """What the step needs of a Gateway: its Programmed condition (None: the Gateway does not exist)."""
    if not gateway:
        return None
    c = condition(gateway, "Programmed")
    return {"programmed": c.get("status") or "Unknown", "reason": c.get("reason") or "",
            "message": c.get("message") or ""}


def route_check(routes, service, settings, gateways=None, *, service_name: str, namespace: str = "",
                route_name: str = "", min_gunicorn_timeout: int = 300, read_error: str = "",
                gateway_errors: dict | None = None) -> dict:
    """The HTTPRoute part of the ingress step: ``{findings, routes, summary}`` (merge it with :func:`with_routes`).
    ``gateways``: ``namespace/name`` -> :func:`gateway_summary` (None: absent); ``read_error``: why the routes
    could not be listed (403); ``gateway_errors``: ``namespace/name`` -> why that Gateway could not be read."""
    if read_error:
        return {"findings": [finding("ROUTE_NOT_READABLE", f"HTTPRoutes not checked: {read_error}",
                                     {"namespace": namespace, "permission": "list httproutes.gateway.networking.k8s.io"},
                                     step="ingress")],
                "routes": [], "summary": "HTTPRoutes not readable (RBAC): not checked"}
    chosen = selected(routes, service_name, route_name)
    if route_name and not chosen:
        return {"findings": [finding("ROUTE_NOT_FOUND", f"HTTPRoute {route_name} (verify_route_name) not found in "
                                     f"namespace {namespace or '?'}", {"route": route_name, "namespace": namespace},
                                     step="ingress")],
                "routes": [], "summary": f"HTTPRoute {route_name} missing"}
    svc = obj(service, "service")
    timeout = needed_timeout(settings, min_gunicorn_timeout)
    findings: list[dict] = []
    details: list[dict] = []
    for r in sorted(chosen, key=_name):
        findings += _judge(r, svc, settings or {}, gateways or {}, gateway_errors or {}, service_name=service_name,
                           timeout=timeout, details=details)
    summary = ""
    if details:
        hosts = sorted({h for d in details for h in d["hostnames"]})
        summary = (f"HTTPRoute {', '.join(d['name'] for d in details)}" + (f" ({', '.join(hosts)})" if hosts else "")
                   + f" -> Service {service_name}")
    return {"findings": findings, "routes": details, "summary": summary}


def with_routes(ingress_step: dict, part: dict) -> dict:
    """The ingress step with the HTTPRoutes beside the Ingresses: their findings added, ``details.routes``, and the
    summary naming both (the Ingress step's "nothing to check" line stays when no route routes to the Service)."""
    findings = list(ingress_step.get("findings") or []) + list(part.get("findings") or [])
    details = {**(ingress_step.get("details") or {}), "routes": list(part.get("routes") or [])}
    summary = ingress_step.get("summary") or ""
    if part.get("summary"):
        summary = part["summary"] if summary.startswith("no Ingress routes to") else f"{summary}; {part['summary']}"
    return step_result("ingress", findings, summary, details)


# ------------------------------------------------------------------------------------------------ one route
def _parent_status(route: dict, parent: dict) -> dict | None:
    """The ``status.parents`` entry of a parentRef (same Gateway, same sectionName and port when given)."""
    for st in (route.get("status") or {}).get("parents") or []:
        ref = st.get("parentRef") or {}
        if ref.get("name") == parent["name"] and (ref.get("namespace") or _ns(route)) == parent["namespace"] \
                and ref.get("sectionName") == parent["sectionName"] and ref.get("port") == parent["port"]:
            return st
    return None


def _judge(route: dict, svc: dict, settings: dict, gateways: dict, gateway_errors: dict, *, service_name: str,
           timeout: int, details: list) -> list[dict]:
    name, ns = _name(route), _ns(route)
    spec = route.get("spec") or {}
    hostnames = sorted(h for h in spec.get("hostnames") or [] if h)
    release = helm_release(route)
    d = {"name": name, "hostnames": hostnames, "helm_release": None if release is None else (release or "unknown"),
         "parents": []}
    details.append(d)
    out: list[dict] = []
    ev = {"route": name}

    # status per parent (the Gateway API implementation's word) and each Gateway's Programmed condition
    for p in gateway_parents(route):
        key = f"{p['namespace']}/{p['name']}"
        st = _parent_status(route, p)
        conds = (st or {}).get("conditions")
        acc, res = condition_in(conds, "Accepted"), condition_in(conds, "ResolvedRefs")
        pd = {"gateway": key, "section": p["sectionName"], "accepted": acc.get("status"),
              "resolved_refs": res.get("status")}
        d["parents"].append(pd)
        if key in gateway_errors:
            pd["programmed"] = None
            perm = f"get gateways.{GROUP} in {p['namespace']}"
            out.append(finding("ROUTE_NOT_READABLE", f"HTTPRoute {name}: Gateway {key} not checked: "
                               f"{gateway_errors[key]}", {**ev, "gateway": key, "permission": perm}, step="ingress"))
            gw = {}
        else:
            gw = gateways.get(key)
            pd["programmed"] = (gw or {}).get("programmed")
            if gw is None:
                out.append(finding("ROUTE_GATEWAY_NOT_PROGRAMMED", f"HTTPRoute {name} names Gateway {key}, which does "
                                   "not exist: nothing serves the route", {**ev, "gateway": key, "exists": False},
                                   step="ingress"))
                continue  # no implementation reports for a Gateway that does not exist
            if gw.get("programmed") != "True":
                out.append(finding("ROUTE_GATEWAY_NOT_PROGRAMMED",
                                   f"HTTPRoute {name}: Gateway {key} is not Programmed ({gw.get('programmed')}"
                                   f"{', ' + gw['reason'] if gw.get('reason') else ''}"
                                   f"{': ' + gw['message'] if gw.get('message') else ''})",
                                   {**ev, "gateway": key, "exists": True, "status": gw.get("programmed"),
                                    "reason": gw.get("reason")}, step="ingress"))
        if st is None:
            out.append(finding("ROUTE_NOT_ACCEPTED", f"HTTPRoute {name}: no Gateway controller reports on parent "
                               f"{key}{'/' + p['sectionName'] if p['sectionName'] else ''} (status.parents has no "
                               "entry): the route is not attached", {**ev, "gateway": key, "status": None},
                               step="ingress"))
            continue
        if acc.get("status") != "True":
            out.append(finding("ROUTE_NOT_ACCEPTED", f"HTTPRoute {name} is not Accepted by Gateway {key} "
                               f"({acc.get('reason') or 'no condition'}{': ' + acc['message'] if acc.get('message') else ''})",
                               {**ev, "gateway": key, "status": acc.get("status"), "reason": acc.get("reason")},
                               step="ingress"))
        if res.get("status") != "True":
            out.append(finding("ROUTE_REFS_UNRESOLVED", f"HTTPRoute {name}: references not resolved on Gateway {key} "
                               f"({res.get('reason') or 'no condition'}{': ' + res['message'] if res.get('message') else ''})",
                               {**ev, "gateway": key, "status": res.get("status"), "reason": res.get("reason")},
                               step="ingress"))

    refs = list(service_refs(route, service_name))
    # backendRef port: a port of the Service (the Gateway API requires a port for a Service backend)
    ports = (svc.get("spec") or {}).get("ports") or []
    numbers = sorted(p.get("port") for p in ports if p.get("port"))
    bad = sorted({ref.get("port") for _i, _r, ref in refs if not svc or ref.get("port") not in numbers},
                 key=lambda x: (x is None, x or 0))
    if bad:
        out.append(finding("ROUTE_BACKEND_MISMATCH",
                           f"HTTPRoute {name} routes to Service {service_name} port "
                           f"{', '.join('(none)' if b is None else str(b) for b in bad)}, which the Service does not "
                           f"expose (ports: {', '.join(map(str, numbers)) or 'none' if svc else 'Service missing'})",
                           {**ev, "ports": bad, "service_ports": numbers}, step="ingress"))

    # path matches vs the static prefix (a URLRewrite filter rewrites it: not judged; regular expressions neither)
    prefix = S.static_prefix(settings)
    d["static_prefix"] = prefix or None
    wrong = set()
    for _i, rule, _ref in refs:
        if any((f.get("type") in _REWRITE_FILTERS) for f in rule.get("filters") or []):
            continue
        for m in rule.get("matches") or [{}]:
            path = m.get("path") or {"type": "PathPrefix", "value": "/"}
            if path.get("type", "PathPrefix") in ("PathPrefix", "Exact") \
                    and not path_fits(path.get("value") or "/", prefix):
                wrong.add(path.get("value") or "/")
    if wrong:
        want = f"{prefix} (the server's --static-prefix)" if prefix else "/ (the server runs without a static prefix)"
        out.append(finding("ROUTE_PATH_MISMATCH",
                           f"HTTPRoute {name} path {', '.join(sorted(wrong))} does not fit the server: expected {want}; "
                           "the dashboard answers 404 through it",
                           {**ev, "paths": sorted(wrong), "static_prefix": prefix or None}, step="ingress"))

    # hostnames vs the allowed hosts (MLflow >= 3.5 with the host check on)
    refused = refused_hosts(settings, hostnames)
    if refused:
        out.append(finding("ROUTE_HOST_NOT_ALLOWED",
                           f"HTTPRoute {name} hostname {', '.join(refused)} is not in the server's allowed hosts: "
                           "MLflow answers 403 Invalid Host header through the route",
                           {**ev, "hosts": refused, "allowed_hosts": settings.get("allowed_hosts")}, step="ingress"))

    # timeouts of the rules that reach the Service (unset: the implementation's default, not judged; 0s: none)
    short, ops, d["timeouts"] = {}, [], {}
    for i in sorted({i for i, _r, _ref in refs}):
        t = (spec.get("rules") or [])[i].get("timeouts") or {}
        d["timeouts"][str(i)] = {k: t[k] for k in ("request", "backendRequest") if k in t}
        for k in ("request", "backendRequest"):
            secs = duration_seconds(t.get(k)) if k in t else None
            if secs is not None and 0 < secs < timeout:
                short[f"rules[{i}].timeouts.{k}"] = t[k]
                ops.append({"op": "replace", "path": f"/spec/rules/{i}/timeouts/{k}", "value": f"{timeout}s"})
    if short:
        patch = json.dumps(ops, separators=(",", ":"))
        command = f"kubectl -n {ns} patch httproute {name} --type=json -p '{patch}'"
        next_step = (f"HTTPRoute {name} is managed by Helm (release {d['helm_release']}): set the rule timeouts to "
                     f"{timeout}s in the chart values and run `helm upgrade`" if d["helm_release"] else
                     f"raise the short timeouts to the worker timeout: {command}")
        out.append(finding("ROUTE_TIMEOUT_TOO_SHORT",
                           f"HTTPRoute {name} waits "
                           + ", ".join(f"{k} {v}" for k, v in short.items())
                           + f" for the server, below its worker timeout {timeout}s: longer requests time out at the "
                             "Gateway (504)",
                           {**ev, "timeouts": short, "wanted": f"{timeout}s", "patch": ops,
                            "helm_release": d["helm_release"], "next_step": next_step}, step="ingress"))
    return out
