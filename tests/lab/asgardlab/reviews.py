"""Access reviews and "who am I", answered from the lab's RBAC and identities:
``SelfSubjectAccessReview``, ``SubjectAccessReview``, ``LocalSubjectAccessReview``, ``SelfSubjectRulesReview``
(authorization.k8s.io/v1) and ``SelfSubjectReview`` (authentication.k8s.io/v1): what ``kubectl auth can-i
[--list]`` and ``kubectl auth whoami`` call.

Sources: kubernetes/website ``content/en/docs/reference/access-authn-authz/authorization.md`` (Checking API
access) and ``authentication.md`` (``kubectl auth whoami``); k/k ``pkg/apis/authorization/validation``,
``pkg/registry/authorization/*/rest.go``, ``plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`` (the
``system:basic-user``, ``system:discovery`` and ``system:public-info-viewer`` roles every authenticated
identity has); apiserver ``handlers/create.go`` (201 with the posted object and its ``status``).
"""

from __future__ import annotations

import json

import yaml
from aiohttp import web

from . import protobuf
from . import resources as R
from .rbac import CLUSTERROLEBINDINGS, CLUSTERROLES, Attributes
from .store import ApiError

AUTHZ, AUTHN = "authorization.k8s.io", "authentication.k8s.io"
KINDS = {(AUTHZ, "selfsubjectaccessreviews"), (AUTHZ, "subjectaccessreviews"), (AUTHZ, "localsubjectaccessreviews"),
         (AUTHZ, "selfsubjectrulesreviews"), (AUTHN, "selfsubjectreviews")}
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                   "/version", "/version/"]
BOOTSTRAP = [
    ("system:basic-user", [{"apiGroups": [AUTHZ], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                           {"apiGroups": [AUTHN], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
    ("system:discovery", [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}]),
    ("system:public-info-viewer", [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
]


def serves(rt: R.ResourceType) -> bool:
    return (rt.group, rt.plural) in KINDS


def seed(store) -> None:
    """The bootstrap roles that let every authenticated identity review itself and read discovery."""
    meta = {"labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
    for name, rules in BOOTSTRAP:
        if store.get_ref(CLUSTERROLES, None, name) is None:
            store.create(CLUSTERROLES, {"metadata": {"name": name, **meta}, "rules": rules})
        if store.get_ref(CLUSTERROLEBINDINGS, None, name) is None:
            store.create(CLUSTERROLEBINDINGS, {
                "metadata": {"name": name, **meta},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]})


def _invalid(kind: str, errors: list[tuple[str, str]]) -> ApiError:
    msgs = [f"{path}: {text}" for path, text in errors]
    joined = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    group = AUTHN if kind == "SelfSubjectReview" else AUTHZ
    return ApiError(422, "Invalid", f'{kind}.{group} "" is invalid: {joined}', {
        "group": group, "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": text, "field": path} for path, text in errors]})


def _spec_errors(spec: dict, with_subject: bool) -> list[tuple[str, str]]:
    """``ValidateSubjectAccessReviewSpec`` / ``ValidateSelfSubjectAccessReviewSpec``."""
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    errs = []
    if ra is not None and nra is not None:
        errs.append(("spec.nonResourceAttributes", "Invalid value: \"object\": cannot be specified in combination with resourceAttributes"))
    if ra is None and nra is None:
        errs.append(("spec.resourceAttributes", "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"))
    if with_subject and not spec.get("user") and not spec.get("groups"):
        errs.append(("spec.user", 'Invalid value: "": at least one of user or group must be specified'))
    return errs


def _attributes(spec: dict, user: str, groups: tuple[str, ...]) -> Attributes:
    ra = spec.get("resourceAttributes")
    if ra is not None:
        return Attributes(user, groups, ra.get("verb", ""), True, "", ra.get("group", ""), ra.get("resource", ""),
                          ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", ""))
    nra = spec.get("nonResourceAttributes") or {}
    return Attributes(user, groups, nra.get("verb", ""), False, nra.get("path", ""))


async def handle(lab, request: web.Request, rt: R.ResourceType, namespace: str | None, name: str | None) -> web.Response:
    if request.method != "POST" or name is not None:
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    raw, ctype = await request.read(), request.content_type or ""
    try:
        if "protobuf" in ctype:  # what kubectl auth sends
            body = protobuf.decode(raw)
        else:
            body = (yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw or b"{}")) or {}
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError(400, "BadRequest", f"couldn't get version/kind; json parse error: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the object provided is unrecognized or invalid: expected a JSON object")
    if body.get("apiVersion", rt.api_version) != rt.api_version or body.get("kind", rt.kind) != rt.kind:
        raise ApiError(400, "BadRequest", f"the API version in the data ({body.get('apiVersion')}) does not match the "
                       f"expected API version ({rt.api_version})")
    user = request["user"]
    groups = request.get("groups") or lab.rbac.groups_of(user)
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    md = {"creationTimestamp": None}
    if rt.plural == "selfsubjectreviews":
        info = {"username": user, "groups": list(groups)}
        if request.get("uid"):
            info["uid"] = request["uid"]
        if request.get("extra"):
            info["extra"] = request["extra"]
        return web.json_response({"kind": rt.kind, "apiVersion": rt.api_version, "metadata": md,
                                  "status": {"userInfo": info}}, status=201)
    if rt.plural == "selfsubjectrulesreviews":  # kubectl auth can-i --list
        if not spec.get("namespace"):
            raise _invalid(rt.kind, [("spec.namespace", "Required value")])
        resource, non_resource = lab.rbac.rules(user, groups, spec["namespace"])
        return web.json_response({"kind": rt.kind, "apiVersion": rt.api_version, "metadata": md, "spec": spec,
                                  "status": {"resourceRules": resource, "nonResourceRules": non_resource,
                                             "incomplete": False}}, status=201)
    if rt.plural == "selfsubjectaccessreviews":
        errs = _spec_errors(spec, with_subject=False)
    else:
        errs = _spec_errors(spec, with_subject=True)
        user, groups = spec.get("user", ""), tuple(spec.get("groups") or ())
    if rt.plural == "localsubjectaccessreviews":
        given = (body.get("metadata") or {}).get("namespace")
        if given and given != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        md["namespace"] = namespace
        ra = spec.get("resourceAttributes")
        if ra is not None and ra.get("namespace", "") != namespace:
            errs.append(("spec.resourceAttributes.namespace", f"Invalid value: {json.dumps(ra.get('namespace', ''))}: must match metadata.namespace"))
        if spec.get("nonResourceAttributes") is not None:
            errs.append(("spec.nonResourceAttributes", 'Invalid value: "object": disallowed on this kind of request'))
    if errs:
        raise _invalid(rt.kind, errs)
    allowed, reason = lab.rbac.decide(_attributes(spec, user, groups))
    status = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return web.json_response({"kind": rt.kind, "apiVersion": rt.api_version, "metadata": md, "spec": spec,
                              "status": status}, status=201)
