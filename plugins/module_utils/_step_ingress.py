# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the ingress step of the verify role: the Ingresses (networking.k8s.io/v1) that route to the MLflow
Service, judged against what the server needs.

Per Ingress: the backend port is a port of the Service; the path fits the server's static prefix; each host is in
the server's allowed hosts (MLflow >= 3.5); the ingress-nginx annotations let uploads of
``verify_ingress_min_body_size`` through and wait as long as the server's worker timeout (``_mlflow_rules``:
the annotation names, ingress-nginx's defaults and the proxy rule deploy uses); the TLS Secret exists, is a
``kubernetes.io/tls`` Secret, covers the hosts and does not expire within ``verify_tls_min_days``.

Secrets are handed in reduced to ``{type, crt}`` (the certificate only; never the key).
"""

from __future__ import annotations

import base64
import sys
from datetime import datetime, timedelta, timezone

from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R
from ansible_collections.asgard.mlflow.plugins.module_utils import _step_settings as S
from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._proxy_fit import needed_timeout, path_fits, refused_hosts
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError, helm_release, obj, objs, parse_time

TLS_SECRET_TYPE = "kubernetes.io/tls"
BODY_ANNOTATION = R.INGRESS_NGINX_ANNOTATION_PREFIX + "proxy-body-size"
TIMEOUT_ANNOTATIONS = tuple(R.INGRESS_NGINX_ANNOTATION_PREFIX + k for k in ("proxy-read-timeout", "proxy-send-timeout"))
REWRITE_ANNOTATION = R.INGRESS_NGINX_ANNOTATION_PREFIX + "rewrite-target"


def routes_to(ing: dict, service: str) -> bool:
    """True when a rule path or the defaultBackend of the Ingress names the Service."""
    return any((b.get("service") or {}).get("name") == service for _rule, _path, b in _backends(ing))


def selected(ingresses, service: str, ingress_name: str = "") -> list[dict]:
    """The Ingresses the step judges: the one named ``ingress_name``, else those that route to the Service."""
    items = objs(ingresses, "ingresses")
    if ingress_name:
        return [i for i in items if (i.get("metadata") or {}).get("name") == ingress_name]
    return [i for i in items if routes_to(i, service)]


def tls_secret_names(ingresses) -> list[str]:
    """The TLS Secrets the Ingresses name (sorted, once each)."""
    return sorted({e.get("secretName") for i in ingresses for e in (i.get("spec") or {}).get("tls") or []
                   if e.get("secretName")})


def helm_managed(ing: dict) -> str | None:
    """The Helm release of a Helm-managed Ingress ("unknown" when nothing names it), else None."""
    release = helm_release(ing)
    return None if release is None else (release or "unknown")


def secret_summary(secret: dict | None) -> dict | None:
    """What the step needs of a TLS Secret: its type and certificate (the key is dropped at once)."""
    if not secret:
        return None
    data = secret.get("data") or {}
    return {"type": secret.get("type") or "", "crt": data.get("tls.crt") or ""}


def ingress_check(ingresses, service, settings, secrets=None, *, service_name: str, namespace: str = "",
                  ingress_name: str = "", min_body_size: str = "100m", min_gunicorn_timeout: int = 300,
                  tls_min_days: int = 14, read_error: str = "", secrets_error: str = "", now=None) -> dict:
    """The ingress step. ``secrets``: Secret name -> :func:`secret_summary` (None: absent); ``read_error``: why the
    Ingresses could not be listed (403), ``secrets_error``: why the TLS Secrets could not be read."""
    findings: list[dict] = []
    details: dict = {"ingresses": []}
    if read_error:
        findings.append(finding("INGRESS_NOT_READABLE", f"Ingresses not checked: {read_error}",
                                {"namespace": namespace}, step="ingress"))
        return step_result("ingress", findings, "Ingresses not readable (RBAC): not checked", details)
    chosen = selected(ingresses, service_name, ingress_name)
    if ingress_name:
        if not chosen:
            findings.append(finding("INGRESS_NOT_FOUND", f"Ingress {ingress_name} (verify_ingress_name) not found in "
                                    f"namespace {namespace or '?'}", {"ingress": ingress_name, "namespace": namespace},
                                    step="ingress"))
            return step_result("ingress", findings, f"Ingress {ingress_name} missing", details)
    if not chosen:
        return step_result("ingress", [], f"no Ingress routes to Service {service_name}: nothing to check", details)

    svc = obj(service, "service")
    now = parse_time(now) or datetime.now(timezone.utc)
    timeout = needed_timeout(settings, min_gunicorn_timeout)
    for ing in sorted(chosen, key=lambda i: (i.get("metadata") or {}).get("name") or ""):
        findings += _judge(ing, svc, settings or {}, secrets or {}, service_name=service_name, timeout=timeout,
                           min_body_size=str(min_body_size), tls_min_days=int(tls_min_days),
                           secrets_error=secrets_error, now=now, details=details)
    if secrets_error and any(d.get("tls") for d in details["ingresses"]):
        findings.append(finding("INGRESS_NOT_READABLE", f"Ingress TLS not checked: {secrets_error}",
                                {"namespace": namespace}, step="ingress"))
    names = ", ".join(d["name"] for d in details["ingresses"])
    hosts = sorted({h for d in details["ingresses"] for h in d["hosts"]})
    summary = f"Ingress {names}" + (f" ({', '.join(hosts)})" if hosts else "") + f" -> Service {service_name}"
    return step_result("ingress", findings, summary, details)


# ---------------------------------------------------------------------------------------------------- one Ingress
def _backends(ing: dict):
    """(rule, path, backend) of every rule path, and (None, None, defaultBackend)."""
    spec = ing.get("spec") or {}
    for rule in spec.get("rules") or []:
        for path in ((rule.get("http") or {}).get("paths") or []):
            yield rule, path, path.get("backend") or {}
    if spec.get("defaultBackend"):
        yield None, None, spec["defaultBackend"]


def _judge(ing: dict, svc: dict, settings: dict, secrets: dict, *, service_name: str, timeout: int,
           min_body_size: str, tls_min_days: int, secrets_error: str, now: datetime, details: dict) -> list[dict]:
    meta = ing.get("metadata") or {}
    name = meta.get("name") or "?"
    ann = meta.get("annotations") or {}
    spec = ing.get("spec") or {}
    hosts = sorted({r.get("host") for r in spec.get("rules") or [] if r.get("host")})
    out: list[dict] = []
    d = {"name": name, "hosts": hosts, "class": spec.get("ingressClassName") or ann.get("kubernetes.io/ingress.class"),
         "helm_release": helm_managed(ing),
         # the annotations verify may patch, as they are (None: not set): what a rollback restores
         "proxy_annotations": {a: ann.get(a) for a in (BODY_ANNOTATION, *TIMEOUT_ANNOTATIONS)}}
    details["ingresses"].append(d)

    # backend: the Service and one of its ports
    ports = (svc.get("spec") or {}).get("ports") or []
    numbers = {p.get("port") for p in ports}
    pnames = {p.get("name") for p in ports if p.get("name")}
    bad = []
    for _rule, path, b in _backends(ing):
        s = b.get("service") or {}
        if s.get("name") != service_name:
            continue
        port = s.get("port") or {}
        ok = (port.get("number") in numbers) if "number" in port else (port.get("name") in pnames)
        if not svc or not ok:
            bad.append({"path": (path or {}).get("path", "(default backend)"), "port": port})
    if bad:
        have = ", ".join(str(p.get("port")) + (f" ({p['name']})" if p.get("name") else "") for p in ports)
        out.append(finding("INGRESS_BACKEND_MISMATCH",
                           f"Ingress {name} routes to Service {service_name} port "
                           f"{', '.join(str(x['port'].get('number') or x['port'].get('name')) for x in bad)}, which "
                           f"the Service does not expose (ports: {have or 'none' if svc else 'Service missing'})",
                           {"ingress": name, "backends": bad, "service_ports": sorted(p for p in numbers if p)},
                           step="ingress"))

    # path vs the static prefix (a rewrite-target rewrites it: not judged)
    prefix = S.static_prefix(settings)
    d["static_prefix"] = prefix or None
    if REWRITE_ANNOTATION not in ann:
        wrong = sorted({(p or {}).get("path") or "/" for _r, p, b in _backends(ing)
                        if p is not None and (b.get("service") or {}).get("name") == service_name
                        and not path_fits((p or {}).get("path") or "/", prefix)})
        if wrong:
            want = f"{prefix} (the server's --static-prefix)" if prefix else "/ (the server runs without a static prefix)"
            out.append(finding("INGRESS_PATH_MISMATCH",
                               f"Ingress {name} path {', '.join(wrong)} does not fit the server: expected {want}; "
                               "the dashboard answers 404 through it",
                               {"ingress": name, "paths": wrong, "static_prefix": prefix or None}, step="ingress"))

    # hosts vs the allowed hosts (MLflow >= 3.5 with the host check on)
    refused = refused_hosts(settings, hosts)
    if refused:
        out.append(finding("INGRESS_HOST_NOT_ALLOWED",
                           f"Ingress {name} host {', '.join(refused)} is not in the server's allowed hosts: MLflow "
                           "answers 403 Invalid Host header through the Ingress",
                           {"ingress": name, "hosts": refused,
                            "allowed_hosts": settings.get("allowed_hosts")}, step="ingress"))

    # ingress-nginx annotations: body size and timeouts
    body = ann.get(BODY_ANNOTATION, R.INGRESS_NGINX_DEFAULTS["proxy-body-size"])
    d["proxy_body_size"] = body
    if not R.body_size_allows(body, min_body_size):
        out.append(finding("INGRESS_BODY_TOO_SMALL",
                           f"Ingress {name} lets uploads of at most {body} through ({BODY_ANNOTATION}"
                           f"{'' if BODY_ANNOTATION in ann else ', not set: ingress-nginx default'}), below "
                           f"verify_ingress_min_body_size {min_body_size} ('0' = no limit): larger artifact uploads "
                           "get 413", {"ingress": name, "annotation": BODY_ANNOTATION, "value": body,
                                       "set": BODY_ANNOTATION in ann, "wanted": min_body_size,
                                       "helm_release": d["helm_release"]}, step="ingress"))
    short = {}
    for a in TIMEOUT_ANNOTATIONS:
        v = _seconds(ann.get(a), int(R.INGRESS_NGINX_DEFAULTS[a.rsplit("/", 1)[1]]))
        d[a.rsplit("/", 1)[1].replace("-", "_")] = v
        if v < timeout:
            short[a] = v
    if short:
        out.append(finding("INGRESS_TIMEOUT_TOO_SHORT",
                           f"Ingress {name} waits {_fmt_timeouts(short)} for the server, below its worker timeout {timeout}s: longer requests get 504",
                           {"ingress": name, "annotations": short, "wanted": timeout,
                            "helm_release": d["helm_release"]}, step="ingress"))

    # TLS
    out += _tls(name, spec.get("tls") or [], secrets, secrets_error, tls_min_days, now, d)
    return out


def _fmt_timeouts(short: dict) -> str:
    return ", ".join(f"{k.rsplit('/', 1)[1]} {v}s" for k, v in short.items())


def _seconds(value, default: int) -> int:
    try:
        return int(str(value).strip()) if value is not None else default
    except ValueError:
        return default  # ingress-nginx ignores a value it cannot parse


def _tls(name: str, entries: list, secrets: dict, secrets_error: str, min_days: int, now: datetime,
         d: dict) -> list[dict]:
    out: list[dict] = []
    d["tls"] = []
    for e in entries:
        sname, hosts = e.get("secretName") or "", list(e.get("hosts") or [])
        d["tls"].append({"secret": sname, "hosts": hosts})
        if not sname:
            out.append(finding("INGRESS_TLS_MISSING", f"Ingress {name} TLS for {', '.join(hosts) or 'its hosts'} "
                               "names no Secret: the controller serves its default certificate",
                               {"ingress": name, "hosts": hosts}, step="ingress"))
            continue
        if secrets_error:
            d["tls"][-1]["checked"] = False
            continue
        sec = secrets.get(sname)
        if sec is None or sec.get("type") != TLS_SECRET_TYPE:
            why = "does not exist" if sec is None else f"is of type {sec.get('type') or 'Opaque'}, not {TLS_SECRET_TYPE}"
            out.append(finding("INGRESS_TLS_MISSING", f"Ingress {name} TLS Secret {sname} {why}: the controller "
                               "serves its default certificate", {"ingress": name, "secret": sname, "hosts": hosts},
                               step="ingress"))
            continue
        cert = _certificate(sec.get("crt") or "")
        if cert is None:
            out.append(finding("INGRESS_TLS_MISSING", f"Ingress {name} TLS Secret {sname}: tls.crt is not a PEM "
                               "certificate", {"ingress": name, "secret": sname}, step="ingress"))
            continue
        not_after, names = cert
        d["tls"][-1].update(not_after=not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), dns_names=names)
        uncovered = [h for h in hosts if not any(_dns_match(h, n) for n in names)]
        left = not_after - now
        if uncovered or left < timedelta(days=min_days):
            why = []
            if left < timedelta(0):
                why.append(f"expired on {not_after:%Y-%m-%d}")
            elif left < timedelta(days=min_days):
                why.append(f"expires on {not_after:%Y-%m-%d} ({left.days} day(s) left, verify_tls_min_days "
                           f"{min_days})")
            if uncovered:
                why.append(f"does not cover {', '.join(uncovered)} (names: {', '.join(names) or 'none'})")
            out.append(finding("INGRESS_TLS_EXPIRING", f"Ingress {name} certificate in Secret {sname} "
                               + " and ".join(why),
                               {"ingress": name, "secret": sname, "not_after": d["tls"][-1]["not_after"],
                                "days_left": left.days, "uncovered": uncovered, "dns_names": names},
                               step="ingress", severity="critical" if left < timedelta(0) else None))
    return out


def _certificate(crt_b64: str):
    """(notAfter, DNS names) of the first certificate of a Secret's base64 tls.crt; None when it is not one.
    Without the Python library cryptography nothing can be read: VerifyError (not a finding about the Secret)."""
    try:
        from cryptography import x509
    except ImportError as exc:
        raise VerifyError("verify reads Ingress TLS certificates with the Python library cryptography (>= 42, in the "
                          f"collection's requirements.txt), which is not installed for {sys.executable}: install "
                          "it there, or point ansible_python_interpreter at a Python that has it") from exc
    try:
        pem = base64.b64decode(crt_b64, validate=False)
        cert = x509.load_pem_x509_certificate(pem)
    except Exception:  # pylint: disable=broad-except  # any decoding/parsing failure: not a certificate
        return None
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return cert.not_valid_after_utc, [str(n) for n in names]


def _dns_match(host: str, name: str) -> bool:
    """RFC 6125: a wildcard stands for exactly one left-most label."""
    host, name = host.lower().rstrip("."), name.lower().rstrip(".")
    if name.startswith("*."):
        return "." in host and host.split(".", 1)[1] == name[2:]
    return host == name
