# Copyright: (c) 2026, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the fleet report of ``playbooks/fleet.yml`` (one JSON, one Markdown table, the AWX summary).

:func:`build` takes what each host of the fleet play left (``{host, cluster, namespace, deployment, report, error}``:
``report`` is the verify role's JSON report, read from its ``verify_report_path``; ``error`` the message of a run
that failed before it wrote one) and the clusters whose discovery failed, and returns::

    {schema_version, meta, summary, instances: [{host, cluster, namespace, deployment, status, healthy, findings,
     remaining, remediated, next_steps, error, report}], discovery_errors: [{host, cluster, errors}]}

``status`` is the verify report's (``healthy``, ``degraded``: healthy with warnings left, ``unhealthy``) or ``error``;
``findings`` the codes verify found before any remediation, ``remaining`` those left after it, ``remediated`` the
verify report's remediation records as they are (each says whether it changed anything). ``summary.ok`` is false
when an instance is not healthy (``unhealthy`` or ``error``) or a cluster could not be listed.

:func:`markdown` renders one table row per instance; :func:`stats` selects, with a JMESPath expression, what is
published to AWX with ``set_stats`` (the whole report would be too big for a job's artifacts).

Pure Python (jmespath).
"""

from __future__ import annotations

SCHEMA_VERSION = 1
STATUSES = ("healthy", "degraded", "unhealthy", "error")


class FleetReportError(ValueError):
    """Bad input; the message names the argument."""


def _codes(findings) -> list[str]:
    out = []
    for f in findings or []:
        code = f.get("code") if isinstance(f, dict) else f
        if code and code not in out:
            out.append(str(code))
    return out


def instance(entry: dict) -> dict:
    """One row of the fleet report from what a host of the fleet play left."""
    if not isinstance(entry, dict) or not entry.get("host"):
        raise FleetReportError(f"instances: each item must be a mapping with a host, got {entry!r:.200}")
    rep = entry.get("report")
    error = entry.get("error") or None
    row = {k: entry.get(k) for k in ("host", "cluster", "namespace", "deployment")}
    if isinstance(rep, dict) and rep.get("status"):
        status = rep["status"] if rep["status"] in STATUSES else "unhealthy"
        row.update({
            "status": status, "healthy": bool(rep.get("healthy")) and status != "unhealthy",
            "findings": _codes(rep.get("findings_before", rep.get("findings"))),
            "remaining": _codes(rep.get("remaining")),
            "remediated": [r for r in rep.get("remediated") or [] if isinstance(r, dict)],
            "next_steps": list(rep.get("next_steps") or []),
            "error": error, "report": rep,
        })
    else:
        row.update({"status": "error", "healthy": False, "findings": [], "remaining": [], "remediated": [],
                    "next_steps": [f"read the job output of {entry.get('host')}; run playbooks/verify.yml on it alone "
                                   "with -vv"],
                    "error": error or "the verify role did not write its report", "report": None})
    return row


def build(instances, discovery_failures=None, meta=None) -> dict:
    if not isinstance(instances, list | tuple):
        raise FleetReportError(f"instances: expected a list, got {type(instances).__name__}")
    rows = sorted((instance(e) for e in instances), key=lambda r: r["host"])
    failed = []
    for d in discovery_failures or []:
        if not isinstance(d, dict) or not d.get("cluster"):
            raise FleetReportError(f"discovery_failures: each item must be a mapping with a cluster, got {d!r:.200}")
        failed.append({"host": d.get("host") or d["cluster"], "cluster": d["cluster"],
                       "errors": [str(e) for e in d.get("errors") or []]})
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    actions: dict[str, int] = {}
    for r in rows:
        for rec in r["remediated"]:
            if rec.get("changed"):
                actions[rec.get("action") or "?"] = actions.get(rec.get("action") or "?", 0) + 1
    clusters: dict[str, dict] = {}
    for r in rows:
        c = clusters.setdefault(r["cluster"] or "?", {"instances": 0, "not_healthy": 0, "discovery_failed": False})
        c["instances"] += 1
        c["not_healthy"] += 0 if r["healthy"] else 1
    for d in failed:
        clusters.setdefault(d["cluster"], {"instances": 0, "not_healthy": 0, "discovery_failed": False})[
            "discovery_failed"] = True
    not_healthy = [r["host"] for r in rows if not r["healthy"]]
    summary = {
        "instances": len(rows), **counts,
        "remediated_instances": sum(1 for r in rows if any(rec.get("changed") for rec in r["remediated"])),
        "actions": dict(sorted(actions.items())),
        "not_healthy": not_healthy,
        "discovery_failed": [d["cluster"] for d in failed],
        "clusters": dict(sorted(clusters.items())),
        "ok": not not_healthy and not failed and bool(rows),
    }
    return {"schema_version": SCHEMA_VERSION, "meta": dict(meta or {}), "summary": summary, "instances": rows,
            "discovery_errors": failed}


def failure_message(report: dict) -> str:
    """Why the fleet run fails ('' when it does not)."""
    s = report["summary"]
    parts = []
    if not report["instances"] and not s["discovery_failed"]:
        parts.append("the inventory has no MLflow instance (ansible-inventory -i <source> --graph shows what it found)")
    if s["not_healthy"]:
        rows = {r["host"]: r for r in report["instances"]}
        parts.append(f"{len(s['not_healthy'])} of {s['instances']} instance(s) not healthy after this run: " + "; ".join(
            f"{h} {rows[h]['status']} ({', '.join(rows[h]['remaining']) or rows[h]['error'] or 'see its report'})"
            for h in s["not_healthy"]))
    if s["discovery_failed"]:
        parts.append("discovery failed for cluster(s) " + ", ".join(s["discovery_failed"]) + ": " + "; ".join(
            f"{d['cluster']}: {' | '.join(d['errors'])}" for d in report["discovery_errors"]))
    return ". ".join(parts)


def _cell(value) -> str:
    text = ", ".join(str(v) for v in value) if isinstance(value, list) else ("" if value is None else str(value))
    return (text or "-").replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    s = report["summary"]
    meta = report.get("meta") or {}
    mode = "check mode" if meta.get("check_mode") else ("heal" if meta.get("remediate", True) else "audit (no remediation)")
    lines = [
        "# MLflow fleet report", "",
        f"{meta.get('finished_at') or ''} - {mode} - {s['instances']} instance(s): {s['healthy']} healthy, "
        f"{s['degraded']} degraded, {s['unhealthy']} unhealthy, {s['error']} error; "
        f"{s['remediated_instances']} remediated." + (" **FAILED**" if not s["ok"] else ""), "",
        "| instance | cluster | namespace | deployment | status | found | remediated | remaining |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["instances"]:
        done = [f"{rec.get('action')}" + ("" if rec.get("changed") else " (no change)") for rec in r["remediated"]]
        lines.append("| " + " | ".join(_cell(v) for v in (
            r["host"], r["cluster"], r["namespace"], r["deployment"], r["status"], r["findings"], done,
            r["remaining"] or ([r["error"]] if r["error"] else []))) + " |")
    if report["discovery_errors"]:
        lines += ["", "## Clusters that could not be listed", ""]
        lines += [f"- **{d['cluster']}**: " + "; ".join(d["errors"]) for d in report["discovery_errors"]]
    steps = [(r["host"], n) for r in report["instances"] if not r["healthy"] or r["remaining"] for n in r["next_steps"]]
    if steps:
        lines += ["", "## Next steps", ""] + [f"- `{h}`: {n}" for h, n in steps]
    return "\n".join(lines) + "\n"


def stats(report: dict, expression: str):
    """What ``set_stats`` publishes to AWX: ``expression`` (JMESPath) over the fleet report."""
    if not isinstance(expression, str) or not expression.strip():
        raise FleetReportError("expression: expected a JMESPath expression (fleet_stats_query), got "
                               f"{expression!r}")
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(expression, report)
    except JMESPathError as exc:
        raise FleetReportError(f"fleet_stats_query: {expression!r} is not a valid JMESPath expression over the fleet "
                               f"report: {exc}") from None
