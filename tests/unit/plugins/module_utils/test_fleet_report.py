"""_fleet_report: the fleet report from verify reports, its Markdown table, the AWX summary, the failure."""

from __future__ import annotations

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils import _fleet_report as F


def verify_report(status="healthy", before=(), remaining=(), remediated=()):
    return {"status": status, "healthy": status != "unhealthy",
            "findings_before": [{"code": c, "severity": "critical"} for c in before],
            "remaining": [{"code": c, "severity": "critical"} for c in remaining],
            "remediated": list(remediated), "next_steps": [f"{c}: fix it" for c in remaining],
            "meta": {"namespace": "n", "deployment": "d"}}


INSTANCES = [
    {"host": "b/n2/x", "cluster": "b", "namespace": "n2", "deployment": "x",
     "report": verify_report(before=["ROOT_NOT_FOUND"], remediated=[{"action": "patch", "changed": True}])},
    {"host": "a/n1/d", "cluster": "a", "namespace": "n1", "deployment": "d", "report": verify_report()},
    {"host": "a/n3/y", "cluster": "a", "namespace": "n3", "deployment": "y",
     "report": verify_report("unhealthy", ["OOM_KILLED"], ["OOM_KILLED"],
                             [{"action": "restart", "changed": False, "reason": "blocked"}])},
    {"host": "b/n4/z", "cluster": "b", "namespace": "n4", "deployment": "z", "report": None,
     "error": "Read the Deployment: Forbidden"},
]


def test_rows_and_summary():
    rep = F.build(INSTANCES, [{"host": "c", "cluster": "c", "errors": ["cluster: connection refused"]}],
                  {"remediate": True})
    assert [r["host"] for r in rep["instances"]] == ["a/n1/d", "a/n3/y", "b/n2/x", "b/n4/z"]
    rows = {r["host"]: r for r in rep["instances"]}
    assert set(rows["a/n1/d"]) >= {"host", "cluster", "namespace", "deployment", "status", "findings", "remediated",
                                   "report"}
    assert (rows["b/n2/x"]["status"], rows["b/n2/x"]["findings"], rows["b/n2/x"]["remaining"]) == (
        "healthy", ["ROOT_NOT_FOUND"], [])
    assert (rows["b/n4/z"]["status"], rows["b/n4/z"]["error"]) == ("error", "Read the Deployment: Forbidden")
    s = rep["summary"]
    assert (s["instances"], s["healthy"], s["unhealthy"], s["error"], s["remediated_instances"]) == (4, 2, 1, 1, 1)
    assert s["actions"] == {"patch": 1}, "a remediation that changed nothing is not counted"
    assert s["not_healthy"] == ["a/n3/y", "b/n4/z"] and s["discovery_failed"] == ["c"] and s["ok"] is False
    assert s["clusters"]["c"] == {"instances": 0, "not_healthy": 0, "discovery_failed": True}
    msg = F.failure_message(rep)
    assert "2 of 4 instance(s) not healthy" in msg and "a/n3/y unhealthy (OOM_KILLED)" in msg
    assert "discovery failed for cluster(s) c: c: cluster: connection refused" in msg


def test_all_healthy_is_ok_and_empty_is_not():
    assert F.build(INSTANCES[:2])["summary"]["ok"] is True
    assert F.failure_message(F.build(INSTANCES[:2])) == ""
    empty = F.build([])
    assert empty["summary"]["ok"] is False
    assert "the inventory has no MLflow instance" in F.failure_message(empty)


def test_markdown_one_row_per_instance():
    md = F.markdown(F.build(INSTANCES, meta={"remediate": False, "finished_at": "T"}))
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(table) == 1 + 4
    assert "| b/n2/x | b | n2 | x | healthy | ROOT_NOT_FOUND | patch | - |" in md
    assert "| a/n3/y | a | n3 | y | unhealthy | OOM_KILLED | restart (no change) | OOM_KILLED |" in md
    assert "audit (no remediation)" in md and "**FAILED**" in md
    assert "- `a/n3/y`: OOM_KILLED: fix it" in md


def test_pipes_in_cells_are_escaped():
    bad = [{"host": "a|b", "cluster": "a", "namespace": "n", "deployment": "d", "report": None, "error": "x | y"}]
    md = F.markdown(F.build(bad))
    assert "| a\\|b |" in md and "x \\| y" in md


def test_stats_selects_with_jmespath():
    rep = F.build(INSTANCES)
    assert F.stats(rep, "instances[?!healthy].host") == ["a/n3/y", "b/n4/z"]
    assert F.stats(rep, "summary.remediated_instances") == 1
    with pytest.raises(F.FleetReportError) as ei:
        F.stats(rep, "instances[?")
    assert "fleet_stats_query" in str(ei.value)


def test_bad_input_names_the_argument():
    with pytest.raises(F.FleetReportError, match="instances: expected a list"):
        F.build("x")
    with pytest.raises(F.FleetReportError, match="instances: each item must be a mapping with a host"):
        F.build([{"cluster": "a"}])
    with pytest.raises(F.FleetReportError, match="discovery_failures: each item"):
        F.build([], [{"host": "x"}])


def test_the_playbooks_default_stats_query():
    from pathlib import Path

    import yaml

    query = yaml.safe_load((Path(__file__).resolve().parents[4] / "playbooks/vars/fleet.yml").read_text())[
        "fleet_stats_query"]
    out = F.stats(F.build(INSTANCES), query)
    assert out["summary"]["instances"] == 4
    assert [p["host"] for p in out["not_healthy"]] == ["a/n3/y", "b/n4/z"]
    assert out["remediated"] == [{"host": "b/n2/x", "actions": ["patch"]}]
    assert "report" not in str(out["not_healthy"]), "the full verify reports stay out of AWX's artifacts"
