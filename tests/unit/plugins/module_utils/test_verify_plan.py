"""Unit tests of the remediation plan (plugins/module_utils/_verify_plan.py): findings -> actions through the catalogue,
restart blockers decided once, rounds (an action never twice for a finding), a migration's outcome, Helm.
Moved from tests/unit/plugins/filter/test_verify*.py (the filter verify_plan is gone: mlflow_verify plans)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._probe import ProbeOptions, auth_finding  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_logs import log_scan  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_pods import pod_status  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_probe import probe_result  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_service import service_connectivity  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_settings import settings_findings  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import plan  # noqa: E402
from verify_fixtures import (  # noqa: E402
    DEPLOYMENT,
    ENDPOINT_SLICE,
    GOOD_SETTINGS,
    GUNICORN_LOG,
    NOW,
    POD,
    SCHEMA_LOG,
    SEED_SETTINGS,
    SERVICE,
    UVICORN,
    crashloop_pod,
    probe,
    settings,
)

PNAME = POD["metadata"]["name"]
CLICK_USAGE = "Usage: mlflow server [OPTIONS]\nTry 'mlflow server --help' for help.\n\nError: No such option '--no-such-flag'.\n"


def codes(findings):
    return [f["code"] for f in findings]


def root_404(**ev):
    return probe_result(probe(root_status=404, title=False, healthy=False, findings=[
        {"code": "ROOT_NOT_FOUND", "message": "GET / 404", "evidence": ev}]))


def seed_steps():
    return [pod_status([POD], DEPLOYMENT, now=NOW), settings_findings(SEED_SETTINGS),
            log_scan([{"pod": "p", "container": "mlflow", "text": GUNICORN_LOG}]),
            service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]), root_404()]


def healthy_steps():
    return [pod_status([POD], DEPLOYMENT, now=NOW), settings_findings(GOOD_SETTINGS),
            log_scan([{"pod": "p", "container": "mlflow", "text": ""}]),
            service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]), probe_result(probe())]


def crash_steps(exit_code: int = 2, text: str = CLICK_USAGE):
    pods = pod_status([crashloop_pod(exit_code=exit_code)], DEPLOYMENT, now=NOW)
    return [pods, log_scan([{"pod": PNAME, "container": "mlflow", "previous": True, "text": text}], pods=pods)]


# ------------------------------------------------------------------------------------------- one round
def test_plan_for_the_seed_incident_patches_everything_once():
    p = plan(seed_steps(), SEED_SETTINGS, max_restarts=1)
    assert [a["action"] for a in p["actions"]] == ["patch"]
    assert p["patch_targets"] == ["workers", "timeout", "static_prefix", "allowed_hosts"]
    assert "ROOT_NOT_FOUND" in p["actions"][0]["reason"]
    assert p["restart"] is False and p["report_only"] == []
    pv = p["patch_vars"]
    assert (pv["patch_workers"], pv["patch_gunicorn_timeout"], pv["patch_gunicorn_keep_alive"]) == (4, 300, 5)
    assert pv["patch_static_prefix"] == "" and pv["patch_allowed_hosts_enabled"] is True and pv["patch_probes"] is True


def test_targets_not_named_by_a_finding_keep_what_the_server_runs():
    few = settings("uvicorn", workers=1, keep_alive=7, prefix="/mlflow")
    p = plan([settings_findings(few, expected_static_prefix="/mlflow")], few, expected_static_prefix="/mlflow",
             patch_vars={"patch_rollback": False})
    assert p["patch_targets"] == ["workers"]
    pv = p["patch_vars"]
    assert pv["patch_workers"] == 4 and pv["patch_static_prefix"] == "/mlflow"
    assert pv["patch_uvicorn_timeout_keep_alive"] == 7 and pv["patch_allowed_hosts_enabled"] is False
    assert pv["patch_rollback"] is False  # verify_patch_vars on top
    with pytest.raises(VerifyError, match="verify_patch_vars: unknown key.*patch_bogus.*patch_workers"):
        plan([settings_findings(few)], few, patch_vars={"patch_bogus": 1})


def test_plan_healthy_is_empty():
    p = plan(healthy_steps(), GOOD_SETTINGS)
    assert (p["actions"], p["report_only"], p["patch_targets"], p["needed"], p["restart"]) == ([], [], [], False, False)


def test_plan_crashloop_without_config_cause_restarts_within_budget():
    steps = [pod_status([crashloop_pod()], DEPLOYMENT, now=NOW), settings_findings(GOOD_SETTINGS)]
    p = plan(steps, GOOD_SETTINGS, max_restarts=1)
    assert [a["action"] for a in p["actions"]] == ["restart"]
    assert p["actions"][0]["reason"] == ["CRASH_LOOP"]
    spent = plan(steps, GOOD_SETTINGS, max_restarts=1, done=[{"action": "restart", "reason": ["POD_NOT_READY"],
                                                             "changed": True}])
    assert spent["actions"] == []
    assert spent["report_only"][0]["code"] == "CRASH_LOOP"
    assert "restart budget used (1/1" in spent["report_only"][0]["message"]


def test_plan_oom_or_image_is_never_restarted():
    steps = [pod_status([crashloop_pod(reason="OOMKilled", exit_code=137)], DEPLOYMENT, now=NOW)]
    p = plan(steps, GOOD_SETTINGS, max_restarts=3)
    assert p["actions"] == [] and p["restart_blockers"] == ["OOM_KILLED"]
    assert {r["code"] for r in p["report_only"]} == {"OOM_KILLED", "CRASH_LOOP"}


def test_plan_schema_outdated_migrates_and_the_next_round_restarts_after_a_success():
    """Expectation changed: the migration and the restart it needs were one round; the restart is now planned by the
    next check, knowing the Job's outcome (a failed migration must not be followed by a restart)."""
    steps = crash_steps(exit_code=1, text=SCHEMA_LOG)
    p = plan(steps, GOOD_SETTINGS, max_restarts=1)
    assert [a["action"] for a in p["actions"]] == ["migrate"] and p["migrate"] is True
    ok = [{"action": "migrate", "reason": ["DB_SCHEMA_OUTDATED"], "changed": True, "failed": False, "round": 1}]
    after = plan(steps, GOOD_SETTINGS, max_restarts=1, done=ok)
    assert [a["action"] for a in after["actions"]] == ["restart"]
    assert "DB_SCHEMA_OUTDATED" in after["actions"][0]["reason"]


def test_the_restart_after_a_migration_is_the_migrations_own_not_the_budgets():
    """Seen in CI on a loaded machine: round 1 restarted the crash loop (its log did not name the schema yet), round 2
    migrated, round 3 found the budget spent and left the pods in a 5-minute back-off on the refused schema."""
    steps = crash_steps(exit_code=1, text=SCHEMA_LOG)
    done = [{"action": "restart", "reason": ["CRASH_LOOP"], "changed": True, "failed": False, "round": 1},
            {"action": "migrate", "reason": ["DB_SCHEMA_OUTDATED"], "changed": True, "failed": False, "round": 2}]
    after = plan(steps, GOOD_SETTINGS, max_restarts=1, done=done)
    assert [a["action"] for a in after["actions"]] == ["restart"], after["restart_reason"]
    assert "DB_SCHEMA_OUTDATED" in after["actions"][0]["reason"]
    # once: a restart that already followed the migration is not repeated
    again = plan(steps, GOOD_SETTINGS, max_restarts=1, done=[*done, {"action": "restart", "changed": True, "failed": False,
                                                                     "reason": ["DB_SCHEMA_OUTDATED"], "round": 3}])
    assert again["actions"] == [] and again["restart"] is False
    # verify_max_restarts=0 means no restart at all
    none = plan(steps, GOOD_SETTINGS, max_restarts=0, done=done[1:])
    assert none["actions"] == [] and none["restart_reason"].startswith("restart budget used (0/0")


def test_a_failed_migration_cancels_the_restart_planned_for_it():
    steps = crash_steps(exit_code=1, text=SCHEMA_LOG)
    failed = [{"action": "migrate", "reason": ["DB_SCHEMA_OUTDATED"], "changed": True, "failed": True}]
    p = plan(steps, GOOD_SETTINGS, done=failed, max_restarts=3)
    assert p["actions"] == [] and p["restart"] is False
    assert p["restart_reason"].startswith("not restarted: DB_SCHEMA_OUTDATED explains the failure (still present")


def test_plan_service_mismatch_is_report_only():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["selector"] = {"app": "other"}
    steps = [pod_status([POD], DEPLOYMENT, now=NOW),
             service_connectivity(svc, [POD], DEPLOYMENT, None, [{**ENDPOINT_SLICE, "endpoints": []}])]
    p = plan(steps, GOOD_SETTINGS, max_restarts=3)
    assert p["actions"] == []
    assert {r["code"] for r in p["report_only"]} == {"SERVICE_SELECTOR_MISMATCH", "NO_READY_ENDPOINTS"}
    assert all(r["next_step"] for r in p["report_only"])


def test_plan_root_404_without_prefix_is_not_guessed():
    p = plan([root_404()], GOOD_SETTINGS)
    assert p["actions"] == [] and p["report_only"][0]["code"] == "ROOT_NOT_FOUND"


def test_plan_enabled_limits_actions():
    p = plan(seed_steps(), SEED_SETTINGS, enabled=["restart"])
    assert p["actions"] == [] and "ROOT_NOT_FOUND" in {r["code"] for r in p["report_only"]}
    audit = plan(seed_steps(), SEED_SETTINGS, enabled=[])
    assert audit["needed"] is False and audit["patch_vars"] == {}


# ------------------------------------------------------------------------------- crash loop from a bad flag
def test_bad_flag_crash_loop_plans_no_restart_and_names_the_args():
    p = plan(crash_steps(), UVICORN, max_restarts=3)
    assert p["restart"] is False and p["actions"] == [] and p["needed"] is False
    assert "CONTAINER_CONFIG_ERROR" in p["restart_reason"] and p["restart_blockers"] == ["CONTAINER_CONFIG_ERROR"]
    only = {r["code"]: r for r in p["report_only"]}
    assert "containers[name=mlflow].args" in only["CONTAINER_CONFIG_ERROR"]["next_step"]
    assert "CRASH_LOOP" in only


def test_generic_error_line_needs_exit_code_2():
    assert plan(crash_steps(exit_code=1, text="Error: something went wrong at start\n"), UVICORN)["restart"] is True
    assert plan(crash_steps(exit_code=2, text="Error: something went wrong at start\n"), UVICORN)["restart"] is False


def test_store_newer_than_the_image_is_reported_never_migrated_or_restarted():
    text = ("Traceback (most recent call last):\n"
            "alembic.util.exc.CommandError: Can't locate revision identified by 'dc11669786a5'\n")
    steps = crash_steps(exit_code=1, text=text)
    assert "DB_SCHEMA_NEWER" in codes(steps[1]["findings"])
    p = plan(steps, UVICORN, max_restarts=3)
    assert p["migrate"] is False and p["restart"] is False and "DB_SCHEMA_NEWER" in p["restart_reason"]
    newer = [r for r in p["report_only"] if r["code"] == "DB_SCHEMA_NEWER"]
    assert newer and "cannot downgrade" in newer[0]["next_step"]


# ------------------------------------------------------------------------------------------------ rounds
def test_plan_never_repeats_an_action_for_the_same_finding():
    few = settings("uvicorn", workers=1)
    steps = [settings_findings(few)]
    assert plan(steps, few)["patch_targets"] == ["workers"]
    again = plan(steps, few, done=[{"action": "patch", "reason": ["TOO_FEW_WORKERS"], "changed": True}])
    assert again["needed"] is False and again["patch_targets"] == []
    [only] = again["report_only"]
    assert only["code"] == "TOO_FEW_WORKERS" and "not repeated" in only["message"]


def test_a_new_finding_after_a_patch_gets_its_own_round():
    not_ready = pod_status([crashloop_pod(exit_code=1)], DEPLOYMENT, now=NOW)
    p = plan([not_ready, settings_findings(UVICORN)], UVICORN, max_restarts=1,
             done=[{"action": "patch", "reason": ["TOO_FEW_WORKERS"], "changed": True}])
    assert [a["action"] for a in p["actions"]] == ["restart"] and p["restart"] is True


def test_done_must_be_records():
    with pytest.raises(VerifyError, match="done: expected this run's remediation records"):
        plan([], UVICORN, done=["patch"])


# -------------------------------------------------------------------------------------------------- Helm
def test_a_helm_managed_deployment_is_never_patched_and_the_chart_values_are_named():
    helm = {"release": "mlflow", "changes": ["mlflow server --workers 4 (or more)"]}
    p = plan(seed_steps(), SEED_SETTINGS, helm=helm)
    assert p["patch"] is False and p["needed"] is False and "patch" not in [a["action"] for a in p["actions"]]
    [hf] = p["findings"]
    assert hf["code"] == "HELM_MANAGED" and "release mlflow" in hf["message"] and "--workers 4" in hf["message"]
    only = {r["code"]: r for r in p["report_only"]}
    assert "helm upgrade" in only["HELM_MANAGED"]["next_step"]
    assert only["TOO_FEW_WORKERS"]["next_step"].startswith("set in the Helm chart values")


# ------------------------------------------------------------------------------ expected static prefix
def test_expected_prefix_is_kept_and_a_different_one_reported():
    seed = settings("uvicorn", prefix="/static")
    other = [settings_findings(seed, expected_static_prefix="/mlflow"),
             root_404(ui_path="/static/", ui_status=200, ui_title_found=True)]
    p = plan(other, seed, expected_static_prefix="/mlflow")
    assert p["actions"] == []
    hint = {r["code"]: r["next_step"] for r in p["report_only"]}["STATIC_PREFIX_MISMATCH"]
    assert "--static-prefix=/mlflow" in hint and "--static-prefix=/static" in hint
    # the default (no prefix expected): the same server gets the prefix removed
    assert plan([settings_findings(seed), root_404()], seed)["patch_targets"] == ["static_prefix"]


# --------------------------------------------------------------------------------- step 4 with HTTP 401
def _probe_401(auth=None, source=""):
    """A probe of MLflow 3.17.2 --app-name basic-auth (measured: /health 200, / and /version 401 without credentials or
    with wrong ones), through the probe's own rule (``auth_finding``)."""
    checks = {"health": {"path": "/health", "status": 200, "ok": True},
              "root": {"path": "/", "status": 401, "ok": False}, "version": {"path": "/version", "status": 401}}
    return {"healthy": False, "checks": checks,
            "findings": auth_finding(checks, ProbeOptions(auth=auth, auth_source=source))}


def test_basic_auth_401_without_credentials_is_auth_required_reported_not_restarted():
    pr = _probe_401()
    assert [f["code"] for f in pr["findings"]] == ["AUTH_REQUIRED"]
    step = probe_result(pr)
    assert step["status"] == "warning" and [f["code"] for f in step["findings"]] == ["AUTH_REQUIRED"]  # no PROBE_UNHEALTHY
    p = plan([step], UVICORN)
    assert p["restart"] is False and not p["needed"] and p["actions"] == []
    hint = {r["code"]: r["next_step"] for r in p["report_only"]}["AUTH_REQUIRED"]
    assert "verify_auth_username" in hint and "verify_auth_secret" in hint
    # even with a restart-worthy finding beside it, the 401 blocks the restart (a restart cannot log anybody in)
    pods = {"step": "pods", "findings": [finding("POD_NOT_READY", "x", {})]}
    assert plan([pods, step], UVICORN)["restart"] is False


def test_basic_auth_401_with_credentials_is_auth_rejected_naming_the_source_never_the_password():
    pr = _probe_401(("admin", "s3cret-Pw-123"), "verify_auth_secret (Secret ns/mlflow-auth, key admin_password)")
    step = probe_result(pr)
    assert step["status"] == "failed" and [f["code"] for f in step["findings"]] == ["AUTH_REJECTED"]
    f = step["findings"][0]
    assert f["severity"] == "critical" and f["evidence"]["paths"] == ["/", "/version"]
    p = plan([step], UVICORN)
    assert p["restart"] is False and p["actions"] == []
    hint = {r["code"]: r["next_step"] for r in p["report_only"]}["AUTH_REJECTED"]
    assert "Secret ns/mlflow-auth" in hint and "'admin'" in hint
    assert "s3cret-Pw-123" not in repr(p) + repr(step) + repr(ProbeOptions(auth=("admin", "s3cret-Pw-123")))


def test_a_500_on_root_is_still_a_broken_server_restarted():
    pr = {"healthy": False, "checks": {"health": {"status": 200, "ok": True}},
          "findings": [{"code": "ROOT_FAILED", "message": "GET / answers 500", "evidence": {"status": 500}}]}
    assert plan([probe_result(pr)], UVICORN)["restart"] is True
    assert auth_finding({"root": {"path": "/", "status": 500}}, ProbeOptions()) == []
