# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the end of a verify run: steps 5-6 read from the port_forward result, the remediation lock, the report
and everything the role prints, writes and publishes from it, and whether the run fails."""

from __future__ import annotations

from datetime import datetime, timezone

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding, step_result
from ansible_collections.asgard.mlflow.plugins.module_utils._redact import redact, redact_deep
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_render import console, render_markdown, render_text
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_report import build_report


def forward_steps(pf: dict | None, *, enabled: bool, check_mode: bool, address: str, local_port: int) -> list[dict]:
    """Steps 5 (clean-up of old forwards) and 6 (the forward to the Service) from an asgard.mlflow.port_forward
    result; a forward that could not start is PORT_FORWARD_FAILED naming the process that holds the port."""
    if not enabled:
        why = "verify_port_forward is false: AWX/CI or asked"
        return [step_result("cleanup", [], f"skipped ({why})", {"stopped": []}, status="skipped"),
                step_result("port_forward", [], "skipped", {}, status="skipped")]
    pf = pf or {}
    stopped = pf.get("stopped") or []
    cleanup = step_result("cleanup", [], f"stopped {len(stopped)} old forward(s), removed "
                          f"{len(pf.get('stale_removed') or [])} stale entr(ies)",
                          {"stopped": [s.get("pid") for s in stopped if isinstance(s, dict)],
                           "processes": redact_deep([{k: s.get(k) for k in ("pid", "cmdline", "reason")}
                                                     for s in stopped if isinstance(s, dict)])})
    if pf.get("failed"):
        msg = redact(pf.get("msg") or "port_forward failed", limit=300)
        holder = redact_deep(pf.get("holder") or {})
        fwd = step_result("port_forward", [finding("PORT_FORWARD_FAILED", "the port-forward to the dashboard could not "
                                                   f"start: {msg}", {"holder": holder})],
                          msg, {"url": "", "pid": None, "log": pf.get("log", "")})
    else:
        verb = "would listen on " if check_mode else "listening on "
        fwd = step_result("port_forward", [], f"{verb}{address}:{local_port}"
                          + (f" (pid {pf['pid']})" if pf.get("pid") else ""),
                          {"url": pf.get("url", ""), "pid": pf.get("pid"), "log": pf.get("log", "")})
    return [cleanup, fwd]


def lock_findings(lock: dict | None) -> list[dict]:
    """REMEDIATION_IN_PROGRESS when another run held the remediation lock (after the wait)."""
    if not isinstance(lock, dict) or lock.get("skipped") or lock.get("acquired") or lock.get("would_acquire"):
        return []
    if not lock.get("held_by") and not lock.get("failed"):
        return []
    who = redact(lock.get("held_by") or "another run", limit=200)
    since = lock.get("since") or "?"
    msg = (f"another run ({who}, since {since}) holds the remediation lock of this Deployment"
           + (f"; waited {lock.get('waited'):g} s" if isinstance(lock.get("waited"), int | float) else "")
           + ": this run remediated nothing" + (f" ({redact(lock.get('msg'), limit=200)})" if lock.get("failed") else ""))
    return [finding("REMEDIATION_IN_PROGRESS", msg, {"held_by": who, "since": since,
                                                     "expires_at": lock.get("expires_at"),
                                                     "lease": lock.get("lease_name")}, step="remediate")]


def finish(result: dict, *, port_forward: dict | None = None, lock: dict | None = None, port_forward_enabled=True,
           fail_when_unhealthy=True, address: str = "127.0.0.1", local_port: int = 5000) -> dict:
    """Everything the role does at the end, from the last mlflow_verify result:
    ``{report, text, markdown, stats, fail, fail_msg}``."""
    state = (result or {}).get("state") if isinstance(result, dict) else None
    if not isinstance(state, dict) or "before" not in state:
        raise VerifyError("result: expected the registered result of asgard.mlflow.mlflow_verify")
    meta = dict(state.get("meta") or {})
    check_mode = bool(meta.get("check_mode"))
    extra = forward_steps(port_forward if isinstance(port_forward, dict) and not port_forward.get("skipped") else None,
                          enabled=bool(port_forward_enabled), check_mode=check_mode, address=address,
                          local_port=int(local_port))
    pf_ok = bool(port_forward_enabled) and extra[1]["status"] == "ok"
    prefix = ((state.get("last") or {}).get("settings") or {}).get("static_prefix") or ""
    url = ((port_forward or {}).get("url") or f"http://{address}:{local_port}") if pf_ok else ""
    meta.update(started_at=state.get("started_at"), finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                dashboard_url=f"{url.rstrip('/')}{prefix.rstrip('/')}/" if url else "")
    report = build_report(state, extra_steps=extra, extra_findings=lock_findings(lock), meta=meta)
    text = console(extra) + render_text(report)
    if report["meta"]["dashboard_url"]:
        text.append(f"Stop the forward: ansible localhost -m asgard.mlflow.port_forward -a 'state=absent "
                    f"local_port={local_port}'")
    pf_failed = bool(port_forward_enabled) and extra[1]["status"] != "ok" and not check_mode
    unhealthy = bool(fail_when_unhealthy) and not report["healthy"] and not check_mode
    meta_ns = meta.get("namespace", "?")
    if unhealthy:
        crit = ", ".join(f["code"] for f in report["remaining"] if f["severity"] == "critical")
        fail_msg = f"MLflow in {meta_ns} is {report['status']} after this run. Remaining: {crit}."
    elif pf_failed:
        fail_msg = (f"MLflow in {meta_ns} is {report['status']}, but the dashboard port-forward on {address}:"
                    f"{local_port} could not start.")
    else:
        fail_msg = ""
    if fail_msg:
        fail_msg += " Next steps: " + " | ".join(report["next_steps"])
    stats = {"schema_version": report["schema_version"], "status": report["status"], "healthy": report["healthy"],
             "steps": report["steps"], "remediated": report["remediated"], "before_after": report["before_after"],
             "remaining": [f["code"] for f in report["remaining"]], "next_steps": report["next_steps"]}
    return {"report": report, "text": text, "markdown": render_markdown(report), "stats": stats,
            "fail": bool(fail_msg), "fail_msg": fail_msg}
