# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over plugins/module_utils/_mlflow_rules.py and _redact.py: MLflow's rules and the one redaction, for
playbooks and the collection's roles (so the rules live once, in Python).

Documentation of each filter: mlflow_server_facts.yml, mlflow_allowed_hosts.yml,
mlflow_proxy_settings.yml, redact.yml (ansible-doc -t filter).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError
    from ansible_collections.asgard.mlflow.plugins.module_utils._plain import plain as _plain
    from ansible_collections.asgard.mlflow.plugins.plugin_utils._filters import rules
except ImportError:  # pragma: no cover - when loaded outside a collection tree
    from ..module_utils._errors import MlflowSettingsError  # type: ignore[no-redef]
    from ..module_utils._plain import plain as _plain  # type: ignore[no-redef]
    from ..plugin_utils._filters import rules  # type: ignore[no-redef]

# _mlflow_rules and _redact are imported when a filter runs (why: plugin_utils/_filters.py rules())


def mlflow_server_facts(image, mlflow_version="", static_prefix="", server=""):
    """What ``mlflow server`` of this image does: version, server kind, Host check, health path."""
    R = rules("_mlflow_rules")
    if not isinstance(image, str) or not image:
        raise AnsibleFilterError(f"asgard.mlflow.mlflow_server_facts: expected an image reference, got {image!r}")
    try:
        if mlflow_version not in (None, ""):
            version = ".".join(str(x) for x in R.version_tuple(str(mlflow_version)))
            source = "override"
        else:
            version = R.version_from_image(image)
            source = "image tag" if version else "unknown"
    except MlflowSettingsError as exc:
        raise AnsibleFilterError(f"asgard.mlflow.mlflow_server_facts: {exc}") from exc
    default = R.server_kind(version)
    return {
        "mlflow_version": version or "",
        "version_source": source,
        "server": server or default,
        "default_server": default,
        "uvicorn_available": R.uvicorn_available(version),
        "host_check": R.host_check_applies(version),
        "health_path": R.health_path(static_prefix or "", version),
        "workers": R.DEFAULT_WORKERS,
        "probe_timings": {k: dict(v) for k, v in R.PROBE_TIMINGS.items()},
    }


def mlflow_allowed_hosts(service, namespace, service_port=5000, cluster_domain="cluster.local", ingress_hosts=None,
                         pod_ranges=None, extra=None):
    """THE Host allow-list an MLflow server behind Service ``service`` needs (MLflow >= 3.5)."""
    R = rules("_mlflow_rules")
    try:
        port = int(service_port)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"asgard.mlflow.mlflow_allowed_hosts: service_port: expected a port number, "
                                 f"got {service_port!r}") from exc
    for name, value in (("ingress_hosts", ingress_hosts), ("pod_ranges", pod_ranges), ("extra", extra)):
        if value is not None and (isinstance(value, str) or not isinstance(value, (list, tuple))):
            raise AnsibleFilterError(f"asgard.mlflow.mlflow_allowed_hosts: {name}: expected a list of host patterns, "
                                     f"got {value!r}")
    return R.allowed_hosts(str(service), str(namespace), port, str(cluster_domain), _plain(list(ingress_hosts or [])),
                           R.POD_IP_RANGES if pod_ranges is None else _plain(list(pod_ranges)),
                           _plain(list(extra or [])))


def mlflow_proxy_settings(worker_timeout, body_size="0"):
    """The ingress-nginx annotations and HTTPRoute timeouts that let uploads and slow requests through."""
    try:
        return rules("_mlflow_rules").proxy_settings(worker_timeout, body_size)
    except MlflowSettingsError as exc:
        raise AnsibleFilterError(f"asgard.mlflow.mlflow_proxy_settings: {exc}") from exc


def redact(value, limit=0):
    """Credentials masked in a string, or in every string of a structure (env entries, Secrets, annotations)."""
    rule = rules("_redact")
    if isinstance(value, (dict, list, tuple)):
        return rule.redact_deep(_plain(value), limit=int(limit or 0))
    return rule.redact(value, limit=int(limit or 0))


class FilterModule:
    """asgard.mlflow MLflow rules and redaction filters."""

    def filters(self):
        return {
            "mlflow_server_facts": mlflow_server_facts,
            "mlflow_allowed_hosts": mlflow_allowed_hosts,
            "mlflow_proxy_settings": mlflow_proxy_settings,
            "redact": redact,
        }
