"""Unit tests of the verify analysis for: a crash loop from a bad flag (CONTAINER_CONFIG_ERROR, never restarted),
multi-round remediation (plan(done=...), report rounds), the expected static prefix and a failed port-forward."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.filter import verify as F  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils import _verify as V  # noqa: E402
from verify_fixtures import DEPLOYMENT, NOW, POD, SCHEMA_LOG, crashloop_pod, probe  # noqa: E402

FILTERS = F.FilterModule().filters()
PNAME = POD["metadata"]["name"]
CLICK_USAGE = """\
Usage: mlflow server [OPTIONS]
Try 'mlflow server --help' for help.

Error: No such option '--no-such-flag'.
"""
GOOD = {"server": "uvicorn", "workers": 4, "static_prefix": "", "port": 5000}


def codes(findings):
    return [f["code"] for f in findings]


def logs(text: str, previous: bool = True) -> list[dict]:
    return [{"pod": PNAME, "container": "mlflow", "previous": previous, "text": text}]


def crash_steps(exit_code: int = 2, text: str = CLICK_USAGE) -> list[dict]:
    pods = V.pod_status([crashloop_pod(exit_code=exit_code)], DEPLOYMENT, now=NOW)
    return [pods, FILTERS["verify_log_scan"](logs(text), pods=pods)]


# ------------------------------------------------------------------------------- crash loop from a bad flag
def test_bad_flag_crash_loop_is_a_config_error_with_the_offending_line():
    pods, scan = crash_steps()
    [cfg] = [f for f in scan["findings"] if f["code"] == "CONTAINER_CONFIG_ERROR"]
    assert cfg["severity"] == "critical" and scan["status"] == "failed"
    assert cfg["evidence"]["line"] == "Error: No such option '--no-such-flag'."  # click 8.2 (MLflow 3.17.2)
    assert cfg["evidence"]["exit_code"] == 2
    assert cfg["evidence"]["source"] == f"{PNAME}/mlflow (previous)"
    assert "spec.template.spec.containers[name=mlflow].args" in cfg["evidence"]["next_step"]
    assert "CRASH_LOOP" in codes(pods["findings"])


def test_bad_flag_crash_loop_plans_no_restart_and_names_the_args():
    steps = crash_steps()
    p = V.plan(steps, GOOD, max_restarts=3)
    assert p["restart"] is False and p["actions"] == [] and p["needed"] is False
    assert "CONTAINER_CONFIG_ERROR" in p["restart_reason"]
    only = {r["code"]: r for r in p["report_only"]}
    assert "containers[name=mlflow].args" in only["CONTAINER_CONFIG_ERROR"]["next_step"]
    assert "CRASH_LOOP" in only
    rep = V.build_report(steps, plan_result=p)
    assert rep["healthy"] is False and rep["status"] == "unhealthy"
    # the cause comes first; the crash loop it causes is not sent to a restart
    assert rep["next_steps"][0].startswith("CONTAINER_CONFIG_ERROR: fix the command/args of container mlflow")
    crash = next(n for n in rep["next_steps"] if n.startswith("CRASH_LOOP"))
    assert "not restarted: CONTAINER_CONFIG_ERROR explains it" in crash


@pytest.mark.parametrize("line", [
    "Error: Invalid value for '--port': 'tcp://10.96.0.12:5000' is not a valid integer.",
    "mlflow: error: unrecognized arguments: --bogus",
    "Error: Got unexpected extra argument (extra)",
    "Error: No such option: --no-such-flag Did you mean --no-serve-artifacts?",  # older click
])
def test_other_usage_errors_are_config_errors(line):
    _pods, scan = crash_steps(text=f"Usage: mlflow server [OPTIONS]\n{line}\n")
    assert [f["evidence"]["line"] for f in scan["findings"] if f["code"] == "CONTAINER_CONFIG_ERROR"] == [line]


def test_generic_error_line_needs_exit_code_2():
    text = "Error: something went wrong at start\n"
    assert "CONTAINER_CONFIG_ERROR" in codes(crash_steps(exit_code=2, text=text)[1]["findings"])
    # exit 1 with a plain "Error:" line: an application failure, the crash loop stays restart-able
    steps = crash_steps(exit_code=1, text=text)
    assert "CONTAINER_CONFIG_ERROR" not in codes(steps[1]["findings"])
    assert V.plan(steps, GOOD)["restart"] is True


def test_schema_crash_loop_is_not_a_config_error():
    steps = crash_steps(exit_code=1, text=SCHEMA_LOG)
    assert "CONTAINER_CONFIG_ERROR" not in codes(steps[1]["findings"])
    assert V.plan(steps, GOOD)["migrate"] is True


def test_usage_line_in_a_running_containers_log_is_not_a_config_error():
    pods = V.pod_status([POD], DEPLOYMENT, now=NOW)
    scan = V.log_scan(logs("Error: No such option: --x\n", previous=False), pods=pods)
    assert "CONTAINER_CONFIG_ERROR" not in codes(scan["findings"])
    # without the pod status, only a previous container's strong usage error counts
    assert "CONTAINER_CONFIG_ERROR" in codes(V.log_scan(logs(CLICK_USAGE))["findings"])
    assert "CONTAINER_CONFIG_ERROR" not in codes(V.log_scan(logs("Error: boom\n"))["findings"])


# ------------------------------------------------------------------------------------- multi-round plans
def _settings_step(settings):
    return V.settings_findings(settings, min_workers=4, min_gunicorn_timeout=300)


def test_plan_never_repeats_an_action_for_the_same_finding():
    few = {"server": "uvicorn", "workers": 1, "static_prefix": "", "port": 5000}
    steps = [_settings_step(few)]
    first = V.plan(steps, few)
    assert first["patch_targets"] == ["workers"]
    done = [{"action": "patch", "reason": ["TOO_FEW_WORKERS"], "changed": True}]
    again = FILTERS["verify_plan"](steps, few, done=done)
    assert again["needed"] is False and again["patch_targets"] == []
    [only] = again["report_only"]
    assert only["code"] == "TOO_FEW_WORKERS" and "not repeated" in only["message"]


def test_a_new_finding_after_a_patch_gets_its_own_round():
    """Round 1 patched the workers; round 2 sees the pod not ready with no config cause: a restart."""
    not_ready = V.pod_status([crashloop_pod(exit_code=1)], DEPLOYMENT, now=NOW)
    done = [{"action": "patch", "reason": ["TOO_FEW_WORKERS"], "changed": True}]
    p = V.plan([not_ready, _settings_step(GOOD)], GOOD, done=done, max_restarts=1)
    assert [a["action"] for a in p["actions"]] == ["restart"] and p["restart"] is True


def test_a_config_cause_left_after_its_action_blocks_a_restart():
    """The migration ran in round 1 but the schema is still out of date: restarting the crash loop cannot help."""
    steps = crash_steps(exit_code=1, text=SCHEMA_LOG)
    done = [{"action": "migrate", "reason": ["DB_SCHEMA_OUTDATED"], "changed": True, "failed": True}]
    p = V.plan(steps, GOOD, done=done, max_restarts=3)
    assert p["actions"] == [] and p["restart"] is False
    assert p["restart_reason"].startswith("not restarted: DB_SCHEMA_OUTDATED explains the failure (still present")


def test_restarts_of_earlier_rounds_count_against_the_budget():
    steps = [V.pod_status([crashloop_pod(exit_code=1)], DEPLOYMENT, now=NOW)]
    done = [{"action": "restart", "reason": ["POD_NOT_READY"], "changed": True, "attempts": 1}]
    p = V.plan(steps, GOOD, done=done, max_restarts=1)
    assert p["restart"] is False and "budget used (1/1" in p["restart_reason"]
    with pytest.raises(AnsibleFilterError, match="done: expected the list of remediation records"):
        FILTERS["verify_plan"](steps, GOOD, done="patch")


def test_report_shows_what_each_round_did():
    before = [_settings_step({"server": "uvicorn", "workers": 1, "static_prefix": "", "port": 5000})]
    remediated = [{"action": "patch", "reason": ["TOO_FEW_WORKERS"], "changed": True, "description": "workers"},
                  {"action": "restart", "reason": ["POD_NOT_READY"], "changed": True, "description": "restart"}]
    rounds = [{"round": 1, "count": 1, "planned": [{"action": "patch"}], "findings_after": ["POD_NOT_READY"]},
              {"round": 2, "count": 1, "planned": [{"action": "restart"}], "findings_after": []}]
    rep = FILTERS["verify_report"](before, [_settings_step(GOOD)], remediated=remediated, rounds=rounds)
    assert [r["round"] for r in rep["remediated"]] == [1, 2]
    assert rep["rounds"][0] == {"round": 1, "planned": ["patch"], "findings_after": ["POD_NOT_READY"],
                                "remediated": [{"action": "patch", "changed": True, "failed": None,
                                                "reason": ["TOO_FEW_WORKERS"]}]}
    text = V.render_text(rep)
    assert "  - patch: workers (round 1, changed; for TOO_FEW_WORKERS)" in text
    assert "  after round 1: POD_NOT_READY" in text and "  after round 2: no finding left" in text
    assert "round 2: **restart**" in V.render_markdown(rep)
    assert remediated[0].get("round") is None  # the caller's records are not modified


# ----------------------------------------------------------------------------------- expected static prefix
def test_expected_prefix_mismatch_and_match():
    seed = {"server": "gunicorn", "workers": 4, "gunicorn_timeout": 300, "static_prefix": "/static"}
    st = FILTERS["verify_settings"](seed, expected_static_prefix="/mlflow")
    [m] = st["findings"]
    want = ("STATIC_PREFIX_MISMATCH", "warning", {"static_prefix": "/static", "expected": "/mlflow"})
    assert (m["code"], m["severity"], m["evidence"]) == want
    assert codes(V.settings_findings(seed, expected_static_prefix="/static/")["findings"]) == ["STATIC_PREFIX_SET"]
    # none expected (default) and none set: nothing; expected but none set: a mismatch
    assert codes(V.settings_findings(GOOD)["findings"]) == []
    assert codes(V.settings_findings(GOOD, expected_static_prefix="/mlflow")["findings"]) == ["STATIC_PREFIX_MISMATCH"]


@pytest.mark.parametrize("bad", ["static", "/a b", "/x//y", 5, "/ä"])
def test_bad_expected_prefix_names_the_field(bad):
    with pytest.raises(AnsibleFilterError, match="verify_expected_static_prefix: expected '' .* such as /mlflow"):
        FILTERS["verify_settings"](GOOD, expected_static_prefix=bad)


def _root_404_probe(prefix="/static", ui_status=200, title=True):
    f = {"code": "ROOT_NOT_FOUND", "severity": "error", "message": f"GET / answers 404: the UI is served under {prefix}/",
         "evidence": {"status": 404, "path": "/", "ui_path": f"{prefix}/", "ui_status": ui_status,
                      "ui_title_found": title}}
    return V.probe_result(probe(root_status=404, title=False, healthy=False, findings=[f]))


def test_with_the_expected_prefix_the_root_check_follows_it_and_nothing_is_removed():
    seed = {"server": "uvicorn", "workers": 4, "static_prefix": "/static", "port": 5000}
    step = FILTERS["verify_probe_prefix"](_root_404_probe(), "/static")
    assert step["status"] == "ok", step["findings"]
    assert codes(step["findings"]) == ["ROOT_UNDER_PREFIX"]
    assert step["details"]["checks"]["root"]["status"] == 200 and step["details"]["healthy"] is True
    steps = [V.settings_findings(seed, expected_static_prefix="/static"), step]
    p = V.plan(steps, seed, expected_static_prefix="/static")
    assert p["needed"] is False
    assert V.build_report(steps)["healthy"] is True
    assert V.measurements(steps, seed)["root_status"] == 200
    # the default (no prefix expected): the same server gets the prefix removed
    plain = [V.settings_findings(seed), _root_404_probe()]
    assert V.plan(plain, seed)["patch_targets"] == ["static_prefix"]


def test_expected_prefix_that_does_not_serve_or_differs_is_reported_never_removed():
    seed = {"server": "uvicorn", "workers": 4, "static_prefix": "/static", "port": 5000}
    broken = V.probe_expected_prefix(_root_404_probe(ui_status=404, title=False), "/static")
    assert "ROOT_NOT_FOUND" in codes(broken["findings"])
    p = V.plan([broken], seed, expected_static_prefix="/static")
    assert p["patch_targets"] == [] and p["restart"] is False
    assert "expected --static-prefix=/static" in p["report_only"][0]["next_step"]
    # the server runs /static, /mlflow is expected: reported with both named, never patched
    other = [V.settings_findings(seed, expected_static_prefix="/mlflow"),
             V.probe_expected_prefix(_root_404_probe(), "/mlflow")]
    p = V.plan(other, seed, expected_static_prefix="/mlflow")
    assert p["actions"] == []
    hint = {r["code"]: r["next_step"] for r in p["report_only"]}["STATIC_PREFIX_MISMATCH"]
    assert "--static-prefix=/mlflow" in hint and "--static-prefix=/static" in hint
    # the report's next steps use the plan's (the table's would say "remove --static-prefix")
    steps = V.build_report(other, plan_result=p)["next_steps"]
    assert any(n.startswith("STATIC_PREFIX_MISMATCH: the dashboard is expected under /mlflow/") for n in steps), steps
    assert not any("remove --static-prefix" in n for n in steps), steps
    assert V.probe_expected_prefix(copy.deepcopy(other[1]), "") == other[1]


# --------------------------------------------------------------------------------------- port-forward (6)
def test_failed_port_forward_is_a_remaining_finding_with_a_next_step():
    pf = {"step": "port_forward", "title": "6.", "status": "warning", "summary": "x",
          "findings": [{"code": "PORT_FORWARD_FAILED", "severity": "warning", "step": "port_forward",
                        "message": "local port 127.0.0.1:5000 is in use by pid 42 (python3 -m http.server)",
                        "evidence": {"holder": {"pid": 42}}}], "details": {}}
    rep = V.build_report([_settings_step(GOOD)], extra_steps=[pf])
    assert rep["healthy"] is True and rep["status"] == "degraded"
    assert codes(rep["remaining"]) == ["PORT_FORWARD_FAILED"]
    assert rep["next_steps"][0].startswith("PORT_FORWARD_FAILED: the dashboard port-forward could not start: free")


def test_store_newer_than_the_image_is_reported_never_migrated_or_restarted():
    """Measured: MLflow 2.22.5 on a store that 3.17.2 migrated exits with alembic's "Can't locate revision
    identified by 'dc11669786a5'" (at start and in `mlflow db upgrade`): neither a migration nor a restart helps."""
    text = ("Traceback (most recent call last):\n"
            "alembic.util.exc.CommandError: Can't locate revision identified by 'dc11669786a5'\n")
    pods, scan = crash_steps(exit_code=1, text=text)
    assert "DB_SCHEMA_NEWER" in codes(scan["findings"]) and "DB_SCHEMA_OUTDATED" not in codes(scan["findings"])
    p = V.plan([pods, scan], GOOD, max_restarts=3)
    assert p["migrate"] is False and p["restart"] is False, p
    assert "DB_SCHEMA_NEWER" in p["restart_reason"]
    newer = [r for r in p["report_only"] if r["code"] == "DB_SCHEMA_NEWER"]
    assert newer and "cannot downgrade" in newer[0]["next_step"]
