# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: target options (Service / pod / label selector) -> one Ready pod and a container port.

Same rules as ``kubectl port-forward svc/NAME PORT``: the Service port PORT (default: the first one)
maps to its ``targetPort`` (a number, a container port name looked up in the chosen pod, or unset =
the same number); the pod is a Ready, not-terminating pod matching the Service selector (newest first,
so a rollout moves new connections to new pods). Also copied next to the background forwarder.

A caller that has just read the Service and pods itself can hand over the result (``Target.hint``, the
module option ``resolved``): the first connection then goes straight to that pod without any API read,
and only if the tunnel to it fails is the target resolved from the Service / pod / selector as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    KubeError,
    credentials_hint,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import mlflow_container

DEFAULT_POD_PORT = 5000
_SELECTOR_TERM = re.compile(
    r"^\s*!?[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?\s*"
    r"((==?|!=)\s*[-A-Za-z0-9_.]*|\s+(in|notin)\s+\([^)]*\))?\s*$"
)


class TargetError(Exception):
    """The target cannot be resolved. ``code`` is a stable finding code; ``bad_input`` marks user errors."""

    def __init__(self, code: str, message: str, evidence: dict | None = None, bad_input: bool = False,
                 transient: bool = False):
        super().__init__(message)
        self.code = code
        self.evidence = evidence or {}
        self.bad_input = bad_input
        self.transient = transient


@dataclass
class Target:
    namespace: str = "asgard"
    service: str | None = "mlflow-service"
    pod: str | None = None
    label_selectors: list[str] = field(default_factory=list)
    remote_port: int | None = None
    # an already-resolved pod (option ``resolved``): tried first, without reading the Service or pods
    hint: Resolved | None = None

    @classmethod
    def from_params(cls, params: dict) -> Target:
        pod = params.get("pod")
        sel = list(params.get("label_selectors") or [])
        ns = params.get("namespace") or "asgard"
        return cls(namespace=ns,
                   service=None if (pod or sel) else (params.get("service") or "mlflow-service"),
                   pod=pod, label_selectors=sel, remote_port=params.get("remote_port"),
                   hint=Resolved.from_given(params.get("resolved"), ns))

    @property
    def kind(self) -> str:
        return "pod" if self.pod else ("selector" if self.label_selectors else "service")

    def as_dict(self) -> dict:
        return {"namespace": self.namespace, "service": self.service, "pod": self.pod,
                "label_selectors": list(self.label_selectors), "remote_port": self.remote_port}

    def describe(self) -> str:
        port = f":{self.remote_port}" if self.remote_port else ""
        if self.pod:
            return f"pod/{self.pod}{port} in {self.namespace}"
        if self.label_selectors:
            return f"pods {','.join(self.label_selectors)}{port} in {self.namespace}"
        return f"svc/{self.service}{port} in {self.namespace}"


def validate_target_params(params: dict) -> list[str]:
    """Errors in the target options, each naming the field and the expected form."""
    errors = []
    ns = params.get("namespace")
    if ns is not None and (not DNS1123_LABEL.match(ns) or len(ns) > 63):
        errors.append(f"namespace: {ns!r} is not a valid namespace name (DNS-1123 label: lower-case "
                      "letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)")
    svc = params.get("service")
    if svc is not None and (not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", svc) or len(svc) > 63):
        errors.append(f"service: {svc!r} is not a valid Service name (DNS-1035 label: lower-case letters, "
                      "digits and '-', starting with a letter, at most 63 characters)")
    pod = params.get("pod")
    if pod is not None and (not DNS1123_SUBDOMAIN.match(pod) or len(pod) > 253):
        errors.append(f"pod: {pod!r} is not a valid pod name (DNS-1123 subdomain, at most 253 characters)")
    for term in params.get("label_selectors") or []:
        for part in _split_selector(term):
            if not _SELECTOR_TERM.match(part):
                errors.append(f"label_selectors: {term!r} is not a label selector (expected e.g. 'app=mlflow', "
                              "'tier!=db', 'env in (a,b)' or 'key')")
                break
    port = params.get("remote_port")
    if port is not None and not 1 <= int(port) <= 65535:
        errors.append(f"remote_port: {port} is out of range (expected an integer from 1 to 65535)")
    if pod and params.get("label_selectors"):
        errors.append("pod and label_selectors are mutually exclusive: give one target")
    return errors + validate_resolved_param(params.get("resolved"))


def validate_resolved_param(given) -> list[str]:
    """Errors in the ``resolved`` option (an already-resolved pod), each naming the field and the expected form."""
    if given is None:
        return []
    if not isinstance(given, dict):
        return [f"resolved: expected a dict with pod and port (for example a previous result's resolved), "
                f"got {type(given).__name__}"]
    errors = []
    pod = given.get("pod")
    if not isinstance(pod, str) or not DNS1123_SUBDOMAIN.match(pod) or len(pod) > 253:
        errors.append(f"resolved.pod: {pod!r} is not a valid pod name (DNS-1123 subdomain, at most 253 characters)")
    for key, required in (("port", True), ("service_port", False)):
        v = given.get(key)
        if v is None and not required:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
            errors.append(f"resolved.{key}: {v!r} is not a port (expected an integer from 1 to 65535)")
    sp = given.get("static_prefix")
    if sp is not None and sp != "" and (not isinstance(sp, str) or not re.match(r"^/[^\s]*$", sp)):
        errors.append(f"resolved.static_prefix: {sp!r} is not valid (expected '' for none, or a path starting "
                      "with '/', such as /static)")
    return errors


def _split_selector(term: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in term:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


@dataclass
class Resolved:
    pod: str
    uid: str
    port: int
    namespace: str
    service_port: int | None = None
    pod_ip: str | None = None
    # THE MLflow container of the pod (``_server_command.mlflow_container``): its name, command + args and literal
    # env; ``container_error`` ({code, message}) when the rule finds none or several
    container: str | None = None
    container_error: dict | None = None
    container_args: list[str] = field(default_factory=list)
    container_env: dict[str, str] = field(default_factory=dict)
    # False when the caller gave only the pod's name and port (``resolved``): the container's command,
    # args and env are then unknown (read from the pod only if the static prefix is needed)
    spec_known: bool = True
    # the --static-prefix of the pod spec as the caller gave it ('' none, None unknown); see spec_known
    given_prefix: str | None = None
    source: str = "api"  # "api" (read now) or "given" (the caller's ``resolved``)

    @classmethod
    def from_given(cls, given: dict | None, namespace: str) -> Resolved | None:
        """The ``resolved`` option (validated by validate_resolved_param) as a Resolved, None when not given."""
        if not given:
            return None
        sp = given.get("static_prefix")
        return cls(pod=given["pod"], uid=given.get("uid") or "", port=int(given["port"]), namespace=namespace,
                   service_port=given.get("service_port"), pod_ip=given.get("pod_ip"), spec_known=False,
                   given_prefix=None if sp is None else sp.rstrip("/"), source="given")

    def as_dict(self, static_prefix: str | None = None) -> dict:
        """The ``resolved`` return value; accepted back as the ``resolved`` option."""
        return {"pod": self.pod, "uid": self.uid, "port": self.port, "service_port": self.service_port,
                "pod_ip": self.pod_ip, "static_prefix": static_prefix}


def pod_ready(pod: dict) -> bool:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _pod_summary(pod: dict) -> dict:
    status = pod.get("status") or {}
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {"name": (pod.get("metadata") or {}).get("name"), "phase": status.get("phase"),
            "ready": ready[0] if ready else None,
            "terminating": bool((pod.get("metadata") or {}).get("deletionTimestamp"))}


def _container_port(pod: dict, name: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name:
                return int(p["containerPort"])
    return None


def _resolved(pod: dict, port: int, namespace: str, service_port: int | None) -> Resolved:
    try:
        _idx, c = mlflow_container(pod)
        container_error = None
    except ContainerError as exc:  # the spec's settings stay unknown; the HTTP checks still run
        c, container_error = {}, {"code": exc.code, "message": str(exc)}
    env = {e["name"]: e.get("value", "") for e in c.get("env") or [] if "name" in e and "value" in e}
    return Resolved(pod=pod["metadata"]["name"], uid=pod["metadata"].get("uid", ""), port=port, namespace=namespace,
                    service_port=service_port, pod_ip=(pod.get("status") or {}).get("podIP"),
                    container=c.get("name"), container_error=container_error,
                    container_args=[str(a) for a in (c.get("command") or []) + (c.get("args") or [])],
                    container_env=env)


def _newest_ready(pods: list[dict]) -> dict | None:
    ready = [p for p in pods if pod_ready(p)]
    ready.sort(key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "", p["metadata"]["name"]),
               reverse=True)
    return ready[0] if ready else None


def _get(api, what: str, fn, *args):
    try:
        return fn(*args)
    except KubeError as exc:
        if exc.status == 404:
            return None
        if exc.status in (401, 403):
            raise TargetError("KUBE_API_ERROR", f"reading {what}: {credentials_hint(exc.status)} ({exc})",
                              {"status": exc.status}) from exc
        raise TargetError("KUBE_API_ERROR", f"reading {what} failed: {exc}", {"status": exc.status},
                          transient=exc.transient) from exc


def _namespace_missing(api, namespace: str) -> bool:
    try:
        api.get_namespace(namespace)
    except KubeError as exc:
        return exc.status == 404
    return False


def resolve(api, target: Target) -> Resolved:
    """Pick the pod and container port to tunnel to, right now."""
    ns = target.namespace
    if target.pod:
        pod = _get(api, f"pod {ns}/{target.pod}", api.get_pod, ns, target.pod)
        if pod is None:
            if _namespace_missing(api, ns):
                raise TargetError("NAMESPACE_NOT_FOUND", f"namespace {ns!r} does not exist", {"namespace": ns},
                                  bad_input=True)
            raise TargetError("POD_NOT_FOUND", f"pod {target.pod!r} not found in namespace {ns!r}",
                              {"namespace": ns, "pod": target.pod}, transient=True)
        if not pod_ready(pod):
            raise TargetError("NO_READY_POD", f"pod {target.pod!r} in {ns!r} is not Ready",
                              {"pods": [_pod_summary(pod)]}, transient=True)
        return _resolved(pod, target.remote_port or DEFAULT_POD_PORT, ns, None)

    if target.label_selectors:
        selector = ",".join(target.label_selectors)
        pods = _get(api, f"pods in {ns}", api.list_pods, ns, selector)
        if pods is None or (not pods and _namespace_missing(api, ns)):
            raise TargetError("NAMESPACE_NOT_FOUND", f"namespace {ns!r} does not exist", {"namespace": ns},
                              bad_input=True)
        pod = _newest_ready(pods)
        if pod is None:
            raise TargetError("NO_READY_POD", f"no Ready pod matches {selector!r} in namespace {ns!r}",
                              {"selector": selector, "pods": [_pod_summary(p) for p in pods]}, transient=True)
        return _resolved(pod, target.remote_port or DEFAULT_POD_PORT, ns, None)

    svc = _get(api, f"service {ns}/{target.service}", api.get_service, ns, target.service)
    if svc is None:
        if _namespace_missing(api, ns):
            raise TargetError("NAMESPACE_NOT_FOUND", f"namespace {ns!r} does not exist", {"namespace": ns},
                              bad_input=True)
        raise TargetError("SERVICE_NOT_FOUND", f"service {target.service!r} not found in namespace {ns!r}",
                          {"namespace": ns, "service": target.service}, bad_input=True)
    spec = svc.get("spec") or {}
    selector = spec.get("selector") or {}
    if not selector:
        raise TargetError("SERVICE_NO_SELECTOR", f"service {target.service!r} has no selector: "
                          "it cannot be resolved to a pod (give pod or label_selectors)",
                          {"service": target.service}, bad_input=True)
    ports = spec.get("ports") or []
    if target.remote_port:
        sport = next((p for p in ports if int(p.get("port", 0)) == target.remote_port), None)
        if sport is None:
            raise TargetError("SERVICE_PORT_MISSING", f"service {target.service!r} has no port {target.remote_port} "
                              f"(it has {[p.get('port') for p in ports]})",
                              {"service": target.service, "ports": [p.get("port") for p in ports]}, bad_input=True)
    elif ports:
        sport = ports[0]
    else:
        raise TargetError("SERVICE_PORT_MISSING", f"service {target.service!r} has no ports", {}, bad_input=True)
    label_sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = _get(api, f"pods in {ns}", api.list_pods, ns, label_sel) or []
    pod = _newest_ready(pods)
    if pod is None:
        raise TargetError("NO_READY_POD", f"no Ready pod behind service {target.service!r} ({label_sel}) in {ns!r}",
                          {"service": target.service, "selector": label_sel,
                           "pods": [_pod_summary(p) for p in pods]}, transient=True)
    tport = sport.get("targetPort", sport.get("port"))
    if isinstance(tport, str) and not tport.isdigit():
        port = _container_port(pod, tport)
        if port is None:
            raise TargetError("TARGET_PORT_MISMATCH", f"pod {pod['metadata']['name']!r} has no container port named "
                              f"{tport!r} (targetPort of service {target.service!r})",
                              {"pod": pod["metadata"]["name"], "target_port": tport})
    else:
        port = int(tport)
    return _resolved(pod, port, ns, int(sport.get("port")))


# mlflow_probe's ``resolved`` option (documented in the module; the return value ``resolved`` has the same keys)
RESOLVED_ARG_SPEC = {
    "resolved": {"type": "dict", "options": {
        "pod": {"type": "str", "required": True},
        "port": {"type": "int", "required": True},
        "service_port": {"type": "int"},
        "uid": {"type": "str"},
        "pod_ip": {"type": "str"},
        "static_prefix": {"type": "str"},
    }},
}

TARGET_ARG_SPEC = {
    "namespace": {"type": "str", "default": "asgard"},
    "service": {"type": "str", "default": "mlflow-service"},
    "pod": {"type": "str"},
    "label_selectors": {"type": "list", "elements": "str", "default": []},
    "remote_port": {"type": "int"},
}
