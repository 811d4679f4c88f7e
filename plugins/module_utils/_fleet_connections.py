# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the ``connections`` of the ``asgard.mlflow.mlflow_servers`` inventory plugin.

:func:`parse_connections` validates the option (every error names its field, e.g. ``connections[1].namespaces``)
and returns :class:`Connection` objects. A connection carries kubernetes.core's options the verify role also takes
(``kubeconfig``, ``context``, ``host``, ``api_key``, ``ca_cert``, ``validate_certs``; aliases ``ssl_ca_cert``,
``verify_ssl``); options it leaves out come from ``K8S_AUTH_*`` (or KUBECONFIG, or the in-cluster service
account) exactly as in kubernetes.core.

Credentials reach the hosts **by reference only** (:func:`host_references`): a kubeconfig path, a context name,
and ``api_key`` only as a template (``"{{ lookup('ansible.builtin.env', 'CLUSTER_B_TOKEN') }}"``), which the
verify role renders at run time; a literal token in the inventory source is refused. :func:`credential_summary`
names the ``K8S_AUTH_*`` variables a connection relies on, never their values.

:func:`environment_conflicts` catches what kubernetes.core would do silently with several clusters: it fills every
option a connection leaves out from ``K8S_AUTH_*``, so AWX's injected bearer token (one cluster's credential per
job) would override another connection's kubeconfig, or be sent to another connection's host.

Pure Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

AUTH_OPTIONS = ("kubeconfig", "context", "host", "api_key", "ca_cert", "validate_certs")
ALIASES = {"ssl_ca_cert": "ca_cert", "verify_ssl": "validate_certs"}
SCOPE_OPTIONS = ("namespaces", "exclude_namespaces", "label_selectors")
# kubernetes.core reads K8S_AUTH_<OPTION> or K8S_AUTH_<ALIAS> for an option that is not set (args_common.AUTH_ARG_MAP)
ENV_NAMES = {
    "kubeconfig": ("K8S_AUTH_KUBECONFIG",),
    "context": ("K8S_AUTH_CONTEXT",),
    "host": ("K8S_AUTH_HOST",),
    "api_key": ("K8S_AUTH_API_KEY",),
    "ca_cert": ("K8S_AUTH_CA_CERT", "K8S_AUTH_SSL_CA_CERT"),
    "validate_certs": ("K8S_AUTH_VALIDATE_CERTS", "K8S_AUTH_VERIFY_SSL"),
    "username": ("K8S_AUTH_USERNAME",),
    "password": ("K8S_AUTH_PASSWORD",),
    "client_cert": ("K8S_AUTH_CLIENT_CERT", "K8S_AUTH_CERT_FILE"),
    "client_key": ("K8S_AUTH_CLIENT_KEY", "K8S_AUTH_KEY_FILE"),
}
UNSUPPORTED = ("username", "password", "client_cert", "cert_file", "client_key", "key_file", "proxy", "no_proxy",
               "proxy_headers", "persist_config", "impersonate_user", "impersonate_groups")
# the verify role's variable for each option
ROLE_VARS = {"kubeconfig": "verify_kubeconfig", "context": "verify_context", "host": "verify_host",
             "api_key": "verify_api_key", "ca_cert": "verify_ca_cert", "validate_certs": "verify_validate_certs"}
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
NAMESPACE_RE = re.compile(r"^[a-z0-9*?\[\]]([-a-z0-9*?\[\]!]*[a-z0-9*?\[\]])?$")


class FleetConfigError(ValueError):
    """Bad inventory configuration; the message names the option."""


def is_template(value) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def is_vaulted(value) -> bool:
    """A vault-encrypted value (``!vault``): its clear text is never in the inventory source."""
    return any("vault" in t.__name__.lower() or t.__name__ == "EncryptedString" for t in type(value).__mro__)


@dataclass
class Connection:
    index: int
    name: str
    auth: dict = field(default_factory=dict)  # option -> value as configured (a template stays a template)
    namespaces: list = field(default_factory=list)
    exclude_namespaces: list = field(default_factory=list)
    label_selectors: list = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"connections[{self.index}]"


def _str_list(value, where: str, what: str, pattern: re.Pattern | None = None) -> list:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise FleetConfigError(f"{where}: expected a list of {what}, got {type(value).__name__} {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise FleetConfigError(f"{where}[{i}]: expected a non-empty string ({what}), got {item!r}")
        if pattern is not None and not pattern.match(item):
            raise FleetConfigError(f"{where}[{i}]: {item!r} is not {what}")
    return list(value)


def _scope(raw: dict, where: str) -> dict:
    where = f"{where}." if where else ""
    return {
        "namespaces": _str_list(raw.get("namespaces"), f"{where}namespaces",
                                "namespace names or shell patterns such as team-*", NAMESPACE_RE),
        "exclude_namespaces": _str_list(raw.get("exclude_namespaces"), f"{where}exclude_namespaces",
                                        "namespace names or shell patterns", NAMESPACE_RE),
        "label_selectors": _str_list(raw.get("label_selectors"), f"{where}label_selectors",
                                     "label selectors such as team=ml or tier!=test"),
    }


def parse_connections(raw, top: dict | None = None) -> list[Connection]:
    """Validate ``connections`` (None or [] = one connection ``default`` from the environment/KUBECONFIG).

    ``top``: the plugin's top-level ``namespaces``, ``exclude_namespaces`` and ``label_selectors``, used by a
    connection that does not set its own.
    """
    defaults = _scope(top or {}, "")  # top-level names: the plugin's options
    if raw is None or raw == []:
        raw = [{"name": "default"}]
    if not isinstance(raw, list | tuple):
        raise FleetConfigError(f"connections: expected a list of mappings, got {type(raw).__name__}")
    out: list[Connection] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        where = f"connections[{i}]"
        if not isinstance(entry, dict):
            raise FleetConfigError(f"{where}: expected a mapping with at least a name, got {type(entry).__name__}")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise FleetConfigError(f"{where}.name: expected a cluster name (letters, digits, '.', '_', '-'; at most "
                                   f"63), got {name!r}")
        if name in seen:
            raise FleetConfigError(f"{where}.name: {name!r} is already the name of connections[{seen[name]}]")
        seen[name] = i
        auth = {}
        for key, value in entry.items():
            if key in ("name", *SCOPE_OPTIONS):
                continue
            if key in UNSUPPORTED:
                raise FleetConfigError(
                    f"{where}.{key}: not supported (the verify role connects with kubeconfig, context, host, api_key, "
                    "ca_cert and validate_certs); put it in a kubeconfig file and give kubeconfig/context")
            opt = ALIASES.get(key, key)
            if opt not in AUTH_OPTIONS:
                raise FleetConfigError(f"{where}.{key}: unknown option; expected one of name, "
                                       f"{', '.join(AUTH_OPTIONS + SCOPE_OPTIONS)}")
            if opt in auth:
                raise FleetConfigError(f"{where}.{key}: given twice (as {opt} and its alias)")
            if value is None:
                continue
            auth[opt] = _auth_value(opt, value, f"{where}.{key}")
        scope = _scope(entry, where)
        conn = Connection(i, name, auth)
        for k in SCOPE_OPTIONS:
            setattr(conn, k, scope[k] if entry.get(k) is not None else defaults[k])
        out.append(conn)
    return out


def _auth_value(opt: str, value, where: str):
    if opt == "validate_certs":
        if isinstance(value, bool) or is_template(value):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise FleetConfigError(f"{where}: expected a boolean, got {value!r}")
    if opt == "kubeconfig" and isinstance(value, dict):
        raise FleetConfigError(f"{where}: give the path of a kubeconfig file; an inline kubeconfig would put its "
                               "credentials into every host's variables")
    if is_vaulted(value):
        return value
    if not isinstance(value, str) or not value.strip():
        raise FleetConfigError(f"{where}: expected a non-empty string, got {type(value).__name__}")
    if opt == "api_key" and not is_template(value):
        raise FleetConfigError(
            f"{where}: a literal token would be copied into every host's variables; give a reference instead: "
            "a template such as \"{{ lookup('ansible.builtin.env', 'CLUSTER_B_TOKEN') }}\" (an AWX credential can "
            "inject the variable), a vault-encrypted value, K8S_AUTH_API_KEY in the environment, or a kubeconfig")
    return value


def host_references(conn: Connection) -> dict:
    """The verify role's connection variables for the hosts of ``conn``: the configured values as they are
    (paths, names, templates: references), never a rendered token."""
    return {ROLE_VARS[k]: v for k, v in conn.auth.items()}


def credential_summary(conn: Connection, environ) -> dict:
    """How ``conn`` authenticates, by name only: the options it sets and the environment variables kubernetes.core
    reads for the others (``K8S_AUTH_*``, and ``KUBECONFIG`` when no kubeconfig is given)."""
    env = sorted({n for opt, names in ENV_NAMES.items() if opt not in conn.auth for n in names if environ.get(n)})
    if "kubeconfig" not in conn.auth and not any(environ.get(n) for n in ENV_NAMES["kubeconfig"]) \
            and environ.get("KUBECONFIG"):
        env.append("KUBECONFIG")
    return {"options": sorted(conn.auth), "environment": env}


def _env_has(environ, opt: str) -> bool:
    return any(environ.get(n) for n in ENV_NAMES[opt])


def _env_credentials(environ) -> bool:
    """kubernetes.core skips the kubeconfig when host AND (api_key | username+password | client cert+key) are set."""
    return _env_has(environ, "host") and (
        _env_has(environ, "api_key") or (_env_has(environ, "username") and _env_has(environ, "password"))
        or (_env_has(environ, "client_cert") and _env_has(environ, "client_key")))


def environment_conflicts(conns: list[Connection], environ) -> list[str]:
    """Errors (each naming the connection) where kubernetes.core's fallback to ``K8S_AUTH_*`` would connect a
    connection to another cluster than configured, or send one cluster's token to another."""
    errors = []
    for c in conns:
        if ("kubeconfig" in c.auth or "context" in c.auth) and "host" not in c.auth and _env_credentials(environ):
            errors.append(
                f"{c.where} ({c.name}): kubeconfig/context are set, but K8S_AUTH_HOST and a K8S_AUTH_* credential are "
                "set in the environment (an AWX Kubernetes credential?), and kubernetes.core uses those instead of "
                "the kubeconfig; give this connection host and api_key references, or remove that credential")
        if len(conns) > 1 and "host" in c.auth and "api_key" not in c.auth and "kubeconfig" not in c.auth \
                and _env_has(environ, "api_key"):
            errors.append(
                f"{c.where}.api_key ({c.name}): not set, so kubernetes.core would send K8S_AUTH_API_KEY from the "
                "environment (the credential of another connection?) to this host; give this connection its own "
                "api_key reference")
    from_env = [c for c in conns if not ({"kubeconfig", "context", "host"} & set(c.auth))]
    if len(from_env) > 1:
        names = ", ".join(f"{c.where} ({c.name})" for c in from_env)
        errors.append(f"{names} all take the cluster from the environment (K8S_AUTH_*, KUBECONFIG or in-cluster) and "
                      "would list the same cluster; give each a kubeconfig/context or host")
    return errors
