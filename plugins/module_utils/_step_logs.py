# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: step 2 of the verify role, the log scan (``kubectl logs --tail``), over the MLflow container's current
log and, after a restart, its previous one."""

from __future__ import annotations

import re

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import SEVERITIES, finding, lookup, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._step_pods import main_container
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError, as_int, objs

# The built-in patterns (verify_log_patterns null). Severities and messages are the catalogue's.
_DEFAULT_PATTERNS = (
    ("WORKER_TIMEOUT", r"\[CRITICAL\] WORKER TIMEOUT"),
    ("WORKER_KILLED", r"was sent SIGKILL"),
    ("INVALID_HOST_HEADER", r"(?i)invalid host header"),
    ("DB_SCHEMA_OUTDATED", r"(?i)out-of-date database schema"),
    ("DB_SCHEMA_NEWER", r"Can't locate revision identified by"),
    ("TRACEBACK", r"Traceback \(most recent call last\)"),
    ("ERROR_LINES", r"\b(ERROR|CRITICAL)\b"),
)
DEFAULT_LOG_PATTERNS = [{"code": c, "pattern": p, "severity": lookup(c).severity, "message": lookup(c).meaning}
                        for c, p in _DEFAULT_PATTERNS]

# A bad flag or option: the usage errors click (mlflow server) and argparse print before exiting with code 2.
# Built in (not a verify_log_patterns entry): it decides that a crash loop is a configuration error, not restarted.
_CONFIG_ERROR_STRONG = re.compile(r"No such option|Invalid value for|unrecognized arguments|Got unexpected extra "
                                  r"argument|No such command|Missing option|Missing argument|requires an argument"
                                  r"|option .* (?:is not allowed|cannot be used) with|UsageError")
_CONFIG_ERROR_GENERIC = re.compile(r"^(?:Error|error|[\w.-]+: error): \S")
_USAGE_EXIT_CODE = 2


def compile_patterns(patterns, field: str = "verify_log_patterns") -> list[tuple[dict, re.Pattern]]:
    """Validate the log patterns (None: the built-in ones); each error names the entry and the key."""
    if patterns is None or patterns == "":
        patterns = DEFAULT_LOG_PATTERNS
    if not isinstance(patterns, list):
        raise VerifyError(f"{field}: expected a list of {{code, pattern, severity, message}} mappings")
    out = []
    for i, p in enumerate(patterns):
        where = f"{field}[{i}]"
        if not isinstance(p, dict):
            raise VerifyError(f"{where}: expected a mapping with keys code, pattern, severity, message")
        unknown = set(p) - {"code", "pattern", "severity", "message"}
        if unknown:
            raise VerifyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected code, pattern, "
                              "severity, message)")
        code = p.get("code")
        if not code or not re.fullmatch(r"[A-Z][A-Z0-9_]*", str(code)):
            raise VerifyError(f"{where}.code: expected an UPPER_SNAKE_CASE code, got {code!r}")
        sev = p.get("severity") or lookup(code).severity
        if sev not in SEVERITIES:
            raise VerifyError(f"{where}.severity: expected one of {', '.join(SEVERITIES)}, got {sev!r}")
        if not p.get("pattern"):
            raise VerifyError(f"{where}.pattern: expected a non-empty regular expression")
        try:
            rx = re.compile(str(p["pattern"]))
        except re.error as exc:
            raise VerifyError(f"{where}.pattern: invalid regular expression {p.get('pattern')!r}: {exc}") from exc
        out.append(({"code": code, "severity": sev, "message": p.get("message") or lookup(code).meaning or code}, rx))
    return out


def log_targets(pods, container: str | None = None, previous: bool = True) -> list[dict]:
    """Which logs step 2 reads: THE MLflow container of every live pod (the one rule), and its previous instance
    when it restarted. A pod whose container cannot be told is skipped (the settings step reports why)."""
    out = []
    for p in objs(pods, "pods"):
        meta = p.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        main = main_container(p.get("spec") or {}, container)
        if not main:
            continue
        cs = next((c for c in (p.get("status") or {}).get("containerStatuses") or [] if c.get("name") == main), {})
        state = cs.get("state") or {}
        if state.get("running") or state.get("terminated") or cs.get("restartCount"):
            out.append({"pod": meta.get("name"), "container": main, "previous": False})
        if previous and (cs.get("restartCount") or 0) > 0:
            out.append({"pod": meta.get("name"), "container": main, "previous": True})
    return out


def _exits(pods_step) -> dict:
    """(pod, container) -> last exit code and whether it crash loops, from a step 1 result."""
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
            "CONTAINER_CONFIG_ERROR",
            f"pod {c['pod']} container {c['container']} exits on a bad flag or option"
            + (f" (exit code {code})" if code is not None else "") + f": {c['line']}",
            {"pod": c["pod"], "container": c["container"], "exit_code": code, "line": c["line"],
             "source": c["source"], "cause": "args",
             "next_step": f"fix the command/args of container {c['container']} in the Deployment's pod template "
                          f"(spec.template.spec.containers[name={c['container']}].args): the server rejects them "
                          f"with `{c['line']}`; a restart cannot help, then re-run verify.yml"}, step="logs"))
    return out


def log_scan(logs, patterns=None, *, max_samples: int = 3, pods=None) -> dict:
    """Step 2: count each pattern over the logs (``[{pod, container, previous, text, failed}]``), keep a few
    redacted samples. ``pods``: the step 1 result; a usage error (bad flag/option) in the log of a container that
    exited with code 2 or crash loops gives the critical CONTAINER_CONFIG_ERROR (a restart cannot help)."""
    compiled = compile_patterns(patterns)
    max_samples = as_int(max_samples, "verify_log_max_samples", 0)
    sources = objs(logs, "logs")
    config_candidates: list[dict] = []
    counts = {meta["code"]: 0 for meta, _rx in compiled}
    samples: dict[str, list[str]] = {meta["code"]: [] for meta, _rx in compiled}
    where: dict[str, set] = {meta["code"]: set() for meta, _rx in compiled}
    lines_scanned = 0
    for src in sources:
        label = f"{src.get('pod')}/{src.get('container')}" + (" (previous)" if src.get("previous") else "")
        for line in str(src.get("text") or "").splitlines():
            lines_scanned += 1
            strong = bool(_CONFIG_ERROR_STRONG.search(line))
            if strong or _CONFIG_ERROR_GENERIC.match(line.strip()):
                config_candidates.append({"pod": src.get("pod"), "container": src.get("container"), "source": label,
                                          "previous": bool(src.get("previous")), "strong": strong,
                                          "line": redact(line.strip(), limit=300)})
            for meta, rx in compiled:
                if rx.search(line):
                    counts[meta["code"]] += 1
                    where[meta["code"]].add(label)
                    if len(samples[meta["code"]]) < max_samples:
                        samples[meta["code"]].append(redact(line.strip(), limit=300))
    findings = _config_error_findings(config_candidates, pods)
    for meta, _rx in compiled:
        n = counts[meta["code"]]
        if n:
            findings.append(finding(meta["code"], f"{meta['message']}: {n} line(s)",
                                    {"count": n, "samples": samples[meta["code"]],
                                     "sources": sorted(where[meta["code"]])},
                                    step="logs", severity=meta["severity"]))
    scanned = [f"{s.get('pod')}/{s.get('container')}{' (previous)' if s.get('previous') else ''}" for s in sources
               if not s.get("failed")]
    failed = [f"{s.get('pod')}/{s.get('container')}: {s.get('error')}" for s in sources if s.get("failed")]
    hits = ", ".join(f"{c} {n}" for c, n in counts.items() if n) or "no matches"
    details = {"counts": counts, "lines_scanned": lines_scanned, "sources": scanned}
    if failed:
        details["unreadable"] = failed
    return step_result("logs", findings, f"{lines_scanned} line(s) from {len(scanned)} log(s): {hits}", details)
