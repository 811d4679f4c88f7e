# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the verify role's analysis, pure Python (no Ansible, no Kubernetes client).

Each of the seed's checks becomes a function from API objects (as ``k8s_info`` / ``k8s_log`` /
``mlflow_probe`` return them) to a *step result*::

    {"step": "pods", "status": "ok|warning|failed", "summary": "...", "findings": [...], "details": {...}}

A finding is ``{"code", "severity", "step", "message", "evidence"}`` with a stable ``code`` and a
severity of ``critical`` (the server is not usable), ``warning`` (a known cause of trouble) or ``info``.
``plan()`` maps findings to remediation actions (the documented table in docs/verify.md) and
``build_report()`` / ``render_text()`` / ``render_markdown()`` turn two rounds of checks into the report.
Every string that comes from the cluster (log lines, messages) goes through ``redact()``.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

SEVERITIES = ("critical", "warning", "info")
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
STEPS = ("pods", "logs", "service", "probe")
STEP_TITLES = {
    "pods": "1. Pod status",
    "logs": "2. Log scan",
    "service": "3. Service connectivity",
    "settings": "1b. Server settings",
    "probe": "4. Health endpoint (mlflow_probe)",
    "transaction": "4b. Deep check (synthetic MLflow transaction)",
    "cleanup": "5. Port-forward clean-up",
    "port_forward": "6. Port-forward to the dashboard",
}


class VerifyError(ValueError):
    """Bad input to one of the analysis functions; the message names the field and the expected form."""


# ---------------------------------------------------------------------------------------------- helpers
_REDACTIONS = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<p>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/\s@]*:)[^@\s/]+@"), r"\g<p>***@"),
    # password=..., token: ..., api_key=..., secret=...
    (re.compile(r"(?i)(?P<p>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)\b\s*[=:]\s*)"
                r"(?P<q>['\"]?)[^\s'\",;&]+"), r"\g<p>\g<q>***"),
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"(?i)(?P<p>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<p>***"),
)


def redact(text, limit: int = 400) -> str:
    """Mask credentials in a string from the cluster and cap its length."""
    if text is None:
        return ""
    out = str(text)
    for rx, repl in _REDACTIONS:
        out = rx.sub(repl, out)
    if limit and len(out) > limit:
        out = out[: limit - 3] + "..."
    return out


def finding(code: str, severity: str, step: str, message: str, evidence: dict | None = None) -> dict:
    if severity not in SEVERITIES:
        raise VerifyError(f"finding {code}: severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    return {"code": code, "severity": severity, "step": step, "message": redact(message, 600),
            "evidence": evidence or {}}


def _status_of(findings: list[dict]) -> str:
    sev = {f.get("severity") for f in findings}
    if "critical" in sev:
        return "failed"
    if "warning" in sev:
        return "warning"
    return "ok"


def step_result(step: str, findings: list[dict], summary: str, details: dict | None = None) -> dict:
    findings = sorted(findings, key=lambda f: (_SEVERITY_RANK.get(f.get("severity"), 9), f.get("code", "")))
    return {"step": step, "title": STEP_TITLES.get(step, step), "status": _status_of(findings),
            "summary": summary, "findings": findings, "details": details or {}}


def _obj(value, field: str) -> dict:
    """Accept an API object, a k8s_info result ({resources: [...]}) or None."""
    if value is None or value == "":
        return {}
    if isinstance(value, list):
        if len(value) > 1:
            raise VerifyError(f"{field}: expected one Kubernetes object, got a list of {len(value)}")
        return _obj(value[0], field) if value else {}
    if isinstance(value, dict) and "resources" in value and "kind" not in value:
        res = value.get("resources") or []
        return res[0] if res else {}
    if not isinstance(value, dict):
        raise VerifyError(f"{field}: expected a Kubernetes object (mapping) or a k8s_info result, got {type(value).__name__}")
    return value


def _objs(value, field: str) -> list[dict]:
    """Accept a list of API objects, a k8s_info result or a List object."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        if "resources" in value:
            value = value.get("resources") or []
        elif "items" in value:
            value = value.get("items") or []
        else:
            value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise VerifyError(f"{field}: expected a list of Kubernetes objects or a k8s_info result")
    return value


def _parse_time(value) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise VerifyError(f"now: expected an ISO 8601 timestamp such as 2025-10-28T12:00:00Z, got {value!r}") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _int(value, field: str, minimum: int | None = None) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError) as exc:
        raise VerifyError(f"{field}: expected an integer, got {value!r}") from exc
    if minimum is not None and out < minimum:
        raise VerifyError(f"{field}: expected an integer >= {minimum}, got {out}")
    return out


def _condition(obj: dict, ctype: str) -> dict:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return {}


def _pick_container(spec_containers: list[dict], container: str | None) -> dict:
    if not spec_containers:
        return {}
    if container:
        for c in spec_containers:
            if c.get("name") == container:
                return c
    for c in spec_containers:
        text = " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))
        if "mlflow" in text and "server" in text:
            return c
    return spec_containers[0]


def selector_matches(selector: dict, labels: dict) -> bool:
    """A Service-style equality selector (or a Deployment matchLabels) against labels. Empty matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


# ----------------------------------------------------------------------------------------- step 1: pods
_IMAGE_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def pod_status(pods, deployment=None, *, container: str | None = None, now=None,
               restart_window_seconds: int = 3600, deployment_name: str = "", namespace: str = "") -> dict:
    """Step 1: phase, readiness, restarts, CrashLoopBackOff, OOMKilled, image pull, Pending, rollout."""
    pods = _objs(pods, "pods")
    dep = _obj(deployment, "deployment")
    now_dt = _parse_time(now) or datetime.now(UTC)
    window = _int(restart_window_seconds, "restart_window_seconds", 0)
    findings: list[dict] = []
    details: dict = {"pods": [], "rollout": {}}
    name = (dep.get("metadata") or {}).get("name") or deployment_name

    if not dep:
        findings.append(finding("DEPLOYMENT_NOT_FOUND", "critical", "pods",
                                f"Deployment {deployment_name or '?'} not found in namespace {namespace or '?'}",
                                {"deployment": deployment_name, "namespace": namespace}))
    else:
        spec = dep.get("spec") or {}
        st = dep.get("status") or {}
        meta = dep.get("metadata") or {}
        desired = _int(spec.get("replicas", 1), "deployment.spec.replicas", 0)
        ro = {
            "desired": desired,
            "replicas": st.get("replicas", 0) or 0,
            "updated": st.get("updatedReplicas", 0) or 0,
            "ready": st.get("readyReplicas", 0) or 0,
            "available": st.get("availableReplicas", 0) or 0,
            "unavailable": st.get("unavailableReplicas", 0) or 0,
            "generation": meta.get("generation"),
            "observed_generation": st.get("observedGeneration"),
        }
        progressing = _condition(dep, "Progressing")
        if desired == 0:
            ro["state"] = "scaled_to_zero"
            findings.append(finding("SCALED_TO_ZERO", "critical", "pods",
                                    f"Deployment {name} is scaled to 0 replicas", {"deployment": name}))
        elif progressing.get("reason") == "ProgressDeadlineExceeded":
            ro["state"] = "stalled"
            findings.append(finding("ROLLOUT_STALLED", "critical", "pods",
                                    f"Deployment {name} rollout exceeded its progress deadline: "
                                    f"{progressing.get('message', '')}",
                                    {"deployment": name, "reason": progressing.get("reason"),
                                     "message": redact(progressing.get("message"))}))
        elif (ro["observed_generation"] is not None and ro["generation"] is not None
              and ro["observed_generation"] < ro["generation"]) or ro["updated"] < desired \
                or ro["available"] < desired or ro["unavailable"] or ro["replicas"] > desired:
            ro["state"] = "progressing"
            findings.append(finding("ROLLOUT_INCOMPLETE", "warning", "pods",
                                    f"Deployment {name}: {ro['updated']}/{desired} updated, "
                                    f"{ro['available']}/{desired} available",
                                    {k: ro[k] for k in ("desired", "updated", "ready", "available", "unavailable")}))
        else:
            ro["state"] = "complete"
        details["rollout"] = ro

    active = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    terminating = len(pods) - len(active)
    if dep and not active and (dep.get("spec") or {}).get("replicas", 1) != 0:
        findings.append(finding("NO_PODS", "critical", "pods",
                                f"no pod of Deployment {name} exists (terminating: {terminating})",
                                {"deployment": name, "terminating": terminating}))

    for pod in active:
        findings.extend(_pod_findings(pod, container, now_dt, window, details))

    ready = sum(1 for p in details["pods"] if p["ready"])
    details["ready_pods"] = ready
    details["terminating_pods"] = terminating
    summary = f"{ready}/{len(details['pods'])} pod(s) ready"
    if details.get("rollout"):
        summary += f", rollout {details['rollout'].get('state')}"
    restarts = sum(p["restarts"] for p in details["pods"])
    if restarts:
        summary += f", {restarts} restart(s)"
    return step_result("pods", findings, summary, details)


def _pod_findings(pod: dict, container: str | None, now_dt: datetime, window: int, details: dict) -> list[dict]:
    out = []
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    st = pod.get("status") or {}
    pname = meta.get("name", "?")
    phase = st.get("phase", "Unknown")
    main = _pick_container(spec.get("containers") or [], container).get("name")
    statuses = list(st.get("initContainerStatuses") or []) + list(st.get("containerStatuses") or [])
    ready_cond = _condition(pod, "Ready")
    pod_ready = ready_cond.get("status") == "True"
    row = {"name": pname, "phase": phase, "ready": pod_ready, "restarts": 0, "reason": "",
           "node": spec.get("nodeName", ""), "ip": st.get("podIP", "")}
    details["pods"].append(row)
    blocking = False

    if phase == "Failed":
        out.append(finding("POD_FAILED", "critical", "pods",
                           f"pod {pname} failed: {st.get('reason', '')} {st.get('message', '')}".strip(),
                           {"pod": pname, "reason": st.get("reason", ""), "message": redact(st.get("message"))}))
        row["reason"] = st.get("reason", "Failed")
        return out
    if phase == "Pending":
        sched = _condition(pod, "PodScheduled")
        if sched.get("status") == "False":
            out.append(finding("POD_PENDING", "critical", "pods",
                               f"pod {pname} is Pending: {sched.get('reason', '')}: {sched.get('message', '')}",
                               {"pod": pname, "reason": sched.get("reason", ""),
                                "message": redact(sched.get("message"))}))
            row["reason"] = sched.get("reason", "Pending")
            blocking = True

    for cs in statuses:
        cname = cs.get("name")
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        rc = cs.get("restartCount", 0) or 0
        row["restarts"] += rc
        ev = {"pod": pname, "container": cname}
        reason = waiting.get("reason", "")
        if reason in _IMAGE_REASONS:
            out.append(finding("IMAGE_PULL_FAILED", "critical", "pods",
                               f"pod {pname} container {cname}: {reason}: {waiting.get('message', '')}",
                               {**ev, "reason": reason, "image": cs.get("image", ""),
                                "message": redact(waiting.get("message"))}))
            row["reason"] = reason
            blocking = True
        elif reason in _CONFIG_REASONS:
            out.append(finding("CONTAINER_CONFIG_ERROR", "critical", "pods",
                               f"pod {pname} container {cname}: {reason}: {waiting.get('message', '')}",
                               {**ev, "reason": reason, "message": redact(waiting.get("message"))}))
            row["reason"] = reason
            blocking = True
        elif reason == "CrashLoopBackOff":
            out.append(finding("CRASH_LOOP", "critical", "pods",
                               f"pod {pname} container {cname} is crash looping ({rc} restarts, last exit "
                               f"{last.get('exitCode', '?')} {last.get('reason', '')})".replace(" )", ")"),
                               {**ev, "restarts": rc, "exit_code": last.get("exitCode"),
                                "last_reason": last.get("reason", ""), "finished_at": last.get("finishedAt", "")}))
            row["reason"] = reason
            blocking = True
        if last.get("reason") == "OOMKilled" or terminated.get("reason") == "OOMKilled":
            out.append(finding("OOM_KILLED", "critical", "pods",
                               f"pod {pname} container {cname} was OOMKilled (memory limit too low)",
                               {**ev, "restarts": rc, "finished_at": (last or terminated).get("finishedAt", "")}))
            row["reason"] = row["reason"] or "OOMKilled"
        if rc and reason != "CrashLoopBackOff":
            finished = _parse_time(last.get("finishedAt")) if last.get("finishedAt") else None
            recent = finished is not None and (now_dt - finished).total_seconds() <= window
            out.append(finding("RESTARTS", "warning" if recent else "info", "pods",
                               f"pod {pname} container {cname} restarted {rc} time(s)"
                               + (f", last at {last.get('finishedAt')}" if finished else ""),
                               {**ev, "restarts": rc, "recent": recent, "exit_code": last.get("exitCode"),
                                "last_reason": last.get("reason", ""), "finished_at": last.get("finishedAt", "")}))

    if not pod_ready and not blocking and phase != "Failed":
        cstat = next((c for c in st.get("containerStatuses") or [] if c.get("name") == main), {})
        started = cstat.get("started")
        out.append(finding("POD_NOT_READY", "critical", "pods",
                           f"pod {pname} ({phase}) is not Ready: {ready_cond.get('reason', '')} "
                           f"{ready_cond.get('message', '')}".strip(),
                           {"pod": pname, "phase": phase, "container": main, "started": started,
                            "reason": ready_cond.get("reason", ""), "message": redact(ready_cond.get("message"))}))
        row["reason"] = row["reason"] or ready_cond.get("reason", "NotReady")
    return out


# ------------------------------------------------------------------------------------------- step 2: logs
DEFAULT_LOG_PATTERNS = [
    {"code": "WORKER_TIMEOUT", "pattern": r"\[CRITICAL\] WORKER TIMEOUT", "severity": "warning",
     "message": "gunicorn killed a worker that exceeded its timeout"},
    {"code": "WORKER_KILLED", "pattern": r"was sent SIGKILL", "severity": "warning",
     "message": "a worker was sent SIGKILL (timeout or out of memory)"},
    {"code": "INVALID_HOST_HEADER", "pattern": r"(?i)invalid host header", "severity": "warning",
     "message": "requests were rejected by MLflow's Host header check"},
    {"code": "DB_SCHEMA_OUTDATED", "pattern": r"(?i)out-of-date database schema", "severity": "critical",
     "message": "the backend store schema is older than the server (mlflow db upgrade needed)"},
    {"code": "DB_SCHEMA_NEWER", "pattern": r"Can't locate revision identified by", "severity": "critical",
     "message": "the backend store was migrated by a newer MLflow than this image (a rollback?): no migration can fix it"},
    {"code": "TRACEBACK", "pattern": r"Traceback \(most recent call last\)", "severity": "warning",
     "message": "Python tracebacks in the log"},
    {"code": "ERROR_LINES", "pattern": r"\b(ERROR|CRITICAL)\b", "severity": "info",
     "message": "ERROR/CRITICAL lines in the log"},
]


def _compile_patterns(patterns) -> list[tuple[dict, re.Pattern]]:
    if patterns is None or patterns == "":
        patterns = DEFAULT_LOG_PATTERNS
    if not isinstance(patterns, list):
        raise VerifyError("verify_log_patterns: expected a list of {code, pattern, severity, message} mappings")
    out = []
    for i, p in enumerate(patterns):
        where = f"verify_log_patterns[{i}]"
        if not isinstance(p, dict):
            raise VerifyError(f"{where}: expected a mapping with keys code, pattern, severity, message")
        code = p.get("code")
        if not code or not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(code)):
            raise VerifyError(f"{where}.code: expected an UPPER_SNAKE_CASE code, got {code!r}")
        sev = p.get("severity", "warning")
        if sev not in SEVERITIES:
            raise VerifyError(f"{where}.severity: expected one of {', '.join(SEVERITIES)}, got {sev!r}")
        try:
            rx = re.compile(str(p.get("pattern") or ""))
        except re.error as exc:
            raise VerifyError(f"{where}.pattern: invalid regular expression {p.get('pattern')!r}: {exc}") from exc
        if not p.get("pattern"):
            raise VerifyError(f"{where}.pattern: expected a non-empty regular expression")
        out.append(({"code": code, "severity": sev, "message": p.get("message") or code}, rx))
    return out


def _log_sources(logs) -> list[dict]:
    """Normalise: a list of {pod, container, previous, text|log|log_lines} or k8s_log results."""
    if logs is None:
        return []
    if isinstance(logs, dict):
        logs = logs.get("results", [logs])
    if not isinstance(logs, list):
        raise VerifyError("logs: expected a list of {pod, container, previous, text} mappings or k8s_log results")
    out = []
    for i, src in enumerate(logs):
        if not isinstance(src, dict):
            raise VerifyError(f"logs[{i}]: expected a mapping")
        if src.get("skipped"):
            continue
        failed = bool(src.get("failed"))
        if "text" in src:
            text = src.get("text") or ""
        elif "log_lines" in src:
            text = "\n".join(src.get("log_lines") or [])
        else:
            text = src.get("log") or ""
        item = src.get("item") if isinstance(src.get("item"), dict) else {}
        out.append({"pod": src.get("pod") or item.get("pod", ""),
                    "container": src.get("container") or item.get("container", ""),
                    "previous": bool(src.get("previous", item.get("previous", False))),
                    "text": "" if failed else str(text), "failed": failed})
    return out


# A bad flag or option: the usage errors click (mlflow server) and argparse print before exiting with code 2.
# Built in (not a verify_log_patterns entry): it decides that a crash loop is a configuration error, not restarted.
_CONFIG_ERROR_STRONG = re.compile(r"No such option|Invalid value for|unrecognized arguments|Got unexpected extra "
                                  r"argument|No such command|Missing option|Missing argument|requires an argument"
                                  r"|option .* (?:is not allowed|cannot be used) with|UsageError")
_CONFIG_ERROR_GENERIC = re.compile(r"^(?:Error|error|[\w.-]+: error): \S")
_USAGE_EXIT_CODE = 2


def _exits(pods_step) -> dict:
    """(pod, container) -> last exit code and whether it crash loops / terminated, from a step 1 result."""
    out: dict = {}
    if not isinstance(pods_step, dict):
        return out
    for f in pods_step.get("findings") or []:
        ev = f.get("evidence") or {}
        if f.get("code") in ("CRASH_LOOP", "RESTARTS") and ev.get("pod"):
            out[(ev.get("pod"), ev.get("container"))] = {"exit_code": ev.get("exit_code"),
                                                         "crash_loop": f.get("code") == "CRASH_LOOP"}
    return out


def _config_error_findings(candidates: list[dict], pods_step) -> list[dict]:
    """CONTAINER_CONFIG_ERROR from a usage error in a log whose container exited (code 2, or crash loops)."""
    exits = _exits(pods_step)
    out, seen = [], set()
    for c in sorted(candidates, key=lambda c: not c["strong"]):  # "No such option" before a bare "Error:"
        key = (c["pod"], c["container"])
        ex = exits.get(key, {})
        code = ex.get("exit_code")
        usage_exit = code == _USAGE_EXIT_CODE
        if key in seen or not (usage_exit or (c["strong"] and (c["previous"] or ex.get("crash_loop")))):
            continue
        seen.add(key)
        out.append(finding(
            "CONTAINER_CONFIG_ERROR", "critical", "logs",
            f"pod {c['pod']} container {c['container']} exits on a bad flag or option"
            + (f" (exit code {code})" if code is not None else "") + f": {c['line']}",
            {"pod": c["pod"], "container": c["container"], "exit_code": code, "line": c["line"],
             "source": c["source"], "cause": "args",
             "next_step": f"fix the command/args of container {c['container']} in the Deployment's pod template "
                          f"(spec.template.spec.containers[name={c['container']}].args): the server rejects them "
                          f"with `{c['line']}`; a restart cannot help, then re-run verify.yml"}))
    return out


def log_scan(logs, patterns=None, *, max_samples: int = 3, pods=None) -> dict:
    """Step 2: count each pattern over current and previous container logs, keep a few (redacted) samples.

    ``pods``: the step 1 result; a usage error (bad flag/option) in the log of a container that exited with code 2
    or crash loops gives the critical finding CONTAINER_CONFIG_ERROR (a restart cannot help).
    """
    compiled = _compile_patterns(patterns)
    max_samples = _int(max_samples, "max_samples", 0)
    sources = _log_sources(logs)
    config_candidates: list[dict] = []
    counts = {meta["code"]: 0 for meta, _rx in compiled}
    samples: dict[str, list[str]] = {meta["code"]: [] for meta, _rx in compiled}
    where: dict[str, set] = {meta["code"]: set() for meta, _rx in compiled}
    lines_scanned = 0
    for src in sources:
        label = f"{src['pod']}/{src['container']}" + (" (previous)" if src["previous"] else "")
        for line in src["text"].splitlines():
            lines_scanned += 1
            strong = bool(_CONFIG_ERROR_STRONG.search(line))
            if strong or _CONFIG_ERROR_GENERIC.match(line.strip()):
                config_candidates.append({"pod": src["pod"], "container": src["container"], "source": label,
                                          "previous": src["previous"], "strong": strong,
                                          "line": redact(line.strip(), 300)})
            for meta, rx in compiled:
                if rx.search(line):
                    counts[meta["code"]] += 1
                    where[meta["code"]].add(label)
                    if len(samples[meta["code"]]) < max_samples:
                        samples[meta["code"]].append(redact(line.strip(), 300))
    findings = _config_error_findings(config_candidates, pods)
    for meta, _rx in compiled:
        n = counts[meta["code"]]
        if n:
            findings.append(finding(meta["code"], meta["severity"], "logs", f"{meta['message']}: {n} line(s)",
                                    {"count": n, "samples": samples[meta["code"]],
                                     "sources": sorted(where[meta["code"]])}))
    scanned = [f"{s['pod']}/{s['container']}{' (previous)' if s['previous'] else ''}" for s in sources
               if not s["failed"]]
    hits = ", ".join(f"{c} {n}" for c, n in counts.items() if n) or "no matches"
    return step_result("logs", findings, f"{lines_scanned} line(s) from {len(scanned)} log(s): {hits}",
                       {"counts": counts, "lines_scanned": lines_scanned, "sources": scanned})


# ---------------------------------------------------------------------------------------- step 3: service
def service_connectivity(service, pods=None, deployment=None, endpoints=None, endpoint_slices=None, *,
                         expected_port: int = 5000, container: str | None = None, server_port: int | None = None,
                         service_name: str = "", namespace: str = "") -> dict:
    """Step 3: Service exists with the port, selector matches the pods, ready endpoints, targetPort."""
    svc = _obj(service, "service")
    pods = [p for p in _objs(pods, "pods") if not (p.get("metadata") or {}).get("deletionTimestamp")]
    dep = _obj(deployment, "deployment")
    expected_port = _int(expected_port, "expected_port", 1)
    findings: list[dict] = []
    details: dict = {}
    name = (svc.get("metadata") or {}).get("name") or service_name
    if not svc:
        findings.append(finding("SERVICE_NOT_FOUND", "critical", "service",
                                f"Service {service_name or '?'} not found in namespace {namespace or '?'}",
                                {"service": service_name, "namespace": namespace}))
        return step_result("service", findings, "Service missing", details)

    spec = svc.get("spec") or {}
    ports = spec.get("ports") or []
    details["ports"] = [{k: p.get(k) for k in ("name", "port", "targetPort", "protocol")} for p in ports]
    details["type"] = spec.get("type", "ClusterIP")
    port = next((p for p in ports if p.get("port") == expected_port), None)
    if port is None:
        findings.append(finding("SERVICE_PORT_MISSING", "critical", "service",
                                f"Service {name} does not expose port {expected_port} "
                                f"(ports: {', '.join(str(p.get('port')) for p in ports) or 'none'})",
                                {"service": name, "expected_port": expected_port, "ports": details["ports"]}))

    selector = spec.get("selector") or {}
    details["selector"] = selector
    tmpl_labels = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    dep_pods = pods
    if not selector:
        findings.append(finding("SERVICE_NO_SELECTOR", "warning", "service",
                                f"Service {name} has no selector: its endpoints are managed by hand",
                                {"service": name}))
        matched = []
    else:
        matched = [p for p in dep_pods if selector_matches(selector, (p.get("metadata") or {}).get("labels"))]
        tmpl_ok = selector_matches(selector, tmpl_labels) if tmpl_labels else bool(matched)
        if not tmpl_ok or (dep_pods and not matched):
            findings.append(finding("SERVICE_SELECTOR_MISMATCH", "critical", "service",
                                    f"Service {name} selector {_fmt_labels(selector)} matches none of the "
                                    f"MLflow pods (pod labels {_fmt_labels(tmpl_labels or _labels0(dep_pods))})",
                                    {"service": name, "selector": selector,
                                     "pod_labels": tmpl_labels or _labels0(dep_pods)}))
    details["matched_pods"] = len(matched)

    # targetPort vs the container's ports
    pod_spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or \
        ((dep_pods[0].get("spec") or {}) if dep_pods else {})
    main = _pick_container(pod_spec.get("containers") or [], container)
    cports = main.get("ports") or []
    if port is not None and main:
        target = port.get("targetPort", port.get("port"))
        details["target_port"] = target
        names = {p.get("name"): p.get("containerPort") for p in cports if p.get("name")}
        numbers = {p.get("containerPort") for p in cports}
        bad = False
        resolved = target
        if isinstance(target, str) and not target.isdigit():
            if target not in names:
                bad = True
            resolved = names.get(target)
        else:
            resolved = int(target)
            known = numbers | ({int(server_port)} if server_port else set())
            bad = bool(known) and resolved not in known
        if server_port and resolved is not None and not bad and int(resolved) != int(server_port):
            bad = True
        if bad:
            findings.append(finding("TARGET_PORT_MISMATCH", "critical", "service",
                                    f"Service {name} port {expected_port} targets {target!r} but container "
                                    f"{main.get('name')} listens on "
                                    f"{', '.join(str(p.get('containerPort')) for p in cports) or server_port or '?'}",
                                    {"service": name, "target_port": target, "container": main.get("name"),
                                     "container_ports": [{k: p.get(k) for k in ("name", "containerPort")}
                                                         for p in cports], "server_port": server_port}))

    ready, not_ready = _endpoint_addresses(endpoints, endpoint_slices, name)
    details["ready_endpoints"] = ready
    details["not_ready_endpoints"] = not_ready
    if selector and ready == 0:
        pods_ready = sum(1 for p in matched if _condition(p, "Ready").get("status") == "True")
        findings.append(finding("NO_READY_ENDPOINTS", "critical", "service",
                                f"Service {name} has no ready endpoint ({not_ready} not ready)",
                                {"service": name, "ready": ready, "not_ready": not_ready,
                                 "ready_pods_matched": pods_ready}))
    summary = (f"Service {name} port {expected_port}: {details['matched_pods']} pod(s) selected, "
               f"{ready} ready endpoint(s)")
    return step_result("service", findings, summary, details)


def _labels0(pods: list[dict]) -> dict:
    return ((pods[0].get("metadata") or {}).get("labels") or {}) if pods else {}


def _fmt_labels(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "{}"


def _endpoint_addresses(endpoints, endpoint_slices, service_name: str) -> tuple[int, int]:
    slices = _objs(endpoint_slices, "endpoint_slices")
    if slices:
        ready = not_ready = 0
        for sl in slices:
            labels = (sl.get("metadata") or {}).get("labels") or {}
            if service_name and labels.get("kubernetes.io/service-name") not in (None, service_name):
                continue
            for ep in sl.get("endpoints") or []:
                cond = ep.get("conditions") or {}
                n = len(ep.get("addresses") or [])
                if cond.get("ready", True) is not False:
                    ready += n
                else:
                    not_ready += n
        return ready, not_ready
    ep = _obj(endpoints, "endpoints")
    ready = sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])
    not_ready = sum(len(s.get("notReadyAddresses") or []) for s in ep.get("subsets") or [])
    return ready, not_ready


# ------------------------------------------------------------------------------------------ step 4: probe
_PROBE_SEVERITY = {"ROOT_NOT_FOUND": "critical", "HEALTH_FAILED": "critical", "INVALID_HOST": "critical",
                   "NO_READY_POD": "critical", "TUNNEL_ERROR": "critical", "TIMEOUT": "critical",
                   "SERVICE_NOT_FOUND": "critical"}


def probe_result(probe) -> dict:
    """Step 4: turn an ``mlflow_probe`` result into a step result (its findings keep their codes)."""
    if probe is None or probe == {} or (isinstance(probe, dict) and probe.get("skipped")):
        return step_result("probe", [], "skipped", {"skipped": True})
    if not isinstance(probe, dict):
        raise VerifyError("probe: expected the registered result of asgard.mlflow.mlflow_probe")
    findings = []
    for f in probe.get("findings") or []:
        code = f.get("code") or "PROBE_FINDING"
        sev = f.get("severity")
        sev = {"error": "critical"}.get(sev, sev)
        if sev not in SEVERITIES:
            sev = _PROBE_SEVERITY.get(code, "warning")
        ev = f.get("evidence") if isinstance(f.get("evidence"), dict) else {"detail": f.get("evidence")}
        findings.append(finding(code, sev, "probe", f.get("message") or code,
                                {k: (redact(v) if isinstance(v, str) else v) for k, v in ev.items()}))
    if probe.get("failed") and not findings:
        findings.append(finding("PROBE_ERROR", "critical", "probe",
                                f"mlflow_probe failed: {probe.get('msg', 'unknown error')}", {}))
    if not probe.get("failed") and probe.get("healthy") is False and not any(
            f["severity"] == "critical" for f in findings):
        findings.append(finding("PROBE_UNHEALTHY", "critical", "probe", "mlflow_probe reports the server unhealthy",
                                {}))
    checks = probe.get("checks") or {}
    details = {
        "healthy": bool(probe.get("healthy")) and not probe.get("failed"),
        "pod": probe.get("pod"),
        "mlflow_version": probe.get("mlflow_version"),
        "server_header": probe.get("server_header"),
        "health_path": probe.get("health_path"),
        "checks": {k: {kk: v.get(kk) for kk in ("status", "latency_ms", "bytes", "ok", "title_found")}
                   for k, v in checks.items() if isinstance(v, dict)},
    }
    parts = []
    for k in ("health", "root", "version", "api"):
        c = details["checks"].get(k)
        if c:
            parts.append(f"{k} {c.get('status', '-')}" + (f" {c['latency_ms']:.0f}ms"
                                                          if isinstance(c.get("latency_ms"), int | float) else ""))
    summary = ", ".join(parts) or ("probe failed" if probe.get("failed") else "no checks")
    if details["mlflow_version"]:
        summary += f" (MLflow {details['mlflow_version']})"
    return step_result("probe", findings, summary, details)


# ------------------------------------------------------------------------------------------- settings
def normalize_settings(settings) -> dict:
    """The fields the verify role uses, from the output of ``asgard.mlflow.mlflow_server_settings``.

    Tolerant of shapes: flat keys (``workers``, ``gunicorn_timeout``/``timeout``, ``static_prefix``,
    ``server``/``server_kind``) or nested ``gunicorn: {timeout, keep_alive}``.
    """
    if not settings:
        return {}
    if not isinstance(settings, dict):
        raise VerifyError("settings: expected the mapping returned by asgard.mlflow.mlflow_server_settings")
    s = settings.get("settings") if isinstance(settings.get("settings"), dict) else settings
    guni = s.get("gunicorn") if isinstance(s.get("gunicorn"), dict) else {}
    uvi = s.get("uvicorn") if isinstance(s.get("uvicorn"), dict) else {}
    gopts = s.get("gunicorn_opts") if isinstance(s.get("gunicorn_opts"), dict) else {}

    def first(*vals):
        for v in vals:
            if v is not None and v != "":
                return v
        return None

    server = first(s.get("server"), s.get("server_kind"), s.get("kind"))
    timeout = first(s.get("gunicorn_timeout"), guni.get("timeout"), gopts.get("timeout"), s.get("timeout"))
    keep = first(s.get("keep_alive"), s.get("gunicorn_keep_alive"), guni.get("keep_alive"), gopts.get("keep_alive"),
                 s.get("timeout_keep_alive"), uvi.get("timeout_keep_alive"))
    workers = first(s.get("workers"), guni.get("effective_workers"), uvi.get("effective_workers"))
    declared = first(guni.get("workers"), uvi.get("workers"))
    prefix = s.get("static_prefix")
    return {
        "server": server,
        "workers": int(workers) if str(workers or "").isdigit() else workers,
        "gunicorn_timeout": int(timeout) if str(timeout or "").isdigit() else timeout,
        "keep_alive": int(keep) if str(keep or "").isdigit() else keep,
        "workers_in_opts": int(declared) if str(declared or "").isdigit() else declared,
        "static_prefix": prefix or "",
        "port": first(s.get("port"), s.get("server_port")),
        "mlflow_version": first(s.get("mlflow_version"), s.get("version")),
        "container": first(s.get("container"), s.get("container_name")),
        "backend_store_uri": s.get("backend_store_uri"),
    }


_PREFIX_RX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


def expected_prefix(value) -> str:
    """verify_expected_static_prefix: None or '' (no prefix expected) or a path like /mlflow (no trailing slash)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _PREFIX_RX.match(value.rstrip("/") or "/x"):
        raise VerifyError(f"verify_expected_static_prefix: expected '' (no prefix) or a path such as /mlflow "
                          f"(letters, digits, . _ ~ -, starting with /), got {value!r}")
    return value.rstrip("/")


def settings_findings(settings, *, min_workers: int = 4, min_gunicorn_timeout: int = 300,
                      expected_static_prefix=None) -> dict:
    """Config findings (part of step 1): too few workers, short gunicorn timeout, a static prefix."""
    s = normalize_settings(settings)
    min_workers = _int(min_workers, "verify_min_workers", 0)
    min_timeout = _int(min_gunicorn_timeout, "verify_min_gunicorn_timeout", 0)
    expected = expected_prefix(expected_static_prefix)
    findings = []
    if not s:
        return step_result("settings", [], "settings not read", {})
    w = s.get("workers")
    if isinstance(w, int) and min_workers and w < min_workers:
        findings.append(finding("TOO_FEW_WORKERS", "warning", "pods",
                                f"the server runs {w} worker(s), fewer than {min_workers}",
                                {"workers": w, "minimum": min_workers}))
    wo = s.get("workers_in_opts")
    if isinstance(w, int) and isinstance(wo, int) and wo != w:
        findings.append(finding("WORKERS_INCONSISTENT", "warning", "pods",
                                f"--{s.get('server') or 'server'}-opts asks for {wo} worker(s) but mlflow's own "
                                f"--workers ({w}) overrides it: the configuration says something it does not do",
                                {"workers": w, "workers_in_opts": wo}))
    t = s.get("gunicorn_timeout")
    if s.get("server") == "gunicorn" and isinstance(t, int) and min_timeout and t < min_timeout:
        findings.append(finding("SHORT_WORKER_TIMEOUT", "warning", "pods",
                                f"gunicorn --timeout {t}s is below {min_timeout}s: long requests get WORKER TIMEOUT",
                                {"timeout": t, "minimum": min_timeout}))
    actual = (s.get("static_prefix") or "").rstrip("/")
    if actual != expected:
        findings.append(finding("STATIC_PREFIX_MISMATCH", "warning", "pods",
                                f"the server runs with {('--static-prefix=' + actual) if actual else 'no static prefix'}"
                                f" but {('the prefix ' + expected) if expected else 'no prefix'} is expected "
                                f"(verify_expected_static_prefix): the dashboard is under {actual or ''}/",
                                {"static_prefix": actual, "expected": expected}))
    elif actual:
        findings.append(finding("STATIC_PREFIX_SET", "info", "pods",
                                f"the server runs with --static-prefix={actual} as expected: the dashboard "
                                f"is under {actual}/, not /", {"static_prefix": actual, "expected": expected}))
    return step_result("settings", findings, _settings_summary(s), s)


def probe_expected_prefix(probe_step, expected_static_prefix=None) -> dict:
    """Step 4 with an expected static prefix: the dashboard is judged at ``{prefix}/`` instead of ``/``.

    mlflow_probe always GETs ``/`` and, on a 404, ``{prefix}/`` (evidence ``ui_path``/``ui_status``). When that
    prefix is the expected one and the UI answers there (200 with the MLflow title), ROOT_NOT_FOUND becomes the
    info finding ROOT_UNDER_PREFIX and the root check is the prefixed page.
    """
    expected = expected_prefix(expected_static_prefix)
    if not expected or not isinstance(probe_step, dict) or probe_step.get("step") != "probe":
        return probe_step
    details = dict(probe_step.get("details") or {})
    checks = dict(details.get("checks") or {})
    findings, moved = [], False
    for f in probe_step.get("findings") or []:
        ev = f.get("evidence") or {}
        if (f.get("code") == "ROOT_NOT_FOUND" and ev.get("ui_path") == f"{expected}/" and ev.get("ui_status") == 200
                and ev.get("ui_title_found")):
            moved = True
            checks["root"] = {**(checks.get("root") or {}), "status": 200, "ok": True, "title_found": True,
                              "path": ev["ui_path"], "latency_ms": None}
            findings.append(finding("ROOT_UNDER_PREFIX", "info", "probe",
                                    f"the dashboard answers under the expected static prefix: {expected}/ 200 "
                                    "(GET / 404 is expected with a prefix)", {**ev, "expected": expected}))
            continue
        findings.append(f)
    if not moved:
        return probe_step
    details["checks"] = checks
    res = step_result("probe", findings, str(probe_step.get("summary", "")).replace("root 404", f"root {expected}/ 200"),
                      details)
    res["details"]["healthy"] = res["status"] != "failed"
    return res


def _settings_summary(s: dict) -> str:
    parts = [f"server {s.get('server') or '?'}", f"workers {s.get('workers') if s.get('workers') is not None else '?'}"]
    if s.get("server") == "gunicorn":
        parts.append(f"timeout {s.get('gunicorn_timeout') or 'default'}")
    parts.append(f"static prefix {s.get('static_prefix') or 'none'}")
    return ", ".join(parts)


# ------------------------------------------------------------ step 4b: deep check (mlflow_probe transaction)
# The findings of mlflow_probe's deep check (transaction: true) that belong to step 4b; the probe's other
# findings (health, root, ...) are step 4's and are not repeated here.
TRANSACTION_FINDINGS = {
    "WRITE_FAILED": "critical", "ARTIFACT_UPLOAD_FAILED": "critical", "ARTIFACT_DOWNLOAD_FAILED": "critical",
    "ARTIFACT_MISMATCH": "critical", "WORKER_KILLED_DURING_REQUEST": "critical", "SLOW_UPLOAD": "warning",
    "TRANSACTION_AUTH_FAILED": "critical", "TRANSACTION_READ_FAILED": "critical",
    "TRANSACTION_CLEANUP_FAILED": "warning", "TRANSACTION_SKIPPED": "info",
}
# finding codes of a request that failed because its worker was killed (explained by WORKER_KILLED_DURING_REQUEST)
_KILLED_REQUEST_CODES = {"WRITE_FAILED", "ARTIFACT_UPLOAD_FAILED", "ARTIFACT_DOWNLOAD_FAILED",
                         "TRANSACTION_READ_FAILED"}
# step 4 findings that only mean "authentication required" when the status is 401 (basic-auth servers)
_AUTH_BLIND_CODES = {"ROOT_FAILED", "VERSION_FAILED", "API_FAILED"}
TRANSACTION_REMEDIATION = {
    # code: (action, patch targets, next step for a human)
    "WORKER_KILLED_DURING_REQUEST": ("patch", ["timeout"], "gunicorn killed the worker serving the deep check's "
                                     "request: raise gunicorn --timeout above the longest upload/download (or run "
                                     "uvicorn), then re-run verify.yml with verify_transaction=true"),
    "WRITE_FAILED": ("report", [], "the backend store refuses writes: check the database (read-only file or volume, "
                     "permissions, disk full, database user grants) and the server log"),
    "ARTIFACT_UPLOAD_FAILED": ("report", [], "the artifact proxy refuses uploads: check --serve-artifacts, "
                               "--artifacts-destination (writable volume, object-store credentials) and the log"),
    "ARTIFACT_DOWNLOAD_FAILED": ("report", [], "the artifact proxy fails downloads: check --artifacts-destination "
                                 "and the server log"),
    "ARTIFACT_MISMATCH": ("report", [], "the artifact came back different: check the artifact store and any "
                          "proxy between clients and MLflow (body size limits, rewriting)"),
    "TRANSACTION_AUTH_FAILED": ("report", [], "MLflow refused the deep check: set verify_transaction_username / "
                                "verify_transaction_password to a user allowed to create experiments and runs"),
    "TRANSACTION_READ_FAILED": ("report", [], "the run written by the deep check could not be read back: check the "
                                "backend store and the server log"),
    "TRANSACTION_CLEANUP_FAILED": ("report", [], "delete the synthetic runs of the deep check's experiment by hand "
                                   "(they are tagged asgard.synthetic)"),
    "SLOW_UPLOAD": ("report", [], "artifact uploads are slow: check the network path, CPU limits of the server "
                    "and the artifact store's throughput"),
    "TRANSACTION_ERROR": ("report", [], "the deep check could not run: see its message"),
}


def transaction_result(probe, *, skipped_reason: str = "") -> dict:
    """Step 4b: an ``mlflow_probe`` result with ``transaction: true`` -> a step result.

    ``skipped_reason``: why the role did not run it (check mode); the step is then ``skipped``.
    Only the deep check's own findings are kept (the read-only checks are step 4's).
    """
    if skipped_reason or probe is None or probe == {} or (isinstance(probe, dict) and probe.get("skipped")):
        why = skipped_reason or "not run"
        res = step_result("transaction", [finding("TRANSACTION_SKIPPED", "info", "transaction",
                                                  f"deep check skipped: {why}", {"reason": why})],
                          f"skipped: {why}", {"skipped": True, "reason": why})
        res["status"] = "skipped"
        return res
    if not isinstance(probe, dict):
        raise VerifyError("transaction: expected the registered result of asgard.mlflow.mlflow_probe "
                          "with transaction: true")
    txn = probe.get("transaction") if isinstance(probe.get("transaction"), dict) else {}
    findings = []
    for f in probe.get("findings") or []:
        code = f.get("code")
        if code not in TRANSACTION_FINDINGS:
            continue
        ev = f.get("evidence") if isinstance(f.get("evidence"), dict) else {"detail": f.get("evidence")}
        findings.append(finding(code, TRANSACTION_FINDINGS[code], "transaction", f.get("message") or code,
                                {k: _redact_deep(v) for k, v in ev.items()}))
    if not txn and not findings:
        findings.append(finding("TRANSACTION_ERROR", "critical", "transaction",
                                f"the deep check did not run: {probe.get('msg', 'no transaction in the result')}", {}))
    steps = [{k: st.get(k) for k in ("name", "status", "latency_ms", "ok") if k in st}
             for st in txn.get("steps") or [] if isinstance(st, dict)]
    art = txn.get("artifact") if isinstance(txn.get("artifact"), dict) else {}
    details = {
        "ok": txn.get("ok"),
        "skipped": bool(txn.get("skipped")),
        "reason": txn.get("skipped") or "",
        "experiment": txn.get("experiment"),
        "failed_step": txn.get("failed_step"),
        "elapsed_ms": txn.get("elapsed_ms"),
        "api_requests": txn.get("api_requests"),
        "artifact_bytes": art.get("bytes"),
        "upload_rate_kib_s": art.get("rate_kib_s"),
        "steps": steps,
    }
    if txn.get("skipped"):
        summary = f"skipped: {txn['skipped']}"
    elif txn.get("ok"):
        summary = f"passed: {len(steps)} requests in {_fmt_ms(txn.get('elapsed_ms'))}"
        if isinstance(art.get("bytes"), int):
            summary += f", artifact {art['bytes']} bytes"
            if isinstance(art.get("rate_kib_s"), int | float):
                summary += f" at {art['rate_kib_s']:.0f} KiB/s"
    else:
        summary = f"FAILED at {txn.get('failed_step') or '?'} after {_fmt_ms(txn.get('elapsed_ms'))}"
    res = step_result("transaction", findings, summary, details)
    if txn.get("skipped") and res["status"] == "ok":
        res["status"] = "skipped"
    return res


def _redact_deep(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_deep(v) for v in value[:20]]
    if isinstance(value, dict):
        return {k: _redact_deep(v) for k, v in value.items()}
    return value


def transaction_plan_adjust(f: dict, findings: list[dict], settings: dict, action: str, tgts: list, hint: str,
                            enabled) -> tuple[str, list, str, bool]:
    """plan() hook for step 4b. Returns (action, targets, hint, skip).

    - WORKER_KILLED_DURING_REQUEST on a server that is not gunicorn: report (no gunicorn timeout to raise).
    - a failed request of the deep check whose worker was killed (same step) is explained by
      WORKER_KILLED_DURING_REQUEST: not reported separately while that finding is being patched.
    """
    code = f.get("code")
    server = settings.get("server")
    if code in _AUTH_BLIND_CODES and (f.get("evidence") or {}).get("status") == 401:
        # a basic-auth server (--app-name basic-auth): step 4's read-only checks send no credentials;
        # a 401 is not a broken server, and a restart would not change it
        return "report", [], ("the server requires authentication (--app-name basic-auth): step 4 checks without "
                              "credentials; run the deep check (verify_transaction with "
                              "verify_transaction_username/password) to test it as a user"), False
    if code == "WORKER_KILLED_DURING_REQUEST" and server not in (None, "gunicorn"):
        return "report", [], (f"the worker serving the deep check was killed on {server}: read the server log "
                              "(memory limits, OOM)"), False
    if code in _KILLED_REQUEST_CODES and "patch" in (enabled or ()) and server in (None, "gunicorn"):
        step = (f.get("evidence") or {}).get("step")
        for k in findings:
            if k.get("code") == "WORKER_KILLED_DURING_REQUEST" and (k.get("evidence") or {}).get("step") == step:
                return action, tgts, hint, True
    return action, tgts, hint, False


def transaction_measure(steps) -> dict | None:
    """The deep check's numbers for the before/after table (None when step 4b did not run)."""
    st = next((x for x in _step_list(steps) if x.get("step") == "transaction"), None)
    if not st:
        return None
    d = st.get("details") or {}
    if d.get("skipped"):
        return {"text": "skipped"}
    if d.get("ok"):
        return {"text": f"passed ({_fmt_ms(d.get('elapsed_ms'))})", "elapsed_ms": d.get("elapsed_ms")}
    return {"text": f"FAILED at {d.get('failed_step') or '?'}", "elapsed_ms": d.get("elapsed_ms")}


# --------------------------------------------------------------------------------------------- the plan
REMEDIATION_TABLE = {
    # code: (action, patch targets, next step for a human when not fixed automatically)
    "WORKER_TIMEOUT": ("patch", ["workers", "timeout"], "raise gunicorn --timeout and --workers"),
    "WORKER_KILLED": ("patch", ["workers", "timeout"], "check memory limits and gunicorn --timeout"),
    "SHORT_WORKER_TIMEOUT": ("patch", ["timeout"], "set gunicorn --timeout to at least the minimum"),
    "TOO_FEW_WORKERS": ("patch", ["workers"], "set mlflow server --workers to at least the minimum"),
    "WORKERS_INCONSISTENT": ("patch", ["workers"], "set the worker count once, with mlflow server --workers"),
    "ROOT_NOT_FOUND": ("patch", ["static_prefix"], "remove --static-prefix or open the dashboard under the prefix"),
    "INVALID_HOST": ("patch", ["allowed_hosts"], "add the client's Host to MLFLOW_SERVER_ALLOWED_HOSTS"),
    "INVALID_HOST_HEADER": ("patch", ["allowed_hosts"], "add the client's Host to MLFLOW_SERVER_ALLOWED_HOSTS"),
    "DB_SCHEMA_OUTDATED": ("migrate", [], "run `mlflow db upgrade <backend-store-uri>` with the server's image"),
    "DB_SCHEMA_NEWER": ("report", [], "run the MLflow image that migrated the store (or a newer one), or restore "
                        "the backend store's backup taken before that upgrade; `mlflow db upgrade` cannot downgrade"),
    "CRASH_LOOP": ("restart", [], "read the previous container log: kubectl logs --previous"),
    "POD_NOT_READY": ("restart", [], "kubectl describe pod; check the readiness probe path and the log"),
    "ROLLOUT_STALLED": ("restart", [], "kubectl rollout status / describe the new ReplicaSet"),
    "HEALTH_FAILED": ("restart", [], "check the health path (under --static-prefix on MLflow >= 3.7) and the log"),
    "TIMEOUT": ("restart", [], "the server does not answer in time: check CPU/memory and the log"),
    "PROBE_UNHEALTHY": ("restart", [], "read the probe checks in the report"),
    "ROOT_NO_TITLE": ("report", [], "`/` answers without the MLflow UI: check an Ingress/proxy in front or the image"),
    "ROOT_FAILED": ("restart", [], "`/` fails: read the server log"),
    "VERSION_FAILED": ("report", [], "`/version` fails: read the server log"),
    "API_FAILED": ("report", [], "the REST API fails: check the backend store (database reachable, schema)"),
    "NAMESPACE_NOT_FOUND": ("report", [], "set verify_namespace to the namespace MLflow runs in"),
    "PORT_NOT_FOUND": ("report", [], "the Service port does not exist: set verify_service_port"),
    "SERVICE_WITHOUT_SELECTOR": ("report", [], "give the Service a selector matching the MLflow pods"),
    "POD_NOT_FOUND": ("report", [], "the pod named in the probe target does not exist"),
    "KUBE_API_ERROR": ("report", [], "the Kubernetes API failed: check credentials/RBAC and retry"),
    "OOM_KILLED": ("report", [], "raise resources.limits.memory of the mlflow container (4 workers need ~1.5 GiB)"),
    "IMAGE_PULL_FAILED": ("report", [], "fix the image reference or imagePullSecrets"),
    "CONTAINER_CONFIG_ERROR": ("report", [], "the container cannot start with its configuration (a missing "
                               "Secret/ConfigMap/key, or a bad flag/option in its args): kubectl describe pod, "
                               "fix the pod template"),
    "STATIC_PREFIX_MISMATCH": ("patch", ["static_prefix"], "remove --static-prefix (no prefix is expected: "
                               "verify_expected_static_prefix is empty) or set verify_expected_static_prefix"),
    "PORT_FORWARD_FAILED": ("report", [], "the dashboard port-forward could not start: free the local port (the "
                            "finding names the process holding it; it was left alone) or set "
                            "verify_port_forward_local_port to a free port, then re-run verify.yml"),
    "POD_PENDING": ("report", [], "the pod cannot be scheduled: free resources, fix selectors/tolerations or the PVC"),
    "POD_FAILED": ("report", [], "kubectl describe pod (evicted? node pressure?)"),
    "SCALED_TO_ZERO": ("report", [], "kubectl scale deployment --replicas=1"),
    "DEPLOYMENT_NOT_FOUND": ("report", [], "deploy MLflow (playbooks/deploy.yml) or set verify_deployment"),
    "NO_PODS": ("report", [], "kubectl describe deployment / replicaset: pods are not being created"),
    "SERVICE_NOT_FOUND": ("report", [], "create the Service (playbooks/deploy.yml) or set verify_service"),
    "SERVICE_PORT_MISSING": ("report", [], "add the expected port to the Service or set verify_service_port"),
    "SERVICE_NO_SELECTOR": ("report", [], "give the Service a selector matching the MLflow pods"),
    "SERVICE_SELECTOR_MISMATCH": ("report", [], "make the Service selector match the pod template labels"),
    "TARGET_PORT_MISMATCH": ("report", [], "make the Service targetPort match the container port / --port"),
    "NO_READY_ENDPOINTS": ("report", [], "the Service has no ready pod behind it: see step 1"),
    "NO_READY_POD": ("report", [], "no ready pod behind the Service: see step 1"),
    "TUNNEL_ERROR": ("report", [], "the API server portforward failed: check RBAC pods/portforward and the node"),
    "PROBE_ERROR": ("report", [], "mlflow_probe could not run: see its message"),
    "TRACEBACK": ("report", [], "read the tracebacks in the log samples"),
    "RESTARTS": ("report", [], "read the previous container log: kubectl logs --previous"),
    "ROLLOUT_INCOMPLETE": ("report", [], "wait for the rollout: kubectl rollout status"),
}
REMEDIATION_TABLE.update(TRANSACTION_REMEDIATION)
_RESTART_BLOCKERS = {"IMAGE_PULL_FAILED", "CONTAINER_CONFIG_ERROR", "POD_PENDING", "OOM_KILLED",
                     "DEPLOYMENT_NOT_FOUND", "SCALED_TO_ZERO", "NO_PODS", "SERVICE_NOT_FOUND",
                     "SERVICE_SELECTOR_MISMATCH", "TARGET_PORT_MISMATCH", "SERVICE_PORT_MISSING", "TUNNEL_ERROR",
                     "NAMESPACE_NOT_FOUND", "PORT_NOT_FOUND", "SERVICE_WITHOUT_SELECTOR", "KUBE_API_ERROR",
                     "DB_SCHEMA_NEWER"}


def all_findings(steps) -> list[dict]:
    out = []
    for st in _step_list(steps):
        out.extend(st.get("findings") or [])
    return out


def _step_list(steps) -> list[dict]:
    if steps is None:
        return []
    if isinstance(steps, dict):
        if "findings" in steps and "step" in steps:
            return [steps]
        return [v for v in steps.values() if isinstance(v, dict)]
    if not isinstance(steps, list):
        raise VerifyError("steps: expected a list or mapping of step results")
    return [s for s in steps if isinstance(s, dict)]


def _done_pairs(done) -> tuple[set, int]:
    """(action, finding code) pairs already run in this run, and the rollout restarts already made."""
    if done is None or done == "":
        return set(), 0
    if not isinstance(done, list) or not all(isinstance(d, dict) for d in done):
        raise VerifyError("done: expected the list of remediation records ({action, reason, ...}) of this run")
    pairs = {(d.get("action"), c) for d in done for c in d.get("reason") or []}
    restarts = sum(int(d.get("attempts") or 1) for d in done if d.get("action") == "restart" and d.get("changed", True))
    return pairs, restarts


def plan(steps, settings=None, *, max_restarts: int = 1, restarts_done: int = 0, enabled=None, done=None,
         expected_static_prefix=None) -> dict:
    """Map findings to remediation actions (the documented table). Pure: nothing is changed here.

    Returns ``{"actions": [...], "report_only": [...], "patch_targets": [...], "restart": bool,
    "migrate": bool}``. ``enabled`` (a list of action names) limits which actions may run. ``done``: the
    remediation records of earlier rounds of this run; an action never runs twice for the same finding, and their
    restarts count against ``max_restarts``. ``expected_static_prefix``: a prefix the server should keep (never
    removed; a different one is reported).
    """
    findings = all_findings(steps)
    s = normalize_settings(settings)
    max_restarts = _int(max_restarts, "verify_max_restarts", 0)
    done_pairs, done_restarts = _done_pairs(done)
    restarts_done = _int(restarts_done, "restarts_done", 0) + done_restarts
    expected = expected_prefix(expected_static_prefix)
    enabled = set(enabled if enabled is not None else ("patch", "restart", "migrate"))
    codes = {f["code"] for f in findings}
    targets: list[str] = []
    reasons: dict[str, list[str]] = {}
    report_only = []
    migrate = False
    restart_wanted = []
    persisting = []  # config causes whose action already ran in this run and did not clear them

    for f in findings:
        code = f["code"]
        action, tgts, hint = REMEDIATION_TABLE.get(code, ("report", [], "see the finding's evidence"))
        if f["severity"] == "info" and code not in ("STATIC_PREFIX_SET",):
            continue
        if code == "ROOT_NOT_FOUND" and not s.get("static_prefix"):
            action, tgts = "report", []
            hint = "`/` answers 404 without a static prefix: check the image and an Ingress path rewrite"
        elif code in ("ROOT_NOT_FOUND", "STATIC_PREFIX_MISMATCH") and expected:
            # a prefix is wanted: never removed; a different (or missing) one is reported, not guessed
            action, tgts = "report", []
            hint = (f"the dashboard is expected under {expected}/ (verify_expected_static_prefix) but the server runs "
                    f"with {('--static-prefix=' + s['static_prefix']) if s.get('static_prefix') else 'no prefix'}: "
                    f"set --static-prefix={expected} (patch role: patch_static_prefix={expected}) or change "
                    "verify_expected_static_prefix")
            if code == "ROOT_NOT_FOUND" and (s.get("static_prefix") or "").rstrip("/") == expected:
                hint = (f"the server runs with the expected --static-prefix={expected} but {expected}/ does not answer "
                        "with the MLflow UI: read the server log and the probe evidence")
        if code == "SHORT_WORKER_TIMEOUT" and s.get("server") not in (None, "gunicorn"):
            continue
        if code in ("WORKER_TIMEOUT", "WORKER_KILLED") and s.get("server") not in (None, "gunicorn"):
            action, tgts = "report", []
        # step 4b (deep check): see transaction_plan_adjust()
        action, tgts, hint, skip = transaction_plan_adjust(f, findings, s, action, tgts, hint, enabled)
        if skip:
            continue
        hint = (f.get("evidence") or {}).get("next_step") or hint
        if action != "report" and (action, code) in done_pairs:
            # this run already did that for this finding (an earlier round): never repeated
            if action in ("patch", "migrate"):
                persisting.append(code)
            report_only.append({"code": code, "severity": f["severity"], "next_step": hint,
                                "message": f"{code}: still present after the {action} of an earlier round "
                                           "of this run (not repeated)"})
            continue
        if action == "patch" and "patch" in enabled:
            for t in tgts:
                if t not in targets:
                    targets.append(t)
                reasons.setdefault(t, []).append(code)
        elif action == "migrate" and "migrate" in enabled:
            migrate = True
        elif action == "restart" and "restart" in enabled:
            restart_wanted.append(code)
        elif f["severity"] != "info":
            report_only.append({"code": code, "severity": f["severity"], "message": f["message"],
                                "next_step": hint})

    targets = [t for t in _TARGET_TEXT if t in targets]
    # a restart only when nothing explains the failure (no config action planned, no blocker)
    config_cause = bool(targets) or migrate
    blockers = sorted(codes & _RESTART_BLOCKERS)
    restart = False
    restart_reason = ""
    if restart_wanted:
        if config_cause:
            restart_reason = "a configuration change is planned (it rolls the pods itself)"
        elif blockers or persisting:
            restart_reason = (f"not restarted: {', '.join(blockers or sorted(set(persisting)))} explains the failure"
                              + ("" if blockers else " (still present after its remediation in this run)"))
            for code in restart_wanted:
                report_only.append({"code": code, "severity": "critical",
                                    "message": f"{code}: {restart_reason}",
                                    "next_step": REMEDIATION_TABLE[code][2]})
        elif restarts_done >= max_restarts:
            restart_reason = f"restart budget used ({restarts_done}/{max_restarts} per run)"
            for code in restart_wanted:
                report_only.append({"code": code, "severity": "critical", "message": f"{code}: {restart_reason}",
                                    "next_step": REMEDIATION_TABLE[code][2]})
        else:
            restart = True
            restart_reason = f"{', '.join(sorted(set(restart_wanted)))} with no configuration cause"
    if migrate and "restart" in enabled:
        # the crash-looping pods pick the upgraded schema up only after a restart
        restart = restarts_done < max_restarts or restart

    actions = []
    if migrate:
        actions.append({"action": "migrate", "reason": ["DB_SCHEMA_OUTDATED"],
                        "description": "run `mlflow db upgrade` in a Job with the Deployment's image and env"})
    if targets:
        actions.append({"action": "patch", "targets": targets,
                        "reason": sorted({c for t in targets for c in reasons[t]}),
                        "description": "asgard.mlflow.patch: " + ", ".join(_TARGET_TEXT[t] for t in targets)})
    if restart:
        actions.append({"action": "restart", "reason": sorted(set(restart_wanted)) or ["DB_SCHEMA_OUTDATED"],
                        "description": "rollout restart (template annotation kubectl.kubernetes.io/restartedAt)"})
    seen = set()
    uniq_report = []
    for r in report_only:
        if r["code"] not in seen:
            seen.add(r["code"])
            uniq_report.append(r)
    return {"actions": actions, "report_only": uniq_report, "patch_targets": targets, "restart": restart,
            "restart_reason": restart_reason, "migrate": migrate, "needed": bool(actions)}


_TARGET_TEXT = {"workers": "workers", "timeout": "gunicorn timeout/keep-alive", "static_prefix":
                "remove the static prefix", "allowed_hosts": "allowed hosts"}


# -------------------------------------------------------------------------------------------- the report
def _crashes(steps: list[dict]) -> dict:
    counts = {}
    restarts = 0
    for st in steps:
        if st.get("step") == "logs":
            counts = st.get("details", {}).get("counts") or {}
        if st.get("step") == "pods":
            restarts = sum(p.get("restarts", 0) for p in st.get("details", {}).get("pods") or [])
    wt = counts.get("WORKER_TIMEOUT", 0)
    wk = counts.get("WORKER_KILLED", 0)
    return {"worker_timeouts": wt, "worker_kills": wk, "restarts": restarts, "total": wt + wk + restarts}


def measurements(steps, settings=None) -> dict:
    """The numbers of one round of checks that go into the before/after table."""
    steps = _step_list(steps)
    s = normalize_settings(settings)
    probe = next((st for st in steps if st.get("step") == "probe"), {})
    checks = (probe.get("details") or {}).get("checks") or {}
    root = checks.get("root") or {}
    health = checks.get("health") or {}
    return {
        "server": s.get("server"),
        "gunicorn_timeout": s.get("gunicorn_timeout"),
        "workers": s.get("workers"),
        "workers_in_opts": s.get("workers_in_opts"),
        "keep_alive": s.get("keep_alive"),
        "static_prefix": s.get("static_prefix") or "",
        "crashes": _crashes(steps),
        "root_status": root.get("status"),
        "root_title": bool(root.get("title_found")),
        "root_latency_ms": root.get("latency_ms"),
        "health_status": health.get("status"),
        "health_latency_ms": health.get("latency_ms"),
        "healthy": not any(f.get("severity") == "critical" for f in all_findings(steps)),
        "transaction": transaction_measure(steps),  # step 4b; None when it did not run
    }


def _fmt_dashboard(m: dict) -> str:
    st = m.get("root_status")
    if st is None:
        return "not probed"
    if st == 200 and m.get("root_title"):
        return "200 OK (MLflow UI)"
    return f"{st} Error" if isinstance(st, int) and st >= 400 else f"{st}"


def _fmt_workers(m: dict) -> str:
    w = m.get("workers")
    wo = m.get("workers_in_opts")
    out = str(w) if w is not None else "?"
    if wo is not None and wo != w:
        out += f" (opts say {wo})"
    return out


def _fmt_ms(v) -> str:
    return f"{v:.0f} ms" if isinstance(v, int | float) else "-"


def _change(before, after) -> str:
    if before == after:
        return "unchanged"
    if isinstance(before, int | float) and isinstance(after, int | float) and before:
        pct = (after - before) * 100.0 / before
        return f"{pct:+.0f}%"
    return "changed"


def before_after(before: dict, after: dict) -> list[dict]:
    """Rows of the seed's "Before vs After" table, from two ``measurements()``."""
    def timeout(m):
        if m.get("server") and m.get("server") != "gunicorn":
            return f"n/a ({m['server']})"
        return f"{m['gunicorn_timeout']}s" if m.get("gunicorn_timeout") is not None else "gunicorn default (30s)"

    def crashes(m):
        c = m.get("crashes") or {}
        return (f"{c.get('total', 0)} (timeouts {c.get('worker_timeouts', 0)}, SIGKILL {c.get('worker_kills', 0)}, "
                f"restarts {c.get('restarts', 0)})")

    rows = [
        ("Worker timeout", timeout(before), timeout(after),
         _change(before.get("gunicorn_timeout"), after.get("gunicorn_timeout"))),
        ("Worker count", _fmt_workers(before), _fmt_workers(after),
         "made consistent" if before.get("workers") == after.get("workers")
         and before.get("workers_in_opts") not in (None, before.get("workers"))
         and after.get("workers_in_opts") in (None, after.get("workers"))
         else _change(before.get("workers"), after.get("workers"))),
        ("Static prefix", before.get("static_prefix") or "none", after.get("static_prefix") or "none",
         "removed" if before.get("static_prefix") and not after.get("static_prefix") else
         _change(before.get("static_prefix"), after.get("static_prefix"))),
        ("Worker crashes", crashes(before), crashes(after),
         "fixed" if (before.get("crashes") or {}).get("total") and not (after.get("crashes") or {}).get("total")
         else _change((before.get("crashes") or {}).get("total"), (after.get("crashes") or {}).get("total"))),
        ("Dashboard (/)", _fmt_dashboard(before), _fmt_dashboard(after),
         "fixed" if before.get("root_status") != 200 and after.get("root_status") == 200 and after.get("root_title")
         else ("broken" if before.get("root_status") == 200 and after.get("root_status") != 200 else
               _change(before.get("root_status"), after.get("root_status")))),
        ("Latency / (health)", f"{_fmt_ms(before.get('root_latency_ms'))} ({_fmt_ms(before.get('health_latency_ms'))})",
         f"{_fmt_ms(after.get('root_latency_ms'))} ({_fmt_ms(after.get('health_latency_ms'))})",
         "measured"),
        ("Status", "healthy" if before.get("healthy") else "UNHEALTHY",
         "healthy" if after.get("healthy") else "UNHEALTHY",
         "fixed" if not before.get("healthy") and after.get("healthy") else
         ("unchanged" if before.get("healthy") == after.get("healthy") else "worse")),
    ]
    tb, ta = before.get("transaction"), after.get("transaction")
    if tb or ta:  # step 4b ran: one row before "Status"
        txt_b, txt_a = (tb or {}).get("text", "not run"), (ta or {}).get("text", "not run")
        rows.insert(len(rows) - 1, ("Deep check (4b)", txt_b, txt_a,
                                    "fixed" if txt_b.startswith("FAILED") and txt_a.startswith("passed") else
                                    ("unchanged" if txt_b == txt_a else "measured")))
    return [{"metric": r[0], "before": r[1], "after": r[2], "change": r[3]} for r in rows]


def _rounds(rounds, remediated: list[dict]) -> list[dict]:
    """Per remediation round: what was planned, what ran (records tagged with their round), what was left."""
    out, pos = [], 0
    for i, r in enumerate(_objs(rounds, "rounds"), 1):
        n = _int(r.get("count", 0), "rounds[].count", 0)
        ran = remediated[pos:pos + n]
        for rec in ran:
            rec["round"] = _int(r.get("round", i), "rounds[].round", 1)
        pos += n
        out.append({"round": _int(r.get("round", i), "rounds[].round", 1),
                    "planned": [a.get("action") for a in r.get("planned") or [] if isinstance(a, dict)],
                    "remediated": [{k: rec.get(k) for k in ("action", "changed", "failed", "reason")} for rec in ran],
                    "findings_after": r.get("findings_after")})
    return out


def build_report(before, after=None, *, plan_result=None, remediated=None, settings_before=None,
                 settings_after=None, extra_steps=None, meta=None, rounds=None) -> dict:
    """Everything a person or AWX needs: per-step status, remediation, before/after, what is left.

    ``rounds``: one ``{round, count, planned, findings_after}`` per remediation round (``count`` records of
    ``remediated`` belong to it, in order). Findings of ``extra_steps`` (5-6, port-forward) count as remaining.
    """
    before_steps = _step_list(before)
    after_steps = _step_list(after) if after else before_steps
    plan_result = plan_result or {}
    remediated = [dict(r) for r in (remediated or []) if isinstance(r, dict)]
    rounds_out = _rounds(rounds, remediated)
    extra = _step_list(extra_steps)
    remaining = [f for f in all_findings(after_steps) + all_findings(extra) if f.get("severity") != "info"]
    critical = [f for f in remaining if f.get("severity") == "critical"]
    m_before = measurements(before_steps, settings_before)
    m_after = measurements(after_steps, settings_after if settings_after else settings_before)
    healthy = not critical
    next_steps = []
    blockers = sorted({f["code"] for f in remaining} & _RESTART_BLOCKERS)
    # the causes first (a config error explains the crash loop it causes), then the other critical, then warnings
    ordered = sorted(critical, key=lambda f: f["code"] not in _RESTART_BLOCKERS) + [
        f for f in remaining if f.get("severity") == "warning"]
    # the plan's own next steps know the run's context (expected prefix, actions already run, blockers)
    plan_hints = {r.get("code"): r.get("next_step") for r in plan_result.get("report_only") or []
                  if isinstance(r, dict) and r.get("next_step")}
    for f in ordered:
        action, _targets, hint = REMEDIATION_TABLE.get(f["code"], ("report", [], "see the finding's evidence"))
        if action == "restart" and blockers:
            action, hint = "report", f"not restarted: {', '.join(blockers)} explains it (see above)"
        elif f["code"] in plan_hints:
            action, hint = "report", plan_hints[f["code"]]
        hint = (f.get("evidence") or {}).get("next_step") or hint
        if action != "report" and after:
            # it showed only after this run's remediation (e.g. once the pod answered): the next run heals it
            hint = f"re-run verify.yml (it remediates this by {action}); or by hand: {hint}"
        line = f"{f['code']}: {hint}"
        if line not in next_steps:
            next_steps.append(line)
    status = "healthy" if healthy and not remaining else ("degraded" if healthy else "unhealthy")
    steps_table = []
    for st in after_steps + extra:
        b = next((x for x in before_steps if x.get("step") == st.get("step")), None)
        steps_table.append({"step": st.get("step"), "title": st.get("title"), "status": st.get("status"),
                            "before": b.get("status") if b and after else None,
                            "summary": st.get("summary"),
                            "findings": [f["code"] for f in st.get("findings") or []]})
    meta = dict(meta or {})
    return {
        "status": status,
        "healthy": healthy,
        "meta": meta,
        "steps": steps_table,
        "findings_before": all_findings(before_steps),
        "findings": all_findings(after_steps),
        "remaining": remaining,
        "plan": {"actions": plan_result.get("actions", []), "report_only": plan_result.get("report_only", [])},
        "remediated": remediated,
        "rounds": rounds_out,
        "measurements": {"before": m_before, "after": m_after},
        "before_after": before_after(m_before, m_after),
        "next_steps": next_steps,
    }


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(widths[i]) for i, h in enumerate(headers)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line, sep]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |")
    return out


_MARK = {"ok": "OK  ", "warning": "WARN", "failed": "FAIL", "skipped": "SKIP", "changed": "DONE"}


def render_text(report: dict) -> list[str]:
    """The at-a-glance summary (a list of lines, for ansible.builtin.debug)."""
    if not isinstance(report, dict) or "steps" not in report:
        raise VerifyError("report: expected the mapping returned by asgard.mlflow.verify_report")
    meta = report.get("meta") or {}
    out = [f"MLflow verify: {report['status'].upper()} - {meta.get('namespace', '?')}/"
           f"{meta.get('deployment', '?')} (service {meta.get('service', '?')})"]
    for st in report["steps"]:
        mark = _MARK.get(st.get("status"), st.get("status", "?"))
        was = f" (was {st['before']})" if st.get("before") and st.get("before") != st.get("status") else ""
        codes = f" [{', '.join(st['findings'])}]" if st.get("findings") else ""
        out.append(f"  [{mark}] {st.get('title')}: {st.get('summary')}{was}{codes}")
    if meta.get("check_mode") and report.get("plan", {}).get("actions"):
        out.append("Would remediate (check mode: nothing was changed):")
        for a in report["plan"]["actions"]:
            out.append(f"  - {a['action']}: {a['description']} (for {', '.join(a.get('reason', []))})")
    elif report.get("remediated"):
        out.append("Remediated:")
        rounds = {r.get("round"): r for r in report.get("rounds") or []}
        for r in report["remediated"]:
            state = "FAILED" if r.get("failed") else ("changed" if r.get("changed") else "no change")
            rnd = f"round {r['round']}, " if r.get("round") else ""
            out.append(f"  - {r.get('action')}: {r.get('description', '')} "
                       f"({rnd}{state}; for {', '.join(r.get('reason', []))})")
        for n, r in sorted(rounds.items()):
            if r.get("findings_after") is not None:
                out.append(f"  after round {n}: {', '.join(r['findings_after']) or 'no finding left'}")
        if report.get("plan", {}).get("actions"):
            out.append("Not applied (verify_remediation_rounds reached, or the same action already ran for it):")
            for a in report["plan"]["actions"]:
                out.append(f"  - {a['action']}: {a['description']} (for {', '.join(a.get('reason', []))})")
    elif report.get("plan", {}).get("actions"):
        out.append("Would remediate (not applied):")
        for a in report["plan"]["actions"]:
            out.append(f"  - {a['action']}: {a['description']} (for {', '.join(a.get('reason', []))})")
    out.append("Before vs After:")
    rows = [[r["metric"], r["before"], r["after"], r["change"]] for r in report["before_after"]]
    out.extend("  " + line for line in _table(["Metric", "Before", "After", "Change"], rows))
    if report.get("remaining"):
        out.append("Remaining findings:")
        for f in report["remaining"]:
            out.append(f"  - {f['severity'].upper()} {f['code']}: {f['message']}")
    if report.get("next_steps"):
        out.append("Next steps for a human:")
        out.extend(f"  - {n}" for n in report["next_steps"])
    if meta.get("dashboard_url"):
        out.append(f"Dashboard: {meta['dashboard_url']}")
    return out


def render_markdown(report: dict) -> str:
    """An incident report in the form of the seed document."""
    if not isinstance(report, dict) or "steps" not in report:
        raise VerifyError("report: expected the mapping returned by asgard.mlflow.verify_report")
    meta = report.get("meta") or {}
    lines = [f"# MLflow verify report: {meta.get('namespace', '?')}/{meta.get('deployment', '?')}", "",
             f"**Date**: {meta.get('finished_at') or meta.get('started_at') or '-'}  ",
             f"**Status**: {report['status']}  ",
             f"**Service**: {meta.get('service', '?')}  ",
             f"**Run**: {'check mode (nothing changed)' if meta.get('check_mode') else 'live'}"
             f"{', report only' if meta.get('remediate') is False else ''}", "", "---", "",
             "## Root Cause Analysis", ""]
    before = [f for f in report.get("findings_before") or [] if f.get("severity") != "info"]
    if not before:
        lines.append("No issue found: every check passed.")
    for i, f in enumerate(before, 1):
        lines.append(f"{i}. **{f['code']}** ({f['severity']}, step {f['step']}): {f['message']}")
        samples = (f.get("evidence") or {}).get("samples") or []
        for s in samples[:2]:
            lines.append(f"   - `{s}`")
    lines += ["", "## Solutions Applied", ""]
    if report.get("remediated") and not meta.get("check_mode"):
        for r in report["remediated"]:
            lines.append(f"- {('round ' + str(r['round']) + ': ') if r.get('round') else ''}**{r.get('action')}**: "
                         f"{r.get('description', '')} "
                         f"({'changed' if r.get('changed') else 'no change needed'}; for {', '.join(r.get('reason', []))})")
    elif report.get("plan", {}).get("actions"):
        for a in report["plan"]["actions"]:
            lines.append(f"- (not applied) **{a['action']}**: {a['description']}")
    else:
        lines.append("None.")
    lines += ["", "## Verification Steps", ""]
    for st in report["steps"]:
        lines.append(f"- {st.get('title')}: **{st.get('status')}** - {st.get('summary')}")
    lines += ["", "## Before vs After", ""]
    lines += _table(["Metric", "Before", "After", "Change"],
                    [[r["metric"], r["before"], r["after"], r["change"]] for r in report["before_after"]])
    if report.get("remaining"):
        lines += ["", "## Remaining Findings", ""]
        lines += [f"- **{f['code']}** ({f['severity']}): {f['message']}" for f in report["remaining"]]
    if report.get("next_steps"):
        lines += ["", "## Next Steps", ""]
        lines += [f"- {n}" for n in report["next_steps"]]
    lines += ["", "## How to Access the MLflow Dashboard", ""]
    if meta.get("dashboard_url"):
        lines.append(f"A port-forward is running: open {meta['dashboard_url']}")
    else:
        lines += ["```bash", "ansible-playbook playbooks/verify.yml -e verify_port_forward=true",
                  "# then open http://127.0.0.1:5000/", "```"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- environment
def unattended(environ=None, hostvars=None) -> bool:
    """True under AWX/Tower (AWX_* env, tower_job_id / awx_job_id vars) or CI (env CI)."""
    env = os.environ if environ is None else environ
    hv = hostvars or {}
    if any(k.startswith(("AWX_", "TOWER_")) for k in env):
        return True
    if str(env.get("CI", "")).lower() not in ("", "0", "false", "no"):
        return True
    return any(hv.get(k) not in (None, "") for k in ("tower_job_id", "awx_job_id"))


# ------------------------------------------------------------------------------------ inputs for the role
def configmap_refs(deployment) -> list[str]:
    """Names of the ConfigMaps the pod template's containers read env from (for mlflow_server_settings)."""
    dep = _obj(deployment, "deployment")
    spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    names: list[str] = []
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for e in c.get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name")
            if ref and ref not in names:
                names.append(ref)
        for ef in c.get("envFrom") or []:
            ref = (ef.get("configMapRef") or {}).get("name")
            if ref and ref not in names:
                names.append(ref)
    return names


def log_targets(pods, container: str | None = None, previous: bool = True) -> list[dict]:
    """Which logs step 2 reads: the MLflow container of every live pod, and its previous instance if it restarted."""
    out = []
    for p in _objs(pods, "pods"):
        meta = p.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        main = _pick_container((p.get("spec") or {}).get("containers") or [], container).get("name")
        if not main:
            continue
        cs = next((c for c in (p.get("status") or {}).get("containerStatuses") or [] if c.get("name") == main), {})
        running_or_done = bool((cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated")
                               or cs.get("restartCount"))
        if running_or_done:
            out.append({"pod": meta.get("name"), "container": main, "previous": False})
        if previous and (cs.get("restartCount") or 0) > 0:
            out.append({"pod": meta.get("name"), "container": main, "previous": True})
    return out


def migration_job(deployment, settings=None, *, name: str = "", ttl_seconds: int = 3600,
                  labels: dict | None = None) -> dict:
    """A Job running ``mlflow db upgrade`` with the Deployment's image, env, volumes and security context.

    The backend store URI is taken from the container's environment (``$MLFLOW_BACKEND_STORE_URI``, expanded by
    the shell in the pod, so a Secret-held URI never passes through Ansible) or, failing that, from a literal
    ``--backend-store-uri`` in the command (``settings``). Raises when neither is there.
    """
    dep = _obj(deployment, "deployment")
    if not dep:
        raise VerifyError("deployment: the Deployment is needed to build the migration Job")
    meta = dep.get("metadata") or {}
    tmpl = ((dep.get("spec") or {}).get("template") or {})
    pspec = tmpl.get("spec") or {}
    s = normalize_settings(settings)
    main = _pick_container(pspec.get("containers") or [], s.get("container"))
    if not main:
        raise VerifyError("deployment: no container in the pod template")
    env_names = {e.get("name") for e in main.get("env") or []}
    has_env_from = bool(main.get("envFrom"))
    uri = s.get("backend_store_uri") or ""
    # the raw argument: a URI built from $(VAR) references (e.g. $(DB_PASSWORD) from a Secret) is expanded by
    # Kubernetes from the container's env, in the Job as in the server, when it is passed as an argv element
    argv = [str(a) for a in (main.get("command") or []) + (main.get("args") or [])]
    raw_uri = next((a.split("=", 1)[1] for a in argv if a.startswith("--backend-store-uri=")), "")
    if not raw_uri and "--backend-store-uri" in argv[:-1]:
        raw_uri = argv[argv.index("--backend-store-uri") + 1]
    command = None
    if "MLFLOW_BACKEND_STORE_URI" in env_names or (has_env_from and (not uri or "redacted" in uri or "***" in uri)):
        script = 'exec mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"'
    elif uri and "$" not in uri and "redacted" not in uri and "***" not in uri:
        script = "exec mlflow db upgrade '" + uri.replace("'", "'\"'\"'") + "'"
    elif "$(" in raw_uri:
        command = ["mlflow", "db", "upgrade", raw_uri]
    else:
        raise VerifyError("the backend store URI was not found in the mlflow container (neither env "
                          "MLFLOW_BACKEND_STORE_URI nor a literal --backend-store-uri): run `mlflow db upgrade` by hand")
    container = {k: v for k, v in main.items() if k in ("image", "imagePullPolicy", "env", "envFrom", "volumeMounts",
                                                        "securityContext", "resources", "workingDir")}
    container.update({"name": "db-upgrade", "command": command or ["/bin/sh", "-c", script]})
    job_spec = {k: v for k, v in pspec.items() if k in ("volumes", "securityContext", "serviceAccountName",
                                                        "automountServiceAccountToken", "imagePullSecrets",
                                                        "nodeSelector", "tolerations", "affinity", "hostAliases",
                                                        "dnsPolicy", "dnsConfig", "enableServiceLinks")}
    job_spec.update({"restartPolicy": "Never", "containers": [container]})
    job_name = name or f"{meta.get('name', 'mlflow')}-verify-db-upgrade"
    lbl = {"app.kubernetes.io/managed-by": "asgard.mlflow", "app.kubernetes.io/component": "db-upgrade"}
    lbl.update(labels or {})
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name[:63].rstrip("-"), "namespace": meta.get("namespace"), "labels": lbl},
        "spec": {"backoffLimit": 1, "ttlSecondsAfterFinished": _int(ttl_seconds, "ttl_seconds", 0),
                 "template": {"metadata": {"labels": lbl}, "spec": job_spec}},
    }


def match_labels(deployment) -> list[str]:
    """The Deployment's spec.selector.matchLabels as k8s_info label_selectors (``key=value`` strings)."""
    dep = _obj(deployment, "deployment")
    ml = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return [f"{k}={v}" for k, v in ml.items()]
