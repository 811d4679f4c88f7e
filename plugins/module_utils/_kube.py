# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a small Kubernetes API facade (the boundary tests may fake): reads, and the Lease writes of _lease.

The module builds the ``kubernetes`` ApiClient with kubernetes.core's own code
(``k8s.client.get_api_client``: same options, same K8S_AUTH_* env vars, same KUBECONFIG
handling), then wraps it here. Plain GETs go through ``ApiClient.param_serialize`` /
``call_api`` exactly like the dynamic client's ``request`` (no discovery round trips);
the portforward WebSocket gets the same URL, auth and impersonation headers, TLS and proxy settings.

This file is also copied next to the background forwarder, so Ansible and kubernetes.core imports stay
inside the functions that need them (``kube_argspec``, ``kube_module``, ``api_from_module``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import ssl
from urllib.parse import urlparse

from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import (
    PortForwardTunnel,
    WSRequest,
    ws_url,
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class KubeError(Exception):
    """An API request failed. ``status`` is the HTTP status, None when the server was not reached."""

    def __init__(self, message: str, status: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def transient(self) -> bool:
        if self.reason == "TLSError":  # a wrong CA or certificate does not heal by retrying
            return False
        return self.status is None or self.status == 429 or self.status >= 500


def _is_tls_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a TLS handshake/verification failure."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
        exc = exc if isinstance(exc, BaseException) else None
        seen += 1
    return False


class KubeAPI:
    """GETs on namespaces, services and pods, and portforward tunnels, over one ``kubernetes`` ApiClient."""

    def __init__(self, api_client, timeout: float = 10.0):
        self.api_client = api_client
        self.timeout = timeout
        self.requests = 0
        self.k8s = None  # kubernetes.core's K8SClient when built by api_from_module (for its waiters)

    # ------------------------------------------------------------ REST
    def _serialize(self, method: str, path: str, query=None, body=None):
        return self.api_client.param_serialize(
            method, path, query_params=list(query or []),
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body, auth_settings=["BearerToken"])

    def get_text(self, path: str, query=None, accept: str = "application/json") -> str:
        """GET ``path``; the body as text. Raises KubeError (with the API's status and reason) on failure."""
        return self._call("GET", path, query, accept=accept)

    def send(self, method: str, path: str, body, content_type: str = "application/json", query=None) -> dict:
        """``method`` (POST, PUT, PATCH) ``path`` with a JSON ``body``; the answer as a dict. Raises KubeError; a 409
        is KubeError(status=409): reason ``AlreadyExists`` for a POST, ``Conflict`` for a PUT whose
        metadata.resourceVersion is not the current one."""
        text = self._call(method, path, query, body=body, content_type=content_type)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise KubeError(f"{method} {path}: answer is not JSON", status=200) from exc

    def _call(self, method: str, path: str, query=None, accept: str = "application/json", body=None,
              content_type: str = "application/json") -> str:
        """One request; the body of a 2xx answer as text. Raises KubeError (with the API's status and reason)."""
        method, url, headers, sbody, post = self._serialize(method, path, query, body)
        headers["Accept"] = accept
        headers["Content-Type"] = content_type
        self.requests += 1
        try:
            resp = self.api_client.call_api(method, url, header_params=headers, body=sbody, post_params=post,
                                            _request_timeout=self.timeout)
            data = resp.read()
        except Exception as exc:  # noqa: BLE001 - urllib3/ApiException/SSL: the API server was not reached
            status = getattr(exc, "status", None) or None
            raise KubeError(f"{method} {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", status=status,
                            reason="TLSError" if _is_tls_error(exc) else "") from exc
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        if not 200 <= resp.status <= 299:
            reason = ""
            message = text[:300]
            try:
                st = json.loads(text)
                reason = st.get("reason", "")
                message = st.get("message", message)
            except ValueError:
                pass
            raise KubeError(f"{method} {path}: HTTP {resp.status}: {message}", status=resp.status, reason=reason)
        return text

    def get(self, path: str, query=None) -> dict:
        text = self.get_text(path, query)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise KubeError(f"GET {path}: answer is not JSON", status=200) from exc

    def watch(self, path: str, query=None, timeout: float = 30.0):
        """Watch events (``{type, object}``) of a collection ``path`` with ``query`` (``watch=1``,
        ``timeoutSeconds``, ``resourceVersion`` ...), yielded as they arrive. Raises KubeError on failure."""
        method, url, headers, body, post = self._serialize("GET", path, query)
        self.requests += 1
        try:
            resp = self.api_client.call_api(method, url, header_params=headers, body=body, post_params=post,
                                            _request_timeout=(self.timeout, timeout))
        except Exception as exc:  # noqa: BLE001 - urllib3/ApiException/SSL
            raise KubeError(f"GET {path} (watch): {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                            status=getattr(exc, "status", None) or None) from exc
        raw = resp.response
        try:
            if not 200 <= resp.status <= 299:
                raise KubeError(f"GET {path} (watch): HTTP {resp.status}", status=resp.status)
            chunks = raw.read_chunked() if getattr(raw, "chunked", False) else iter(lambda: raw.read1(65536), b"")
            buf = b""
            for chunk in chunks:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        except (OSError, ValueError) as exc:
            raise KubeError(f"GET {path} (watch): {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - urllib3 ReadTimeoutError/ProtocolError: the window ended
            if type(exc).__module__.startswith("urllib3"):
                return
            raise
        finally:
            raw.release_conn()

    def pod_log(self, namespace: str, pod: str, since_seconds: int, limit_bytes: int = 1 << 20) -> str:
        """The pod's log of the last ``since_seconds`` (text), at most ``limit_bytes``."""
        return self.get_text(f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                             [("sinceSeconds", str(since_seconds)), ("limitBytes", str(limit_bytes))],
                             accept="text/plain")

    def get_namespace(self, name: str) -> dict:
        return self.get(f"/api/v1/namespaces/{name}")

    def get_service(self, namespace: str, name: str) -> dict:
        return self.get(f"/api/v1/namespaces/{namespace}/services/{name}")

    def get_pod(self, namespace: str, name: str) -> dict:
        return self.get(f"/api/v1/namespaces/{namespace}/pods/{name}")

    def list_pods(self, namespace: str, label_selector: str) -> list[dict]:
        return self.get(f"/api/v1/namespaces/{namespace}/pods", [("labelSelector", label_selector)]).get("items") or []

    # ------------------------------------------------------------ WebSocket
    def portforward_request(self, namespace: str, pod: str, port: int) -> WSRequest:
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/portforward"
        _m, url, headers, _b, _p = self._serialize("GET", path, [("ports", str(port))])
        cfg = self.api_client.configuration
        sslopt: dict = {}
        if url.startswith("https://"):
            if cfg.verify_ssl:
                sslopt = {"cert_reqs": ssl.CERT_REQUIRED}
                if cfg.ssl_ca_cert:
                    sslopt["ca_certs"] = cfg.ssl_ca_cert
                else:
                    try:
                        import certifi

                        sslopt["ca_certs"] = certifi.where()
                    except ImportError:
                        pass
                if cfg.assert_hostname is not None:
                    sslopt["check_hostname"] = cfg.assert_hostname
            else:
                sslopt = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
            if cfg.cert_file:
                sslopt["certfile"] = cfg.cert_file
            if cfg.key_file:
                sslopt["keyfile"] = cfg.key_file
            if getattr(cfg, "tls_server_name", None):
                sslopt["server_hostname"] = cfg.tls_server_name
        proxy: dict = {}
        if cfg.proxy:
            p = urlparse(cfg.proxy)
            proxy.update(http_proxy_host=p.hostname, http_proxy_port=p.port, proxy_type="http")
            if p.username:
                proxy["http_proxy_auth"] = (p.username, p.password or "")
        if getattr(cfg, "no_proxy", None):
            proxy["http_no_proxy"] = cfg.no_proxy.split(",")
        for key, value in (cfg.proxy_headers or {}).items():
            if key.lower() == "proxy-authorization" and value.startswith("Basic "):
                import base64

                user, _sep, pw = base64.b64decode(value.split()[1]).decode().partition(":")
                proxy["http_proxy_auth"] = (user, pw)
        return WSRequest(url=ws_url(url), headers=dict(headers), sslopt=sslopt, proxy=proxy)

    def open_portforward(self, namespace: str, pod: str, port: int, timeout: float = 10.0) -> PortForwardTunnel:
        self.requests += 1
        return PortForwardTunnel(self.portforward_request(namespace, pod, port), port, timeout=timeout)

    # ------------------------------------------------------------ hand-over to the forwarder
    def snapshot(self) -> dict:
        """Connection settings for a process that cannot import kubernetes.core.

        Contains credentials: hand it over through a pipe only, never a file or argv.
        Certificates are inlined because kubernetes' kubeconfig loader deletes its temp files at exit.
        Tokens from exec/OIDC plugins are taken as they are now (restart the forward to refresh).
        """
        cfg = self.api_client.configuration
        _m, _u, headers, _b, _p = self._serialize("GET", "/version")

        def pem(path):
            if not path:
                return None
            with open(path, encoding="utf-8") as fh:
                return fh.read()

        return {
            "host": cfg.host, "headers": dict(headers), "verify_ssl": bool(cfg.verify_ssl),
            "assert_hostname": cfg.assert_hostname, "tls_server_name": getattr(cfg, "tls_server_name", None),
            "proxy": cfg.proxy, "no_proxy": getattr(cfg, "no_proxy", None), "proxy_headers": cfg.proxy_headers,
            "ca_pem": pem(cfg.ssl_ca_cert), "cert_pem": pem(cfg.cert_file), "key_pem": pem(cfg.key_file),
            "timeout": self.timeout,
        }

    @classmethod
    def from_snapshot(cls, snap: dict) -> KubeAPI:
        import kubernetes.client

        def memfile(name, text):
            if not text:
                return None
            fd = os.memfd_create(name, 0)
            os.write(fd, text.encode("utf-8"))
            return f"/proc/self/fd/{fd}"

        cfg = kubernetes.client.Configuration()
        cfg.host = snap["host"]
        cfg.verify_ssl = snap["verify_ssl"]
        cfg.assert_hostname = snap.get("assert_hostname")
        if snap.get("tls_server_name"):
            cfg.tls_server_name = snap["tls_server_name"]
        cfg.proxy = snap.get("proxy")
        cfg.no_proxy = snap.get("no_proxy")
        cfg.proxy_headers = snap.get("proxy_headers")
        cfg.ssl_ca_cert = memfile("ca", snap.get("ca_pem"))
        cfg.cert_file = memfile("cert", snap.get("cert_pem"))
        cfg.key_file = memfile("key", snap.get("key_pem"))
        client = kubernetes.client.ApiClient(cfg)
        for k, v in snap["headers"].items():
            if k.lower() not in ("accept", "content-type", "user-agent"):
                client.set_default_header(k, v)
        return cls(client, timeout=snap.get("timeout", 10.0))


def credentials_hint(status: int | None) -> str:
    """What to do about a 401/403 from the API server ('' for other statuses). Never includes a credential."""
    if status == 401:
        return ("the API server rejected the credentials (HTTP 401 Unauthorized): the token or client certificate "
                "is expired, revoked or invalid; refresh the kubeconfig (log in again, or re-run the exec/OIDC "
                "plugin) or give a valid api_key / client_cert")
    if status == 403:
        return ("the credentials were accepted but are not allowed to do this (HTTP 403 Forbidden): grant the "
                "missing RBAC permission to this user or service account")
    return ""


def kube_argspec(*specs: dict) -> dict:
    """kubernetes.core's auth options (doc fragment ``kubernetes.core.k8s_auth_options``) plus ``specs``.

    Everything is deep-copied, so a module may change the result. Without kubernetes.core only ``specs`` are
    returned; ``kube_module`` then fails with a clear message.
    """
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
    except ImportError:
        AUTH_ARG_SPEC = {}
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    for extra in specs:
        spec.update(copy.deepcopy(extra))
    return spec


def kube_module(argument_spec: dict, validators=(), check_auth_files: bool = True, **kwargs):
    """The module object for a collection module that talks to Kubernetes (what both modules share).

    Built with kubernetes.core's ``AnsibleK8SModule`` (so KUBECONFIG / K8S_AUTH_* work as in kubernetes.core),
    check mode supported. ``validators`` are callables ``params -> [error, ...]``; with
    ``validate_auth_params`` first (unless ``check_auth_files`` is false: the caller explains a bad kubeconfig
    itself), every error is reported at once, each naming its field, before any API call.
    """
    import traceback

    from ansible.module_utils.basic import AnsibleModule

    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
    except ImportError:
        AnsibleModule(argument_spec=argument_spec, supports_check_mode=True).fail_json(
            msg="the kubernetes.core collection is required (install it with the ansible package or "
                "'ansible-galaxy collection install kubernetes.core')", exception=traceback.format_exc())
        raise  # not reached: fail_json exits
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True,
                              check_pyyaml=False, **kwargs)
    errors = validate_auth_params(module.params) if check_auth_files else []
    for validate in validators:
        errors += validate(module.params)
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)
    return module


def api_from_module(module, timeout: float = 10.0) -> KubeAPI:
    """Build the client with kubernetes.core's code from the module's auth options (and K8S_AUTH_* env)."""
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client

    try:
        k8s = get_api_client(module=module)  # may read API discovery: the first request with the credentials
    except Exception as exc:
        status = _status_of(exc)
        hint = credentials_hint(status)
        if hint:
            raise KubeError(f"connecting to the API server: {hint}", status=status) from exc
        raise
    api = KubeAPI(k8s.client.client, timeout=timeout)
    api.k8s = k8s
    return api


def api_from_auth(auth: dict, timeout: float = 15.0, retries: int = 1) -> KubeAPI:
    """The client for code without a module (the inventory plugin), from kubernetes.core option values.

    ``auth``: kubernetes.core's option names (``kubeconfig``, ``context``, ``host``, ``api_key``, ``validate_certs``,
    ``ca_cert``, ...); options left out come from ``K8S_AUTH_*`` exactly as in kubernetes.core (its own
    ``_create_auth_spec`` / ``_create_configuration`` / ``_create_headers``). Unlike ``get_api_client`` nothing is
    requested here (no API discovery, which has no timeout): the first request is the caller's, bounded by
    ``timeout`` and ``retries``. kubernetes' process-wide default Configuration is reset first, so nothing of an
    earlier connection in the same process (CA, client certificate, token) carries over to this one.
    Raises KubeError (message without credentials) when the settings cannot be loaded.
    """
    import kubernetes.client
    import kubernetes.config
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as kc

    kubernetes.client.Configuration.set_default(kubernetes.client.Configuration())
    given = {k: v for k, v in auth.items() if v is not None}
    try:
        configuration = kc._create_configuration(kc._create_auth_spec(None, **given))
        headers = kc._create_headers(None, **given)
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact

        raise KubeError(f"loading the connection settings: {type(exc).__name__}: {redact(str(exc), limit=400)}") from None
    configuration.retries = retries
    client = kubernetes.client.ApiClient(configuration)
    for header, value in headers.items():
        kc._set_header(client, header, value)
    return KubeAPI(client, timeout=timeout)


def _status_of(exc: BaseException | None) -> int | None:
    """The HTTP status of an API exception or of what caused it (kubernetes.core wraps them)."""
    seen = 0
    while exc is not None and seen < 10:
        status = getattr(exc, "status", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def validate_auth_params(params: dict) -> list[str]:
    """Errors kubernetes.core would report without naming the file (it says 'No configuration found')."""
    errors = []
    kc = params.get("kubeconfig")
    if isinstance(kc, str):
        path = os.path.expanduser(kc)
        if not os.path.isfile(path):
            errors.append(f"kubeconfig: {kc} is not a readable file (expected a kubeconfig path or a dict)")
    for name in ("ca_cert", "client_cert", "client_key"):
        v = params.get(name)
        if v and not os.path.isfile(os.path.expanduser(v)):
            errors.append(f"{name}: {v} is not a readable file")
    return errors
