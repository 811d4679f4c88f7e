"""Metadata-only reads: ``Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1``.

Sources: client-go ``metadata/metadata.go`` (what it sends: protobuf first, then this JSON form, then plain JSON);
apiserver ``pkg/endpoints/handlers/response.go`` (``asPartialObjectMetadata[List]``: 406 when a list is asked for
with the single form, or the reverse) and ``handlers/negotiation`` (the first media type the server can
produce wins; the lab produces JSON only).
"""

from __future__ import annotations

from .resources import ResourceType
from .store import ApiError

SINGLE, LIST = "PartialObjectMetadata", "PartialObjectMetadataList"
_JSON = ("application/json", "application/*", "*/*")
# the Go types named in the apiserver's 406 message, by API group
_PACKAGES = {"": "core", "networking.k8s.io": "networking", "rbac.authorization.k8s.io": "rbac",
             "discovery.k8s.io": "discovery", "coordination.k8s.io": "coordination"}


def requested(accept: str | None) -> tuple[str, str] | None:
    """(kind, apiVersion) of the metadata form the first servable media type asks for; None for a plain object
    (or a Table, which tables.py serves)."""
    for entry in (accept or "application/json").split(","):
        parts = [p.strip() for p in entry.split(";")]
        if parts[0].lower() not in _JSON:
            continue
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        kind = params.get("as")
        if kind in (SINGLE, LIST) and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return kind, "meta.k8s.io/" + params["v"]
        return None
    return None


def _go_type(rt: ResourceType, is_list: bool) -> str:
    pkg = _PACKAGES.get(rt.group, rt.group.split(".")[0])
    return f"*{pkg}.{rt.kind}{'List' if is_list else ''}"


def single(rt: ResourceType, obj: dict, form: tuple[str, str]) -> dict:
    kind, api_version = form
    if kind != SINGLE:
        raise ApiError(406, "NotAcceptable", f"you requested {LIST}, but the requested object is not a list ({_go_type(rt, False)})")
    return {"kind": SINGLE, "apiVersion": api_version, "metadata": obj.get("metadata", {})}


def as_list(rt: ResourceType, doc: dict, form: tuple[str, str]) -> dict:
    kind, api_version = form
    if kind != LIST:
        raise ApiError(406, "NotAcceptable", f"you requested {SINGLE}, but the requested object is a list ({_go_type(rt, True)})")
    items = [{"kind": SINGLE, "apiVersion": api_version, "metadata": o.get("metadata", {})} for o in doc.get("items", [])]
    return {"kind": LIST, "apiVersion": api_version, "metadata": doc.get("metadata", {}), "items": items}
