# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what MLflow's tracking server does, written once (the settings parser, the patch and deploy roles and
the verify checks read it from here).

Facts (shared/reference/mlflow-server-facts.md, mlflow/cli/__init__.py, mlflow/server/__init__.py):

- ``mlflow server`` options and their click environment variables (:data:`SERVER_OPTIONS`); a flag wins over
  its variable, an empty variable counts as unset.
- MLflow >= 3.3 runs uvicorn unless ``--gunicorn-opts`` is given (even empty) or ``MLFLOW_GUNICORN_OPTS`` is
  non-empty; older versions always run gunicorn (:func:`server_kind`).
- The Host header check (``--allowed-hosts``) exists from 3.5 (:func:`host_check_applies`).
- The health endpoint is ``{prefix}/health`` from 3.7, ``/health`` before (:func:`health_path`).
- mlflow's own ``--workers`` (default 4) overrides a ``--workers`` inside the server options.
- An image tag such as ``v3.17.2`` names the version (:func:`version_from_image`); an unknown version is treated
  as the newest (:data:`ASSUMED_VERSION`).

Pure Python. Also copied next to the background port forwarder (``_forwarder.RUNTIME_MODULES``).
"""

from __future__ import annotations

import fnmatch
import re

from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError

# --------------------------------------------------------------------------------------------------
# What `mlflow server` accepts (mlflow/cli/__init__.py, mlflow/utils/cli_args.py)
# --------------------------------------------------------------------------------------------------
# name -> (long flags, short flags, env var, takes a value)
SERVER_OPTIONS = {
    "backend_store_uri": (("--backend-store-uri",), (), "MLFLOW_BACKEND_STORE_URI", True),
    "read_replica_backend_store_uri": (
        ("--read-replica-backend-store-uri",),
        (),
        "MLFLOW_READ_REPLICA_BACKEND_STORE_URI",
        True,
    ),
    "registry_store_uri": (("--registry-store-uri",), (), "MLFLOW_REGISTRY_STORE_URI", True),
    "default_artifact_root": (("--default-artifact-root",), (), "MLFLOW_DEFAULT_ARTIFACT_ROOT", True),
    "serve_artifacts": (("--serve-artifacts", "--no-serve-artifacts"), (), "MLFLOW_SERVE_ARTIFACTS", False),
    "artifacts_only": (("--artifacts-only",), (), "MLFLOW_ARTIFACTS_ONLY", False),
    "artifacts_destination": (("--artifacts-destination",), (), "MLFLOW_ARTIFACTS_DESTINATION", True),
    "host": (("--host",), ("-h",), "MLFLOW_HOST", True),
    "port": (("--port",), ("-p",), "MLFLOW_PORT", True),
    "workers": (("--workers",), ("-w",), "MLFLOW_WORKERS", True),
    "static_prefix": (("--static-prefix",), (), "MLFLOW_STATIC_PREFIX", True),
    "allowed_hosts": (("--allowed-hosts",), (), "MLFLOW_SERVER_ALLOWED_HOSTS", True),
    "cors_allowed_origins": (("--cors-allowed-origins",), (), "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", True),
    "disable_security_middleware": (
        ("--disable-security-middleware",),
        (),
        "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE",
        False,
    ),
    "x_frame_options": (("--x-frame-options",), (), "MLFLOW_SERVER_X_FRAME_OPTIONS", True),
    "gunicorn_opts": (("--gunicorn-opts",), (), "MLFLOW_GUNICORN_OPTS", True),
    "waitress_opts": (("--waitress-opts",), (), None, True),
    "uvicorn_opts": (("--uvicorn-opts",), (), "MLFLOW_UVICORN_OPTS", True),
    "dev": (("--dev",), (), None, False),
    "expose_prometheus": (("--expose-prometheus",), (), "MLFLOW_EXPOSE_PROMETHEUS", True),
    "app_name": (("--app-name",), (), None, True),
    "trace_archival_config": (("--trace-archival-config",), (), "MLFLOW_TRACE_ARCHIVAL_CONFIG", True),
    "secrets_cache_ttl": (("--secrets-cache-ttl",), (), None, True),
    "secrets_cache_max_size": (("--secrets-cache-max-size",), (), None, True),
    "workspace_store_uri": (("--workspace-store-uri",), (), "MLFLOW_WORKSPACE_STORE_URI", True),
    "enable_workspaces": (("--enable-workspaces", "--disable-workspaces"), (), None, False),
}
FLAG_TO_NAME = {f: name for name, (longs, shorts, _env, _takes) in SERVER_OPTIONS.items() for f in longs + shorts}
ENV_TO_NAME = {v[2]: k for k, v in SERVER_OPTIONS.items() if v[2]}

# what `mlflow server` uses when an option is not given
DEFAULT_WORKERS = 4
DEFAULT_PORT = 5000
DEFAULT_HOST = "127.0.0.1"

# Server option strings: option -> canonical key (value-taking unless listed in *_BOOL_OPTS)
GUNICORN_OPTS = {
    "--timeout": "timeout",
    "-t": "timeout",
    "--workers": "workers",
    "-w": "workers",
    "--worker-class": "worker_class",
    "-k": "worker_class",
    "--keep-alive": "keep_alive",
    "--threads": "threads",
    "--graceful-timeout": "graceful_timeout",
    "--max-requests": "max_requests",
    "--bind": "bind",
    "-b": "bind",
    "--log-level": "log_level",
}
UVICORN_OPTS = {
    "--workers": "workers",
    "--timeout-keep-alive": "timeout_keep_alive",
    "--timeout-graceful-shutdown": "timeout_graceful_shutdown",
    "--timeout-worker-healthcheck": "timeout_worker_healthcheck",
    "--limit-concurrency": "limit_concurrency",
    "--log-level": "log_level",
    "--log-config": "log_config",
    "--host": "host",
    "--port": "port",
    "--root-path": "root_path",
}
# what the servers use when an option is not given (an absent option equal to the target is compliant)
GUNICORN_DEFAULTS = {"timeout": 30, "keep_alive": 2, "worker_class": "sync"}
UVICORN_DEFAULTS = {"timeout_keep_alive": 5}
UVICORN_BOOL_OPTS = {"--reload", "--proxy-headers", "--no-proxy-headers", "--access-log", "--no-access-log"}
GUNICORN_BOOL_OPTS = {"--preload", "--reload", "--daemon", "-D", "--capture-output", "--check-config"}
# option keys whose values are integers
INT_OPTS = (
    "timeout", "workers", "keep_alive", "threads", "timeout_keep_alive", "graceful_timeout", "max_requests",
    "timeout_graceful_shutdown", "timeout_worker_healthcheck", "limit_concurrency",
)
# Server options that do not live in the mlflow command line (checked with gunicorn 26.2 and uvicorn 0.55, the
# servers of MLflow 3.17.2): gunicorn reads GUNICORN_CMD_ARGS (an options string, shlex-split) below its command
# line; uvicorn's CLI reads UVICORN_<OPTION> (click auto_envvar_prefix) below its command line. mlflow builds
# `gunicorn <opts> -b host:port -w N app` / `uvicorn <opts> --host H --port P --workers N app`, so its own
# workers/host/port win over both (a --bind inside --gunicorn-opts ADDS a listener: gunicorn's bind appends).
GUNICORN_ENV = "GUNICORN_CMD_ARGS"
UVICORN_ENV_PREFIX = "UVICORN_"
MLFLOW_OWN_OPTS = {"gunicorn": ("workers",), "uvicorn": ("workers", "host", "port")}


def uvicorn_env(key):
    """The environment variable uvicorn reads for option ``key`` (``timeout_keep_alive`` -> ``UVICORN_TIMEOUT_KEEP_ALIVE``)."""
    return UVICORN_ENV_PREFIX + key.upper()


# --------------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------------
ASSUMED_VERSION = (3, 99, 0)  # an unknown version (digest-only or `latest` image) counts as the newest
UVICORN_DEFAULT_FROM = (3, 3, 0)
HOST_CHECK_FROM = (3, 5, 0)
HEALTH_UNDER_PREFIX_FROM = (3, 7, 0)
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def version_from_image(image):
    """``"3.17.2"`` from ``ghcr.io/mlflow/mlflow:v3.17.2``; None for digest-only, ``latest``, no tag."""
    if not image:
        return None
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.split(":", 1)[1]
    m = _VERSION_RE.match(tag)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or '0'}"


def version_tuple(version):
    """``(3, 17, 2)`` from ``"3.17.2"`` / ``"v3.17"``; None for None or ""; an error for anything else."""
    if not version:
        return None
    m = _VERSION_RE.match(str(version))
    if not m:
        raise MlflowSettingsError(
            f"mlflow_version {version!r} is not a version: give it as MAJOR.MINOR[.PATCH], e.g. 3.17.2"
        )
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def _v(version):
    return version_tuple(version) or ASSUMED_VERSION


def server_kind(version, gunicorn_opts_given=False, waitress_opts_given=False):
    """``gunicorn``, ``uvicorn`` or ``waitress``: what ``mlflow server`` of ``version`` runs."""
    if waitress_opts_given:
        return "waitress"
    if _v(version) < UVICORN_DEFAULT_FROM or gunicorn_opts_given:
        return "gunicorn"
    return "uvicorn"


def uvicorn_available(version):
    """True when ``mlflow server`` of this version can run uvicorn (3.3 and later; an unknown version counts as new)."""
    return _v(version) >= UVICORN_DEFAULT_FROM


def host_check_applies(version):
    """True when the version checks the Host header (``--allowed-hosts``); an unknown version counts as newest."""
    return _v(version) >= HOST_CHECK_FROM


def health_path(prefix, version):
    """Where the health endpoint answers: ``{prefix}/health`` from MLflow 3.7, else ``/health``."""
    if prefix and _v(version) >= HEALTH_UNDER_PREFIX_FROM:
        return prefix.rstrip("/") + "/health"
    return "/health"


# --------------------------------------------------------------------------------------------------
# Host header allow-list (MLflow >= 3.5, mlflow/server/security_utils.py)
# --------------------------------------------------------------------------------------------------
# MLflow's default loopback entries (any port), written the way its own defaults are (an IPv6 bracket escaped
# for fnmatch); the list given in --allowed-hosts / MLFLOW_SERVER_ALLOWED_HOSTS REPLACES the defaults
LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "[::1]", "[[]::1]:*")
# the private IPv4 ranges of pod IPs (RFC 1918), as fnmatch patterns: the roles' default *_allowed_hosts_pod_ranges
POD_IP_RANGES = ("10.*",) + tuple(f"172.{n}.*" for n in range(16, 32)) + ("192.168.*",)


def host_allowed(host, patterns):
    """MLflow's own test (is_allowed_host_header): ``*`` allows all; a pattern with ``*`` is an fnmatch pattern,
    any other pattern must equal the Host header."""
    if "*" in patterns:
        return True
    return any(fnmatch.fnmatch(host, p) if "*" in p else host == p for p in patterns)


def allowed_hosts(service, namespace, service_port, cluster_domain="cluster.local", ingress_hosts=(),
                  pod_ranges=POD_IP_RANGES, extra=()):
    """THE allow-list a server behind Service ``service`` needs (the deploy and patch roles both use it).

    Loopback (port-forwards), the Service's DNS names with its port (and without a port when the port is 80, as
    clients then send no port), Ingress hosts with and without a port, pod-IP ranges, and ``extra``; in that order,
    without duplicates.
    """
    port = int(service_port)
    names = [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
             f"{service}.{namespace}.svc.{cluster_domain}"]
    out = list(LOOPBACK_HOSTS)
    out += [f"{n}:{port}" for n in names]
    if port == 80:
        out += names
    for h in ingress_hosts or ():
        out += [h, f"{h}:*"]
    out += list(pod_ranges or ()) + list(extra or ())
    seen = set()
    return [h for h in out if not (h in seen or seen.add(h))]


# --------------------------------------------------------------------------------------------------
# In front of the server: an Ingress (ingress-nginx) or a Gateway API HTTPRoute
# --------------------------------------------------------------------------------------------------
# ingress-nginx's annotations and their defaults (docs/user-guide/nginx-configuration/annotations.md,
# internal/ingress/annotations/proxy/main.go): a 1 MiB body limit (413 above; "0" = no limit, as nginx's
# client_max_body_size) and 60 s between two reads/writes of the upstream (504), given as unitless seconds
INGRESS_NGINX_ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"
INGRESS_NGINX_DEFAULTS = {"proxy-body-size": "1m", "proxy-read-timeout": "60", "proxy-send-timeout": "60"}
# nginx's size syntax (ngx_parse_size): digits with an optional k/m/g suffix
_NGINX_SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")


def nginx_size_bytes(size):
    """Bytes of an nginx size (``1m`` -> 1048576); 0 for ``"0"`` (no limit); None when it is not an nginx size."""
    text = str(size).strip()
    if not _NGINX_SIZE_RE.match(text):
        return None
    unit = text[-1].lower()
    if unit in "kmg":
        return int(text[:-1]) * 1024 ** ("kmg".index(unit) + 1)
    return int(text)


def body_size_allows(limit, wanted):
    """True when an nginx body limit (``proxy-body-size``) lets an upload of ``wanted`` (an nginx size) through;
    ``"0"`` is no limit on either side (``wanted`` ``"0"``: no limit is needed)."""
    have, need = nginx_size_bytes(limit), nginx_size_bytes(wanted)
    if have == 0:
        return True
    if need == 0 or have is None or need is None:
        return False
    return have >= need


def effective_allowed_hosts(allowed_hosts):
    """The patterns MLflow checks the Host header against: its defaults for ``"default"`` (loopback, 0.0.0.0 and
    the private ranges, any port), else the list given (which replaces them)."""
    if allowed_hosts == "default":
        return list(LOOPBACK_HOSTS) + ["0.0.0.0", "0.0.0.0:*"] + list(POD_IP_RANGES) + ["fc00:*", "fd00:*"]
    return list(allowed_hosts or ())


def proxy_settings(worker_timeout, body_size="0"):
    """What an Ingress or an HTTPRoute in front of the server must allow, so that neither cuts what the server
    itself would serve: uploads of ``body_size`` (nginx syntax, ``"0"`` = no limit) and ``worker_timeout`` seconds
    of silence from the server (gunicorn's ``--timeout``).

    Returns ``ingress_nginx_annotations`` (annotation -> string value; unitless seconds as ingress-nginx parses
    them) and ``route_timeouts`` (an HTTPRoute rule's ``timeouts``, Gateway API durations).
    """
    try:
        seconds = int(worker_timeout)
    except (TypeError, ValueError):
        seconds = 0
    if seconds < 1:
        raise MlflowSettingsError(f"worker timeout {worker_timeout!r} is invalid: expected whole seconds >= 1")
    size = str(body_size).strip()
    if not _NGINX_SIZE_RE.match(size):
        raise MlflowSettingsError(f"body size {body_size!r} is invalid: expected an nginx size such as 0 (no limit), "
                                  "512k, 100m or 5g")
    p = INGRESS_NGINX_ANNOTATION_PREFIX
    return {
        "ingress_nginx_annotations": {p + "proxy-body-size": size, p + "proxy-read-timeout": str(seconds),
                                      p + "proxy-send-timeout": str(seconds)},
        "route_timeouts": {"request": f"{seconds}s", "backendRequest": f"{seconds}s"},
    }


# --------------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------------
# Kubernetes' defaults for a probe's timing fields
PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}
# the collection's probe timings on the health path: they tolerate MLflow's 5-14 s start (startup: 3 min) and a
# busy server (liveness: 2 min without an answer)
PROBE_TIMINGS = {
    "startup_probe": {"periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 90},
    "readiness_probe": {"periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 6},
    "liveness_probe": {"periodSeconds": 20, "timeoutSeconds": 10, "failureThreshold": 6},
}
