# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the ``mlflow db upgrade`` Job the verify role runs for DB_SCHEMA_OUTDATED, built from the Deployment.

The Job runs THE MLflow container's image with its env, envFrom, volume mounts and security context, and the pod's
volumes, service account and scheduling. The backend store URI is taken from the container's environment
(``$MLFLOW_BACKEND_STORE_URI``, expanded by the shell in the pod, so a Secret-held URI never passes through Ansible),
from a literal ``--backend-store-uri``, or from a ``$(VAR)`` argument Kubernetes expands in the Job as in the server.
The Job definition can hold literal credentials of the Deployment: the task that sends it is ``no_log``.
"""

from __future__ import annotations

from ansible_collections.asgard.mlflow.plugins.module_utils._server_command import mlflow_container
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError, as_int, obj

_JOB_SPEC_KEYS = ("volumes", "securityContext", "serviceAccountName", "automountServiceAccountToken",
                  "imagePullSecrets", "nodeSelector", "tolerations", "affinity", "hostAliases", "dnsPolicy",
                  "dnsConfig", "enableServiceLinks")
_CONTAINER_KEYS = ("image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext", "resources",
                   "workingDir")


def _flag_value(words: list[str]) -> str:
    """The value of --backend-store-uri in ``words`` (``--flag=V`` or ``--flag V``), quotes stripped."""
    for i, w in enumerate(words):
        if w.startswith("--backend-store-uri="):
            return w.split("=", 1)[1].strip("'\"")
        if w == "--backend-store-uri" and i + 1 < len(words):
            return words[i + 1].strip("'\"")
    return ""


def job_name(deployment_name: str) -> str:
    return f"{deployment_name[:44]}-verify-db-upgrade".rstrip("-")


def migration_job(deployment, *, container: str | None = None, name: str = "", ttl_seconds: int = 3600,
                  active_deadline_seconds: int | None = None, labels: dict | None = None) -> dict:
    """The Job (a dict for kubernetes.core.k8s ``definition``). Raises VerifyError when no URI can be found."""
    dep = obj(deployment, "deployment")
    if not dep:
        raise VerifyError("deployment: the Deployment is needed to build the migration Job")
    meta = dep.get("metadata") or {}
    pspec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    try:
        main = mlflow_container(pspec, container or None)[1]
    except ValueError as exc:
        raise VerifyError(f"deployment: {exc}") from exc
    env_names = {e.get("name") for e in main.get("env") or []}
    argv = [str(a) for a in (main.get("command") or []) + (main.get("args") or [])]
    raw_uri = _flag_value(argv) or _flag_value([w for a in argv for w in a.split()])
    command = None
    if "MLFLOW_BACKEND_STORE_URI" in env_names or (main.get("envFrom") and not raw_uri):
        command = ["/bin/sh", "-c", 'exec mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"']
    elif raw_uri and "$(" in raw_uri:
        command = ["mlflow", "db", "upgrade", raw_uri]  # Kubernetes expands $(VAR) from the container env
    elif raw_uri and "$" not in raw_uri:
        command = ["/bin/sh", "-c", "exec mlflow db upgrade '" + raw_uri.replace("'", "'\"'\"'") + "'"]
    elif raw_uri:
        command = ["/bin/sh", "-c", f'exec mlflow db upgrade "{raw_uri}"']  # $VAR from the env, expanded by sh
    else:
        raise VerifyError("the backend store URI was not found in the mlflow container (neither env "
                          "MLFLOW_BACKEND_STORE_URI nor a --backend-store-uri flag): run `mlflow db upgrade` by hand")
    c = {k: v for k, v in main.items() if k in _CONTAINER_KEYS}
    c.update({"name": "db-upgrade", "command": command})
    job_spec = {k: v for k, v in pspec.items() if k in _JOB_SPEC_KEYS}
    job_spec.update({"restartPolicy": "Never", "containers": [c]})
    lbl = {"app.kubernetes.io/managed-by": "asgard.mlflow", "app.kubernetes.io/component": "db-upgrade"}
    lbl.update(labels or {})
    spec = {"backoffLimit": 1, "ttlSecondsAfterFinished": as_int(ttl_seconds, "ttl_seconds", 0),
            "template": {"metadata": {"labels": lbl}, "spec": job_spec}}
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = as_int(active_deadline_seconds, "verify_migration_timeout", 1)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": (name or job_name(meta.get("name", "mlflow")))[:63].rstrip("-"),
                         "namespace": meta.get("namespace"), "labels": lbl},
            "spec": spec}
