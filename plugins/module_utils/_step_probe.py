# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: steps 4 and 4b of the verify role, a ``run_probe`` result (``curl /health`` and ``/`` through a
port-forward, and the optional deep check) read as step results.

Step 4 is judged against ``verify_expected_static_prefix`` here, before anything prints it: with an expected prefix
the dashboard is checked at ``{prefix}/`` (``GET /`` 404 is then expected).
"""

from __future__ import annotations

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, lookup, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._step_settings import expected_prefix
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact, redact_deep
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import fmt_ms

_CHECKS = ("health", "root", "version", "api")
_AUTH_CODES = ("AUTH_REQUIRED", "AUTH_REJECTED")


def probe_result(probe: dict | None, expected_static_prefix=None) -> dict:
    """Step 4 from a probe result (``run_probe``'s dict), judged against the expected static prefix."""
    if not probe:
        return step_result("probe", [], "skipped", {"skipped": True}, status="skipped")
    findings = []
    for f in probe.get("findings") or []:
        code = f.get("code") or "PROBE_ERROR"
        if lookup(code).steps[0] == "transaction":
            continue  # step 4b's own
        ev = f.get("evidence") if isinstance(f.get("evidence"), dict) else {"detail": f.get("evidence")}
        findings.append(finding(code, redact(f.get("message") or code, limit=600), redact_deep(ev), step="probe",
                                severity=f.get("severity") if f.get("severity") in ("critical", "warning", "info")
                                else None))
    if probe.get("error") and not findings:
        findings.append(finding("PROBE_ERROR", f"mlflow_probe failed: {redact(probe['error'], limit=400)}", {}))
    # a 401 (AUTH_REQUIRED / AUTH_REJECTED) explains an unconfirmed dashboard: not a broken server
    if probe.get("healthy") is False and not any(f["severity"] == "critical" or f["code"] in _AUTH_CODES
                                                 for f in findings):
        findings.append(finding("PROBE_UNHEALTHY", "mlflow_probe reports the server unhealthy", {}))
    checks = probe.get("checks") or {}
    details = {
        "healthy": bool(probe.get("healthy")),
        "pod": probe.get("pod"),
        "mlflow_version": probe.get("mlflow_version"),
        "server_header": probe.get("server_header"),
        "health_path": probe.get("health_path"),
        "checks": {k: {kk: v.get(kk) for kk in ("status", "latency_ms", "bytes", "ok", "title_found", "path")}
                   for k, v in checks.items() if isinstance(v, dict)},
    }
    expected = expected_prefix(expected_static_prefix)
    if expected:
        findings = _judge_prefix(findings, details, expected)
    res = step_result("probe", findings, _summary(details), details)
    res["details"]["healthy"] = res["status"] != "failed"
    return res


def _judge_prefix(findings: list[dict], details: dict, expected: str) -> list[dict]:
    """The probe GETs ``/`` and, on a 404, ``{prefix}/`` (evidence ``ui_path``/``ui_status``). When that is the
    expected prefix and the UI answers there (200 with the MLflow title), ROOT_NOT_FOUND becomes the info finding
    ROOT_UNDER_PREFIX and the root check is the prefixed page."""
    out = []
    for f in findings:
        ev = f.get("evidence") or {}
        if (f.get("code") == "ROOT_NOT_FOUND" and ev.get("ui_path") == f"{expected}/" and ev.get("ui_status") == 200
                and ev.get("ui_title_found")):
            details["checks"]["root"] = {**(details["checks"].get("root") or {}), "status": 200, "ok": True,
                                         "title_found": True, "path": ev["ui_path"], "latency_ms": None}
            out.append(finding("ROOT_UNDER_PREFIX", f"the dashboard answers under the expected static prefix: "
                               f"{expected}/ 200 (GET / 404 is expected with a prefix)", {**ev, "expected": expected}))
            continue
        out.append(f)
    return out


def _summary(details: dict) -> str:
    parts = []
    for k in _CHECKS:
        c = details["checks"].get(k)
        if c:
            path = c.get("path")
            label = k if k != "root" or path in (None, "/") else f"root {path}"
            parts.append(f"{label} {c.get('status') if c.get('status') is not None else '-'}"
                         + (f" {c['latency_ms']:.0f}ms" if isinstance(c.get("latency_ms"), int | float) else ""))
    summary = ", ".join(parts) or "no checks"
    if details.get("mlflow_version"):
        summary += f" (MLflow {details['mlflow_version']})"
    return summary


# ------------------------------------------------------------------------------------------ step 4b
def transaction_result(probe: dict | None, *, skipped_reason: str = "") -> dict:
    """Step 4b: the deep check of a probe result (``transaction``); only its own findings (the read-only checks are
    step 4's). ``skipped_reason``: why it did not run (check mode); the step is then ``skipped``."""
    if skipped_reason or not probe:
        why = skipped_reason or "not run"
        return step_result("transaction", [finding("TRANSACTION_SKIPPED", f"deep check skipped: {why}",
                                                   {"reason": why})],
                           f"skipped: {why}", {"skipped": True, "reason": why}, status="skipped")
    txn = probe.get("transaction") if isinstance(probe.get("transaction"), dict) else {}
    findings = []
    for f in probe.get("findings") or []:
        code = f.get("code")
        if not code or lookup(code).steps[0] != "transaction":
            continue
        ev = f.get("evidence") if isinstance(f.get("evidence"), dict) else {"detail": f.get("evidence")}
        findings.append(finding(code, redact(f.get("message") or code, limit=600), redact_deep(ev),
                                step="transaction"))
    if not txn and not findings:
        findings.append(finding("TRANSACTION_ERROR", f"the deep check did not run: "
                                f"{redact(probe.get('error') or 'no transaction in the result', limit=400)}", {}))
    steps = [{k: st.get(k) for k in ("name", "status", "latency_ms", "ok") if k in st}
             for st in txn.get("steps") or [] if isinstance(st, dict)]
    art = txn.get("artifact") if isinstance(txn.get("artifact"), dict) else {}
    details = {"ok": txn.get("ok"), "skipped": bool(txn.get("skipped")), "reason": txn.get("skipped") or "",
               "experiment": txn.get("experiment"), "failed_step": txn.get("failed_step"),
               "elapsed_ms": txn.get("elapsed_ms"), "api_requests": txn.get("api_requests"),
               "artifact_bytes": art.get("bytes"), "upload_rate_kib_s": art.get("rate_kib_s"), "steps": steps}
    if txn.get("skipped"):
        summary = f"skipped: {txn['skipped']}"
    elif txn.get("ok"):
        summary = f"passed: {len(steps)} requests in {fmt_ms(txn.get('elapsed_ms'))}"
        if isinstance(art.get("bytes"), int):
            summary += f", artifact {art['bytes']} bytes"
            if isinstance(art.get("rate_kib_s"), int | float):
                summary += f" at {art['rate_kib_s']:.0f} KiB/s"
    else:
        summary = f"FAILED at {txn.get('failed_step') or '?'} after {fmt_ms(txn.get('elapsed_ms'))}"
    res = step_result("transaction", findings, summary, details)
    if txn.get("skipped") and res["status"] == "ok":
        res["status"] = "skipped"
    return res
