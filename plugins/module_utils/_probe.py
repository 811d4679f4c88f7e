# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the MLflow probe behind ``asgard.mlflow.mlflow_probe``.

Checks (each a separate result): health, root page, version, and an API call that touches the
backend store sent with the in-cluster Host header. All HTTP goes through one portforward tunnel
(reused while the server keeps the connection alive). Transient trouble (Kubernetes API 429/5xx,
tunnel errors, the pod replaced mid-probe, MLflow 429/502/503/504) is retried with exponential
backoff inside an overall deadline; the target is re-resolved after a tunnel failure.
An unhealthy server is a result: ``ProbeInputError`` is raised only for bad input.

With an already-resolved target (``Target.hint``, option ``resolved``) no Service or pod is read: the tunnel
goes straight to the given pod; the pod is read only when the static prefix is needed and unknown, and the
Service only when the tunnel to the given pod fails (then the target is resolved as usual).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding as _catalogued
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError, credentials_hint
from ansible_collections.asgard.mlflow.plugins.module_utils._target import (
    Resolved,
    Target,
    TargetError,
    _resolved,
    resolve,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._transaction import run_transaction
from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import (
    TunnelError,
    TunnelTimeout,
    basic_auth,
    http_request,
)

CRITICAL = "critical"  # severities, codes and meanings: the one catalogue (_findings.py)
API_SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
AJAX_SEARCH = "/ajax-api/2.0/mlflow/experiments/search?max_results=1"
RETRY_HTTP = (429, 502, 503, 504)
TITLE = re.compile(rb"<title>\s*MLflow\s*</title>", re.I)
VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?([.\-+\w]*)$")
CHECKS = ("health", "root", "version", "api")


def unhealthy_message(result: dict) -> str:
    """The failure message for fail_on_unhealthy: every error finding with its code and message."""
    errs = [f for f in result.get("findings") or [] if f.get("severity") == CRITICAL]
    parts = [f"{f['code']}: {f.get('message') or f['code']}" for f in errs]
    where = f" (pod {result['pod']})" if result.get("pod") else ""
    return f"MLflow is unhealthy{where}: " + ("; ".join(parts) or "health or the root page did not answer 200")


class ProbeInputError(Exception):
    """Bad input (unknown namespace, missing service, ...): the module fails with this message."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


def finding(code: str, message: str, evidence: dict | None = None, severity: str | None = None) -> dict:
    """A finding of the catalogue (``_findings``): code, severity, step, message, evidence."""
    return _catalogued(code, message, evidence, severity=severity)


@dataclass
class ProbeOptions:
    host_header: str | None = None
    static_prefix: str = "auto"
    api_check: bool = True
    timeout: float = 10.0
    deadline: float = 60.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 5.0
    transaction: object = None  # _transaction.TransactionOptions when the deep check runs
    transaction_skip: str | None = None  # why the deep check is skipped (check mode)
    # HTTP basic auth (MLflow --app-name basic-auth) for /, /version and the API check; /health never gets it
    auth: tuple | None = field(default=None, repr=False)
    auth_source: str = ""  # where the credentials came from, for the findings (never the password)

    @classmethod
    def from_params(cls, p: dict) -> ProbeOptions:
        return cls(host_header=p.get("host_header"), static_prefix=p.get("static_prefix", "auto"),
                   api_check=p.get("api_check", True), timeout=float(p.get("timeout") or 10),
                   deadline=float(p.get("deadline") or 60), retries=int(p.get("retries") if p.get("retries") is not None else 3))


def validate_probe_params(p: dict) -> list[str]:
    errors = []
    sp = p.get("static_prefix")
    if sp not in (None, "auto", "") and not re.match(r"^/[A-Za-z0-9._~\-/]*[A-Za-z0-9._~\-]$", sp):
        errors.append(f"static_prefix: {sp!r} is not valid (expected 'auto', '' for none, or a path like '/static')")
    hh = p.get("host_header")
    if hh is not None and not re.match(r"^[A-Za-z0-9.\-_\[\]:]+$", hh):
        errors.append(f"host_header: {hh!r} is not a valid Host header (expected host or host:port)")
    for name in ("timeout", "deadline"):
        v = p.get(name)
        if v is not None and not 0 < float(v) <= 3600:
            errors.append(f"{name}: {v} is out of range (expected seconds, more than 0 and at most 3600)")
    r = p.get("retries")
    if r is not None and not 0 <= int(r) <= 20:
        errors.append(f"retries: {r} is out of range (expected an integer from 0 to 20)")
    return errors


def prefix_from_pod(resolved: Resolved) -> str | None:
    """The ``--static-prefix`` the pod's MLflow runs with (args or MLFLOW_STATIC_PREFIX), if any."""
    args = resolved.container_args
    for i, a in enumerate(args):
        for part in a.split():
            if part.startswith("--static-prefix="):
                return part.split("=", 1)[1].strip("'\"") or None
        if a == "--static-prefix" and i + 1 < len(args):
            return args[i + 1]
        m = re.search(r"--static-prefix[= ]+['\"]?(/[^\s'\"]*)", a)
        if m:
            return m.group(1)
    return resolved.container_env.get("MLFLOW_STATIC_PREFIX") or None


class _Deadline(Exception):
    pass


@dataclass
class _Session:
    """HTTP through the tunnel with retries, re-resolution and the deadline."""

    api: object
    target: Target
    opts: ProbeOptions
    sleep: object = time.sleep
    clock: object = time.monotonic
    resolved: Resolved | None = None
    tunnel: object = None
    events: list = field(default_factory=list)
    pods_seen: list = field(default_factory=list)
    tunnels_opened: int = 0

    def __post_init__(self):
        self.end = self.clock() + self.opts.deadline

    def remaining(self) -> float:
        return self.end - self.clock()

    def _backoff(self, attempt: int, why: str) -> None:
        delay = min(self.opts.max_backoff, self.opts.backoff * (2 ** attempt)) * (0.75 + random.random() / 2)
        self.events.append({"attempt": attempt + 1, "reason": why, "backoff_s": round(delay, 2)})
        if self.remaining() <= delay:
            raise _Deadline(why)
        self.sleep(delay)

    def close(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None

    hint_used: bool = False

    def ensure_resolved(self) -> Resolved:
        attempt = 0
        while self.resolved is None:
            if self.target.hint is not None and not self.hint_used:
                # the caller's pod, first and once: after a tunnel failure the target is resolved from the API
                self.hint_used = True
                self.resolved = self.target.hint
                if self.resolved.pod not in self.pods_seen:
                    self.pods_seen.append(self.resolved.pod)
                continue
            try:
                self.resolved = resolve(self.api, self.target)
            except TargetError as exc:
                if exc.bad_input or not exc.transient or attempt >= self.opts.retries:
                    raise
                self._backoff(attempt, f"{exc.code}: {exc}")
                attempt += 1
                continue
            if self.resolved.pod not in self.pods_seen:
                self.pods_seen.append(self.resolved.pod)
        return self.resolved

    def request(self, path: str, host: str, timeout: float | None = None, auth: bool = False):
        """(HTTPResult, None) or (None, finding) for one GET; ``auth``: with the options' basic-auth credentials."""
        headers = basic_auth(self.opts.auth) if auth else None
        attempt = 0
        while True:
            left = self.remaining()
            if left <= 0:
                return None, finding("TIMEOUT", f"deadline of {self.opts.deadline:g}s reached before GET {path}",
                                     {"path": path, "deadline_s": self.opts.deadline})
            per = min(timeout or self.opts.timeout, left)
            try:
                res = self.ensure_resolved()
                if self.tunnel is None:
                    self.tunnel = self.api.open_portforward(res.namespace, res.pod, res.port, timeout=per)
                    self.tunnels_opened += 1
                result = http_request(self.tunnel, "GET", path, host, headers=headers, timeout=per)
                if not result.keep_alive:
                    self.close()
                if result.status in RETRY_HTTP and attempt < self.opts.retries:
                    self._backoff(attempt, f"GET {path}: HTTP {result.status}")
                    attempt += 1
                    continue
                return result, None
            except TargetError:
                self.close()
                raise
            except TunnelTimeout as exc:
                self.close()
                if attempt >= self.opts.retries:
                    return None, finding("TIMEOUT", f"GET {path} got no complete answer within {per:.1f}s",
                                         {"path": path, "pod": self.resolved and self.resolved.pod, "error": str(exc)})
                why = f"GET {path}: {exc}"
            except (TunnelError, KubeError) as exc:
                self.close()
                status = getattr(exc, "status", None)
                if attempt >= self.opts.retries or not getattr(exc, "transient", True):
                    hint = credentials_hint(status)
                    return None, finding("TUNNEL_ERROR", f"GET {path} through the portforward tunnel failed: "
                                         + (f"{hint} ({exc})" if hint else str(exc)),
                                         {"path": path, "pod": self.resolved and self.resolved.pod,
                                          "status": status, "error": str(exc)[:500]})
                why = f"GET {path}: tunnel: {exc}"
                # pod gone / replaced / kubelet error: pick the pod again
                self.resolved = None
            try:
                self._backoff(attempt, why)
            except _Deadline:
                return None, finding("TIMEOUT", f"deadline of {self.opts.deadline:g}s reached while retrying "
                                     f"GET {path}", {"path": path, "last_error": why})
            attempt += 1


def _check(result, path: str, ok: bool, **extra) -> dict:
    out = {"path": path, "status": result.status if result else None,
           "latency_ms": result.latency_ms if result else None,
           "bytes": len(result.body) if result else 0, "ok": ok}
    out.update(extra)
    return out


def _skipped(path: str | None, why: str) -> dict:
    return {"path": path, "status": None, "latency_ms": None, "bytes": 0, "ok": None, "skipped": why}


def run_probe(api, target: Target, opts: ProbeOptions, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Probe MLflow behind ``target``; returns the module result (without ``changed``)."""
    s = _Session(api, target, opts, sleep=sleep, clock=clock)
    findings: list[dict] = []
    checks: dict = {}
    out = {"healthy": False, "pod": None, "target": target.as_dict(), "checks": checks, "mlflow_version": None,
           "server_header": None, "health_path": None, "static_prefix": None, "findings": findings}
    t0 = clock()
    try:
        try:
            res = s.ensure_resolved()
        except _Deadline as exc:
            findings.append(finding("TIMEOUT", f"deadline reached while resolving {target.describe()}",
                                    {"last_error": str(exc)}))
            return _finish(out, s, t0, clock)
        except TargetError as exc:
            findings.append(finding(exc.code, str(exc), exc.evidence))
            if exc.bad_input:
                raise ProbeInputError(str(exc), _finish(out, s, t0, clock)) from exc
            return _finish(out, s, t0, clock)
        local_host = f"localhost:{res.port}"
        _probe_checks(s, opts, target, res, local_host, out, findings)
        findings.extend(auth_finding(checks, opts))
        _transaction_check(s, opts, target, res, out, findings)
    except TargetError as exc:  # re-resolution during a check failed
        findings.append(finding(exc.code, str(exc), exc.evidence))
    finally:
        s.close()
    return _finish(out, s, t0, clock)


def spec_prefix(s: _Session, res: Resolved) -> str | None:
    """The pod spec's static prefix. For a pod given by name only (``resolved``) the pod is read once, here."""
    if not res.spec_known and res.given_prefix is not None:
        return res.given_prefix or None
    if not res.spec_known:
        try:
            full = _resolved(s.api.get_pod(res.namespace, res.pod), res.port, res.namespace, res.service_port)
        except KubeError:
            return None  # the prefix stays unknown; /static is still tried
        res.container_args, res.container_env, res.spec_known = full.container_args, full.container_env, True
        res.uid, res.pod_ip = res.uid or full.uid, res.pod_ip or full.pod_ip
    return prefix_from_pod(res)


def _probe_checks(s: _Session, opts: ProbeOptions, target: Target, res: Resolved, local_host: str,
                  out: dict, findings: list) -> None:
    checks = out["checks"]
    # ---- health (detect the static prefix). The pod spec's prefix is looked up only when / has no health:
    # for a pod given by name (``resolved``) that may cost one read of the pod.
    if opts.static_prefix == "auto":
        candidates = [""]
    elif opts.static_prefix == "":
        candidates = [""]
    else:
        candidates = [opts.static_prefix.rstrip("/"), ""]
    tried = []
    health = None
    prefix = None
    for cand in candidates:
        if cand is None:  # auto, / answered 404: the spec's prefix, then /static
            spec = spec_prefix(s, res)
            candidates += [p for p in dict.fromkeys([spec, "/static"]) if p]
            continue
        path = f"{cand}/health"
        r, f = s.request(path, local_host)
        if f:
            findings.append(f)
            checks["health"] = _check(None, path, False, tried=tried + [{"path": path, "error": f["message"]}])
            for name in ("root", "version", "api"):
                checks[name] = _skipped(None, "health check could not reach the server")
            return
        tried.append({"path": path, "status": r.status})
        health, prefix = r, cand
        if r.status != 404:
            break
        if opts.static_prefix == "auto" and cand == "":
            candidates.append(None)
    hpath = f"{prefix}/health"
    h_ok = health.status == 200
    checks["health"] = _check(health, hpath, h_ok, body=health.text[:200].strip(), tried=tried)
    out["server_header"] = health.header("server")
    if h_ok:
        out["health_path"] = hpath
        out["static_prefix"] = prefix
        if prefix:
            findings.append(finding("HEALTH_UNDER_PREFIX", f"health is served under the static prefix: {hpath}",
                                    {"static_prefix": prefix, "tried": tried}))
    else:
        findings.append(finding("HEALTH_FAILED", f"no health endpoint answered 200 (tried "
                                f"{', '.join(t['path'] + ' ' + str(t['status']) for t in tried)})",
                                {"tried": tried, "status": health.status, "body": health.text[:300]}))
        prefix = spec_prefix(s, res) if opts.static_prefix == "auto" else (opts.static_prefix or "")
        prefix = (prefix or "").rstrip("/")
        out["static_prefix"] = prefix or None
    pfx = prefix or ""

    # ---- root page: what a user opens
    r, f = s.request("/", local_host, auth=True)
    if f:
        findings.append(f)
        checks["root"] = _check(None, "/", False, title_found=False)
    else:
        title = bool(TITLE.search(r.body))
        checks["root"] = _check(r, "/", r.status == 200 and title, title_found=title)
        if r.status == 404:
            ev = {"status": 404, "path": "/"}
            if pfx:
                r2, _f2 = s.request(f"{pfx}/", local_host, auth=True)
                if r2 is not None:
                    ev.update(ui_path=f"{pfx}/", ui_status=r2.status, ui_title_found=bool(TITLE.search(r2.body)))
            findings.append(finding("ROOT_NOT_FOUND", "GET / answers 404" + (
                f": the UI is served under the static prefix {pfx}/" if pfx else ""), ev))
        elif r.status == 200 and not title:
            findings.append(finding("ROOT_NO_TITLE", "GET / answers 200 without <title>MLflow</title>",
                                    {"content_type": r.header("content-type"), "head": r.text[:200]}))
        elif r.status not in (200, 401):  # 401: AUTH_REQUIRED / AUTH_REJECTED (auth_finding)
            findings.append(finding("ROOT_FAILED", f"GET / answers {r.status}",
                                    {"status": r.status, "body": r.text[:300]}))
        out["server_header"] = out["server_header"] or r.header("server")

    # ---- version
    # health answered under the prefix (MLflow >= 3.7): /version is there too, ask there first (one request less,
    # and one tunnel less against gunicorn, which closes every connection)
    vpaths = ([f"{pfx}/version", "/version"] if out["health_path"] and pfx else
              ["/version"] + ([f"{pfx}/version"] if pfx else []))
    vres, vpath, vf = None, vpaths[0], None
    for vp in vpaths:
        vres, vf = s.request(vp, local_host, auth=True)
        vpath = vp
        if vf or vres.status != 404:
            break
    if vf:
        findings.append(vf)
        checks["version"] = _check(None, vpath, False)
    else:
        text = vres.text.strip()
        v_ok = vres.status == 200 and bool(VERSION_RE.match(text))
        checks["version"] = _check(vres, vpath, v_ok, version=text if v_ok else None)
        if v_ok:
            out["mlflow_version"] = text
        elif vres.status != 401:
            findings.append(finding("VERSION_FAILED", f"GET {vpath} answers {vres.status}",
                                    {"status": vres.status, "body": text[:200], "tried": vpaths}))

    # ---- API through the backend store, with the in-cluster Host header
    if not opts.api_check:
        checks["api"] = _skipped(None, "api_check is false")
        return
    host = opts.host_header or _default_host(target, res)
    api_paths = [f"{pfx}{API_SEARCH}", f"{pfx}{AJAX_SEARCH}"]
    ares, apath, af = None, api_paths[0], None
    for ap in api_paths:
        ares, af = s.request(ap, host, auth=True)
        apath = ap
        if af or ares.status != 404:
            break
    if af:
        findings.append(af)
        checks["api"] = _check(None, apath, False, host_header=host)
        return
    ok = ares.status == 200
    checks["api"] = _check(ares, apath, ok, host_header=host)
    if ares.status == 403 and "invalid host header" in ares.text.lower():
        findings.append(finding("INVALID_HOST", f"MLflow rejects Host {host!r} with 403 'Invalid Host header': "
                                "set --allowed-hosts / MLFLOW_SERVER_ALLOWED_HOSTS to include it",
                                {"host_header": host, "status": 403, "path": apath, "body": ares.text[:200]}))
    elif not ok and ares.status != 401:
        findings.append(finding("API_FAILED", f"GET {apath} answers {ares.status}",
                                {"host_header": host, "status": ares.status, "body": ares.text[:300]}))


def auth_finding(checks: dict, opts: ProbeOptions) -> list[dict]:
    """One finding for every check that answered 401: AUTH_REJECTED when credentials were sent, AUTH_REQUIRED when
    none were (MLflow --app-name basic-auth). Neither says the server is broken: a restart cannot help."""
    paths = [c["path"] for name in ("root", "version", "api") for c in [checks.get(name) or {}]
             if c.get("status") == 401]
    if not paths:
        return []
    ev = {"status": 401, "paths": paths}
    if opts.auth:
        src = opts.auth_source or "the options"
        ev.update(username=opts.auth[0], source=src,
                  next_step=f"check user {opts.auth[0]!r} and its password from {src}; MLflow keeps the admin password "
                            "in its auth database from its first start: a Secret changed later does not change it")
        return [finding("AUTH_REJECTED", f"MLflow refuses the credentials of user {opts.auth[0]!r} from "
                        f"{src}: HTTP 401 on {', '.join(paths)}", ev)]
    return [finding("AUTH_REQUIRED", f"MLflow asks for credentials (HTTP 401 on {', '.join(paths)}; "
                    "--app-name basic-auth) and none were given: the dashboard and the API were not checked", ev)]


# ---------------------------------------------------------------- deep check (transaction: true)


def _transaction_check(s: _Session, opts: ProbeOptions, target: Target, res: Resolved, out: dict,
                       findings: list) -> None:
    if opts.transaction is None:
        return
    why = opts.transaction_skip
    if not why and not out["checks"].get("health", {}).get("ok"):
        why = "the health check failed"
    if not why and any(f["code"] == "INVALID_HOST" for f in findings):
        why = "MLflow rejects the Host header (INVALID_HOST)"
    if why:
        out["transaction"] = {"ok": None, "skipped": why}
        findings.append(finding("TRANSACTION_SKIPPED", f"deep check skipped: {why}", {"reason": why}))
        return
    host = opts.host_header or _default_host(target, res)
    out["transaction"], found = run_transaction(s, host, out.get("static_prefix") or "", opts.transaction)
    findings.extend(found)


def _default_host(target: Target, res: Resolved) -> str:
    svc = target.service or "mlflow-service"
    port = res.service_port or res.port
    return f"{svc}.{target.namespace}.svc.cluster.local:{port}"


def _finish(out: dict, s: _Session, t0: float, clock) -> dict:
    if s.resolved is not None:
        res = s.resolved
        out["pod"] = res.pod
        known = (prefix_from_pod(res) or "") if res.spec_known else res.given_prefix
        out["resolved"] = res.as_dict(static_prefix=known)
    if len(s.pods_seen) > 1:
        out["findings"].append(finding("POD_REPLACED", f"the pod changed during the probe: {' -> '.join(s.pods_seen)}",
                                       {"pods": list(s.pods_seen)}))
    if s.events:
        out["findings"].append(finding("RETRIED", f"{len(s.events)} transient failure(s) retried",
                                       {"retries": s.events}))
    for name in CHECKS:
        out["checks"].setdefault(name, _skipped(None, "not reached"))
    checks = out["checks"]
    out["healthy"] = (bool(checks["health"].get("ok")) and bool(checks["root"].get("ok"))
                      and (checks["api"].get("ok") is not False)
                      and not any(f["severity"] == CRITICAL for f in out["findings"]))
    out["pods_seen"] = list(s.pods_seen)
    out["tunnels_opened"] = s.tunnels_opened
    out["api_requests"] = getattr(s.api, "requests", None)
    out["elapsed_ms"] = round((clock() - t0) * 1000.0, 1)
    return out
