# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the verify report (JSON ``schema_version`` 2), built from the last round's state.

Shape (documented in docs/verify.md, "Report"): ``schema_version``, ``status`` (healthy, degraded, unhealthy),
``healthy``, ``meta``, ``steps``, ``findings_before``, ``findings``, ``remaining``, ``plan`` (``actions``,
``report_only``), ``remediated``, ``rounds``, ``measurements`` (``before``, ``after``), ``before_after``,
``next_steps``. Schema 1 (collection 0.1.0) had the same keys without ``schema_version``.
"""

from __future__ import annotations

from ansible_collections.asgard.mlflow.plugins.module_utils import _step_settings as S
from ansible_collections.asgard.mlflow.plugins.module_utils._findings import RESTART_BLOCKERS, lookup
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import fmt_ms
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import all_findings

SCHEMA_VERSION = 2


def _crashes(steps: list[dict]) -> dict:
    counts, restarts = {}, 0
    for st in steps:
        if st.get("step") == "logs":
            counts = (st.get("details") or {}).get("counts") or {}
        if st.get("step") == "pods":
            restarts = sum(p.get("restarts", 0) for p in (st.get("details") or {}).get("pods") or [])
    wt, wk = counts.get("WORKER_TIMEOUT", 0), counts.get("WORKER_KILLED", 0)
    return {"worker_timeouts": wt, "worker_kills": wk, "restarts": restarts, "total": wt + wk + restarts}


def _transaction(steps: list[dict]) -> dict | None:
    st = next((x for x in steps if x.get("step") == "transaction"), None)
    if not st:
        return None
    d = st.get("details") or {}
    if d.get("skipped"):
        return {"text": "skipped"}
    if d.get("ok"):
        return {"text": f"passed ({fmt_ms(d.get('elapsed_ms'))})", "elapsed_ms": d.get("elapsed_ms")}
    return {"text": f"FAILED at {d.get('failed_step') or '?'}", "elapsed_ms": d.get("elapsed_ms")}


def ingress_requests(st: dict) -> list[dict]:
    """Per Ingress of the ingress step: the endpoint its requests went to and each request's status and time."""
    out = []
    for d in (st.get("details") or {}).get("ingresses") or []:
        http = d.get("http") or {}
        out.append({"name": d.get("name"), "endpoint": http.get("endpoint"), "source": http.get("source"),
                    "host": http.get("host"),
                    "requests": [{k: r.get(k) for k in ("check", "method", "path", "status", "ms")}
                                 for r in http.get("requests") or []]})
    return out


def measurements(steps: list[dict], settings: dict | None) -> dict:
    """The numbers of one round of checks that go into the before/after table."""
    s = settings or {}
    probe = next((st for st in steps if st.get("step") == "probe"), {})
    checks = (probe.get("details") or {}).get("checks") or {}
    root, health = checks.get("root") or {}, checks.get("health") or {}
    return {
        "server": S.server(s),
        "gunicorn_timeout": S.gunicorn_timeout(s) if S.server(s) == "gunicorn" else None,
        "workers": S.workers(s),
        "workers_in_opts": S.workers_in_opts(s),
        "keep_alive": S.keep_alive(s),
        "static_prefix": S.static_prefix(s),
        "crashes": _crashes(steps),
        "root_status": root.get("status"),
        "root_title": bool(root.get("title_found")),
        "root_latency_ms": root.get("latency_ms"),
        "health_status": health.get("status"),
        "health_latency_ms": health.get("latency_ms"),
        "healthy": not any(f.get("severity") == "critical" for f in all_findings(steps)),
        "transaction": _transaction(steps),  # step 4b; None when it did not run
    }


def _change(before, after) -> str:
    if before == after:
        return "unchanged"
    if isinstance(before, int | float) and isinstance(after, int | float) and before:
        return f"{(after - before) * 100.0 / before:+.0f}%"
    return "changed"


def _dashboard(m: dict) -> str:
    st = m.get("root_status")
    if st is None:
        return "not probed"
    if st == 200 and m.get("root_title"):
        return "200 OK (MLflow UI)"
    return f"{st} Error" if isinstance(st, int) and st >= 400 else f"{st}"


def _workers(m: dict) -> str:
    w, wo = m.get("workers"), m.get("workers_in_opts")
    out = str(w) if w is not None else "?"
    return out + (f" (opts say {wo})" if wo is not None and wo != w else "")


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

    cb, ca = (before.get("crashes") or {}).get("total"), (after.get("crashes") or {}).get("total")
    rows = [
        ("Worker timeout", timeout(before), timeout(after),
         _change(before.get("gunicorn_timeout"), after.get("gunicorn_timeout"))),
        ("Worker count", _workers(before), _workers(after),
         "made consistent" if before.get("workers") == after.get("workers")
         and before.get("workers_in_opts") not in (None, before.get("workers"))
         and after.get("workers_in_opts") in (None, after.get("workers"))
         else _change(before.get("workers"), after.get("workers"))),
        ("Static prefix", before.get("static_prefix") or "none", after.get("static_prefix") or "none",
         "removed" if before.get("static_prefix") and not after.get("static_prefix") else
         _change(before.get("static_prefix"), after.get("static_prefix"))),
        ("Worker crashes", crashes(before), crashes(after), "fixed" if cb and not ca else _change(cb, ca)),
        ("Dashboard (/)", _dashboard(before), _dashboard(after),
         "fixed" if before.get("root_status") != 200 and after.get("root_status") == 200 and after.get("root_title")
         else ("broken" if before.get("root_status") == 200 and after.get("root_status") != 200 else
               _change(before.get("root_status"), after.get("root_status")))),
        ("Latency / (health)", f"{fmt_ms(before.get('root_latency_ms'))} ({fmt_ms(before.get('health_latency_ms'))})",
         f"{fmt_ms(after.get('root_latency_ms'))} ({fmt_ms(after.get('health_latency_ms'))})", "measured"),
        ("Status", "healthy" if before.get("healthy") else "UNHEALTHY", "healthy" if after.get("healthy") else "UNHEALTHY",
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


def next_steps(remaining: list[dict], plan: dict, *, remediated_any: bool) -> list[str]:
    """One line per remaining finding: the causes first (a restart blocker explains the crash loop it causes), then
    the other critical ones, then warnings. The plan's own next steps know the run's context."""
    critical = [f for f in remaining if f.get("severity") == "critical"]
    ordered = sorted(critical, key=lambda f: f["code"] not in RESTART_BLOCKERS) + [
        f for f in remaining if f.get("severity") == "warning"]
    blockers = plan.get("restart_blockers") or []
    plan_hints = {r.get("code"): r.get("next_step") for r in plan.get("report_only") or []
                  if isinstance(r, dict) and r.get("next_step")}
    out: list[str] = []
    for f in ordered:
        entry = lookup(f["code"])
        action, hint = entry.action, entry.next_step
        if action == "restart" and blockers:
            action, hint = "report", f"not restarted: {', '.join(blockers)} explains it (see above)"
        elif f["code"] in plan_hints:
            action, hint = "report", plan_hints[f["code"]]
        hint = (f.get("evidence") or {}).get("next_step") or hint
        if action not in ("report", "none") and remediated_any and not (f.get("evidence") or {}).get("failed_action"):
            # it showed only after this run's remediation: the next run heals it
            hint = f"re-run verify.yml (it remediates this by {action}); or by hand: {hint}"
        line = f"{f['code']}: {hint}"
        if line not in out:
            out.append(line)
    return out


def unresolved_by_failed_actions(remediated: list[dict], before: list[dict], remaining: list[dict]) -> list[dict]:
    """The findings an action of this run was for, when that action failed and the re-check no longer shows them
    (a failed migration leaves the schema old even when the server now fails on something else): still there, with
    the failure as the next step, so the report never reads as if the failed action had fixed them."""
    present = {f.get("code") for f in remaining}
    out = []
    for r in remediated:
        if not r.get("failed"):
            continue
        for code in r.get("reason") or []:
            f = next((x for x in before if x.get("code") == code), None)
            if f is None or code in present:
                continue
            present.add(code)
            out.append({**f, "evidence": {**(f.get("evidence") or {}), "failed_action": r.get("action"),
                                          "next_step": f"the {r.get('action')} of this run failed "
                                                       f"({r.get('description') or 'see remediated'}): fix that, "
                                                       "then re-run verify.yml"}})
    return out


def build_report(state: dict, *, extra_steps: list[dict] | None = None, extra_findings: list[dict] | None = None,
                 meta: dict | None = None) -> dict:
    """The report of a run from the last round's ``state`` (see ``_verify_round``), steps 5-6 (``extra_steps``) and
    findings outside the checks (``extra_findings``: REMEDIATION_IN_PROGRESS ...)."""
    before = state.get("before") or {}
    last = state.get("last") or before
    before_steps = before.get("steps") or []
    after_steps = last.get("steps") or []
    plan = state.get("plan") or {}
    remediated = [dict(r) for r in state.get("remediated") or []]
    extra = list(extra_steps or [])
    remaining = [f for f in all_findings(after_steps) + all_findings(extra) + list(plan.get("findings") or [])
                 + list(extra_findings or []) if f.get("severity") != "info"]
    remaining += unresolved_by_failed_actions(remediated, all_findings(before_steps), remaining)
    critical = [f for f in remaining if f.get("severity") == "critical"]
    m_before = measurements(before_steps, before.get("settings"))
    m_after = measurements(after_steps, last.get("settings") or before.get("settings"))
    healthy = not critical
    status = "healthy" if healthy and not remaining else ("degraded" if healthy else "unhealthy")
    rounds_ran = bool(state.get("rounds"))
    steps_table = []
    for st in after_steps + extra:
        b = next((x for x in before_steps if x.get("step") == st.get("step")), None)
        steps_table.append({"step": st.get("step"), "title": st.get("title"), "status": st.get("status"),
                            "before": b.get("status") if b and rounds_ran else None,
                            "summary": st.get("summary"), "findings": [f["code"] for f in st.get("findings") or []]})
        if st.get("step") == "ingress":
            steps_table[-1]["ingresses"] = ingress_requests(st)
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "healthy": healthy,
        "meta": dict(meta or {}),
        "steps": steps_table,
        "findings_before": all_findings(before_steps),
        "findings": all_findings(after_steps),
        "remaining": remaining,
        "plan": {"actions": plan.get("actions", []), "report_only": plan.get("report_only", [])},
        "remediated": remediated,
        "rounds": [dict(r) for r in state.get("rounds") or []],
        "measurements": {"before": m_before, "after": m_after},
        "before_after": before_after(m_before, m_after),
        "next_steps": next_steps(remaining, plan, remediated_any=rounds_ran),
    }
