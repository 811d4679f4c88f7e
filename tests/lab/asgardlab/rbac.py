"""RBAC for the lab: Role/ClusterRole + RoleBinding/ClusterRoleBinding, evaluated like kube-apiserver's RBAC
authorizer, for every identity except the lab admin (the kubeconfig's token stays all-powerful).

Hook-up: ``install(app, lab)`` (called by server.build_app before any route is added) appends an aiohttp
middleware that runs after authentication and authorizes every request, including the kubelet's
``pods/log|exec|portforward`` routes, and adds two routes:

- ``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token``: the TokenRequest API (what
  ``kubectl create token`` calls). The token authenticates as ``system:serviceaccount:<ns>:<name>`` with the
  groups ``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``; it is
  forgotten after ``spec.expirationSeconds`` (default 3600).
- ``POST /lab/tokens`` (lab admin only), body ``{"user": "alice", "groups": ["g"], "expirationSeconds": 60}``:
  a token for a plain User identity (the Kubernetes API has no such call; the lab's CLI uses it:
  ``python -m asgardlab token --user alice``). Answers ``{"user", "groups", "token", "expirationTimestamp"}``.

A Secret of type ``kubernetes.io/service-account-token`` annotated ``kubernetes.io/service-account.name`` gets
``data.token`` (and ``ca.crt``, ``namespace``) filled, as the token controller does, once the ServiceAccount
exists; that token lives until the lab stops.

Request attributes follow k8s.io/apiserver RequestInfo: verbs get/list/watch/create/update/patch/delete/
deletecollection; a request on ``namespaces/<n>`` has namespace ``<n>`` (so a RoleBinding in ``<n>`` may allow
reading its own Namespace); ``pods/exec|attach|portforward`` need ``create`` whatever the HTTP method (the
WebSocket upgrade is a GET: API servers >= 1.35 authorize it as create). Rule matching follows
rbac/v1 (``*`` verbs/groups/resources, ``*/subresource``, resourceNames only for requests that name an object,
nonResourceURLs with a trailing ``*``). Discovery (``/api``, ``/apis``, ``/version``, ``/openapi``, health) is
open to every authenticated identity (system:discovery); ``/lab/*`` needs the lab admin or a nonResourceURLs rule.
A denial answers 403 with the apiserver's wording, e.g.
``deployments.apps "x" is forbidden: User "u" cannot patch resource "deployments" in API group "apps" in the
namespace "ns"``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import secrets
from dataclasses import dataclass

from aiohttp import web

from . import resources as R

ADMIN_USER = "asgard-lab-admin"
ROLES = R.lookup("rbac.authorization.k8s.io", "roles")
CLUSTERROLES = R.lookup("rbac.authorization.k8s.io", "clusterroles")
ROLEBINDINGS = R.lookup("rbac.authorization.k8s.io", "rolebindings")
CLUSTERROLEBINDINGS = R.lookup("rbac.authorization.k8s.io", "clusterrolebindings")
SERVICEACCOUNTS = R.lookup("", "serviceaccounts")
_CONNECT_SUBRESOURCES = {"exec", "attach", "portforward"}
_DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/readyz", "/livez")
SA_PREFIX = "system:serviceaccount:"


@dataclass
class Attributes:
    """What is asked: like k8s.io/apiserver authorizer.Attributes."""

    user: str
    groups: tuple[str, ...]
    verb: str
    resource_request: bool
    path: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


# --------------------------------------------------------------------------- request -> attributes
def request_attributes(method: str, path: str, query, user: str, groups: tuple[str, ...]) -> Attributes:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        rest = None
    if not rest:  # discovery or any other non-resource path
        verb = {"GET": "get", "HEAD": "head", "POST": "post", "PUT": "put", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
        return Attributes(user, groups, verb, False, path)
    ns = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    sub = rest[2] if len(rest) >= 3 else ""
    if resource == "namespaces" and group == "" and name and not ns:
        ns = name  # RequestInfo: the namespace of a namespaces/<n> request is <n>
    if method == "GET" or method == "HEAD":
        if not name:
            verb = "watch" if str(query.get("watch", "")).lower() in ("1", "true") else "list"
        else:
            verb = "get"
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = method.lower()
    if group == "" and resource == "pods" and sub in _CONNECT_SUBRESOURCES:
        verb = "create"
    return Attributes(user, groups, verb, True, path, group, resource, sub, ns, name)


# --------------------------------------------------------------------------- rule matching (rbac/v1)
def _verb_matches(rule: dict, verb: str) -> bool:
    verbs = rule.get("verbs") or []
    return "*" in verbs or verb in verbs


def _group_matches(rule: dict, group: str) -> bool:
    groups = rule.get("apiGroups") or []
    return "*" in groups or group in groups


def _resource_matches(rule: dict, resource: str, sub: str) -> bool:
    combined = f"{resource}/{sub}" if sub else resource
    for r in rule.get("resources") or []:
        if r == "*" or r == combined:
            return True
        if sub and r == f"*/{sub}":
            return True
    return False


def _name_matches(rule: dict, name: str) -> bool:
    names = rule.get("resourceNames") or []
    return not names or name in names


def _nonresource_matches(rule: dict, path: str) -> bool:
    for u in rule.get("nonResourceURLs") or []:
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(rule: dict, a: Attributes) -> bool:
    if not _verb_matches(rule, a.verb):
        return False
    if a.resource_request:
        return _group_matches(rule, a.group) and _resource_matches(rule, a.resource, a.subresource) and _name_matches(rule, a.name)
    return _nonresource_matches(rule, a.path)


def subject_matches(subject: dict, binding_ns: str | None, user: str, groups: tuple[str, ...]) -> bool:
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return name == user
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns or ""
        return user == f"{SA_PREFIX}{ns}:{name}"
    return False


# --------------------------------------------------------------------------- the authorizer
class Authorizer:
    def __init__(self, lab) -> None:
        self.lab = lab
        self.groups: dict[str, tuple[str, ...]] = {}  # user -> extra groups (from /lab/tokens)

    def groups_of(self, user: str) -> tuple[str, ...]:
        out = ["system:masters"] if user == ADMIN_USER else list(self.groups.get(user, ()))
        if user.startswith(SA_PREFIX):
            ns = user[len(SA_PREFIX):].split(":", 1)[0]
            out += ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
        out.append("system:authenticated")
        return tuple(dict.fromkeys(out))

    def _rules(self, binding: dict, binding_ns: str | None) -> list[dict]:
        ref = binding.get("roleRef") or {}
        store = self.lab.store
        if ref.get("kind") == "Role" and binding_ns:
            role = store.get_ref(ROLES, binding_ns, ref.get("name", ""))
        elif ref.get("kind") == "ClusterRole":
            role = store.get_ref(CLUSTERROLES, None, ref.get("name", ""))
        else:
            role = None
        return list((role or {}).get("rules") or [])

    def allowed(self, a: Attributes) -> bool:
        return self.decide(a)[0]

    def decide(self, a: Attributes) -> tuple[bool, str]:
        """(allowed, reason) as the apiserver's authorizer chain answers: ``system:masters`` is allowed outright
        (no reason), then RBAC (``RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to User "u"``,
        k/k ``plugin/pkg/auth/authorizer/rbac/rbac.go``, ``pkg/registry/rbac/validation/rule.go``)."""
        if a.user == ADMIN_USER or "system:masters" in a.groups:
            return True, ""
        for binding, ns, subject in self._bindings(a.user, a.groups, a.namespace if a.resource_request else ""):
            if any(rule_allows(rule, a) for rule in self._rules(binding, ns)):
                return True, f"RBAC: allowed by {_describe(binding, ns, subject)}"
        return False, ""

    def _bindings(self, user: str, groups: tuple[str, ...], namespace: str):
        """(binding, its namespace or None, the matching subject) for every binding that applies to the identity."""
        store = self.lab.store
        candidates: list[tuple[dict, str | None]] = [(b, None) for b in store.iter_refs(CLUSTERROLEBINDINGS)]
        if namespace:
            candidates += [(b, namespace) for b in store.iter_refs(ROLEBINDINGS, namespace)]
        for binding, ns in candidates:
            if binding["metadata"].get("deletionTimestamp"):
                continue
            subject = next((s for s in binding.get("subjects") or [] if subject_matches(s, ns, user, groups)), None)
            if subject is not None:
                yield binding, ns, subject

    def rules(self, user: str, groups: tuple[str, ...], namespace: str) -> tuple[list[dict], list[dict]]:
        """(resourceRules, nonResourceRules) of a SelfSubjectRulesReview (``rbac.go RulesFor``)."""
        if user == ADMIN_USER or "system:masters" in groups:  # cluster-admin, bound to system:masters
            return [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        resource, non_resource = [], []
        for binding, ns, _ in self._bindings(user, groups, namespace):
            for rule in self._rules(binding, ns):
                if rule.get("nonResourceURLs"):
                    non_resource.append({"verbs": rule.get("verbs") or [], "nonResourceURLs": rule["nonResourceURLs"]})
                else:
                    out = {"verbs": rule.get("verbs") or [], "apiGroups": rule.get("apiGroups") or [],
                           "resources": rule.get("resources") or []}
                    if rule.get("resourceNames"):
                        out["resourceNames"] = rule["resourceNames"]
                    resource.append(out)
        return resource, non_resource


def _describe(binding: dict, ns: str | None, subject: dict) -> str:
    ref = binding.get("roleRef") or {}
    name = binding["metadata"]["name"] + (f"/{ns}" if ns else "")
    who = subject.get("name", "")
    if subject.get("kind") == "ServiceAccount":
        who += "/" + (subject.get("namespace") or ns or "")
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    return f'{kind} {json.dumps(name)} of {ref.get("kind")} {json.dumps(ref.get("name"))} to {subject.get("kind")} {json.dumps(who)}'


def forbidden_message(a: Attributes) -> tuple[str, dict]:
    if not a.resource_request:
        return f'forbidden: User "{a.user}" cannot {a.verb} path "{a.path}"', {}
    qualified = f"{a.resource}.{a.group}" if a.group else a.resource
    res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    subject = f'{qualified} "{a.name}"' if a.name else qualified
    details = {"group": a.group, "kind": a.resource}
    if a.name:
        details = {"name": a.name, **details}
    return (f'{subject} is forbidden: User "{a.user}" cannot {a.verb} resource "{res}" in API group "{a.group}" {scope}',
            details)


def _status(code: int, reason: str, message: str, details: dict | None = None) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _iso(ts: _dt.datetime) -> str:
    return ts.replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- tokens
def mint(lab, user: str, groups: tuple[str, ...] = (), ttl: float | None = None) -> tuple[str, str | None]:
    """Register a bearer token for ``user``; forgotten after ``ttl`` seconds (None: until the lab stops)."""
    import asyncio

    token = secrets.token_urlsafe(32)
    lab.tokens[token] = user
    if groups:
        lab.rbac.groups[user] = tuple(dict.fromkeys((*lab.rbac.groups.get(user, ()), *groups)))
    expires = None
    if ttl is not None:
        asyncio.get_running_loop().call_later(ttl, lab.tokens.pop, token, None)
        expires = _iso(_dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=ttl))
    return token, expires


async def _read_json(request: web.Request):
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as e:
        raise web.HTTPBadRequest(text=f"request body must be JSON: {e}") from None


def make_handlers(lab):
    async def token_request(request: web.Request):
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = await _read_json(request)
        spec = (body or {}).get("spec") or {}
        ttl = spec.get("expirationSeconds", 3600)
        if not isinstance(ttl, int) or ttl < 600 or ttl > 2**32:
            return _status(422, "Invalid", f'TokenRequest.authentication.k8s.io "{name}" is invalid: spec.expirationSeconds: '
                           f"Invalid value: {json.dumps(ttl)}: may not specify a duration less than 10 minutes",
                           {"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest"})
        if lab.store.get_ref(SERVICEACCOUNTS, ns, name) is None:
            return _status(404, "NotFound", f'serviceaccounts "{name}" not found', {"name": name, "kind": "serviceaccounts"})
        token, expires = mint(lab, f"{SA_PREFIX}{ns}:{name}", ttl=ttl)
        now = _iso(_dt.datetime.now(_dt.UTC))
        return web.json_response({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": now},
            "spec": {"audiences": spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"],
                     "expirationSeconds": ttl, "boundObjectRef": spec.get("boundObjectRef")},
            "status": {"token": token, "expirationTimestamp": expires},
        }, status=201)

    async def lab_tokens(request: web.Request):
        body = await _read_json(request)
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user or user == ADMIN_USER:
            return _status(400, "BadRequest", 'user: Invalid value: must be a non-empty user name other than the lab admin, '
                           'e.g. {"user": "alice", "groups": ["team-a"], "expirationSeconds": 3600}')
        groups = body.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            return _status(400, "BadRequest", 'groups: Invalid value: must be a list of group names, e.g. ["team-a"]')
        ttl = body.get("expirationSeconds")
        if ttl is not None and (not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0):
            return _status(400, "BadRequest", "expirationSeconds: Invalid value: must be a positive number of seconds or null")
        token, expires = mint(lab, user, tuple(groups), ttl)
        return web.json_response({"user": user, "groups": list(lab.rbac.groups_of(user)), "token": token,
                                  "expirationTimestamp": expires}, status=201)

    return token_request, lab_tokens


def _token_controller(lab):
    """Fill ``kubernetes.io/service-account-token`` Secrets, as kube-controller-manager's token controller does."""
    import asyncio

    store = lab.store
    secrets_rt = R.SECRETS
    loop = asyncio.get_running_loop()

    def fill(ns: str, name: str) -> None:
        sec = store.get(secrets_rt, ns, name)
        if sec is None or sec.get("type") != "kubernetes.io/service-account-token":
            return
        if (sec.get("data") or {}).get("token"):
            return
        sa = ((sec["metadata"].get("annotations") or {}).get("kubernetes.io/service-account.name"))
        if not sa or store.get_ref(SERVICEACCOUNTS, ns, sa) is None:
            return
        token, _ = mint(lab, f"{SA_PREFIX}{ns}:{sa}")
        sec.setdefault("data", {}).update({
            "token": base64.b64encode(token.encode()).decode(),
            "ca.crt": base64.b64encode(lab.ca_crt.read_bytes()).decode(),
            "namespace": base64.b64encode(ns.encode()).decode(),
        })
        try:
            store.update(secrets_rt, sec, internal=True)
        except Exception:  # noqa: BLE001 - deleted or changed meanwhile: the next event retries
            lab.log.debug("token controller: could not fill secret %s/%s", ns, name)

    def listener(etype, rt, obj, old):
        if etype == "DELETED":
            return
        md = obj.get("metadata") or {}
        if rt.key == secrets_rt.key:
            loop.call_soon(fill, md.get("namespace"), md.get("name"))
        elif rt.key == SERVICEACCOUNTS.key and etype == "ADDED":
            ns = md.get("namespace")
            for sec in list(store.iter_refs(secrets_rt, ns)):
                loop.call_soon(fill, ns, sec["metadata"]["name"])

    store.add_listener(listener)


# --------------------------------------------------------------------------- hook-up
def install(app: web.Application, lab) -> None:
    """Add RBAC enforcement (a middleware after authentication) and the token routes to the lab's app."""
    lab.rbac = Authorizer(lab)

    @web.middleware
    async def rbac(request: web.Request, handler):
        user = request.get("user")
        if user is None or user == ADMIN_USER or request.path in ("/readyz", "/healthz", "/livez"):
            return await handler(request)
        groups = request.get("groups") or lab.rbac.groups_of(user)  # set by impersonation.py
        a = request_attributes(request.method, request.path, request.query, user, groups)
        if not a.resource_request and request.method in ("GET", "HEAD") and request.path.startswith(_DISCOVERY_PREFIXES):
            return await handler(request)
        if lab.rbac.allowed(a):
            return await handler(request)
        msg, details = forbidden_message(a)
        return _status(403, "Forbidden", msg, details)

    app.middlewares.append(rbac)
    token_request, lab_tokens = make_handlers(lab)
    app.router.add_post("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token", token_request)
    app.router.add_post("/lab/tokens", lab_tokens)
    _token_controller(lab)
