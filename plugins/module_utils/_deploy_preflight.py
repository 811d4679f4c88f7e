# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the deploy role's variables, checked once before the first API call (filter asgard.mlflow.deploy_preflight).

The role hands over its variables as they are (``-e name=value`` makes strings of numbers and booleans) plus the few
forms it derives in ``vars/main.yml`` (``ingress_hosts`` from a comma-separated string, the backend-store source, the
switches as booleans), so a rule about those forms stays written once, there. :func:`errors` returns one message per
bad variable (all of them at once), each naming the variable, what it is and what was expected; a value that may hold
a password (the store URI, the admin password) is never shown.
"""

from __future__ import annotations

import re

from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import DNS1123_LABEL as _DNS_LABEL
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import DNS1123_SUBDOMAIN as _DNS_SUBDOMAIN
from ansible_collections.asgard.mlflow.plugins.module_utils._preflight_values import full as _full
from ansible_collections.asgard.mlflow.plugins.module_utils._preflight_values import is_list as _is_list
from ansible_collections.asgard.mlflow.plugins.module_utils._preflight_values import shown as _j
from ansible_collections.asgard.mlflow.plugins.module_utils._preflight_values import whole as _whole

_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_HOST = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOST_PATTERN = re.compile(r"[A-Za-z0-9.*?\[\]:_-]+")
_IMAGE = re.compile(
    r"([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?"
    r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?"
)
_STATIC_PREFIX = re.compile(r"/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]")
_POSITIVE = re.compile(r"[1-9][0-9]*")
_PROBE_KEYS = ("periodSeconds", "timeoutSeconds", "failureThreshold")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")

# integer variables: name -> smallest value allowed
_INTEGERS = {"deploy_workers": 1, "deploy_gunicorn_timeout": 1, "deploy_keep_alive": 1, "deploy_replicas": 0,
             "deploy_wait_timeout": 1, "deploy_db_upgrade_timeout": 1, "deploy_run_as_user": 1,
             "deploy_run_as_group": 0, "deploy_fs_group": 0}
_PORTS = ("deploy_container_port", "deploy_service_port")
_PROBES = ("deploy_startup_probe", "deploy_readiness_probe", "deploy_liveness_probe")
_SUBDOMAIN_NAMES = ("deploy_service_account_name", "deploy_pvc_name", "deploy_ingress_name",
                    "deploy_backend_store_secret_create_name")
_HOST_PATTERN_LISTS = ("deploy_allowed_hosts_extra", "deploy_allowed_hosts_pod_ranges")

# the derived forms the role passes in (vars/main.yml): name -> value when absent
DERIVED = {"ingress_hosts": [], "route_hostnames": [], "backend_source": "args", "uses_sqlite": True,
           "pvc_enabled": True, "ingress_enabled": False, "route_enabled": False, "auth_enabled": False}

SUBDOMAIN_EXPECTED = "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
HOST_PATTERNS_EXPECTED = "host, host:port or an fnmatch pattern such as 10.* or *.example.com:*"


def _bad_entries(value, strip_scheme: bool = False) -> list[str]:
    entries = value if _is_list(value) else [value]
    bad = []
    for entry in entries:
        text = str(entry)
        if strip_scheme:
            text = re.sub(r"^https?://", "", text)
        if not _HOST_PATTERN.fullmatch(text):
            bad.append(text)
    return bad


def _version(image, override) -> tuple[str, str | None]:
    """(the MLflow version as X.Y.Z or "", an error message or None) from deploy_mlflow_version or the image tag."""
    expected = (f"cannot tell the MLflow version of deploy_image={_j(image)} from its tag or from "
                f"deploy_mlflow_version={_j(override)}; expected deploy_mlflow_version as X.Y or X.Y.Z (e.g. 3.17.2), "
                f"or an image tag like v3.17.2")
    try:
        if override not in (None, ""):
            return ".".join(str(x) for x in R.version_tuple(str(override))), None
    except MlflowSettingsError:
        return "", expected
    version = R.version_from_image(image) if isinstance(image, str) else None
    return (version, None) if version else ("", expected)


def _image_errors(v: dict) -> list[str]:
    image = v.get("deploy_image")
    if not _full(_IMAGE, image):
        return [f"deploy_image={_j(image)} is not a valid image reference; expected "
                f"[registry[:port]/]repository[:tag][@sha256:digest] in lower case, e.g. ghcr.io/mlflow/mlflow:v3.17.2"]
    version, error = _version(image, v.get("deploy_mlflow_version", ""))
    if error:
        return [error]
    server = v.get("deploy_server", "")
    if server not in ("", "uvicorn", "gunicorn") or (server == "uvicorn" and not R.uvicorn_available(version)):
        return [f'deploy_server={_j(server)} is not possible with MLflow {version}; expected one of "", "uvicorn" '
                f'(MLflow >= 3.3 only) or "gunicorn"']
    return []


def _number_errors(v: dict) -> list[str]:
    e = []
    for name, minimum in _INTEGERS.items():
        n = _whole(v.get(name))
        if n is None or n < minimum:
            e.append(f"{name}={_j(v.get(name))} is invalid; expected an integer >= {minimum}")
    for name in _PORTS:
        n = _whole(v.get(name))
        if n is None or not 1 <= n <= 65535:
            e.append(f"{name}={_j(v.get(name))} is out of range; expected a port number 1-65535")
    for name in _PROBES:
        probe = v.get(name)
        if not (isinstance(probe, dict) and set(probe) <= set(_PROBE_KEYS)
                and all(_POSITIVE.fullmatch(str(probe.get(k, "x"))) for k in _PROBE_KEYS)):
            e.append(f"{name}={_j(probe)} is invalid; expected a mapping with exactly the positive integers "
                     f"periodSeconds, timeoutSeconds and failureThreshold")
    return e


def _name_errors(v: dict) -> list[str]:
    e = []
    prefix = v.get("deploy_static_prefix")
    if not (prefix == "" or _full(_STATIC_PREFIX, prefix)):
        e.append(f'deploy_static_prefix={_j(prefix)} is invalid; expected "" (no prefix) or a path that starts with "/" '
                 f'and does not end with "/", e.g. /mlflow')
    ns = v.get("deploy_namespace")
    if not (_full(_DNS_LABEL, ns) and len(ns) <= 63):
        e.append(f"deploy_namespace={_j(ns)} is not a valid namespace name; expected a DNS-1123 label: at most 63 "
                 f"characters, lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. asgard")
    name = v.get("deploy_name")
    if not (_full(_DNS_LABEL, name) and len(name) <= 47):
        e.append(f"deploy_name={_j(name)} is not a valid Kubernetes name; expected a DNS-1123 label of at most 47 "
                 f"characters (the db-upgrade Job appends -db-upgrade): lower-case letters, digits and '-', starting and "
                 f"ending with a letter or digit, e.g. mlflow-deployment")
    service = v.get("deploy_service_name")
    if not (_full(_DNS_1035_LABEL, service) and len(service) <= 63):
        e.append(f"deploy_service_name={_j(service)} is not a valid Kubernetes name; expected a DNS-1035 label: at most "
                 f"63 lower-case letters, digits and '-', starting with a letter, e.g. mlflow-service")
    for key in _SUBDOMAIN_NAMES:
        value = v.get(key)
        if not (_full(_DNS_SUBDOMAIN, value) and len(value) <= 253):
            e.append(f"{key}={_j(value)} is not a valid Kubernetes name; expected {SUBDOMAIN_EXPECTED}")
    return e


def _store_errors(v: dict, d: dict) -> list[str]:
    secret, uri = v.get("deploy_backend_store_secret"), v.get("deploy_backend_store_uri")
    if not (isinstance(secret, dict) and set(secret) <= {"name", "key"} and isinstance(secret.get("name", ""), str)
            and isinstance(uri, str)):
        return [f"deploy_backend_store_secret={_j(secret)} is invalid; expected a mapping {{name: <existing Secret name "
                f'or "">, key: <key holding the URI, default uri>}}']
    e = []
    if d["backend_source"] == "existing_secret":
        if uri and not uri.startswith("sqlite:"):
            e.append(f"both deploy_backend_store_secret.name={_j(secret.get('name'))} (an existing Secret) and inline "
                     f"credentials in deploy_backend_store_uri are set; expected only one: either the Secret name (and "
                     f'deploy_backend_store_uri left at its sqlite default or "") or the URI')
        if not (_full(_DNS_SUBDOMAIN, secret.get("name")) and re.fullmatch(r"[-._a-zA-Z0-9]+", str(secret.get("key", "uri")))):
            e.append(f"deploy_backend_store_secret={_j(secret)} is invalid; expected name as a DNS-1123 subdomain and key "
                     f"made of letters, digits, '-', '_' and '.'")
    elif not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", uri) or re.search(r"\s", uri):
        e.append("deploy_backend_store_uri is not a valid store URI (value hidden, it may hold a password); expected a "
                 "SQLAlchemy URI such as sqlite:////mlflow/mlflow.db or postgresql://user:password@host:5432/db")
    if d["uses_sqlite"]:
        replicas = v.get("deploy_replicas")
        if (_whole(replicas) or 0) > 1 or not (d["pvc_enabled"] or uri.startswith("sqlite:////tmp/")):
            e.append(f"deploy_backend_store_uri={_j(uri)} (SQLite) needs deploy_replicas <= 1 (is {replicas}) and "
                     f"deploy_pvc_enabled=true (is {v.get('deploy_pvc_enabled')}) unless the file is under /tmp "
                     f"(an emptyDir, lost on restart)")
    return e


def _host_errors(v: dict, d: dict) -> list[str]:
    e = []
    mode = v.get("deploy_allowed_hosts_mode")
    if mode not in ("computed", "mlflow_defaults"):
        e.append(f"deploy_allowed_hosts_mode={_j(mode)} is invalid; expected computed (the role builds "
                 f"MLFLOW_SERVER_ALLOWED_HOSTS) or mlflow_defaults (left unset)")
    for name in _HOST_PATTERN_LISTS:
        value = v.get(name)
        if not _is_list(value) or _bad_entries(value):
            e.append(f"{name} entries {_j(_bad_entries(value))} are invalid; expected a list of Host header patterns "
                     f"without scheme, path, comma or space: {HOST_PATTERNS_EXPECTED}")
    hosts = d["ingress_hosts"]
    if not _is_list(hosts) or _bad_entries(hosts):
        e.append(f"deploy_ingress_hosts entries {_j(_bad_entries(hosts))} are invalid; expected a list of Host header "
                 f"patterns (or one comma-separated string) without scheme, path or space: {HOST_PATTERNS_EXPECTED}")
    origins = v.get("deploy_cors_allowed_origins")
    if not _is_list(origins) or _bad_entries(origins, strip_scheme=True):
        e.append(f"deploy_cors_allowed_origins entries {_j(_bad_entries(origins, strip_scheme=True))} are invalid; "
                 f"expected a list of Host header patterns without path, comma or space (origins as "
                 f"http[s]://host[:port]): {HOST_PATTERNS_EXPECTED}")
    return e


def _exposure_errors(v: dict, d: dict) -> list[str]:
    e = []
    annotations = v.get("deploy_ingress_annotations")
    if not isinstance(annotations, dict):
        e.append(f"deploy_ingress_annotations={_j(annotations)} is invalid; expected a mapping of annotation names to "
                 f'values, e.g. {{"nginx.ingress.kubernetes.io/proxy-body-size": "5g"}} (as JSON with -e)')
    size = v.get("deploy_ingress_body_size")
    if R.nginx_size_bytes(str(size)) is None or str(size) != str(size).strip():
        e.append(f"deploy_ingress_body_size={_j(size)} is invalid; expected an nginx size: digits with an optional k, "
                 f"m or g suffix, e.g. 0 (no limit), 512k, 100m or 5g")
    timeout = v.get("deploy_proxy_timeout")
    if _whole(timeout) is None:
        e.append(f"deploy_proxy_timeout={_j(timeout)} is invalid; expected whole seconds >= 1, or 0 for the worker "
                 f"timeout (deploy_gunicorn_timeout)")
    hosts = d["ingress_hosts"]
    if d["ingress_enabled"] and not (_is_list(hosts) and hosts and all(_full(_DNS_HOST, h) for h in hosts)):
        e.append(f"deploy_ingress_hosts={_j(v.get('deploy_ingress_hosts'))} is invalid with deploy_ingress_enabled=true; "
                 f"expected a non-empty list of DNS host names (a leading *. allowed), e.g. [mlflow.example.com]")
    if d["route_enabled"]:
        e += _route_errors(v, d["route_hostnames"])
    if d["auth_enabled"]:
        e += _auth_errors(v)
    modes = v.get("deploy_pvc_access_modes")
    if v.get("deploy_service_type") not in _SERVICE_TYPES or not (
            _is_list(modes) and modes and all(m in _ACCESS_MODES for m in modes)):
        e.append(f"deploy_service_type={_j(v.get('deploy_service_type'))} or deploy_pvc_access_modes={_j(modes)} is "
                 f"invalid; expected ClusterIP/NodePort/LoadBalancer and a non-empty list of ReadWriteOnce, "
                 f"ReadOnlyMany, ReadWriteMany, ReadWriteOncePod")
    return e


def _route_errors(v: dict, hostnames) -> list[str]:
    gateway, gw_ns = v.get("deploy_route_gateway_name"), v.get("deploy_route_gateway_namespace")
    section, name = v.get("deploy_route_gateway_section"), v.get("deploy_route_name")
    if (_is_list(hostnames) and hostnames and all(_full(_DNS_HOST, str(h)) for h in hostnames)
            and _full(_DNS_SUBDOMAIN, gateway) and (gw_ns == "" or _full(_DNS_LABEL, gw_ns))
            and (section == "" or _full(_DNS_SUBDOMAIN, section)) and _full(_DNS_SUBDOMAIN, name)):
        return []
    return [f"the HTTPRoute settings are invalid with deploy_route_enabled=true: expected deploy_route_hostnames as a "
            f"non-empty list (or comma-separated string) of DNS host names, a leading *. allowed (is "
            f"{_j(v.get('deploy_route_hostnames'))}); deploy_route_gateway_name as the name of an existing Gateway (is "
            f'{_j(gateway)}); deploy_route_gateway_namespace "" or a namespace name (is {_j(gw_ns)}); '
            f'deploy_route_gateway_section "" or a listener name (is {_j(section)}); deploy_route_name a DNS-1123 '
            f"subdomain (is {_j(name)})"]


def _auth_errors(v: dict) -> list[str]:
    secret, user, password = (v.get("deploy_auth_secret_name"), v.get("deploy_auth_admin_username"),
                              v.get("deploy_auth_admin_password"))
    if (_full(_DNS_SUBDOMAIN, secret) and _full(re.compile(r"[^\s:]+"), user) and isinstance(password, str)
            and (len(password) == 0 or len(password) >= 12)):
        return []
    return [f"the basic-auth settings are invalid with deploy_auth_enabled=true: expected deploy_auth_secret_name as a "
            f"DNS-1123 subdomain (is {_j(secret)}), deploy_auth_admin_username without spaces or ':' (is {_j(user)}) "
            f'and deploy_auth_admin_password "" (an existing Secret) or at least 12 characters (value hidden)']


def errors(variables: dict, derived: dict | None = None) -> list[str]:
    """Every problem with the deploy role's ``variables`` (``deploy_*`` as given), one message each; [] when none.

    ``derived``: the role's derived forms (:data:`DERIVED` names them), as ``vars/main.yml`` computes them.
    """
    v = dict(variables or {})
    d = {**DERIVED, **(derived or {})}
    return (_image_errors(v) + _number_errors(v) + _name_errors(v) + _store_errors(v, d) + _host_errors(v, d)
            + _exposure_errors(v, d))
