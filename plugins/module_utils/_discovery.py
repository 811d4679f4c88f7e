# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: find the MLflow tracking servers of one cluster, as plain facts (the inventory plugin's discovery).

An MLflow is a Deployment whose pod template has THE MLflow container (``_server_command``'s one container
rule: a container that runs ``mlflow server`` as parsed from its command/args or ``sh -c`` script), whatever its
name and labels. A sidecar or look-alike that merely mentions mlflow (``tail -F /mlflow/server.log``) is not one.
A Deployment where several containers run ``mlflow server``, or whose script cannot be read, is still an
instance (it runs MLflow), with ``settings_error`` saying why its settings are unknown.

:func:`discover` reads, through a ``KubeAPI``-like object (``get(path, query)``; the boundary unit tests fake):
  - Deployments: per namespace when ``namespaces`` lists plain names (works with namespaced RBAC), else one
    cluster-wide list filtered by the patterns; paged (``limit``/``continue``); ``label_selector`` server-side;
  - Services, only in the namespaces where an MLflow was found, to find the one that selects its pods and
    forwards to its port (``verify_service`` / ``verify_service_port`` of the verify role).
It returns ``{"instances": [facts, ...], "errors": [{"scope", "message", "status"}], "counts": {...}}``; an API
error is recorded for its scope (the cluster, or a namespace) and never raised.

Facts of an instance (every key always present): ``cluster``, ``namespace``, ``deployment``, ``labels`` (the
Deployment's), ``pod_labels`` (its pod template's), ``container``, ``image``, ``mlflow_version`` (from the image
tag; None when unknown), ``server_kind`` (gunicorn / uvicorn / waitress), ``port``, ``static_prefix``, ``workers``,
``replicas``, ``ready_replicas``, ``available_replicas``, ``service``, ``service_port``, ``services`` (every
Service selecting its pods), ``settings_error``, ``warnings``.

No value of the cluster is ever a template: strings holding Jinja delimiters are dropped with a warning (a
Deployment's author must not be able to run code on the Ansible controller through the inventory).
No credential is read: env values, Secrets and annotations are never part of the facts.
"""

from __future__ import annotations

import fnmatch
import re

from ansible_collections.asgard.mlflow.plugins.module_utils._errors import ContainerError, MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError, credentials_hint
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import server_settings

LIST_LIMIT = 200
_JINJA = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+/?$")


def _api_error(exc: KubeError) -> dict:
    status = getattr(exc, "status", None)
    hint = credentials_hint(status)
    msg = redact(str(exc), limit=500)
    return {"message": f"{msg}; {hint}" if hint else msg, "status": status}


def is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def list_all(api, path: str, query=None) -> list[dict]:
    """Every item of a list, page by page (``limit``/``continue``)."""
    items: list[dict] = []
    cont = None
    while True:
        q = list(query or []) + [("limit", str(LIST_LIMIT))]
        if cont:
            q.append(("continue", cont))
        page = api.get(path, q)
        items.extend(page.get("items") or [])
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            return items


def safe_text(value, warnings: list, what: str):
    """``value`` as a str, or None (with a warning) when it holds template delimiters."""
    if value is None:
        return None
    text = str(value)
    if _JINJA.search(text):
        warnings.append(f"{what} holds template delimiters and was dropped")
        return None
    return text


def safe_labels(labels, warnings: list, what: str) -> dict:
    out = {}
    for k, v in (labels or {}).items():
        ks, vs = safe_text(k, warnings, f"{what} key"), safe_text(v, warnings, f"{what} {k!r}")
        if ks is not None and vs is not None:
            out[ks] = vs
    return out


def _container_ports(container: dict) -> dict:
    return {p.get("name"): p.get("containerPort") for p in container.get("ports") or [] if p.get("name")}


def service_port_for(service: dict, container: dict, port: int) -> int | None:
    """The Service port whose targetPort reaches ``port`` of the MLflow container (number or port name)."""
    named = _container_ports(container)
    for sp in (service.get("spec") or {}).get("ports") or []:
        target = sp.get("targetPort", sp.get("port"))
        if target == port or (isinstance(target, str) and named.get(target) == port):
            return sp.get("port")
    return None


def selects(service: dict, pod_labels: dict) -> bool:
    sel = (service.get("spec") or {}).get("selector") or {}
    return bool(sel) and all(pod_labels.get(k) == v for k, v in sel.items())


def pick_service(services: list[dict], pod_labels: dict, container: dict | None, port: int | None):
    """(service name, service port, names of every Service selecting the pods). Preference: a Service that forwards
    to the MLflow port, then the name; None when no Service selects the pods."""
    matching = sorted((s for s in services if selects(s, pod_labels)), key=lambda s: s["metadata"]["name"])
    names = [s["metadata"]["name"] for s in matching]
    if not matching:
        return None, None, names
    if container is not None and port is not None:
        for s in matching:
            sp = service_port_for(s, container, port)
            if sp is not None:
                return s["metadata"]["name"], sp, names
    first = matching[0]
    ports = (first.get("spec") or {}).get("ports") or []
    return first["metadata"]["name"], (ports[0].get("port") if ports else None), names


def instance_facts(cluster: str, dep: dict) -> dict | None:
    """Facts of one Deployment, or None when no container runs ``mlflow server`` (not an MLflow)."""
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    template = spec.get("template") or {}
    warnings: list[str] = []
    facts = {
        "cluster": cluster, "namespace": meta.get("namespace"), "deployment": meta.get("name"),
        "labels": safe_labels(meta.get("labels"), warnings, "label"),
        "pod_labels": safe_labels((template.get("metadata") or {}).get("labels"), warnings, "pod label"),
        "container": None, "image": None, "mlflow_version": None, "server_kind": None, "port": None,
        "static_prefix": None, "workers": None,
        "replicas": spec.get("replicas", 1), "ready_replicas": status.get("readyReplicas") or 0,
        "available_replicas": status.get("availableReplicas") or 0,
        "service": None, "service_port": None, "services": [], "settings_error": None, "warnings": warnings,
    }
    try:
        s = server_settings(dep)
    except ContainerError as exc:
        if exc.code == "NO_MLFLOW_CONTAINER":
            return None
        facts["settings_error"] = f"{exc.code}: {safe_text(exc, warnings, 'settings error') or 'see the Deployment'}"
        return facts
    except MlflowSettingsError as exc:
        facts["settings_error"] = f"UNREADABLE_COMMAND: {safe_text(exc, warnings, 'settings error') or 'see the Deployment'}"
        return facts
    facts.update({
        "container": safe_text(s["container"], warnings, "container name"),
        "image": safe_text(s["image"], warnings, "image"),
        "mlflow_version": s["mlflow_version"], "server_kind": s["server"], "port": s["port"],
        "workers": s["workers"],
    })
    prefix = s.get("static_prefix")
    if prefix is not None and not (_PREFIX_RE.match(str(prefix)) and safe_text(prefix, warnings, "static prefix")):
        warnings.append("the --static-prefix is not a plain URL path; left out of the facts")
        prefix = None
    facts["static_prefix"] = prefix
    return facts


def _namespace_ok(ns: str, include: list[str], exclude: list[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(ns, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(ns, p) for p in exclude)


def discover(api, cluster: str, namespaces=None, exclude_namespaces=None, label_selectors=None) -> dict:
    """The MLflow instances of one cluster (see the module docstring)."""
    include = list(namespaces or [])
    exclude = list(exclude_namespaces or [])
    query = [("labelSelector", ",".join(label_selectors))] if label_selectors else []
    errors: list[dict] = []
    deployments: list[dict] = []
    if include and not any(is_pattern(n) for n in include):
        for ns in include:
            if not _namespace_ok(ns, [], exclude):
                continue
            try:
                deployments += list_all(api, f"/apis/apps/v1/namespaces/{ns}/deployments", query)
            except KubeError as exc:
                errors.append({"scope": f"namespace {ns}", **_api_error(exc)})
    else:
        try:
            deployments = [d for d in list_all(api, "/apis/apps/v1/deployments", query)
                           if _namespace_ok((d.get("metadata") or {}).get("namespace", ""), include, exclude)]
        except KubeError as exc:
            errors.append({"scope": "cluster", **_api_error(exc)})
    instances = []
    not_mlflow = 0
    for dep in deployments:
        facts = instance_facts(cluster, dep)
        if facts is None:
            not_mlflow += 1
        else:
            instances.append((facts, dep))
    services: dict[str, list[dict]] = {}
    for ns in sorted({f["namespace"] for f, _d in instances}):
        try:
            services[ns] = list_all(api, f"/api/v1/namespaces/{ns}/services")
        except KubeError as exc:
            errors.append({"scope": f"namespace {ns} (services)", **_api_error(exc)})
            services[ns] = []
    out = []
    for facts, dep in instances:
        container = None
        pod_spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in pod_spec.get("containers") or []:
            if c.get("name") == facts["container"]:
                container = c
        pod_labels = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        name, port, names = pick_service(services[facts["namespace"]], pod_labels, container, facts["port"])
        facts["service"], facts["service_port"], facts["services"] = name, port, names
        if name is None:
            facts["warnings"].append("no Service selects its pods")
        elif len(names) > 1:
            facts["warnings"].append(f"several Services select its pods ({', '.join(names)}); {name} is used")
        out.append(facts)
    out.sort(key=lambda f: (f["namespace"], f["deployment"]))
    return {"instances": out, "errors": errors,
            "counts": {"deployments": len(deployments), "mlflow": len(out), "not_mlflow": not_mlflow}}
