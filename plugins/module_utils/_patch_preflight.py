# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the patch role's variables, checked once before the first API call (filter asgard.mlflow.patch_preflight).

Values arrive as given (``-e patch_workers=5`` is a string; ``-e patch_port=null`` the string "null", which switches a
target off like a real null). :func:`errors` returns one message per bad variable, all at once, each naming the
variable and what was expected. The typed conversion of the targets themselves is ``_patch.typed_targets`` (module).
"""

from __future__ import annotations

import re

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import DNS1123_LABEL as _DNS_LABEL
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import DNS1123_SUBDOMAIN as _DNS_SUBDOMAIN
from ansible_collections.asgard.mlflow.plugins.module_utils._mlflow_rules import PROBE_DEFAULTS
from ansible_collections.asgard.mlflow.plugins.module_utils._preflight_values import full as _full
from ansible_collections.asgard.mlflow.plugins.module_utils._preflight_values import shown as _j
from ansible_collections.asgard.mlflow.plugins.module_utils._preflight_values import whole

NULLS = ("null", "none", "~")
PROBE_KEYS = tuple(PROBE_DEFAULTS)  # a probe's timing fields
_BOOLS = ("true", "false", "yes", "no", "on", "off", "1", "0")
_NUMBERS = ("patch_gunicorn_timeout", "patch_gunicorn_keep_alive", "patch_uvicorn_timeout_keep_alive", "patch_workers",
            "patch_wait_timeout", "patch_wait_sleep", "patch_log_lines")
_PROBES = ("patch_startup_probe", "patch_readiness_probe", "patch_liveness_probe")
_MODES = {"patch_gunicorn_timeout_mode": ("exact", "at_least"), "patch_workers_mode": ("exact", "at_least"),
          "patch_allowed_hosts_mode": ("include", "exact"), "patch_rollback_method": ("patch", "k8s_rollback")}


def _null(value) -> bool:
    return value is None or str(value).lower() in NULLS


def _number(value, high: int | None = None) -> bool:
    n = whole(value)
    return n is not None and n >= 1 and (high is None or n <= high)


def errors(v: dict) -> list[str]:
    """Every problem with the patch role's variables ``v`` (``patch_*`` as given), one message each; [] when none."""
    e = []
    ns, name, service = v.get("patch_namespace"), v.get("patch_name"), v.get("patch_service_name")
    if not (_full(_DNS_LABEL, ns) and _full(_DNS_SUBDOMAIN, name) and _full(_DNS_LABEL, service)):
        e.append(f"patch_namespace={_j(ns)}, patch_name={_j(name)} and patch_service_name={_j(service)} must be "
                 f"Kubernetes names (lower-case letters, digits and '-', e.g. asgard / mlflow-deployment / mlflow-service)")
    for key in _NUMBERS:
        value = v.get(key)
        if not (_null(value) or _number(value)):
            e.append(f"{key}={_j(value)} is invalid; expected an integer >= 1, or null to leave it alone")
    links = v.get("patch_enable_service_links")
    if not (_null(links) or isinstance(links, bool) or str(links).lower() in _BOOLS):
        e.append(f"patch_enable_service_links={_j(links)} is invalid; expected true, false, or null to leave the pod's "
                 f"enableServiceLinks alone")
    port, service_port = v.get("patch_port"), v.get("patch_service_port")
    if not ((_null(port) or _number(port, 65535)) and _number(service_port, 65535)):
        e.append(f"patch_port={_j(port)} / patch_service_port={_j(service_port)} is invalid; expected a port number "
                 f"1-65535 (patch_port may be null to leave --port alone)")
    prefix = v.get("patch_static_prefix")
    if not (prefix == "" or _null(prefix) or (isinstance(prefix, str) and re.fullmatch(r"/[^{}]*[^/{}]", prefix))):
        e.append(f"patch_static_prefix={_j(prefix)} is invalid; expected \"\" (no prefix, the seed's fix), null (leave "
                 f"it alone) or a path that starts with '/' and does not end with '/', e.g. /mlflow")
    if any(v.get(key) not in allowed for key, allowed in _MODES.items()):
        got = {key: _j(v.get(key)) for key in _MODES}
        e.append(f"expected patch_gunicorn_timeout_mode and patch_workers_mode in [exact, at_least] (got "
                 f"{got['patch_gunicorn_timeout_mode']}, {got['patch_workers_mode']}), patch_allowed_hosts_mode in "
                 f"[include, exact] (got {got['patch_allowed_hosts_mode']}), patch_rollback_method in [patch, "
                 f"k8s_rollback] (got {got['patch_rollback_method']})")
    worker = v.get("patch_gunicorn_worker_class")
    if not (_null(worker) or worker == "" or (isinstance(worker, str) and re.fullmatch(r"[A-Za-z0-9_.:]+", worker))):
        e.append(f"patch_gunicorn_worker_class={_j(worker)} is invalid; expected a gunicorn worker class such as sync or "
                 f"gthread, or null to keep what the Deployment has")
    version = v.get("patch_mlflow_version")
    if version and not re.fullmatch(r"v?[0-9]+\.[0-9]+(\.[0-9]+)?", str(version)):
        e.append(f"patch_mlflow_version={_j(version)} is invalid; expected \"\" (from the image tag) or X.Y[.Z], "
                 f"e.g. 3.17.2")
    ranges, extra = v.get("patch_allowed_hosts_pod_ranges"), v.get("patch_allowed_hosts_extra")
    if not (isinstance(ranges, list) and isinstance(extra, list)
            and all(re.fullmatch(r"[^,\s]+", str(h)) for h in ranges + extra)):
        e.append(f"patch_allowed_hosts_pod_ranges / patch_allowed_hosts_extra must be lists of host patterns without "
                 f"commas or spaces, e.g. [\"mlflow.example.com\", \"mlflow.example.com:443\", \"100.64.*\"]; got "
                 f"{_j(ranges)} / {_j(extra)}")
    for key in _PROBES:
        probe = v.get(key)
        if not (isinstance(probe, dict) and set(probe) <= set(PROBE_KEYS)
                and all(whole(x) is not None for x in probe.values())):
            e.append(f"{key}={_j(probe)} is invalid; expected a mapping of integers with keys among "
                     f"{', '.join(PROBE_KEYS)}, e.g. {{periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3}}")
    return e
