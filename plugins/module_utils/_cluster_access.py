# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: can the caller reach the Kubernetes API with these credentials, and may it do what it is about to do?

One preflight for the deploy, patch and verify roles (the ``asgard.mlflow.cluster_access`` module), with the same
messages everywhere. Credentials are resolved as kubernetes.core resolves them: the options first, then
``K8S_AUTH_*`` (what AWX's Kubernetes credential injects), then the in-cluster service account, then
``KUBECONFIG`` or ``~/.kube/config``; every message names the source actually used, the cause and what to do:

- the kubeconfig file does not exist / is a directory; it is not valid YAML (with line and column); it cannot be
  loaded (no current context, ...);
- 401: the server rejected the credentials; an unreachable server (address, CA, network);
- 403: the credentials are accepted but RBAC does not allow an action the caller is about to take. Each permission
  is asked with a ``SelfSubjectAccessReview`` (authorization.k8s.io/v1) BEFORE anything is done. Where that API
  cannot be asked (HTTP 404/403/405 on it), ``get``/``list`` permissions are checked by reading the object instead
  (authorization comes before the lookup, so a 404 there means allowed) and other verbs stay unchecked; the result
  says so.

Never prints a credential. Pure Python apart from the client built by ``_kube.api_from_module``.
"""

from __future__ import annotations

import os

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError

SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# resources that are not namespaced, and API versions to read an object when SSAR cannot be asked
_CLUSTER_SCOPED = {"namespaces", "nodes", "persistentvolumes", "clusterroles", "clusterrolebindings",
                   "customresourcedefinitions", "storageclasses", "ingressclasses"}
_GROUP_VERSION = {"": "v1", "apps": "v1", "batch": "v1", "networking.k8s.io": "v1", "policy": "v1",
                  "coordination.k8s.io": "v1", "rbac.authorization.k8s.io": "v1", "discovery.k8s.io": "v1"}
_SINGULAR = {"ingresses": "ingress", "networkpolicies": "networkpolicy", "endpoints": "endpoints",
             "poddisruptionbudgets": "poddisruptionbudget"}


class AccessError(Exception):
    """The cluster cannot be used as asked; the message names the source, the cause and what to do."""

    def __init__(self, message: str, code: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


# ------------------------------------------------------------------------------------------ credentials
def credential_source(params: dict, env=None, prefix: str = "") -> tuple[str, str]:
    """``(kubeconfig path or "", description)`` of the credentials kubernetes.core will use."""
    env = os.environ if env is None else env
    host = params.get("host") or env.get("K8S_AUTH_HOST")
    key = params.get("api_key") or env.get("K8S_AUTH_API_KEY")
    kc = params.get("kubeconfig")
    context = params.get("context") or env.get("K8S_AUTH_CONTEXT")
    path = ""
    if host and key:
        who = f"{prefix}api_key" if params.get("api_key") else "K8S_AUTH_API_KEY (e.g. AWX's Kubernetes credential)"
        desc = f"the API server {host} with the bearer token of {who}"
    elif isinstance(kc, dict):
        desc = f"the kubeconfig given inline as {prefix}kubeconfig"
    elif kc:
        path, desc = str(kc), f"the kubeconfig {prefix}kubeconfig={kc}"
    elif env.get("K8S_AUTH_KUBECONFIG"):
        path, desc = env["K8S_AUTH_KUBECONFIG"], f"the kubeconfig K8S_AUTH_KUBECONFIG={env['K8S_AUTH_KUBECONFIG']}"
    elif not context and env.get("KUBERNETES_SERVICE_HOST") and os.path.exists(SA_TOKEN):
        desc = "the in-cluster service account (/var/run/secrets/kubernetes.io/serviceaccount)"
    elif env.get("KUBECONFIG"):
        path, desc = env["KUBECONFIG"], f"the kubeconfig KUBECONFIG={env['KUBECONFIG']}"
    else:
        path = "~/.kube/config"
        desc = f"the kubeconfig ~/.kube/config (none of {prefix}kubeconfig, K8S_AUTH_KUBECONFIG, KUBECONFIG is set)"
    if context:
        desc += f" (context {context})"
    return path, desc


def check_kubeconfig_file(path: str, desc: str, prefix: str = "") -> None:
    """A kubeconfig path that does not exist or is a directory: AccessError (a KUBECONFIG list is left to the client)."""
    if not path or os.pathsep in path:
        return
    full = os.path.expanduser(path)
    if os.path.isdir(full):
        problem = "is a directory, not a kubeconfig file"
    elif not os.path.exists(full):
        problem = "does not exist"
    else:
        return
    raise AccessError(
        f"{desc}: {full} {problem}. Expected the path of a readable kubeconfig file: set {prefix}kubeconfig (or "
        f"KUBECONFIG / K8S_AUTH_KUBECONFIG), e.g. ~/.kube/config, or give {prefix}host and {prefix}api_key. "
        "Nothing was changed.", "KUBECONFIG_NOT_FOUND")


def _chain(exc: BaseException | None):
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def _status(exc: BaseException) -> int | None:
    for e in _chain(exc):
        status = getattr(e, "status", None)
        if isinstance(status, int) and status:
            return status
    return None


def explain(exc: BaseException, desc: str, prefix: str = "") -> AccessError:
    """The AccessError for an exception raised while building the client or on its first request."""
    texts = [f"{type(e).__name__}: {e}" for e in _chain(exc)]
    raw = "\n".join(texts)
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    status = _status(exc)
    marked = next((e for e in _chain(exc) if hasattr(e, "problem_mark") and getattr(e, "problem_mark", None)), None)
    if status == 401 or ("401" in raw and "Unauthorized" in raw):
        return AccessError(
            f"the Kubernetes API server rejected the credentials from {desc} (401 Unauthorized): the token or client "
            "certificate is wrong, expired or revoked. Renew it (e.g. kubectl create token <service-account> -n "
            "<namespace>, or a fresh kubeconfig from your cluster provider) or point "
            f"{prefix}kubeconfig / KUBECONFIG / K8S_AUTH_* at valid credentials. Nothing was changed.",
            "UNAUTHORIZED", 401)
    if marked is not None:
        mark = marked.problem_mark
        what = " ".join(x for x in (getattr(marked, "context", None), getattr(marked, "problem", None)) if x)
        return AccessError(
            f"{desc} is not a valid kubeconfig: invalid YAML ({what}, line {mark.line + 1}, column {mark.column + 1}). "
            "Fix or regenerate the file (e.g. kubectl config view --raw --minify > kubeconfig) and point "
            f"{prefix}kubeconfig / KUBECONFIG at it. Nothing was changed.", "KUBECONFIG_INVALID")
    if any(k in raw for k in ("Invalid kube-config", "Permission denied", "No such file", "Could not find or access",
                              "Is a directory", "Service host/port", "ConfigException", "Could not create API client")):
        return AccessError(
            f"cannot load {desc}: {first}. Expected a readable kubeconfig with a current context (or one named by "
            f"{prefix}context): set {prefix}kubeconfig / KUBECONFIG / K8S_AUTH_KUBECONFIG, or give {prefix}host and "
            f"{prefix}api_key. Nothing was changed.", "KUBECONFIG_INVALID")
    return AccessError(
        f"cannot reach the Kubernetes API with {desc}: {first}. Check the API server address, its CA "
        f"({prefix}ca_cert / {prefix}validate_certs) and the network, or point {prefix}kubeconfig / KUBECONFIG / "
        f"K8S_AUTH_* at another cluster. Nothing was changed.", "UNREACHABLE", status)


# ------------------------------------------------------------------------------------------ permissions
def _label(p: dict) -> str:
    res = p["resource"]
    kind = _SINGULAR.get(res, res[:-1] if res.endswith("s") else res)
    if p.get("subresource"):
        kind += f"/{p['subresource']}"
    where = "/".join(x for x in (p.get("namespace"), p.get("name")) if x)
    if where:
        return f"{kind} {where}" if p.get("name") else f"{res} in namespace {where}"
    return res


def _read_path(p: dict) -> str | None:
    """The path whose GET is exactly this permission (a get of one object, a list), None when there is none."""
    if p.get("subresource") or (p.get("verb") == "get") != bool(p.get("name")):
        return None
    group = p.get("group") or ""
    version = p.get("version") or _GROUP_VERSION.get(group)
    if not version:
        return None
    # built from the caller's permissions (what it is about to do), not a fixed call of the collection
    base = "/".join(["", "api", version] if not group else ["", "apis", group, version])
    res = p["resource"]
    if res in _CLUSTER_SCOPED:
        return f"{base}/{res}" + (f"/{p['name']}" if p.get("name") else "")
    if not p.get("namespace"):
        return None
    return f"{base}/namespaces/{p['namespace']}/{res}" + (f"/{p['name']}" if p.get("name") else "")


def check_permissions(api, permissions: list[dict]) -> tuple[list[dict], str]:
    """Ask the API server about each permission; ``([result], how)`` where how says whether SSAR was used."""
    results = []
    ssar = "SelfSubjectAccessReview"
    for p in permissions:
        entry = {k: p.get(k) for k in ("verb", "group", "resource", "subresource", "namespace", "name")}
        entry.update(allowed=None, checked_by=None, reason="")
        if ssar == "SelfSubjectAccessReview":
            keys = ("verb", "group", "resource", "subresource", "namespace", "name")
            attrs = {k: v for k, v in entry.items() if k in keys and v}
            attrs.setdefault("group", "")
            body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attrs}}
            try:
                status = api.send("POST", SSAR_PATH, body).get("status") or {}
                entry.update(allowed=bool(status.get("allowed")), checked_by=ssar,
                             reason=status.get("reason") or status.get("evaluationError") or "")
                results.append(entry)
                continue
            except KubeError as exc:
                if exc.status in (404, 403, 405):
                    ssar = f"unavailable (HTTP {exc.status} on {SSAR_PATH})"
                else:
                    raise
        path = _read_path(p) if p.get("verb") in ("get", "list") else None
        if path:
            try:
                api.get(path)
                entry.update(allowed=True, checked_by="GET")
            except KubeError as exc:
                if exc.status == 404:
                    entry.update(allowed=True, checked_by="GET", reason="not found (authorized)")
                elif exc.status == 403:
                    entry.update(allowed=False, checked_by="GET", reason=str(exc))
                else:
                    raise
        else:
            entry["reason"] = "not checked: the API server cannot be asked (no SelfSubjectAccessReview)"
        results.append(entry)
    return results, ssar


def denied_message(denied: list[dict], desc: str, hint: str = "") -> str:
    what = "; ".join(f"{d['verb']} {_label(d)}" + (f" ({d['reason']})" if d.get("reason") else "") for d in denied)
    hint = hint or ("Grant the missing RBAC permissions (the collection's deploy/rbac/ has the Roles the roles "
                    "need) or use credentials with these rights.")
    return (f"the Kubernetes API server accepted the credentials from {desc} but they may not {what} "
            f"(403 Forbidden): the identity lacks RBAC permissions. {hint} Nothing was changed.")


def run(module, api_factory, env=None) -> dict:
    """The module's work: credentials, one request to check them, then each permission. Raises AccessError."""
    params = module.params
    prefix = params.get("option_prefix") or ""
    path, desc = credential_source(params, env, prefix)
    check_kubeconfig_file(path, desc, prefix)
    try:
        api = api_factory()
        info = api.get("/version")
    except KubeError as exc:
        raise explain(exc, desc, prefix) from exc
    except Exception as exc:  # noqa: BLE001 - kubeconfig loading: yaml, ConfigException, OSError, CoreException
        raise explain(exc, desc, prefix) from exc
    try:
        perms, how = check_permissions(api, params.get("permissions") or [])
    except KubeError as exc:
        raise explain(exc, desc, prefix) from exc
    denied = [p for p in perms if p["allowed"] is False]
    if denied:
        raise AccessError(denied_message(denied, desc, params.get("rbac_hint") or ""), "FORBIDDEN", 403)
    return {"changed": False, "source": desc, "server_version": info.get("gitVersion"), "access_review": how,
            "permissions": perms, "api_requests": api.requests}
