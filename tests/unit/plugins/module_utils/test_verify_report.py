"""Unit tests of the end of a verify run: the report from the last round's state (_verify_report), the renderers
(_verify_render), steps 5-6, the remediation lock and the fail decision (_verify_finish), step 4b (the deep check)
through plan and report, and the migration Job (_migration_job). Moved from tests/unit/plugins/filter/test_verify*.py;
the filters that stay (verify_report, verify_report_text, verify_report_markdown, verify_redact, verify_unattended,
verify_migration_job) are exercised through the filter plugin here too."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.filter import verify as F  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_logs import log_scan  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_pods import pod_status  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_probe import (  # noqa: E402
    probe_result,
    transaction_result,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._step_service import service_connectivity  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_settings import settings_findings  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_finish import finish  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import plan  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_render import (  # noqa: E402
    render_markdown,
    render_text,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_report import (  # noqa: E402
    SCHEMA_VERSION,
    before_after,
    build_report,
    measurements,
)
from verify_fixtures import (  # noqa: E402
    DEPLOYMENT,
    ENDPOINT_SLICE,
    GOOD_SETTINGS,
    GUNICORN_LOG,
    NOW,
    POD,
    SEED_SETTINGS,
    SERVICE,
    UVICORN,
    probe,
    settings,
    state_of,
)

FILTERS = F.FilterModule().filters()
STEP_NAMES = ["get_experiment", "create_run", "log_batch", "upload_artifact", "list_artifacts", "download_artifact",
              "get_run", "finish_run", "search_runs", "delete_run"]
GUNICORN_SHORT = settings("gunicorn", workers=1, timeout=2, keep_alive=2)


def seed_steps():
    return [pod_status([POD], DEPLOYMENT, now=NOW), settings_findings(SEED_SETTINGS),
            log_scan([{"pod": "p", "container": "mlflow", "text": GUNICORN_LOG}]),
            service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]),
            probe_result(probe(root_status=404, title=False, healthy=False, findings=[
                {"code": "ROOT_NOT_FOUND", "message": "GET / 404", "evidence": {}}]))]


def after_steps():
    return [pod_status([POD], DEPLOYMENT, now=NOW), settings_findings(GOOD_SETTINGS),
            log_scan([{"pod": "p", "container": "mlflow", "text": "INFO ok\n"}]),
            service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]), probe_result(probe())]


def result_of(state):
    return {"state": state, "console": [], "plan": state["plan"]}


# ------------------------------------------------------------------------------------------------ report
def test_report_before_after_from_measurements():
    before = seed_steps()
    p = plan(before, SEED_SETTINGS)
    rem = [{"action": "patch", "changed": True, "failed": False, "reason": p["actions"][0]["reason"],
            "description": p["actions"][0]["description"], "round": 1}]
    rounds = [{"round": 1, "planned": ["patch"], "remediated": [], "findings_after": []}]
    st = state_of(before, after_steps(), plan=plan(after_steps(), GOOD_SETTINGS, done=rem), remediated=rem,
                  rounds=rounds, settings_before=SEED_SETTINGS, settings_after=GOOD_SETTINGS)
    rep = build_report(st, meta=st["meta"])
    assert rep["schema_version"] == SCHEMA_VERSION == 2
    rows = {r["metric"]: r for r in rep["before_after"]}
    assert rows["Worker timeout"]["before"] == "120s" and rows["Worker timeout"]["after"] == "300s"
    assert rows["Worker timeout"]["change"] == "+150%"
    assert rows["Worker count"]["change"] == "+100%"
    assert rows["Static prefix"] == {"metric": "Static prefix", "before": "/static", "after": "none",
                                     "change": "removed"}
    assert rows["Worker crashes"]["before"].startswith("4 (timeouts 2, SIGKILL 2")
    assert rows["Worker crashes"]["change"] == "fixed"
    assert rows["Dashboard (/)"]["before"] == "404 Error"
    assert rows["Dashboard (/)"]["after"] == "200 OK (MLflow UI)"
    assert rows["Dashboard (/)"]["change"] == "fixed"
    assert rows["Latency / (health)"]["after"] == "8 ms (4 ms)"
    assert rep["status"] == "healthy" and rep["healthy"] is True and rep["remaining"] == []
    assert json.loads(json.dumps(rep)) == rep  # JSON-serialisable for verify_report_path / set_stats
    text = "\n".join(FILTERS["verify_report_text"](rep))
    assert "MLflow verify: HEALTHY - asgard/mlflow-deployment" in text
    assert "(was failed)" in text
    assert "| Worker timeout     | 120s" in text
    md = FILTERS["verify_report_markdown"](rep)
    assert md.startswith("# MLflow verify report: asgard/mlflow-deployment")
    assert "## Before vs After" in md and "## Root Cause Analysis" in md and "**ROOT_NOT_FOUND**" in md
    assert "s3cr3tpw" not in md + text + json.dumps(rep)


def test_report_unhealthy_lists_next_steps():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["selector"] = {"app": "other"}
    steps = [pod_status([POD], DEPLOYMENT, now=NOW),
             service_connectivity(svc, [POD], DEPLOYMENT, None, [{**ENDPOINT_SLICE, "endpoints": []}])]
    rep = build_report(state_of(steps, plan=plan(steps), settings_before=GOOD_SETTINGS))
    assert rep["status"] == "unhealthy" and rep["healthy"] is False
    assert any(n.startswith("SERVICE_SELECTOR_MISMATCH: make the Service selector match") for n in rep["next_steps"])
    text = "\n".join(render_text(rep))
    assert "Next steps for a human:" in text and "[FAIL] 3. Service connectivity" in text
    with pytest.raises(AnsibleFilterError, match="report: expected the verify report"):
        FILTERS["verify_report_text"]({"x": 1})


def test_the_cause_comes_first_and_the_crash_loop_it_causes_is_not_sent_to_a_restart():
    from test_verify_plan import crash_steps

    steps = crash_steps()
    rep = build_report(state_of(steps, plan=plan(steps, UVICORN, max_restarts=3)))
    assert rep["next_steps"][0].startswith("CONTAINER_CONFIG_ERROR: fix the command/args of container mlflow")
    crash = next(n for n in rep["next_steps"] if n.startswith("CRASH_LOOP"))
    assert "not restarted: CONTAINER_CONFIG_ERROR explains it" in crash


def test_worker_count_row_says_made_consistent():
    before = {"server": "gunicorn", "workers": 4, "workers_in_opts": 2, "gunicorn_timeout": 120}
    after = {"server": "gunicorn", "workers": 4, "workers_in_opts": 4, "gunicorn_timeout": 300}
    row = next(r for r in before_after(before, after) if r["metric"] == "Worker count")
    assert row == {"metric": "Worker count", "before": "4 (opts say 2)", "after": "4", "change": "made consistent"}


def test_report_shows_what_each_round_did():
    before = [settings_findings(settings("uvicorn", workers=1))]
    remediated = [{"action": "patch", "reason": ["TOO_FEW_WORKERS"], "changed": True, "failed": False,
                   "description": "workers", "round": 1},
                  {"action": "restart", "reason": ["POD_NOT_READY"], "changed": True, "failed": False,
                   "description": "restart", "round": 2}]
    rounds = [{"round": 1, "planned": ["patch"], "findings_after": ["POD_NOT_READY"],
               "remediated": [{"action": "patch", "changed": True, "failed": False, "reason": ["TOO_FEW_WORKERS"]}]},
              {"round": 2, "planned": ["restart"], "findings_after": [],
               "remediated": [{"action": "restart", "changed": True, "failed": False, "reason": ["POD_NOT_READY"]}]}]
    rep = build_report(state_of(before, [settings_findings(UVICORN)], remediated=remediated, rounds=rounds))
    assert [r["round"] for r in rep["remediated"]] == [1, 2]
    assert rep["rounds"][0]["findings_after"] == ["POD_NOT_READY"]
    text = render_text(rep)
    assert "  - patch: workers (round 1, changed; for TOO_FEW_WORKERS)" in text
    assert "  after round 1: POD_NOT_READY" in text and "  after round 2: no finding left" in text
    assert "round 2: **restart**" in render_markdown(rep)


def test_a_failed_action_keeps_its_finding_with_the_failure_as_next_step():
    """A migration that failed leaves the schema old even when the re-check no longer sees the log line (the server
    now fails on something else): the finding stays in `remaining`, its next step is the failure, not 're-run'."""
    before = [settings_findings(settings("uvicorn", workers=1))]
    remediated = [{"action": "patch", "reason": ["TOO_FEW_WORKERS"], "changed": False, "failed": True,
                   "description": "the patch was refused: HTTP 403", "round": 1}]
    rep = build_report(state_of(before, [settings_findings(UVICORN)], remediated=remediated, rounds=[]))
    [f] = [f for f in rep["remaining"] if f["code"] == "TOO_FEW_WORKERS"]
    assert f["evidence"]["failed_action"] == "patch"
    assert any(line.startswith("TOO_FEW_WORKERS: the patch of this run failed (the patch was refused: HTTP 403)")
               for line in rep["next_steps"]), rep["next_steps"]
    # a finding the failed action was for that is still seen is not listed twice
    rep2 = build_report(state_of(before, before, remediated=remediated, rounds=[]))
    assert [f["code"] for f in rep2["remaining"]].count("TOO_FEW_WORKERS") == 1


def test_expected_prefix_is_judged_before_anything_prints_step_4():
    seed = settings("uvicorn", prefix="/static")
    f = {"code": "ROOT_NOT_FOUND", "message": "GET / answers 404: the UI is served under /static/",
         "evidence": {"status": 404, "path": "/", "ui_path": "/static/", "ui_status": 200, "ui_title_found": True}}
    step = probe_result(probe(root_status=404, title=False, healthy=False, findings=[f]), "/static")
    assert step["status"] == "ok" and [x["code"] for x in step["findings"]] == ["ROOT_UNDER_PREFIX"]
    assert step["summary"].startswith("health 200 4ms, root /static/ 200")
    steps = [settings_findings(seed, expected_static_prefix="/static"), step]
    assert build_report(state_of(steps, settings_before=seed))["healthy"] is True
    assert measurements(steps, seed)["root_status"] == 200


# --------------------------------------------------------------------------------------- steps 5-6, lock
def test_failed_port_forward_is_a_remaining_finding_and_fails_the_run():
    st = state_of(after_steps(), settings_before=GOOD_SETTINGS)
    pf = {"failed": True, "msg": "local port 127.0.0.1:5000 is in use by pid 42 (python3 -m http.server)",
          "holder": {"pid": 42, "cmdline": ["python3", "-m", "http.server"]}}
    out = FILTERS["verify_report"](result_of(st), port_forward=pf, port_forward_enabled=True)
    rep = out["report"]
    assert rep["healthy"] is True and rep["status"] == "degraded"
    assert [f["code"] for f in rep["remaining"]] == ["PORT_FORWARD_FAILED"]
    assert rep["remaining"][0]["evidence"]["holder"]["pid"] == 42
    assert rep["next_steps"][0].startswith("PORT_FORWARD_FAILED: the dashboard port-forward could not start: free")
    assert out["fail"] is True and "the dashboard port-forward on 127.0.0.1:5000 could not start" in out["fail_msg"]
    assert rep["meta"]["dashboard_url"] == ""
    assert out["text"][1].startswith("6. Starts new port-forward: WARNING - local port 127.0.0.1:5000 is in use")


def test_skipped_and_working_forward():
    st = state_of(after_steps(), settings_before=GOOD_SETTINGS)
    off = finish(result_of(st), port_forward={"skipped": True}, port_forward_enabled=False)
    assert off["fail"] is False and off["report"]["status"] == "healthy"
    assert off["text"][0] == "5. Cleans up old port-forwards: SKIPPED - skipped (verify_port_forward is false: AWX/CI or asked)"
    on = finish(result_of(st), port_forward={"url": "http://127.0.0.1:5001", "pid": 7,
                                             "stopped": [{"pid": 3, "cmdline": ["kubectl", "port-forward"]}]},
                local_port=5001)
    assert on["report"]["meta"]["dashboard_url"] == "http://127.0.0.1:5001/"
    cleanup = next(s for s in on["report"]["steps"] if s["step"] == "cleanup")
    assert cleanup["summary"].startswith("stopped 1 old forward")
    assert "Stop the forward: ansible localhost -m asgard.mlflow.port_forward" in on["text"][-1]


def test_a_lock_held_by_another_run_is_reported_and_changes_nothing():
    st = state_of(seed_steps(), plan=plan(seed_steps(), SEED_SETTINGS), settings_before=SEED_SETTINGS)
    lock = {"acquired": False, "held_by": "awx@awx-task pid 41 awx-job 1234", "since": "2026-12-03T13:20:09Z",
            "waited": 120.0}
    out = finish(result_of(st), lock=lock, port_forward_enabled=False)
    [held] = [f for f in out["report"]["remaining"] if f["code"] == "REMEDIATION_IN_PROGRESS"]
    assert "awx-job 1234" in held["message"] and "since 2026-12-03T13:20:09Z" in held["message"]
    assert out["report"]["remediated"] == [] and out["fail"] is True
    assert finish(result_of(st), lock={"acquired": True}, port_forward_enabled=False)["report"]["remaining"][0][
        "code"] != "REMEDIATION_IN_PROGRESS"


def test_check_mode_never_fails_and_says_what_it_would_do():
    p = plan(seed_steps(), SEED_SETTINGS)
    st = state_of(seed_steps(), plan=p, settings_before=SEED_SETTINGS,
                  rounds=[{"round": 1, "planned": ["patch"], "remediated": [], "findings_after": None}],
                  meta={"namespace": "asgard", "deployment": "d", "service": "s", "check_mode": True})
    out = finish(result_of(st), port_forward_enabled=False)
    assert out["fail"] is False and out["report"]["remediated"] == []
    assert "Would remediate (check mode: nothing was changed):" in out["text"]


def test_not_a_result_names_the_input():
    with pytest.raises(AnsibleFilterError, match="asgard.mlflow.verify_report: result: expected the registered result"):
        FILTERS["verify_report"]({"changed": False})
    with pytest.raises(VerifyError):
        finish(None)


# -------------------------------------------------------------------------------------- step 4b (deep check)
def passed_probe() -> dict:
    return {
        "healthy": True, "pod": "good-7d9f-abcde", "mlflow_version": "3.17.2",
        "checks": {"health": {"status": 200, "ok": True, "latency_ms": 4.0}}, "findings": [],
        "transaction": {
            "ok": True, "experiment": "asgard-synthetic-healthcheck", "failed_step": None,
            "artifact": {"bytes": 20_000_000, "rate_kib_s": 3990.2}, "elapsed_ms": 5312.4, "api_requests": 11,
            "steps": [{"name": n, "status": 200, "latency_ms": 5.0, "ok": True} for n in STEP_NAMES]},
    }


def killed_probe() -> dict:
    """gunicorn --timeout 2, 20 MB paced at 4000 KiB/s: the worker is killed mid-upload."""
    p = passed_probe()
    p["healthy"] = False
    p["transaction"].update(ok=False, failed_step="upload_artifact", elapsed_ms=3350.0)
    p["findings"] = [
        {"code": "ARTIFACT_UPLOAD_FAILED", "message": "upload_artifact: connection closed",
         "evidence": {"step": "upload_artifact", "status": None, "error": "connection closed"}},
        {"code": "WORKER_KILLED_DURING_REQUEST",
         "message": "upload_artifact failed while the server killed a worker (gunicorn worker timeout)",
         "evidence": {"step": "upload_artifact", "log_lines": [
             "[2026-11-27 09:00:01 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:9)"]}}]
    return p


def with_txn(*codes_and_evidence) -> dict:
    p = passed_probe()
    p["transaction"].update(ok=False, failed_step="log_batch")
    p["findings"] = [{"code": c, "message": f"{c} at log_batch", "evidence": {"step": "log_batch", **ev}}
                     for c, ev in codes_and_evidence]
    return p


def with_4b(txn_step):
    return [probe_result({"healthy": True, "findings": [], "checks": {"health": {"status": 200, "ok": True}}}),
            txn_step]


def test_passed_transaction_is_ok_with_timings():
    st = transaction_result(passed_probe())
    assert st["step"] == "transaction" and st["status"] == "ok" and st["findings"] == []
    assert st["title"].startswith("4b.")
    assert st["summary"].startswith("passed: 10 requests in 5312 ms, artifact 20000000 bytes at 3990 KiB/s")


def test_worker_killed_is_critical_and_only_the_deep_checks_findings_are_step_4b():
    p = killed_probe()
    p["findings"].append({"code": "ROOT_NO_TITLE", "message": "no title", "evidence": {}})
    st = transaction_result(p)
    assert st["status"] == "failed"
    assert [x["code"] for x in st["findings"]] == ["ARTIFACT_UPLOAD_FAILED", "WORKER_KILLED_DURING_REQUEST"]
    wk = st["findings"][1]
    assert wk["severity"] == "critical" and wk["step"] == "transaction"


@pytest.mark.parametrize(("code", "severity", "status"), [
    ("WRITE_FAILED", "critical", "failed"), ("ARTIFACT_MISMATCH", "critical", "failed"),
    ("TRANSACTION_AUTH_FAILED", "critical", "failed"), ("SLOW_UPLOAD", "warning", "warning"),
    ("TRANSACTION_CLEANUP_FAILED", "warning", "warning"),
])
def test_deep_check_severities_come_from_the_catalogue(code, severity, status):
    st = transaction_result(with_txn((code, {})))
    assert st["findings"][0]["severity"] == severity and st["status"] == status


def test_skipped_in_check_mode_says_why():
    st = transaction_result(None, skipped_reason="check mode: the deep check writes")
    assert st["status"] == "skipped" and "check mode" in st["summary"]
    assert [x["code"] for x in st["findings"]] == ["TRANSACTION_SKIPPED"]


def test_deep_check_credentials_in_evidence_are_redacted():
    p = with_txn(("TRANSACTION_AUTH_FAILED",
                  {"status": 401, "body": "denied for https://admin:s3cret-pw@mlflow:5000 Authorization: Basic "
                                          "YWRtaW46czNjcmV0"}))
    text = json.dumps(transaction_result(p))
    assert "s3cret-pw" not in text and "YWRtaW46czNjcmV0" not in text


def test_worker_killed_on_gunicorn_patches_the_timeout_and_explains_the_failed_upload():
    st = transaction_result(killed_probe())
    for s in (None, GUNICORN_SHORT):
        p = plan(with_4b(st), s)
        assert p["patch_targets"] == ["timeout"] and p["needed"] is True
        assert next(a for a in p["actions"] if a["action"] == "patch")["reason"] == ["WORKER_KILLED_DURING_REQUEST"]
        assert p["report_only"] == [] and p["restart"] is False


def test_worker_killed_on_uvicorn_is_reported_not_patched():
    p = plan(with_4b(transaction_result(killed_probe())), settings("uvicorn", workers=1))
    assert p["patch_targets"] == [] and not p["needed"]
    assert "uvicorn" in next(r for r in p["report_only"] if r["code"] == "WORKER_KILLED_DURING_REQUEST")["next_step"]


def test_report_before_after_shows_the_deep_check_heal():
    before, after = with_4b(transaction_result(killed_probe())), with_4b(transaction_result(passed_probe()))
    rem = [{"action": "patch", "changed": True, "failed": False, "reason": ["WORKER_KILLED_DURING_REQUEST"],
            "description": "asgard.mlflow.patch: gunicorn timeout/keep-alive", "round": 1}]
    st = state_of(before, after, remediated=rem, rounds=[{"round": 1, "planned": ["patch"], "remediated": [],
                                                          "findings_after": []}],
                  settings_before=GUNICORN_SHORT, settings_after=settings("gunicorn", workers=1, timeout=300))
    rep = build_report(st)
    assert rep["healthy"] is True and rep["status"] == "healthy" and rep["remaining"] == []
    row = next(r for r in rep["before_after"] if r["metric"] == "Deep check (4b)")
    assert row["before"] == "FAILED at upload_artifact" and row["after"].startswith("passed (")
    assert row["change"] == "fixed"
    step = next(s for s in rep["steps"] if s["step"] == "transaction")
    assert step["before"] == "failed" and step["status"] == "ok"
    assert "**WORKER_KILLED_DURING_REQUEST** (critical, step transaction)" in render_markdown(rep)


def test_still_failing_after_the_heal_says_re_run():
    before = with_4b(transaction_result(killed_probe()))
    st = state_of(before, copy.deepcopy(before), plan=plan(before, GUNICORN_SHORT),
                  rounds=[{"round": 1, "planned": ["patch"], "remediated": [], "findings_after": []}])
    rep = build_report(st)
    assert rep["healthy"] is False
    assert any(n.startswith("WORKER_KILLED_DURING_REQUEST: re-run verify.yml") for n in rep["next_steps"])


# ----------------------------------------------------------------------------------------- migration Job
def test_migration_job_uses_the_deployment_image_env_and_volumes():
    dep = copy.deepcopy(DEPLOYMENT)
    dep["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "mlflow"}}]
    dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/mlflow"}]
    job = FILTERS["verify_migration_job"](dep, active_deadline_seconds=600)
    assert job["kind"] == "Job" and job["metadata"]["name"] == "mlflow-deployment-verify-db-upgrade"
    assert job["spec"]["activeDeadlineSeconds"] == 600
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    assert c["command"] == ["/bin/sh", "-c", 'exec mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"']
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/mlflow"}]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["namespace"] == "asgard"


def test_migration_job_of_the_mlflow_container_not_a_sidecar_listed_first():
    dep = copy.deepcopy(DEPLOYMENT)
    dep["spec"]["template"]["spec"]["containers"].insert(0, {
        "name": "shipper", "image": "fluent/fluent-bit:3", "command": ["fluent-bit", "-c", "/etc/mlflow/server.conf"]})
    c = FILTERS["verify_migration_job"](dep)["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"


def test_migration_job_with_a_literal_sqlite_uri_and_without_any():
    dep = copy.deepcopy(DEPLOYMENT)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["env"] = []
    c["command"] = ["mlflow", "server"]
    c["args"] = ["--backend-store-uri=sqlite:////mlflow/mlflow.db", "--port=5000"]
    job = FILTERS["verify_migration_job"](dep)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][2] == \
        "exec mlflow db upgrade 'sqlite:////mlflow/mlflow.db'"
    c["args"] = ["--port=5000"]
    with pytest.raises(AnsibleFilterError, match="backend store URI was not found"):
        FILTERS["verify_migration_job"](dep)
    with pytest.raises(AnsibleFilterError, match="deployment: the Deployment is needed"):
        FILTERS["verify_migration_job"](None)


# ------------------------------------------------------------------------------------------- environment
@pytest.mark.parametrize("env,hostvars,expected", [
    ({}, {}, False), ({"AWX_HOST": "https://awx"}, {}, True), ({"CI": "true"}, {}, True), ({"CI": "false"}, {}, False),
    ({}, {"tower_job_id": 42}, True), ({}, {"awx_job_id": ""}, False),
])
def test_unattended(env, hostvars, expected):
    assert FILTERS["verify_unattended"](hostvars, environ=env) is expected


@pytest.mark.parametrize("text,expected", [
    ("postgresql://u:pa55@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("password=hunter2 rest", "password=*** rest"),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiIs", "Authorization: Bearer ***"),
    ("nothing secret here", "nothing secret here"),
    (None, ""),
])
def test_redact(text, expected):
    assert FILTERS["verify_redact"](text) == expected
