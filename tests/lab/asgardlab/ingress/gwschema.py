"""The Gateway API v1 schemas the lab's API server validates GatewayClass, Gateway and HTTPRoute with.

``kubernetes-validate`` ships no Gateway API schemas, so this is the subset of the upstream CRDs'
``openAPIV3Schema`` (kubernetes-sigs/gateway-api ``config/crd/standard/gateway.networking.k8s.io_*.yaml``, v1,
standard channel; field names, types, enums, defaults, patterns and bounds copied from there) that the lab
needs to refuse typos and wrong types the way the apiserver does: every object is closed
(``additionalProperties: false``, so an unknown field answers 422 like the rest of the lab), except a few
extended subtrees the lab does not implement (kept open: ``spec.tls``, ``spec.allowedListeners``,
``requestMirror``, ``cors``, ``sessionPersistence``) so valid manifests that use them are not refused.

``definitions()`` feeds ``schemas.definitions()`` (validation, OpenAPI v2/v3 for kubectl), ``apply_defaults``
does what the apiserver's structural defaulting does, and ``errors`` checks what the generic validator does not
(pattern, min/max length, minimum/maximum, min/max items) plus the CEL rules (``x-kubernetes-validations``)
that matter for the lab, with the CRDs' messages.
"""

from __future__ import annotations

import copy
import re

from ..schemas import FieldError

GROUP = "gateway.networking.k8s.io"
META = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
LIST_META = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GROUP_RE = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KIND_RE = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
NAMESPACE_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CONTROLLER_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
PROTOCOL_RE = r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$"
ADDRESS_TYPE_RE = r"^Hostname|IPAddress|NamedAddress|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
DURATION_RE = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
HEADER_NAME_RE = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$"
REASON_RE = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_RE = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
PATH_CHARS_RE = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"


def _s(**kw) -> dict:
    return {"type": "string", **kw}


def _i(**kw) -> dict:
    return {"type": "integer", "format": "int32", **kw}


def _o(props: dict, required: tuple = (), open_: bool = False, **kw) -> dict:
    out = {"type": "object", "properties": props, **kw}
    if required:
        out["required"] = list(required)
    if not open_:
        out["additionalProperties"] = False
    return out


def _a(items: dict, **kw) -> dict:
    return {"type": "array", "items": items, **kw}


def _loose(**kw) -> dict:
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True, **kw}


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = _o({
    "matchLabels": STRING_MAP,
    "matchExpressions": _a(_o({"key": _s(), "operator": _s(), "values": _a(_s())}, ("key", "operator"))),
})
CONDITION = _o({
    "type": _s(pattern=CONDITION_TYPE_RE, maxLength=316),
    "status": _s(enum=["True", "False", "Unknown"]),
    "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
    "lastTransitionTime": _s(format="date-time"),
    "reason": _s(pattern=REASON_RE, minLength=1, maxLength=1024),
    "message": _s(maxLength=32768),
}, ("lastTransitionTime", "message", "reason", "status", "type"))
CONDITIONS = _a(CONDITION, maxItems=8)
PENDING = {"lastTransitionTime": "1970-01-01T00:00:00Z", "message": "Waiting for controller", "reason": "Pending",
           "status": "Unknown"}
GATEWAYCLASS_STATUS_DEFAULT = {"conditions": [{**PENDING, "type": "Accepted"}]}
GATEWAY_STATUS_DEFAULT = {"conditions": [{**PENDING, "type": "Accepted"}, {**PENDING, "type": "Programmed"}]}

PARAMETERS_REF = _o({"group": _s(maxLength=253, pattern=GROUP_RE), "kind": _s(minLength=1, maxLength=63, pattern=KIND_RE),
                     "name": _s(minLength=1, maxLength=253), "namespace": _s(minLength=1, maxLength=63, pattern=NAMESPACE_RE)},
                    ("group", "kind", "name"))
SECRET_REF = _o({"group": _s(default="", maxLength=253, pattern=GROUP_RE),
                 "kind": _s(default="Secret", minLength=1, maxLength=63, pattern=KIND_RE),
                 "name": _s(minLength=1, maxLength=253),
                 "namespace": _s(minLength=1, maxLength=63, pattern=NAMESPACE_RE)}, ("name",))
ROUTE_GROUP_KIND = _o({"group": _s(default=GROUP, maxLength=253, pattern=GROUP_RE),
                       "kind": _s(minLength=1, maxLength=63, pattern=KIND_RE)}, ("kind",))
LISTENER = _o({
    "name": _s(minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN),
    "hostname": _s(minLength=1, maxLength=253, pattern=HOSTNAME),
    "port": _i(minimum=1, maximum=65535),
    "protocol": _s(minLength=1, maxLength=255, pattern=PROTOCOL_RE),
    "tls": _o({
        "mode": _s(default="Terminate", enum=["Terminate", "Passthrough"]),
        "certificateRefs": _a(SECRET_REF, maxItems=64),
        "options": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 4096}, "maxProperties": 16},
    }),
    "allowedRoutes": _o({
        "kinds": _a(ROUTE_GROUP_KIND, maxItems=8),
        "namespaces": _o({"from": _s(default="Same", enum=["All", "Selector", "Same"]), "selector": LABEL_SELECTOR},
                         default={"from": "Same"}),
    }, default={"namespaces": {"from": "Same"}}),
}, ("name", "port", "protocol"))
ADDRESS_SPEC = _o({"type": _s(default="IPAddress", minLength=1, maxLength=253, pattern=ADDRESS_TYPE_RE),
                   "value": _s(maxLength=253)})

PARENT_REF = _o({
    "group": _s(default=GROUP, maxLength=253, pattern=GROUP_RE),
    "kind": _s(default="Gateway", minLength=1, maxLength=63, pattern=KIND_RE),
    "namespace": _s(minLength=1, maxLength=63, pattern=NAMESPACE_RE),
    "name": _s(minLength=1, maxLength=253),
    "sectionName": _s(minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN),
    "port": _i(minimum=1, maximum=65535),
}, ("name",))
HEADER = _o({"name": _s(minLength=1, maxLength=256, pattern=HEADER_NAME_RE), "value": _s(minLength=1, maxLength=4096)},
            ("name", "value"))
HEADER_MODIFIER = _o({"set": _a(HEADER, maxItems=16), "add": _a(HEADER, maxItems=16),
                      "remove": _a(_s(), maxItems=16)})
PATH_MODIFIER = _o({"type": _s(enum=["ReplaceFullPath", "ReplacePrefixMatch"]),
                    "replaceFullPath": _s(maxLength=1024), "replacePrefixMatch": _s(maxLength=1024)}, ("type",))
PRECISE_HOSTNAME = _s(minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN)
FILTER = _o({
    "type": _s(enum=["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect",
                     "URLRewrite", "ExtensionRef", "CORS"]),
    "requestHeaderModifier": HEADER_MODIFIER,
    "responseHeaderModifier": HEADER_MODIFIER,
    "requestMirror": _loose(),
    "requestRedirect": _o({"scheme": _s(enum=["http", "https"]), "hostname": PRECISE_HOSTNAME, "path": PATH_MODIFIER,
                           "port": _i(minimum=1, maximum=65535),
                           "statusCode": {"type": "integer", "default": 302, "enum": [301, 302, 303, 307, 308]}}),
    "urlRewrite": _o({"hostname": PRECISE_HOSTNAME, "path": PATH_MODIFIER}),
    "extensionRef": _o({"group": _s(maxLength=253, pattern=GROUP_RE), "kind": _s(minLength=1, maxLength=63, pattern=KIND_RE),
                        "name": _s(minLength=1, maxLength=253)}, ("group", "kind", "name")),
    "cors": _loose(),
}, ("type",))
BACKEND_REF = _o({
    "group": _s(default="", maxLength=253, pattern=GROUP_RE),
    "kind": _s(default="Service", minLength=1, maxLength=63, pattern=KIND_RE),
    "name": _s(minLength=1, maxLength=253),
    "namespace": _s(minLength=1, maxLength=63, pattern=NAMESPACE_RE),
    "port": _i(minimum=1, maximum=65535),
    "weight": _i(default=1, minimum=0, maximum=1000000),
    "filters": _a(FILTER, maxItems=16),
}, ("name",))
PATH_MATCH_DEFAULT = {"path": {"type": "PathPrefix", "value": "/"}}
MATCH = _o({
    "path": _o({"type": _s(default="PathPrefix", enum=["Exact", "PathPrefix", "RegularExpression"]),
                "value": _s(default="/", maxLength=1024)}, default={"type": "PathPrefix", "value": "/"}),
    "headers": _a(_o({"type": _s(default="Exact", enum=["Exact", "RegularExpression"]),
                      "name": _s(minLength=1, maxLength=256, pattern=HEADER_NAME_RE),
                      "value": _s(minLength=1, maxLength=4096)}, ("name", "value")), maxItems=16),
    "queryParams": _a(_o({"type": _s(default="Exact", enum=["Exact", "RegularExpression"]),
                          "name": _s(minLength=1, maxLength=256), "value": _s(minLength=1, maxLength=1024)},
                         ("name", "value")), maxItems=16),
    "method": _s(enum=["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]),
})
RULE = _o({
    "name": _s(minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN),
    "matches": _a(MATCH, maxItems=64, default=[PATH_MATCH_DEFAULT]),
    "filters": _a(FILTER, maxItems=16),
    "backendRefs": _a(BACKEND_REF, maxItems=16),
    "timeouts": _o({"request": _s(pattern=DURATION_RE), "backendRequest": _s(pattern=DURATION_RE)}),
    "retry": _o({"codes": _a({"type": "integer", "minimum": 400, "maximum": 599}),
                 "attempts": {"type": "integer"}, "backoff": _s(pattern=DURATION_RE)}),
    "sessionPersistence": _loose(),
})


def _kind(kind: str, spec: dict, status: dict, spec_required: bool = True) -> dict:
    return {
        "type": "object",
        "properties": {"apiVersion": _s(), "kind": _s(), "metadata": META, "spec": spec, "status": status},
        "required": ["spec"] if spec_required else [],
        "additionalProperties": False,
        "x-kubernetes-group-version-kind": [{"group": GROUP, "kind": kind, "version": "v1"}],
    }


def _list(kind: str) -> dict:
    return {
        "type": "object",
        "properties": {"apiVersion": _s(), "kind": _s(), "metadata": LIST_META,
                       "items": _a({"$ref": f"#/$defs/io.k8s.networking.gateway.v1.{kind}"})},
        "required": ["items"],
        "x-kubernetes-group-version-kind": [{"group": GROUP, "kind": kind + "List", "version": "v1"}],
    }


GATEWAYCLASS = _kind("GatewayClass",
                     _o({"controllerName": _s(minLength=1, maxLength=253, pattern=CONTROLLER_RE),
                         "description": _s(maxLength=64), "parametersRef": PARAMETERS_REF}, ("controllerName",)),
                     _o({"conditions": CONDITIONS, "supportedFeatures": _a(_o({"name": _s()}, ("name",)), maxItems=64)},
                        default=GATEWAYCLASS_STATUS_DEFAULT))
GATEWAY = _kind("Gateway",
                _o({"gatewayClassName": _s(minLength=1, maxLength=253),
                    "listeners": _a(LISTENER, minItems=1, maxItems=64),
                    "addresses": _a(ADDRESS_SPEC, maxItems=16),
                    "infrastructure": _o({"labels": STRING_MAP, "annotations": STRING_MAP, "parametersRef": PARAMETERS_REF}),
                    "tls": _loose(), "allowedListeners": _loose()},
                   ("gatewayClassName", "listeners")),
                _o({"addresses": _a(_o({"type": _s(default="IPAddress", minLength=1, maxLength=253, pattern=ADDRESS_TYPE_RE),
                                        "value": _s(minLength=1, maxLength=253)}, ("value",)), maxItems=16),
                    "conditions": CONDITIONS,
                    "listeners": _a(_o({"name": _s(minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN),
                                        "supportedKinds": _a(ROUTE_GROUP_KIND, maxItems=8),
                                        "attachedRoutes": _i(), "conditions": CONDITIONS},
                                       ("attachedRoutes", "conditions", "name")), maxItems=64),
                    "attachedListenerSets": _i()},
                   default=GATEWAY_STATUS_DEFAULT))
HTTPROUTE = _kind("HTTPRoute",
                  _o({"parentRefs": _a(PARENT_REF, maxItems=32),
                      "hostnames": _a(_s(minLength=1, maxLength=253, pattern=HOSTNAME), maxItems=16),
                      "rules": _a(RULE, minItems=1, maxItems=16, default=[{"matches": [PATH_MATCH_DEFAULT]}])}),
                  _o({"parents": _a(_o({"parentRef": PARENT_REF,
                                        "controllerName": _s(minLength=1, maxLength=253, pattern=CONTROLLER_RE),
                                        "conditions": CONDITIONS}, ("controllerName", "parentRef")), maxItems=32)},
                     ("parents",)))


def definitions() -> dict[str, dict]:
    """Named schemas in kubernetes-validate's format, merged into ``schemas.definitions()``."""
    out = {}
    for kind, schema in (("GatewayClass", GATEWAYCLASS), ("Gateway", GATEWAY), ("HTTPRoute", HTTPROUTE)):
        out[f"io.k8s.networking.gateway.v1.{kind}"] = copy.deepcopy(schema)
        out[f"io.k8s.networking.gateway.v1.{kind}List"] = _list(kind)
    return out


SCHEMAS = {"gatewayclasses": GATEWAYCLASS, "gateways": GATEWAY, "httproutes": HTTPROUTE}


# --------------------------------------------------------------------------- structural defaulting
def _default(value, schema: dict):
    if isinstance(value, dict) and schema.get("type") == "object":
        for k, sub in (schema.get("properties") or {}).items():
            if k not in value and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
            if k in value:
                _default(value[k], sub)
    elif isinstance(value, list) and schema.get("type") == "array":
        for v in value:
            _default(v, schema.get("items") or {})


def apply_defaults(plural: str, obj: dict, creating: bool) -> None:
    schema = SCHEMAS[plural]
    if creating:  # the status stanza of a request is ignored (status subresource); the CRD's default applies
        obj.pop("status", None)
        st = schema["properties"]["status"]
        if "default" in st:
            obj["status"] = copy.deepcopy(st["default"])
    spec = obj.get("spec")
    if isinstance(spec, dict):
        _default(spec, schema["properties"]["spec"])
    if isinstance(obj.get("status"), dict):
        _default(obj["status"], schema["properties"]["status"])


# --------------------------------------------------------------------------- validation
def _walk(value, schema: dict, path: str, errs: list[FieldError]) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(FieldError(path, "Invalid value", f"{path} in body should match '{schema['pattern']}'", value))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(FieldError(path, "Too long", f"may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append(FieldError(path, "Invalid value", f"{path} in body should be at least {schema['minLength']} chars long", value))
    elif isinstance(value, bool):
        return
    elif isinstance(value, (int, float)):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(FieldError(path, "Invalid value", f"{path} in body should be greater than or equal to {schema['minimum']}", value))
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(FieldError(path, "Invalid value", f"{path} in body should be less than or equal to {schema['maximum']}", value))
        if isinstance(schema.get("enum"), list) and value not in schema["enum"]:
            errs.append(FieldError(path, "Unsupported value", f"{value}: supported values: " + ", ".join(f'"{e}"' for e in schema["enum"])))
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(FieldError(path, "Too many", f"{len(value)}: must have at most {schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            errs.append(FieldError(path, "Invalid value", f"{path} in body should have at least {schema['minItems']} items", value))
        for i, v in enumerate(value):
            _walk(v, schema.get("items") or {}, f"{path}[{i}]", errs)
    elif isinstance(value, dict):
        props = schema.get("properties") or {}
        ap = schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                _walk(v, props[k], f"{path}.{k}" if path else k, errs)
            elif isinstance(ap, dict):
                _walk(v, ap, f"{path}[{k}]", errs)


def _cel(path: str, value, message: str) -> FieldError:
    return FieldError(path, "Invalid value", message, value)


def _gateway_rules(spec: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    listeners = spec.get("listeners")
    if not isinstance(listeners, list):
        return errs
    ls = [x for x in listeners if isinstance(x, dict)]
    proto = [str(x.get("protocol", "")) for x in ls]
    if any(re.fullmatch(r"(?i)HTTP|TCP|UDP", p) and "tls" in x for p, x in zip(proto, ls, strict=True)):
        errs.append(_cel("spec.listeners", listeners, "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"))
    if any(re.fullmatch(r"(?i)HTTPS", p) and isinstance(x.get("tls"), dict) and x["tls"].get("mode", "Terminate") not in ("", "Terminate")
           for p, x in zip(proto, ls, strict=True)):
        errs.append(_cel("spec.listeners", listeners, "tls mode must be Terminate for protocol HTTPS"))
    if any(re.fullmatch(r"(?i)TCP|UDP", p) and x.get("hostname") for p, x in zip(proto, ls, strict=True)):
        errs.append(_cel("spec.listeners", listeners, "hostname must not be specified for protocols ['TCP', 'UDP']"))
    names = [x.get("name") for x in ls]
    if len(names) != len(set(names)):
        errs.append(_cel("spec.listeners", listeners, "Listener name must be unique within the Gateway"))
    combos = [(x.get("port"), x.get("protocol"), x.get("hostname")) for x in ls]
    if len(combos) != len(set(combos)):
        errs.append(_cel("spec.listeners", listeners, "Combination of port, protocol and hostname must be unique for each listener"))
    for i, x in enumerate(ls):
        tls = x.get("tls")
        if isinstance(tls, dict) and tls.get("mode", "Terminate") == "Terminate" and not tls.get("certificateRefs") and not tls.get("options"):
            errs.append(_cel(f"spec.listeners[{i}].tls", tls, "certificateRefs or options must be specified when mode is Terminate"))
    return errs


_PATH_RULES = (
    (lambda v: v.startswith("/"), "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "//" not in v, "must not contain '//' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "/./" not in v, "must not contain '/./' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "/../" not in v, "must not contain '/../' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "%2f" not in v, "must not contain '%2f' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "%2F" not in v, "must not contain '%2F' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: "#" not in v, "must not contain '#' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: not v.endswith("/.."), "must not end with '/..' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: not v.endswith("/."), "must not end with '/.' when type one of ['Exact', 'PathPrefix']"),
    (lambda v: re.fullmatch(PATH_CHARS_RE[1:-1], v) is not None,
     "must only contain valid characters (matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']"),
)
_FILTER_FIELDS = {"RequestHeaderModifier": "requestHeaderModifier", "ResponseHeaderModifier": "responseHeaderModifier",
                  "RequestMirror": "requestMirror", "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite",
                  "ExtensionRef": "extensionRef", "CORS": "cors"}


def _filter_rules(filters, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if not isinstance(filters, list):
        return errs
    types = [f.get("type") for f in filters if isinstance(f, dict)]
    if "RequestRedirect" in types and "URLRewrite" in types:
        errs.append(_cel(path, filters, "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both"))
    for t in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "CORS"):
        if types.count(t) > 1:
            errs.append(_cel(path, filters, f"{t} filter cannot be repeated"))
    for j, f in enumerate(x for x in filters if isinstance(x, dict)):
        for t, fld in _FILTER_FIELDS.items():
            if f.get("type") == t and fld not in f:
                errs.append(_cel(f"{path}[{j}]", f, f"filter.{fld} must be specified for {t} filter.type"))
            if f.get("type") != t and fld in f:
                errs.append(_cel(f"{path}[{j}]", f, f"filter.{fld} must be nil if the filter.type is not {t}"))
        for fld in ("requestRedirect", "urlRewrite"):
            pm = (f.get(fld) or {}).get("path") if isinstance(f.get(fld), dict) else None
            if isinstance(pm, dict):
                if pm.get("type") == "ReplaceFullPath" and "replaceFullPath" not in pm:
                    errs.append(_cel(f"{path}[{j}].{fld}.path", pm, "replaceFullPath must be specified when type is set to 'ReplaceFullPath'"))
                if pm.get("type") == "ReplacePrefixMatch" and "replacePrefixMatch" not in pm:
                    errs.append(_cel(f"{path}[{j}].{fld}.path", pm, "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'"))
    return errs


def _route_rules(spec: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    rules = spec.get("rules")
    if not isinstance(rules, list):
        return errs
    for i, rule in enumerate(r for r in rules if isinstance(r, dict)):
        rp = f"spec.rules[{i}]"
        matches = rule.get("matches") if isinstance(rule.get("matches"), list) else []
        for j, m in enumerate(x for x in matches if isinstance(x, dict)):
            pm = m.get("path")
            if isinstance(pm, dict) and pm.get("type", "PathPrefix") in ("Exact", "PathPrefix") and isinstance(pm.get("value", "/"), str):
                for ok, msg in _PATH_RULES:
                    if not ok(pm.get("value", "/")):
                        errs.append(_cel(f"{rp}.matches[{j}].path", pm, msg))
        filters = rule.get("filters") or []
        refs = rule.get("backendRefs") or []
        if refs and any(isinstance(f, dict) and "requestRedirect" in f for f in filters):
            errs.append(_cel(rp, rule, "RequestRedirect filter must not be used together with backendRefs"))
        for fld, name in (("urlRewrite", "URLRewrite"), ("requestRedirect", "RequestRedirect")):
            uses = any(isinstance(f, dict) and isinstance(f.get(fld), dict) and (f[fld].get("path") or {}).get("type") == "ReplacePrefixMatch"
                       for f in filters)
            if uses and (len(matches) != 1 or not isinstance(matches[0], dict)
                         or (matches[0].get("path") or {}).get("type") != "PathPrefix"):
                errs.append(_cel(rp, rule, f"When using {name} filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified"))
        errs += _filter_rules(filters, f"{rp}.filters")
        for j, br in enumerate(x for x in refs if isinstance(x, dict)):
            if br.get("group", "") == "" and br.get("kind", "Service") == "Service" and "port" not in br:
                errs.append(_cel(f"{rp}.backendRefs[{j}]", br, "Must have port for Service reference"))
            errs += _filter_rules(br.get("filters"), f"{rp}.backendRefs[{j}].filters")
        t = rule.get("timeouts")
        if isinstance(t, dict) and isinstance(t.get("request"), str) and isinstance(t.get("backendRequest"), str):
            from .gateway import seconds

            req, back = seconds(t["request"]), seconds(t["backendRequest"])
            if req != 0 and back > req:
                errs.append(_cel(f"{rp}.timeouts", t, "backendRequest timeout cannot be longer than request timeout"))
    return errs


def errors(plural: str, obj: dict, old: dict | None) -> list[FieldError]:
    errs: list[FieldError] = []
    _walk({k: v for k, v in obj.items() if k != "metadata"}, SCHEMAS[plural], "", errs)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if plural == "gateways":
        errs += _gateway_rules(spec)
    elif plural == "httproutes":
        errs += _route_rules(spec)
    elif plural == "gatewayclasses" and old is not None:
        before = (old.get("spec") or {}).get("controllerName")
        if spec.get("controllerName") != before:
            errs.append(FieldError("spec.controllerName", "Invalid value", "Value is immutable", spec.get("controllerName")))
    return errs
