# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what the verify role prints and writes: the console line of each step (in the words of the seed's
script ``test-mlflow-connection.sh``), the summary text and the Markdown incident report."""

from __future__ import annotations

from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError

# the seed's six steps, in its own words (seed-incident-report.md, "Test Script Created")
SEED_WORDS = {
    "pods": "1. Checks pod status",
    "logs": "2. Scans logs for errors",
    "service": "3. Verifies service connectivity",
    "probe": "4. Tests health endpoint",
    "transaction": "4b. Runs a synthetic MLflow transaction",
    "ingress": "4c. Checks the Ingress in front of the Service",
    "cleanup": "5. Cleans up old port-forwards",
    "port_forward": "6. Starts new port-forward",
}
_WORD = {"ok": "OK", "warning": "WARNING", "failed": "FAILED", "skipped": "SKIPPED"}
_MARK = {"ok": "OK  ", "warning": "WARN", "failed": "FAIL", "skipped": "SKIP", "changed": "DONE"}
_WORST = {"failed": 0, "warning": 1, "ok": 2, "skipped": 3}


def step_line(step: dict, extra: dict | None = None) -> str:
    """``1. Checks pod status: OK - 1/1 pod(s) ready [CODES]``; ``extra``: a step merged into this line (the server
    settings are part of the seed's step 1)."""
    status = step.get("status", "ok")
    summary = step.get("summary", "")
    codes = [f["code"] for f in step.get("findings") or [] if f.get("severity") != "info"]
    if extra:
        if _WORST.get(extra.get("status"), 3) < _WORST.get(status, 3) and extra.get("status") != "skipped":
            status = extra["status"]
        summary = f"{summary}; {extra.get('summary', '')}" if extra.get("summary") else summary
        codes += [f["code"] for f in extra.get("findings") or [] if f.get("severity") != "info"]
    return (f"{SEED_WORDS.get(step.get('step'), step.get('title', step.get('step')))}: {_WORD.get(status, status)}"
            f" - {summary}" + (f" [{', '.join(codes)}]" if codes else ""))


def console(steps: list[dict]) -> list[str]:
    """One line per step of a round (step 1b is part of line 1)."""
    by = {s.get("step"): s for s in steps}
    out = []
    for name in ("pods", "logs", "service", "probe", "transaction", "ingress", "cleanup", "port_forward"):
        if name in by:
            out.append(step_line(by[name], by.get("settings") if name == "pods" else None))
    if "pods" not in by and "settings" in by:
        out.insert(0, step_line({**by["settings"], "step": "pods"}))
    return out


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(str(h).ljust(widths[i]) for i, h in enumerate(headers)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |")
    return out


def _check(report) -> None:
    if not isinstance(report, dict) or "steps" not in report or "before_after" not in report:
        raise VerifyError("report: expected the verify report (the JSON written to verify_report_path)")


def render_text(report: dict) -> list[str]:
    """The at-a-glance summary (a list of lines, for ansible.builtin.debug)."""
    _check(report)
    meta = report.get("meta") or {}
    out = [f"MLflow verify: {report['status'].upper()} - {meta.get('namespace', '?')}/"
           f"{meta.get('deployment', '?')} (service {meta.get('service', '?')})"]
    for st in report["steps"]:
        mark = _MARK.get(st.get("status"), st.get("status", "?"))
        was = f" (was {st['before']})" if st.get("before") and st.get("before") != st.get("status") else ""
        codes = f" [{', '.join(st['findings'])}]" if st.get("findings") else ""
        out.append(f"  [{mark}] {st.get('title')}: {st.get('summary')}{was}{codes}")
    actions = (report.get("plan") or {}).get("actions") or []
    if meta.get("check_mode") and actions:
        out.append("Would remediate (check mode: nothing was changed):")
        out.extend(f"  - {a['action']}: {a['description']} (for {', '.join(a.get('reason', []))})" for a in actions)
    elif report.get("remediated"):
        out.append("Remediated:")
        for r in report["remediated"]:
            state = "FAILED" if r.get("failed") else ("changed" if r.get("changed") else "no change")
            rnd = f"round {r['round']}, " if r.get("round") else ""
            out.append(f"  - {r.get('action')}: {r.get('description', '')} "
                       f"({rnd}{state}; for {', '.join(r.get('reason', []))})")
        for r in report.get("rounds") or []:
            if r.get("findings_after") is not None:
                out.append(f"  after round {r['round']}: {', '.join(r['findings_after']) or 'no finding left'}")
        if actions:
            out.append("Not applied (verify_remediation_rounds reached, or the same action already ran for it):")
            out.extend(f"  - {a['action']}: {a['description']} (for {', '.join(a.get('reason', []))})" for a in actions)
    elif actions:
        out.append("Would remediate (not applied):")
        out.extend(f"  - {a['action']}: {a['description']} (for {', '.join(a.get('reason', []))})" for a in actions)
    out.append("Before vs After:")
    rows = [[r["metric"], r["before"], r["after"], r["change"]] for r in report["before_after"]]
    out.extend("  " + line for line in _table(["Metric", "Before", "After", "Change"], rows))
    if report.get("remaining"):
        out.append("Remaining findings:")
        out.extend(f"  - {f['severity'].upper()} {f['code']}: {f['message']}" for f in report["remaining"])
    if report.get("next_steps"):
        out.append("Next steps for a human:")
        out.extend(f"  - {n}" for n in report["next_steps"])
    if meta.get("dashboard_url"):
        out.append(f"Dashboard: {meta['dashboard_url']}")
    return out


def render_markdown(report: dict) -> str:
    """An incident report in the form of the seed document."""
    _check(report)
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
        for s in ((f.get("evidence") or {}).get("samples") or [])[:2]:
            lines.append(f"   - `{s}`")
    lines += ["", "## Solutions Applied", ""]
    actions = (report.get("plan") or {}).get("actions") or []
    if report.get("remediated") and not meta.get("check_mode"):
        for r in report["remediated"]:
            state = "FAILED" if r.get("failed") else ("changed" if r.get("changed") else "no change needed")
            lines.append(f"- {('round ' + str(r['round']) + ': ') if r.get('round') else ''}**{r.get('action')}**: "
                         f"{r.get('description', '')} ({state}; for {', '.join(r.get('reason', []))})")
    elif actions:
        lines.extend(f"- (not applied) **{a['action']}**: {a['description']}" for a in actions)
    else:
        lines.append("None.")
    lines += ["", "## Verification Steps", ""]
    lines.extend(f"- {st.get('title')}: **{st.get('status')}** - {st.get('summary')}" for st in report["steps"])
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
