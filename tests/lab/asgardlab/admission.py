"""Admission: strict schema validation, server-side defaults, name rules, immutable fields.

``Admission(store)`` is a callable set as ``store.admission``: ``(rt, obj, old, subresource) -> obj``;
it raises ``ApiError(422, "Invalid", ...)`` worded like the real apiserver.
Defaults are idempotent (defaulting a defaulted object changes nothing), so a no-op patch stays a no-op.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import random
import re

from . import resources as R
from . import schemas
from .resources import ResourceType
from .schemas import FieldError, GoLiteral, go_repr
from .store import ApiError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

MSG_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
MSG_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
MSG_1035 = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

# kinds whose names must be DNS labels (RFC 1123) / DNS-1035 labels; everything else: subdomain
_LABEL_NAMED = {R.NAMESPACES.key}
_1035_NAMED = {R.SERVICES.key}

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")


def strip_nulls(v):
    """JSON null in a map means "absent" once decoded by the apiserver."""
    if isinstance(v, dict):
        return {k: strip_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [strip_nulls(x) for x in v]
    return v


def kind_group(rt: ResourceType) -> str:
    return f"{rt.kind}.{rt.group}" if rt.group else rt.kind


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    msgs = [str(e) for e in errors]
    joined = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    reasons = {"Required value": "FieldValueRequired", "Invalid value": "FieldValueInvalid",
               "Unsupported value": "FieldValueNotSupported", "Forbidden": "FieldValueForbidden"}
    return ApiError(
        422,
        "Invalid",
        f'{kind_group(rt)} "{name}" is invalid: {joined}',
        {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [
                {"reason": reasons.get(e.kind, "FieldValueInvalid"), "message": str(e).split(": ", 1)[1], "field": e.path}
                for e in errors
            ],
        },
    )


def name_errors(rt: ResourceType, md: dict) -> list[FieldError]:
    name = md.get("name")
    if not name:
        return [FieldError("metadata.name", "Required value", "name or generateName is required")]
    if rt.key in _1035_NAMED:
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            return [FieldError("metadata.name", "Invalid value", MSG_1035, name)]
    elif rt.key in _LABEL_NAMED:
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            return [FieldError("metadata.name", "Invalid value", MSG_LABEL, name)]
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [FieldError("metadata.name", "Invalid value", MSG_SUBDOMAIN, name)]
    return []


def label_errors(labels: dict | None, path: str) -> list[FieldError]:
    errs = []
    for k, v in (labels or {}).items():
        key_name = k.rsplit("/", 1)[-1]
        if len(key_name) > 63 or not QUALIFIED_NAME.match(key_name):
            errs.append(FieldError(path, "Invalid value", "name part must consist of alphanumeric characters, '-', '_' or '.', "
                                   "and must start and end with an alphanumeric character", k))
        if isinstance(v, str) and (len(v) > 63 or not LABEL_VALUE.match(v)):
            errs.append(FieldError(path, "Invalid value", "a valid label must be an empty string or consist of alphanumeric "
                                   "characters, '-', '_' or '.', and must start and end with an alphanumeric character", v))
    return errs


# --------------------------------------------------------------------------- defaults
def _default_probe(p: dict | None) -> None:
    if not isinstance(p, dict):
        return
    p.setdefault("timeoutSeconds", 1)
    p.setdefault("periodSeconds", 10)
    p.setdefault("successThreshold", 1)
    p.setdefault("failureThreshold", 3)
    if isinstance(p.get("httpGet"), dict):
        p["httpGet"].setdefault("scheme", "HTTP")
        p["httpGet"].setdefault("path", "/")


def _default_container(c: dict) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    image = c.get("image") or ""
    if "imagePullPolicy" not in c:
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(name))
    for e in c.get("env") or []:
        fr = (e.get("valueFrom") or {}).get("fieldRef") if isinstance(e, dict) else None
        if isinstance(fr, dict):
            fr.setdefault("apiVersion", "v1")


def default_pod_spec(spec: dict, is_pod: bool) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    if "serviceAccountName" in spec:
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
    if is_pod:
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ])
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        for src in ("configMap", "secret"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 420)


def _default_template(obj: dict) -> None:
    tpl = (obj.get("spec") or {}).get("template")
    if isinstance(tpl, dict):
        tpl.setdefault("metadata", {})
        if isinstance(tpl.get("spec"), dict):
            default_pod_spec(tpl["spec"], is_pod=False)


class Admission:
    def __init__(self, store) -> None:
        self.store = store

    # ------------------------------------------------------------------ service IPs
    def _used_ips(self) -> set[str]:
        return {s.get("spec", {}).get("clusterIP") for s in self.store.iter_refs(R.SERVICES)}

    def _alloc_ip(self) -> str:
        used = self._used_ips()
        hosts = SERVICE_CIDR.num_addresses
        for _ in range(1000):
            ip = str(SERVICE_CIDR.network_address + random.randint(10, hosts - 2))
            if ip not in used:
                return ip
        raise ApiError(500, "InternalError", "failed to allocate a serviceIP: range is full")

    def _alloc_node_port(self) -> int:
        used = {p.get("nodePort") for s in self.store.iter_refs(R.SERVICES) for p in s.get("spec", {}).get("ports") or []}
        while True:
            port = random.randint(30000, 32767)
            if port not in used:
                return port

    # ------------------------------------------------------------------ per kind
    def _default(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
        md = obj["metadata"]
        if rt.key == R.NAMESPACES.key:
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md.get("name")
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif rt.key == R.PODS.key and spec is not None:
            default_pod_spec(spec, is_pod=True)
            if old is None:
                st = obj.setdefault("status", {})
                st.setdefault("phase", "Pending")
                st.setdefault("qosClass", "BestEffort")
        elif rt.key in (R.DEPLOYMENTS.key,) and spec is not None:
            spec.setdefault("replicas", 1)
            strategy = spec.setdefault("strategy", {})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                ru = strategy.setdefault("rollingUpdate", {})
                ru.setdefault("maxUnavailable", "25%")
                ru.setdefault("maxSurge", "25%")
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            _default_template(obj)
        elif rt.key in (R.REPLICASETS.key, "apps/statefulsets", "apps/daemonsets") and spec is not None:
            if rt.key != "apps/daemonsets":
                spec.setdefault("replicas", 1)
            if rt.key == "apps/statefulsets":
                spec.setdefault("podManagementPolicy", "OrderedReady")
                spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
            if rt.key == "apps/daemonsets":
                spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
                spec.setdefault("revisionHistoryLimit", 10)
            _default_template(obj)
        elif rt.key == R.JOBS.key and spec is not None:
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            uid = md.get("uid")
            if uid and not spec.get("manualSelector"):
                spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
                tpl_md = spec.setdefault("template", {}).setdefault("metadata", {})
                tl = tpl_md.setdefault("labels", {})
                tl.setdefault("batch.kubernetes.io/controller-uid", uid)
                tl.setdefault("batch.kubernetes.io/job-name", md.get("name"))
                tl.setdefault("controller-uid", uid)
                tl.setdefault("job-name", md.get("name"))
            _default_template(obj)
        elif rt.key == "batch/cronjobs" and spec is not None:
            spec.setdefault("concurrencyPolicy", "Allow")
            spec.setdefault("suspend", False)
            spec.setdefault("successfulJobsHistoryLimit", 3)
            spec.setdefault("failedJobsHistoryLimit", 1)
        elif rt.key == R.SERVICES.key and spec is not None:
            self._default_service(spec, old)
            obj.setdefault("status", {"loadBalancer": {}})
        elif rt.key == R.SECRETS.key:
            obj.setdefault("type", "Opaque")
            sd = obj.pop("stringData", None)
            if isinstance(sd, dict):
                data = obj.setdefault("data", {})
                for k, v in sd.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif rt.key == R.PVCS.key and spec is not None:
            spec.setdefault("volumeMode", "Filesystem")
            if old is None:
                obj.setdefault("status", {}).setdefault("phase", "Pending")

    def _default_service(self, spec: dict, old: dict | None) -> None:
        spec.setdefault("type", "ClusterIP")
        old_spec = (old or {}).get("spec") or {}
        if spec["type"] != "ExternalName":
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec.get("clusterIP") or self._alloc_ip()
            if spec["clusterIP"] != "None":
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            else:
                spec.setdefault("clusterIPs", ["None"])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("sessionAffinity", "None")
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []}
        for p in spec.get("ports") or []:
            if not isinstance(p, dict):
                continue
            p.setdefault("protocol", "TCP")
            if "port" in p:
                p.setdefault("targetPort", p["port"])
            if spec["type"] in ("NodePort", "LoadBalancer") and not p.get("nodePort"):
                prev = old_ports.get((p.get("port"), p["protocol"]), {}).get("nodePort")
                p["nodePort"] = prev or self._alloc_node_port()
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)

    # ------------------------------------------------------------------ semantic validation
    def _semantic(self, rt: ResourceType, obj: dict, old: dict | None) -> list[FieldError]:
        errs: list[FieldError] = []
        md = obj.get("metadata") or {}
        errs += label_errors(md.get("labels"), "metadata.labels")
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
        if spec is None:
            return errs
        if rt.key == R.PODS.key:
            errs += self._pod_spec_errors(spec, "spec")
        if rt.key in (R.DEPLOYMENTS.key, R.REPLICASETS.key, "apps/statefulsets", "apps/daemonsets"):
            sel = spec.get("selector")
            tpl = spec.get("template") or {}
            tlabels = (tpl.get("metadata") or {}).get("labels") or {}
            from .selectors import match_selector_dict

            if not sel or not (sel.get("matchLabels") or sel.get("matchExpressions")):
                errs.append(FieldError("spec.selector", "Invalid value", f"empty selector is invalid for {rt.plural[:-1]}", GoLiteral("v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}")))
            elif not match_selector_dict(sel, tlabels):
                errs.append(FieldError("spec.template.metadata.labels", "Invalid value", "`selector` does not match template `labels`",
                                       GoLiteral(_go_map(tlabels))))
            if isinstance(tpl.get("spec"), dict):
                errs += self._pod_spec_errors(tpl["spec"], "spec.template.spec")
            errs += label_errors(tlabels, "spec.template.metadata.labels")
            if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
                errs.append(FieldError("spec.replicas", "Invalid value", "must be greater than or equal to 0", spec["replicas"]))
        if rt.key == R.JOBS.key and isinstance((spec.get("template") or {}).get("spec"), dict):
            ps = spec["template"]["spec"]
            if ps.get("restartPolicy") not in ("Never", "OnFailure"):
                errs.append(FieldError("spec.template.spec.restartPolicy", "Unsupported value",
                                       f'{go_repr(ps.get("restartPolicy"))}: supported values: "OnFailure", "Never"'))
            errs += self._pod_spec_errors(ps, "spec.template.spec")
        if rt.key == R.SERVICES.key:
            for i, p in enumerate(spec.get("ports") or []):
                port = p.get("port") if isinstance(p, dict) else None
                if isinstance(port, int) and not 1 <= port <= 65535:
                    errs.append(FieldError(f"spec.ports[{i}].port", "Invalid value", "must be between 1 and 65535, inclusive", port))
        return errs

    def _pod_spec_errors(self, spec: dict, path: str) -> list[FieldError]:
        errs = []
        containers = spec.get("containers")
        if not containers:
            return [FieldError(f"{path}.containers", "Required value")]
        seen = set()
        for key in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(key) or []):
                if not isinstance(c, dict):
                    continue
                cp = f"{path}.{key}[{i}]"
                name = c.get("name")
                if name and (len(name) > 63 or not DNS1123_LABEL.match(name)):
                    errs.append(FieldError(f"{cp}.name", "Invalid value", MSG_LABEL, name))
                elif name in seen:
                    errs.append(FieldError(f"{cp}.name", "Duplicate value", "", name))
                seen.add(name)
                if not c.get("image"):
                    errs.append(FieldError(f"{cp}.image", "Required value"))
                for j, p in enumerate(c.get("ports") or []):
                    cport = p.get("containerPort") if isinstance(p, dict) else None
                    if isinstance(cport, int) and not 1 <= cport <= 65535:
                        errs.append(FieldError(f"{cp}.ports[{j}].containerPort", "Invalid value", "must be between 1 and 65535, inclusive", cport))
        return errs

    def _immutable(self, rt: ResourceType, obj: dict, old: dict) -> list[FieldError]:
        errs = []
        spec, ospec = obj.get("spec") or {}, old.get("spec") or {}
        if rt.key in (R.DEPLOYMENTS.key, R.REPLICASETS.key, "apps/statefulsets", "apps/daemonsets"):
            if spec.get("selector") != ospec.get("selector"):
                errs.append(FieldError("spec.selector", "Invalid value", "field is immutable", GoLiteral(_go_selector(spec.get("selector")))))
        if rt.key == R.SERVICES.key:
            if ospec.get("clusterIP") and spec.get("clusterIP") != ospec.get("clusterIP"):
                errs.append(FieldError("spec.clusterIPs[0]", "Invalid value", "may not change once set", spec.get("clusterIP")))
        if rt.key == R.JOBS.key and spec.get("template") != ospec.get("template"):
            errs.append(FieldError("spec.template", "Invalid value", "field is immutable", GoLiteral("core.PodTemplateSpec{...}")))
        if rt.key in (R.SECRETS.key, R.CONFIGMAPS.key) and old.get("immutable"):
            for f in ("data", "binaryData", "stringData"):
                if obj.get(f) != old.get(f):
                    errs.append(FieldError(f, "Forbidden", "field is immutable when `immutable` is set"))
        if rt.namespaced and obj["metadata"].get("namespace") != old["metadata"].get("namespace"):
            errs.append(FieldError("metadata.namespace", "Invalid value", "field is immutable", obj["metadata"].get("namespace")))
        return errs

    # ------------------------------------------------------------------ entry point
    def __call__(self, rt: ResourceType, obj: dict, old: dict | None, subresource: str | None) -> dict:
        obj = strip_nulls(copy.deepcopy(obj))
        md = obj.setdefault("metadata", {})
        name = md.get("name") or ""
        errs = name_errors(rt, md) if old is None else []
        if errs:
            raise invalid(rt, name, errs)
        # apiVersion/kind are set from the endpoint; schema-check the rest
        body = {k: v for k, v in obj.items()}
        errs = [e for e in schemas.validate(rt, body) if not e.path.startswith(("metadata.managedFields", "status")) or subresource == "status"]
        if errs:
            raise invalid(rt, name, errs)
        self._default(rt, obj, old)
        from .ingress import admission as ingress_admission  # Ingress/IngressClass/Gateway API rules

        ingress_admission.default(self.store, rt, obj, old, subresource)
        errs = self._semantic(rt, obj, old) + ingress_admission.validate(rt, obj, old, subresource)
        if old is not None:
            errs += self._immutable(rt, obj, old)
        if errs:
            raise invalid(rt, name, errs)
        return obj


def _go_map(d: dict) -> str:
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(d.items())) + "}"


def _go_selector(sel: dict | None) -> str:
    sel = sel or {}
    ml = sel.get("matchLabels") or {}
    return "v1.LabelSelector{MatchLabels:" + _go_map(ml) + ", MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
