# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: requests through an Ingress endpoint, the second half of the verify role's ingress step (4c).

Per Ingress the step judged: the endpoint (``status.loadBalancer.ingress[0]`` ip or hostname, port 443 with https
when the Ingress has TLS for the host, else 80 with http; or ``verify_ingress_url`` when the operator knows better),
then three requests from where verify runs (the controller / execution node, never the port-forward), each on a new
connection with the Ingress host as Host header and, for https, as SNI:

- ``GET <path>/health`` (200 expected), ``GET <path>/`` (200 with the MLflow title), where ``<path>`` is the Ingress
  path (with ``/``: the server's static prefix for the page, the probe's health path for health);
- the body-size check, which never writes: ``POST <path>/health`` with ``Content-Length: <min size>`` and
  ``Expect: 100-continue`` and no body. nginx checks ``client_max_body_size`` against Content-Length as soon as the
  header is read and answers 413 at once; else it answers ``100 Continue`` when it starts reading the body (ingress-
  nginx buffers the request body before it proxies: ``proxy-request-buffering`` on), and the connection is closed
  there, so nothing reaches the server (nginx logs 400, no upstream).

The HTTP/1.1 exchange and the MLflow title are step 4's (``_tunnel.http_request``, ``_probe.TITLE``); this file only
adds the socket (TCP or TLS) and the judgement. A 401 is "authentication required" (info), never a broken Ingress.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._mlflow_rules import nginx_size_bytes
from ansible_collections.asgard.mlflow.plugins.module_utils._probe import TITLE
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import TunnelError, TunnelTimeout, basic_auth, http_request

_REGEX_CHARS = "([*?$^{|\\"
SETTLE_SECONDS = 5.0  # how long a 413 is asked again when the annotation allows the size


class Unreachable(Exception):
    """The endpoint did not accept a connection (refused, timeout, name not resolved)."""


@dataclass
class Endpoint:
    scheme: str  # http or https
    address: str  # ip or hostname to connect to
    port: int
    host: str  # Host header and SNI
    source: str  # "status.loadBalancer" or "verify_ingress_url"

    @property
    def url(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{addr}:{self.port}"


def parse_url(url: str) -> tuple[str, str, int] | None:
    """(scheme, address, port) of ``verify_ingress_url`` (http(s)://address[:port]); None when it is not one."""
    try:
        u = urlsplit(str(url).strip())
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or (u.path not in ("", "/")) or u.query:
        return None
    return u.scheme, u.hostname, port or (443 if u.scheme == "https" else 80)


def route(ing: dict, service: str) -> tuple[str | None, str]:
    """(host, path) of the first rule path of the Ingress that routes to the Service (the defaultBackend: no host,
    ``/``). The path is cut at its first regex character (a rewrite/regex path) and has no trailing ``/``."""
    spec = ing.get("spec") or {}
    for rule in spec.get("rules") or []:
        for p in ((rule.get("http") or {}).get("paths") or []):
            if ((p.get("backend") or {}).get("service") or {}).get("name") == service:
                path = p.get("path") or "/"
                cut = min([path.index(c) for c in _REGEX_CHARS if c in path] or [len(path)])
                return rule.get("host") or None, path[:cut].rstrip("/")
    return None, ""


def tls_for(ing: dict, host: str | None) -> bool:
    """True when the Ingress has TLS for the host (a TLS entry without hosts covers every host)."""
    for e in (ing.get("spec") or {}).get("tls") or []:
        hosts = e.get("hosts") or []
        if not hosts or (host and host in hosts):
            return True
    return False


def endpoint(ing: dict, host: str | None, url: str = "") -> Endpoint | None:
    """Where to send the requests: ``verify_ingress_url``, else the first address the controller published."""
    if url:
        scheme, address, port = parse_url(url)
        return Endpoint(scheme, address, port, host or address, "verify_ingress_url")
    lbs = (((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    for lb in lbs:
        address = lb.get("ip") or lb.get("hostname")
        if address:
            https = tls_for(ing, host)
            return Endpoint("https" if https else "http", address, 443 if https else 80, host or address,
                            "status.loadBalancer")
    return None


# ------------------------------------------------------------------------------------------------ one connection
class _Conn:
    """A TCP (or TLS) socket as the stream ``_tunnel.http_request`` reads: ``sendall`` and ``recv(n, timeout)``."""

    def __init__(self, sock):
        self.sock = sock

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int, timeout: float | None = None) -> bytes:
        self.sock.settimeout(max(timeout or 0.0, 0.001))
        try:
            return self.sock.recv(n)
        except TimeoutError as exc:
            raise TunnelTimeout("no answer before the timeout") from exc
        except OSError as exc:
            raise TunnelError(f"connection error: {exc}") from exc

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def tls_context(validate: bool, ca_cert: str = "") -> ssl.SSLContext:
    """The client TLS context: the system's CAs or ``verify_ingress_ca_cert``, host name checked; or none at all."""
    if not validate:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_cert or None)


def connect(ep: Endpoint, timeout: float, ctx: ssl.SSLContext | None) -> _Conn:
    """A new connection to the endpoint (TLS with SNI = the Ingress host). Raises Unreachable, or
    ssl.SSLCertVerificationError when the certificate is not valid for the host."""
    try:
        raw = socket.create_connection((ep.address, ep.port), timeout=timeout)
    except OSError as exc:  # refused, timed out, no route, name not resolved
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
    if ep.scheme != "https":
        return _Conn(raw)
    try:
        return _Conn(ctx.wrap_socket(raw, server_hostname=ep.host))
    except ssl.SSLCertVerificationError:
        raw.close()
        raise
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise Unreachable(f"TLS handshake failed: {exc}") from exc


def get(ep: Endpoint, path: str, *, timeout: float, ctx: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None):
    """One GET on a new connection: the ``_tunnel.HTTPResult``."""
    conn = connect(ep, timeout, ctx)
    try:
        return http_request(conn, "GET", path, ep.host, headers={"Connection": "close", **basic_auth(auth)},
                            timeout=timeout, max_body=1 << 20)
    finally:
        conn.close()


def expect_continue(ep: Endpoint, path: str, length: int, *, timeout: float, ctx: ssl.SSLContext | None = None,
                    auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """Send only the header of ``POST path`` with ``Content-Length: length`` and ``Expect: 100-continue``; return
    the status and reason of the first response (100: the body would be read; 413: too large). The body is never
    sent: the connection is closed after the first status line."""
    conn = connect(ep, timeout, ctx)
    try:
        hdrs = {"Host": ep.host, "User-Agent": "asgard.mlflow-probe/0.1", "Content-Type": "application/octet-stream",
                "Content-Length": str(length), "Expect": "100-continue", "Connection": "close", **basic_auth(auth)}
        conn.sendall((f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
                      + "\r\n").encode("latin-1"))
        end = time.monotonic() + timeout
        buf = b""
        while b"\r\n" not in buf:
            left = end - time.monotonic()
            if left <= 0:
                raise TunnelTimeout("no answer before the timeout")
            data = conn.recv(4096, timeout=left)
            if not data:
                raise TunnelError("the connection was closed without an answer")
            buf += data
        parts = buf.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise TunnelError(f"malformed HTTP response: {buf[:80]!r}")
        return int(parts[1]), (parts[2] if len(parts) > 2 else "")
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ judgement
def paths(base: str, static_prefix: str | None, health_path: str | None) -> tuple[str, str]:
    """(health path, root path) through an Ingress whose path is ``base`` ("" for ``/``)."""
    if not base:
        return health_path or "/health", f"{static_prefix or ''}/"
    if health_path and health_path.startswith(base + "/"):
        return health_path, base + "/"
    return base + "/health", base + "/"


@dataclass
class HttpOptions:
    url: str = ""
    validate_certs: bool = True
    ca_cert: str = ""
    timeout: float = 10.0
    min_body_size: str = "0"
    auth: tuple[str, str] | None = None


def check_ingress(ing: dict, detail: dict, *, service: str, static_prefix: str | None, health_path: str | None,
                  o: HttpOptions, body_finding: dict | None = None) -> list[dict]:
    """The requests through one Ingress; fills ``detail["http"]`` (endpoint, each request's status and time) and
    returns the findings. ``body_finding``: this Ingress' INGRESS_BODY_TOO_SMALL, if any (a 413 shares its patch)."""
    name = detail.get("name") or (ing.get("metadata") or {}).get("name") or "?"
    host, base = route(ing, service)
    ep = endpoint(ing, host, o.url)
    if ep is None:
        detail["http"] = {"endpoint": None, "requests": []}
        return [finding("INGRESS_NO_ENDPOINT", f"Ingress {name}: no endpoint to send requests to (no "
                        "status.loadBalancer address yet, no verify_ingress_url): not checked through the Ingress",
                        {"ingress": name}, step="ingress")]
    health, root = paths(base, static_prefix, health_path)
    http = {"endpoint": ep.url, "source": ep.source, "host": ep.host, "requests": []}
    detail["http"] = http
    out: list[dict] = []
    ctx = tls_context(o.validate_certs, o.ca_cert) if ep.scheme == "https" else None
    if ep.scheme == "https" and not o.validate_certs:
        http["certificate"] = "not verified (verify_ingress_validate_certs=false)"
    auth = o.auth
    size = nginx_size_bytes(o.min_body_size) or 0
    plan = [("health", "GET", health), ("root", "GET", root)]
    if size:
        plan.append(("upload", "POST", health))
    for check, method, path in plan:
        rec = {"check": check, "method": method, "path": path, "status": None}
        if method == "POST":
            rec["content_length"] = size
        http["requests"].append(rec)
        t0 = time.monotonic()
        try:
            try:
                rec["status"], body = _send(ep, method, path, size, o.timeout, ctx, auth)
            except ssl.SSLCertVerificationError as exc:
                out.append(finding("INGRESS_TLS_INVALID", f"Ingress {name}: the certificate {ep.url} presents for "
                                   f"{ep.host} is not valid: {exc.verify_message or exc}",
                                   {"ingress": name, "endpoint": ep.url, "host": ep.host,
                                    "error": str(exc.verify_message or exc)[:300],
                                    "ca_cert": o.ca_cert or "(system CAs)"}, step="ingress"))
                # judged anyway, without verification and without credentials (never sent to an unverified server)
                ctx, auth = tls_context(False), None
                http["certificate"] = "invalid: the requests went on without verification and without credentials"
                t0 = time.monotonic()
                rec["status"], body = _send(ep, method, path, size, o.timeout, ctx, auth)
            if rec["status"] == 413 and body_finding is None:
                # the annotation allows the size: the controller may not serve it yet (a patch of this run); ask
                # again for a few seconds before reporting a limit elsewhere
                end = time.monotonic() + SETTLE_SECONDS
                while rec["status"] == 413 and time.monotonic() < end:
                    time.sleep(0.25)
                    rec["status"], body = _send(ep, method, path, size, o.timeout, ctx, auth)
                    rec["attempts"] = rec.get("attempts", 1) + 1
        except (Unreachable, TunnelError, OSError) as exc:
            rec["ms"] = round((time.monotonic() - t0) * 1000.0, 1)
            rec["error"] = str(exc)[:300]
            timeout = isinstance(exc, TunnelTimeout)
            what = f"no answer within {o.timeout:g}s (verify_probe_timeout)" if timeout else str(exc)[:200]
            out.append(finding("INGRESS_UNREACHABLE", f"Ingress {name}: {method} {ep.url}{path} (Host {ep.host}) "
                               f"failed: {what}", {"ingress": name, "endpoint": ep.url, "source": ep.source,
                                                   "host": ep.host, "path": path, "error": str(exc)[:300],
                                                   "next_step": _unreachable_hint(ep)}, step="ingress"))
            break
        rec["ms"] = round((time.monotonic() - t0) * 1000.0, 1)
        out += _judge(check, rec, body, name=name, ep=ep, base=base, o=o, body_finding=body_finding)
    return out


def _send(ep: Endpoint, method: str, path: str, size: int, timeout: float, ctx, auth) -> tuple[int, bytes]:
    if method == "GET":
        res = get(ep, path, timeout=timeout, ctx=ctx, auth=auth)
        return res.status, res.body
    return expect_continue(ep, path, size, timeout=timeout, ctx=ctx, auth=auth)[0], b""


def _unreachable_hint(ep: Endpoint) -> str:
    if ep.source == "verify_ingress_url":
        return (f"check verify_ingress_url ({ep.url}): the ingress controller must listen there and be reachable "
                "from where verify runs")
    return (f"{ep.address} is the address the ingress controller published (status.loadBalancer); if it is not "
            "reachable from where verify runs (firewall, internal load balancer, NodePort), set verify_ingress_url "
            "to an address that is, e.g. https://lb.example.com or http://<node>:<nodePort>")


def _judge(check: str, rec: dict, body: bytes, *, name: str, ep: Endpoint, base: str, o: HttpOptions,
           body_finding: dict | None) -> list[dict]:
    status, path = rec["status"], rec["path"]
    where = f"{ep.url}{path} (Host {ep.host})"
    if status == 401:
        rec["ok"] = None
        return [finding("INGRESS_AUTH_REQUIRED", f"Ingress {name}: {rec['method']} {where} answers 401: "
                        "authentication required" + (" (the credentials were refused)" if o.auth else ""),
                        {"ingress": name, "endpoint": ep.url, "path": path, "status": 401, "check": check},
                        step="ingress")]
    if check == "health":
        rec["ok"] = status == 200
        if rec["ok"]:
            return []
        return [finding("INGRESS_HEALTH_FAILED", f"Ingress {name}: GET {where} answers {status}, not 200",
                        {"ingress": name, "endpoint": ep.url, "host": ep.host, "path": path, "status": status,
                         "body": redact(body[:200].decode("utf-8", "replace"), limit=200), "next_step": _status_hint(status, base)},
                        step="ingress")]
    if check == "root":
        title = bool(TITLE.search(body or b""))
        rec["ok"], rec["title_found"] = status == 200 and title, title
        if rec["ok"]:
            return []
        why = f"answers {status}" + ("" if status != 200 else " without <title>MLflow</title>")
        return [finding("INGRESS_ROOT_FAILED", f"Ingress {name}: GET {where} {why}: the dashboard is not served "
                        "through the Ingress", {"ingress": name, "endpoint": ep.url, "host": ep.host, "path": path,
                                                "status": status, "title_found": title,
                                                "next_step": _status_hint(status, base)}, step="ingress")]
    # upload: 100 Continue = nginx would read the body; 413 = refused for its size
    rec["ok"] = status != 413
    if status == 413:
        ev = {"ingress": name, "endpoint": ep.url, "host": ep.host, "status": 413,
              "content_length": rec.get("content_length"), "wanted": o.min_body_size}
        if body_finding:  # the annotation is too small: the same patch heals both
            ev.update(annotation=body_finding["evidence"]["annotation"], value=body_finding["evidence"]["value"],
                      helm_release=body_finding["evidence"].get("helm_release"))
        return [finding("INGRESS_UPLOAD_REFUSED", f"Ingress {name}: an upload of {o.min_body_size} "
                        f"(verify_ingress_min_body_size, Content-Length {rec.get('content_length')}) is refused with 413 "
                        f"at {ep.url}", ev, step="ingress")]
    if status != 100:
        rec["note"] = "no 100 Continue: the body size could not be judged from this answer"
    return []


def _status_hint(status: int, base: str) -> str:
    if status == 404:
        return (f"the Ingress path {base or '/'} reaches a route MLflow does not serve: make it / without "
                "--static-prefix or the prefix with one (see INGRESS_PATH_MISMATCH), or add a rewrite-target")
    if status in (502, 503):
        return "the controller has no ready backend: check the Ingress backend Service/port and the pods (steps 1, 3)"
    if status == 504:
        return "the server did not answer in time through the controller: proxy-read-timeout, server load"
    if status == 403:
        return "403 through the Ingress: the host may be missing from the server's allowed hosts (INGRESS_HOST_NOT_ALLOWED)"
    if status in (301, 302, 307, 308):
        return "the controller redirects (e.g. ssl-redirect to https): set verify_ingress_url to the https endpoint"
    return "read the ingress controller's log for this request"


# ------------------------------------------------------------------------------------------------ the step
def _one_line(d: dict) -> str:
    http = d.get("http") or {}
    if not http.get("endpoint"):
        return f"{d['name']}: no endpoint"
    reqs = ", ".join(f"{'upload' if r['check'] == 'upload' else r['path']} "
                     f"{r['status'] if r['status'] is not None else 'failed'}"
                     + (f" ({r['ms']:g} ms)" if r.get("ms") is not None else "") for r in http["requests"])
    return f"{d['name']} via {http['endpoint']}: {reqs}"


def through_ingresses(step: dict, ingresses: list, *, service: str, static_prefix: str | None,
                      health_path: str | None, o: HttpOptions) -> dict:
    """The ingress step (``_step_ingress.ingress_check``) with the requests through each Ingress it judged added:
    their findings, ``details.ingresses[].http`` and one line per Ingress in the summary."""
    details = step.get("details") or {}
    judged = details.get("ingresses") or []
    if not judged:
        return step
    by_name = {(i.get("metadata") or {}).get("name"): i for i in ingresses or []}
    findings = list(step.get("findings") or [])
    for d in judged:
        ing = by_name.get(d.get("name"))
        if ing is None:
            continue
        body = next((f for f in findings if f.get("code") == "INGRESS_BODY_TOO_SMALL"
                     and (f.get("evidence") or {}).get("ingress") == d.get("name")), None)
        findings += check_ingress(ing, d, service=service, static_prefix=static_prefix, health_path=health_path,
                                  o=o, body_finding=body)
    summary = step.get("summary", "") + "; through the Ingress: " + "; ".join(_one_line(d) for d in judged)
    return step_result("ingress", findings, summary, details)
