# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the patch role's work as one typed call (the ``asgard.mlflow.mlflow_patch`` module).

Read the Deployment and the ConfigMaps its MLflow container reads env from, compare with the targets
(``_compliance``), refuse a Helm-managed Deployment unless allowed, apply ONE guarded JSON patch, wait for the
rollout with kubernetes.core's Deployment waiter, and when the new pods do not become ready, collect the evidence
(waiting reasons, events, last log lines of the MLflow container) and roll back. Everything returned or raised is
redacted (``_redact``): the Deployment itself is never returned.
"""

from __future__ import annotations

import json

from ansible_collections.asgard.mlflow.plugins.module_utils._compliance import compliance
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import pod_spec_of, server_container
from ansible_collections.asgard.mlflow.plugins.module_utils._settings import configmap_names

JSON_PATCH = "application/json-patch+json"
_NULLS = (None, "", "null", "none", "None", "NULL", "~")
# targets: name -> (kind of value, extra check); kinds "int" (>= 1), "port", "bool", "str", "mode", "list", "dict"
TARGET_KINDS = {
    "gunicorn_timeout": "int", "gunicorn_timeout_mode": ("exact", "at_least"), "gunicorn_keep_alive": "int",
    "gunicorn_worker_class": "str", "uvicorn_timeout_keep_alive": "int", "workers": "int",
    "workers_mode": ("exact", "at_least"), "static_prefix": "str", "allowed_hosts": "list",
    "allowed_hosts_mode": ("include", "exact"), "port": "port", "host": "str", "enable_service_links": "bool",
    "probes": "bool", "startup_probe": "dict", "readiness_probe": "dict", "liveness_probe": "dict",
    "annotation": "str", "shell_exec": "bool",
}
_TRUE = ("true", "yes", "on", "1", "y", "t")
_FALSE = ("false", "no", "off", "0", "n", "f")


class PatchFailed(Exception):
    """The patch cannot be made or did not work; ``result`` holds what is known (redacted)."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


def typed_targets(targets: dict, prefix: str = "") -> dict:
    """Targets as given on a command line (strings) -> typed; ``null``/``""`` switch a target off.

    An error names ``<prefix><target>`` and the expected form, e.g. ``patch_workers='four': expected an integer``.
    """
    out = {}
    for key, value in (targets or {}).items():
        kind = TARGET_KINDS.get(key)
        name = f"{prefix}{key}"
        if kind is None:
            raise PatchFailed(f"{name}: unknown target; known: {', '.join(sorted(TARGET_KINDS))}")
        if value is None or (isinstance(value, str) and value in _NULLS and not (key == "static_prefix" and value == "")):
            out[key] = None  # switched off ("" is a value only for static_prefix: no prefix)
            continue
        if kind in ("int", "port"):
            if isinstance(value, bool) or not str(value).strip().isdigit():
                raise PatchFailed(f"{name}={json.dumps(value)} is invalid; expected an integer "
                                  + ("1-65535" if kind == "port" else ">= 1") + ", or null to leave it alone")
            value = int(str(value).strip())
            if value < 1 or (kind == "port" and value > 65535):
                raise PatchFailed(f"{name}={value} is invalid; expected an integer "
                                  + ("1-65535" if kind == "port" else ">= 1") + ", or null to leave it alone")
        elif kind == "bool":
            if not isinstance(value, bool):
                low = str(value).strip().lower()
                if low not in _TRUE + _FALSE:
                    raise PatchFailed(f"{name}={json.dumps(value)} is invalid; expected true or false, or null")
                value = low in _TRUE
        elif isinstance(kind, tuple):
            if value not in kind:
                raise PatchFailed(f"{name}={json.dumps(value)} is invalid; expected one of {', '.join(kind)}")
        elif kind == "list" and isinstance(value, str):
            value = [h.strip() for h in value.split(",") if h.strip()]
        elif kind == "dict" and isinstance(value, dict):
            value = {k: int(v) if str(v).isdigit() else v for k, v in value.items()}
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------- reading
def _deployment_path(ns, name):
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"


def read_configmaps(api, ns, container) -> tuple[list, list]:
    """The ConfigMaps the container reads env from (``configMapKeyRef``, ``envFrom``), and warnings."""
    names = configmap_names([container])
    found, warns = [], []
    for name in names:
        try:
            found.append(api.get(f"/api/v1/namespaces/{ns}/configmaps/{name}"))
        except KubeError as exc:
            if exc.status != 404:
                raise
            warns.append(f"ConfigMap {ns}/{name} referenced by the container does not exist")
    return found, warns


def helm_release(dep) -> str | None:
    """The Helm release that manages the Deployment ('unknown' when only the label says Helm), else None."""
    meta = dep.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get("app.kubernetes.io/managed-by") == "Helm" or any(k.startswith("meta.helm.sh/") for k in annotations):
        return annotations.get("meta.helm.sh/release-name") or "unknown"
    return None


# ---------------------------------------------------------------------------------------------- diff
def _yaml_text(obj) -> str:
    try:
        import yaml

        class _Dumper(yaml.SafeDumper):
            pass

        def _str(dumper, data):
            style = "|" if "\n" in data else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

        _Dumper.add_representer(str, _str)
        return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    except ImportError:  # pragma: no cover - PyYAML ships with Ansible
        return json.dumps(obj, indent=2) + "\n"


def diff_of(plan, dep, ns, name) -> dict:
    """Ansible's ``diff``: the MLflow container (command, args, env, probes; credentials masked) and the pod fields
    the patch sets, before and after, as YAML text."""
    spec = pod_spec_of(dep)
    links = spec.get("enableServiceLinks")
    after_links = links
    for op in plan["patch"]:
        if op["path"] == "/spec/template/spec/enableServiceLinks":
            after_links = op["value"]
    head = f"Deployment {ns}/{name}, container {plan['container']}"
    before = {"container": plan["before"], "enableServiceLinks": links}
    after = {"container": plan["after"], "enableServiceLinks": after_links, "annotations": plan["annotation"]}
    return {"before_header": head, "after_header": head, "before": _yaml_text(before), "after": _yaml_text(after)}


# ---------------------------------------------------------------------------------------------- rollout evidence
def _selector(dep) -> str:
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items())


def evidence(api, dep, ns, name, container, log_lines) -> dict:
    """Why the new pods are not ready: waiting reasons, the last events, the newest pod's last log lines (redacted)."""
    selector = _selector(dep)
    out = {"waiting": [], "events": [], "log": []}
    try:
        pods = api.list_pods(ns, selector) if selector else []
    except KubeError:
        pods = []
    for p in pods:
        for cs in (p.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                out["waiting"].append(waiting["reason"])
    names = {(p.get("metadata") or {}).get("name") for p in pods} | {name}
    try:
        events = api.get(f"/api/v1/namespaces/{ns}/events").get("items") or []
    except KubeError:
        events = []
    events = [e for e in events if (e.get("involvedObject") or {}).get("name") in names]
    events.sort(key=lambda e: e.get("lastTimestamp") or (e.get("metadata") or {}).get("creationTimestamp") or "")
    out["events"] = [redact(f"{(e.get('involvedObject') or {}).get('name')} {e.get('reason', '')} "
                            f"{e.get('message', '')}".strip(), limit=300) for e in events[-10:]]
    if pods and container:
        newest = max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        pod = (newest.get("metadata") or {}).get("name")
        status = next((cs for cs in (newest.get("status") or {}).get("containerStatuses") or []
                       if cs.get("name") == container), {})
        lines = []
        # a container that crashed and restarted logged its error in the previous instance
        for previous in ([True] if status.get("restartCount") else []) + [False]:
            query = [("container", container), ("tailLines", str(log_lines))] + ([("previous", "true")] if previous else [])
            try:
                text = api.get_text(f"/api/v1/namespaces/{ns}/pods/{pod}/log", query, accept="text/plain")
            except KubeError:
                continue
            lines += [redact(line, limit=400) for line in text.splitlines() if line.strip()]
        out["log"] = lines[-log_lines:]
    return out


# ---------------------------------------------------------------------------------------------- rollback
def previous_template(api, dep, ns):
    """The pod template of the previous ReplicaSet revision (what ``kubectl rollout undo`` restores), or None."""
    meta = dep.get("metadata") or {}
    current = int((meta.get("annotations") or {}).get("deployment.kubernetes.io/revision") or 0)
    selector = _selector(dep)
    items = api.get(f"/apis/apps/v1/namespaces/{ns}/replicasets", [("labelSelector", selector)]).get("items") or []
    best = None
    for rs in items:
        owners = (rs.get("metadata") or {}).get("ownerReferences") or []
        if meta.get("uid") and not any(o.get("uid") == meta["uid"] for o in owners):
            continue
        rev = int(((rs.get("metadata") or {}).get("annotations") or {}).get("deployment.kubernetes.io/revision") or 0)
        if rev < current and (best is None or rev > best[0]):
            best = (rev, rs)
    if best is None:
        return None
    template = json.loads(json.dumps(best[1]["spec"]["template"]))
    (template.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return template


def rollback(api, ns, name, plan, method) -> str:
    """Undo the patch; returns what was done, for the message."""
    path = _deployment_path(ns, name)
    if method == "k8s_rollback":
        template = previous_template(api, api.get(path), ns)
        if template is None:
            return "NOT rolled back: no previous ReplicaSet revision was found."
        api.send("PATCH", path, [{"op": "replace", "path": "/spec/template", "value": template}], JSON_PATCH)
        return "Rolled back to the previous ReplicaSet revision: the Deployment runs its old settings again."
    api.send("PATCH", path, plan["rollback_patch"], JSON_PATCH)
    return "Rolled back to the previous revision: the Deployment runs its old settings again."


# ---------------------------------------------------------------------------------------------- the run
def run(api, params: dict, check_mode: bool = False, diff: bool = False, waiter=None) -> dict:
    """Read, compare, patch, wait, roll back. Returns the module result; raises PatchFailed (redacted)."""
    ns, name = params["namespace"], params["name"]
    prefix = params.get("option_prefix") or ""
    targets = typed_targets(params.get("targets") or {}, prefix)
    if params.get("container"):
        targets["container"] = params["container"]
    if params.get("mlflow_version"):
        targets["mlflow_version"] = params["mlflow_version"]
    where = f"Deployment {ns}/{name}"
    try:
        dep = api.get(_deployment_path(ns, name))
    except KubeError as exc:
        if exc.status == 404:
            raise PatchFailed(
                f"{where} not found; nothing was changed. Set {prefix}namespace and {prefix}name to the namespace and "
                "name of the Deployment that runs MLflow (kubectl get deploy -A | grep -i mlflow).") from exc
        raise PatchFailed(f"reading {where} failed: {redact(str(exc))}. Nothing was changed.") from exc
    try:
        configmaps, warns = ([], [])
        if params.get("read_configmaps", True):
            _i, c, _how = server_container(dep, targets.get("container"))
            configmaps, warns = read_configmaps(api, ns, c)
        plan = compliance(dep, targets, configmaps)
    except (MlflowSettingsError, KubeError) as exc:
        raise PatchFailed(f"{redact(str(exc))}. {where}: nothing was changed.") from exc
    release = helm_release(dep)
    warnings = warns + list(plan["warnings"])
    result = {
        "changed": not plan["compliant"], "compliant": plan["compliant"], "changes": plan["changes"],
        "container": plan["container"], "container_index": plan["container_index"], "server": plan["server"],
        "mlflow_version": plan["mlflow_version"], "version_source": plan["version_source"],
        "health_path": plan["health_path"], "port": plan["port"], "helm_release": release,
        "settings_before": plan["before_settings"], "settings_after": plan["after_settings"],
        "patched": False, "rolled_back": False, "warnings": warnings,
    }
    left = list(plan["after_settings"].get("contradictions") or [])
    if left and not plan["compliant"]:
        result["warnings"].append("after the patch these sources still contradict the effective settings: " + "; ".join(
            f"{c['where']} sets {c['setting']}={c['value']} (runs with {c['effective']})" for c in left))
    if plan["compliant"]:
        return result
    if diff:
        result["diff"] = diff_of(plan, dep, ns, name)
    if release and not params.get("allow_helm_managed"):
        raise PatchFailed(
            f"{where} is managed by Helm (release {release}); nothing was changed. The next `helm upgrade` would "
            f"revert a patch: set these in the chart values instead: {'; '.join(plan['changes'])}. To patch anyway, "
            f"set {prefix}allow_helm_managed=true.", result)
    if release:
        result["warnings"].append(
            f"{where} is managed by Helm; the next `helm upgrade` reverts this patch. Set these in the chart values: "
            + "; ".join(plan["changes"]))
    if check_mode:
        return result
    try:
        patched = api.send("PATCH", _deployment_path(ns, name), plan["patch"], JSON_PATCH)
    except KubeError as exc:
        raise PatchFailed(f"Patching {where} failed: {redact(str(exc))}. Nothing was changed.", result) from exc
    result["patched"] = True
    result["generation"] = (patched.get("metadata") or {}).get("generation")
    if not params.get("wait", True) or waiter is None:
        return result
    timeout = int(params.get("wait_timeout") or 300)
    if waiter(ns, name, timeout, int(params.get("wait_sleep") or 2)):
        return result
    ev = evidence(api, dep, ns, name, plan["container"], int(params.get("log_lines") or 40))
    if params.get("rollback", True):
        try:
            done = rollback(api, ns, name, plan, params.get("rollback_method") or "patch")
            result["rolled_back"] = done.startswith("Rolled back")
        except KubeError as exc:
            done = f"NOT rolled back: the rollback failed ({redact(str(exc))})."
    else:
        done = f"NOT rolled back ({prefix}rollback is false): the Deployment keeps the patch."
    result["evidence"] = ev
    raise PatchFailed(
        f"the new pods of {where} did not become ready within {timeout}s. Changes tried: {'; '.join(plan['changes'])}. "
        f"Waiting containers: {', '.join(ev['waiting']) or 'none'}. "
        f"Events: {' | '.join(ev['events']) or 'none'}. "
        f"Last log lines: {' / '.join(ev['log']) or 'none'}. {done}", result)


def kube_waiter(api):
    """A waiter(ns, name, timeout, sleep) -> ready, with kubernetes.core's Deployment waiter (``deployment_ready``:
    the new generation observed, every replica updated and available)."""
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.waiter import get_waiter

    def wait(ns, name, timeout, sleep):
        k8s = api.k8s
        waiter = get_waiter(k8s, k8s.resource("Deployment", "apps/v1"))
        ok, _obj, _duration = waiter.wait(timeout=timeout, sleep=sleep, name=name, namespace=ns)
        return bool(ok)

    return wait
