"""Discovery documents: /version, /api, /api/v1, /apis, /apis/{group}/{version}."""

from __future__ import annotations

import base64
import hashlib

from . import resources as R
from .resources import ResourceType
from .schemas import K8S_VERSION

VERSION = {
    "major": "1",
    "minor": K8S_VERSION.split(".")[1],
    "gitVersion": K8S_VERSION,
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T16:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_SUB = {
    # subresource -> (group, version, kind or None = parent kind, verbs)
    "status": (None, None, None, ("get", "patch", "update")),
    "log": (None, None, "Pod", ("get",)),
    "exec": (None, None, "PodExecOptions", ("create", "get")),
    "portforward": (None, None, "PodPortForwardOptions", ("create", "get")),
    "attach": (None, None, "PodAttachOptions", ("create", "get")),
    "binding": (None, None, "Binding", ("create",)),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "ephemeralcontainers": (None, None, None, ("get", "patch", "update")),
    "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "finalize": (None, None, None, ("update",)),
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
    "proxy": (None, None, None, ("create", "delete", "get", "patch", "update")),
}


def _hash(s: str) -> str:
    return base64.b64encode(hashlib.sha256(s.encode()).digest()[:8]).decode()


def verbs(rt: ResourceType) -> list[str]:
    v = list(rt.verbs)
    if rt.key == R.NAMESPACES.key and "deletecollection" in v:
        v.remove("deletecollection")
    return v


def resource_list(group: str, version: str) -> dict | None:
    types = [rt for rt in R.ALL_TYPES if rt.group == group and rt.version == version]
    if not types:
        return None
    out = []
    for rt in types:
        entry = {
            "name": rt.plural,
            "singularName": rt.singular or rt.kind.lower(),
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": verbs(rt),
            "storageVersionHash": _hash(rt.api_version + rt.kind),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        out.append(entry)
        for sub in rt.subresources:
            g, v, kind, sverbs = _SUB.get(sub, (None, None, None, ("get",)))
            if sub == "proxy":
                kind = {"pods": "PodProxyOptions", "services": "ServiceProxyOptions", "nodes": "NodeProxyOptions"}.get(rt.plural)
            s = {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                 "kind": kind or rt.kind, "verbs": list(sverbs)}
            if g:
                s["group"] = g
                s["version"] = v
            out.append(s)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": out}


def groups() -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for rt in R.ALL_TYPES:
        if rt.group and (rt.group, rt.version) not in seen:
            seen.append((rt.group, rt.version))
    return seen


def api_group(group: str) -> dict | None:
    versions = [v for g, v in groups() if g == group]
    if not versions:
        return None
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": vs[0]}


def api_group_list() -> dict:
    names = []
    for g, _ in groups():
        if g not in names:
            names.append(g)
    gl = [api_group(g) for g in names]
    for g in gl:
        g.pop("kind")
        g.pop("apiVersion")
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": gl}


def api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}
