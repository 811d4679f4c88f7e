"""What the API server does with Ingress, IngressClass and Gateway API objects beyond the generic schema check,
called by ``asgardlab.admission.Admission`` (two hooks: ``default`` and ``validate``).

- DefaultIngressClass admission (``plugin/pkg/admission/network/defaultingressclass/admission.go``): a new
  Ingress with neither ``spec.ingressClassName`` nor the ``kubernetes.io/ingress.class`` annotation gets the
  default IngressClass (annotation ``ingressclass.kubernetes.io/is-default-class: "true"``; the newest when
  several are marked). Updates are not defaulted.
- Ingress / IngressClass validation (``pkg/apis/networking/validation/validation.go``): defaultBackend or rules,
  hosts (DNS names, not IPs, ``*.`` wildcards), path rules per pathType, service backends (name, port name or
  number), TLS hosts, ``spec.controller`` a domain-prefixed path and immutable.
- Gateway API custom resources: structural defaults, status reset on create, the CRDs' bounds and CEL rules
  (``gwschema``).
"""

from __future__ import annotations

import ipaddress
import re

from .. import resources as R
from ..admission import DNS1035_LABEL, DNS1123_SUBDOMAIN, MSG_1035, MSG_SUBDOMAIN
from ..schemas import FieldError, GoLiteral
from . import gwschema
from .ingresses import CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION

INGRESSES = "networking.k8s.io/ingresses"
INGRESSCLASSES = "networking.k8s.io/ingressclasses"
WILDCARD = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MSG_WILDCARD = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of "
                "lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', "
                "regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DOMAIN_PATH = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/\S+$")
_GATEWAY_PLURALS = {"gatewayclasses", "gateways", "httproutes"}


def _gateway(rt) -> str | None:
    return rt.plural if rt.group == gwschema.GROUP and rt.plural in _GATEWAY_PLURALS else None


# --------------------------------------------------------------------------- defaulting
def default_class(store) -> str | None:
    classes = [c for c in store.iter_refs(R.lookup("networking.k8s.io", "ingressclasses"))
               if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    if not classes:
        return None
    classes.sort(key=lambda c: c["metadata"]["name"])  # ties: the smaller name (admission.go sort)
    classes.sort(key=lambda c: c["metadata"].get("creationTimestamp", ""), reverse=True)  # stable: newest first
    return classes[0]["metadata"]["name"]


def default(store, rt, obj: dict, old: dict | None, subresource: str | None) -> None:
    if rt.key == INGRESSES and old is None and subresource is None:
        spec = obj.get("spec")
        if isinstance(spec, dict) and not spec.get("ingressClassName") \
                and CLASS_ANNOTATION not in (obj["metadata"].get("annotations") or {}):
            name = default_class(store)
            if name:
                spec["ingressClassName"] = name
    plural = _gateway(rt)
    if plural:
        gwschema.apply_defaults(plural, obj, creating=old is None and subresource is None)


# --------------------------------------------------------------------------- validation
def _host_errors(host: str, path: str, allow_wildcard: bool = True) -> list[FieldError]:
    errs = []
    try:
        ipaddress.ip_address(host)
        errs.append(FieldError(path, "Invalid value", "must be a DNS name, not an IP address", host))
    except ValueError:
        pass
    if "*" in host and allow_wildcard:
        if not WILDCARD.match(host) or len(host) > 253:
            errs.append(FieldError(path, "Invalid value", MSG_WILDCARD, host))
    elif not DNS1123_SUBDOMAIN.match(host) or len(host) > 253:
        errs.append(FieldError(path, "Invalid value", MSG_SUBDOMAIN, host))
    return errs


def _backend_errors(backend, path: str) -> list[FieldError]:
    if not isinstance(backend, dict):
        return []
    svc, res = backend.get("service"), backend.get("resource")
    if svc is not None and res is not None:
        return [FieldError(path, "Invalid value", "cannot set both resource and service backends", "")]
    if res is not None:
        return []
    if svc is None:
        return [FieldError(path, "Invalid value", "resource or service backend is required", "")]
    errs = []
    name = svc.get("name") or ""
    if not name:
        errs.append(FieldError(f"{path}.service.name", "Required value"))
    elif len(name) > 63 or not DNS1035_LABEL.match(name):
        errs.append(FieldError(f"{path}.service.name", "Invalid value", MSG_1035, name))
    port = svc.get("port") or {}
    pname, pnum = port.get("name") or "", port.get("number") or 0
    if pname and pnum:
        errs.append(FieldError(path, "Invalid value", "cannot set both port name & port number", ""))
    elif pname:
        if len(pname) > 15 or not PORT_NAME.match(pname) or "--" in pname or not re.search("[a-z]", pname):
            errs.append(FieldError(f"{path}.service.port.name", "Invalid value",
                                   "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at least one letter, "
                                   "no more than 15 characters, and no consecutive or edge hyphens", pname))
    elif pnum:
        if isinstance(pnum, int) and not 1 <= pnum <= 65535:
            errs.append(FieldError(f"{path}.service.port.number", "Invalid value", "must be between 1 and 65535, inclusive", pnum))
    else:
        errs.append(FieldError(path, "Required value", "port name or number is required"))
    return errs


_BAD_SEQ = ("//", "/./", "/../", "%2f", "%2F")


def ingress_errors(obj: dict) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    errs: list[FieldError] = []
    rules = spec.get("rules") or []
    if not rules and not spec.get("defaultBackend"):
        errs.append(FieldError("spec", "Invalid value", "either `defaultBackend` or `rules` must be specified",
                               GoLiteral("[]networking.IngressRule(nil)")))
    if spec.get("defaultBackend"):
        errs += _backend_errors(spec["defaultBackend"], "spec.defaultBackend")
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        if rule.get("host"):
            errs += _host_errors(rule["host"], f"spec.rules[{i}].host")
        http = rule.get("http")
        if isinstance(http, dict):
            paths = http.get("paths") or []
            if not paths:
                errs.append(FieldError(f"spec.rules[{i}].http.paths", "Required value"))
            for j, p in enumerate(paths):
                if not isinstance(p, dict):
                    continue
                pp = f"spec.rules[{i}].http.paths[{j}]"
                ptype, path = p.get("pathType"), p.get("path") or ""
                if ptype in ("Exact", "Prefix"):
                    if not path.startswith("/"):
                        errs.append(FieldError(f"{pp}.path", "Invalid value", "must be an absolute path", path))
                    for seq in _BAD_SEQ:
                        if seq in path:
                            errs.append(FieldError(f"{pp}.path", "Invalid value", f"must not contain '{seq}'", path))
                    for suf in ("/..", "/."):
                        if path.endswith(suf):
                            errs.append(FieldError(f"{pp}.path", "Invalid value", f"cannot end with '{suf}'", path))
                elif ptype == "ImplementationSpecific":
                    if path and not path.startswith("/"):
                        errs.append(FieldError(f"{pp}.path", "Invalid value", "must be an absolute path", path))
                elif ptype is not None:
                    errs.append(FieldError(f"{pp}.pathType", "Unsupported value",
                                           f'"{ptype}": supported values: "Exact", "ImplementationSpecific", "Prefix"'))
                errs += _backend_errors(p.get("backend"), f"{pp}.backend")
    for i, tls in enumerate(spec.get("tls") or []):
        for j, host in enumerate((tls or {}).get("hosts") or []):
            errs += _host_errors(host, f"spec.tls[{i}].hosts[{j}]")
    cls = spec.get("ingressClassName")
    if cls and (len(cls) > 253 or not DNS1123_SUBDOMAIN.match(cls)):
        errs.append(FieldError("spec.ingressClassName", "Invalid value", MSG_SUBDOMAIN, cls))
    return errs


def ingressclass_errors(obj: dict, old: dict | None) -> list[FieldError]:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    ctrl = spec.get("controller") or ""
    errs = []
    if not ctrl:
        errs.append(FieldError("spec.controller", "Required value"))
    elif len(ctrl) > 250:
        errs.append(FieldError("spec.controller", "Too long", "may not be more than 250 bytes"))
    elif not DOMAIN_PATH.match(ctrl):
        errs.append(FieldError("spec.controller", "Invalid value", 'must be a domain-prefixed path (such as "acme.io/foo")', ctrl))
    if old is not None and ctrl != ((old.get("spec") or {}).get("controller") or ""):
        errs.append(FieldError("spec.controller", "Invalid value", "field is immutable", ctrl))
    return errs


def validate(rt, obj: dict, old: dict | None, subresource: str | None) -> list[FieldError]:
    if rt.key == INGRESSES and subresource is None:
        return ingress_errors(obj)
    if rt.key == INGRESSCLASSES:
        return ingressclass_errors(obj, old)
    plural = _gateway(rt)
    if plural:
        return gwschema.errors(plural, obj, old)
    return []
