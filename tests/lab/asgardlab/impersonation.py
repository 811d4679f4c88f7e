"""User impersonation: ``Impersonate-User``, ``Impersonate-Group`` (repeatable), ``Impersonate-Uid`` and
``Impersonate-Extra-<key>`` headers, each authorised with verb ``impersonate`` for the caller.

Sources: kubernetes/website ``content/en/docs/reference/access-authn-authz/authentication.md`` (User
impersonation); apiserver ``pkg/endpoints/filters/impersonation.go`` and ``handlers/responsewriters/errors.go``.

- ``users`` / ``groups`` / ``serviceaccounts`` (API group ""; a ``system:serviceaccount:<ns>:<name>`` user is
  checked as the ServiceAccount in its namespace and gets the ServiceAccount groups when no group is asked for),
  ``userextras/<key>`` and ``uids`` (API group ``authentication.k8s.io``).
- A denial is 403 ``users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group ""
  at the cluster scope``; groups, extras or a uid without ``Impersonate-User`` are a plain-text 500.
- ``system:authenticated`` is added unless the user is ``system:anonymous`` or the groups already hold it or
  ``system:unauthenticated``.

The middleware runs after authentication and before RBAC: it replaces ``request["user"]`` and sets
``request["groups"]``, ``request["uid"]`` and ``request["extra"]``, which RBAC and the reviews then use.
"""

from __future__ import annotations

import urllib.parse

from aiohttp import web

from .rbac import SA_PREFIX, Attributes, _status, forbidden_message

USER, GROUP, UID, EXTRA = "Impersonate-User", "Impersonate-Group", "Impersonate-Uid", "Impersonate-Extra-"
AUTHENTICATED, UNAUTHENTICATED, ANONYMOUS = "system:authenticated", "system:unauthenticated", "system:anonymous"


def _requests(request: web.Request) -> list[tuple[str, str, str, str, str]]:
    """(kind, namespace, name, apiVersion, extra key) per thing asked for, as ``buildImpersonationRequests``."""
    out = []
    user = request.headers.get(USER, "")
    if user:
        if user.startswith(SA_PREFIX) and user.count(":") == 3:
            ns, name = user[len(SA_PREFIX):].split(":", 1)
            out.append(("ServiceAccount", ns, name, "", ""))
        else:
            out.append(("User", "", user, "", ""))
    out += [("Group", "", g, "", "") for g in request.headers.getall(GROUP, [])]
    for header in dict.fromkeys(h for h in request.headers if h.lower().startswith(EXTRA.lower())):
        key = urllib.parse.unquote(header[len(EXTRA):]).lower()
        out += [("UserExtra", "", v, "authentication.k8s.io/v1", key) for v in request.headers.getall(header)]
    uid = request.headers.get(UID, "")
    if uid:
        out.append(("UID", "", uid, "authentication.k8s.io/v1", ""))
    return out


def _attributes(caller: str, groups: tuple[str, ...], kind: str, ns: str, name: str, key: str) -> Attributes:
    resource, group, sub = {"ServiceAccount": ("serviceaccounts", "", ""), "User": ("users", "", ""),
                            "Group": ("groups", "", ""), "UserExtra": ("userextras", "authentication.k8s.io", key),
                            "UID": ("uids", "authentication.k8s.io", "")}[kind]
    return Attributes(caller, groups, "impersonate", True, "", group, resource, sub, ns, name)


def install(app: web.Application, lab) -> None:
    @web.middleware
    async def impersonation(request: web.Request, handler):
        wanted = _requests(request) if request.get("user") else []
        if not wanted:
            return await handler(request)
        if not request.headers.get(USER):
            refs = " ".join("{" + " ".join((k, ns, n, "", v, "", key)) + "}" for k, ns, n, v, key in wanted)
            return web.Response(status=500, text=f'Internal Server Error: "{request.path_qs}": requested [{refs}] without impersonating a user\n',
                                headers={"X-Content-Type-Options": "nosniff"})
        caller = request["user"]
        caller_groups = lab.rbac.groups_of(caller)
        username, groups, extra, uid = "", [], {}, ""
        for kind, ns, name, _, key in wanted:
            a = _attributes(caller, caller_groups, kind, ns, name, key)
            if not lab.rbac.allowed(a):
                message, details = forbidden_message(a)
                return _status(403, "Forbidden", message, details)
            if kind == "ServiceAccount":
                username = f"{SA_PREFIX}{ns}:{name}"
                if not request.headers.getall(GROUP, []):
                    groups += ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
            elif kind == "User":
                username = name
            elif kind == "Group":
                groups.append(name)
            elif kind == "UserExtra":
                extra.setdefault(key, []).append(name)
            else:
                uid = name
        if username != ANONYMOUS and AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
        request["impersonated_by"] = caller
        request["user"], request["groups"], request["extra"], request["uid"] = username, tuple(groups), extra, uid
        return await handler(request)

    app.middlewares.append(impersonation)
