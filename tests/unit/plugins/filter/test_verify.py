"""Unit tests of the verify role's analysis (plugins/module_utils/_verify.py via plugins/filter/verify.py)."""

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
from ansible_collections.asgard.mlflow.plugins.module_utils import _verify as V  # noqa: E402
from verify_fixtures import (  # noqa: E402
    DEPLOYMENT,
    ENDPOINT_SLICE,
    ENDPOINTS,
    GUNICORN_LOG,
    NOW,
    POD,
    SCHEMA_LOG,
    SERVICE,
    crashloop_pod,
    pod,
    probe,
)

FILTERS = F.FilterModule().filters()
SEED_SETTINGS = {"server": "gunicorn", "workers": 2, "gunicorn_timeout": 120, "static_prefix": "/static", "port": 5000}
GOOD_SETTINGS = {"server": "gunicorn", "workers": 4, "gunicorn_timeout": 300, "keep_alive": 5, "static_prefix": "",
                 "port": 5000}


def codes(step):
    return [f["code"] for f in step["findings"]]


# ------------------------------------------------------------------------------------------------ step 1
def test_healthy_pod_and_complete_rollout():
    st = FILTERS["verify_pod_status"]({"resources": [POD]}, {"resources": [DEPLOYMENT]}, now=NOW)
    assert st["status"] == "ok", st
    assert st["findings"] == []
    assert st["details"]["rollout"]["state"] == "complete"
    assert st["summary"] == "1/1 pod(s) ready, rollout complete"


def test_crashloop_with_exit_code_and_restarts():
    st = V.pod_status([crashloop_pod()], DEPLOYMENT, now=NOW)
    assert st["status"] == "failed"
    crash = next(f for f in st["findings"] if f["code"] == "CRASH_LOOP")
    assert crash["evidence"]["restarts"] == 5
    assert crash["evidence"]["exit_code"] == 1
    assert "crash looping (5 restarts, last exit 1 Error)" in crash["message"]
    assert "POD_NOT_READY" not in codes(st)  # the crash loop explains it


def test_oomkilled_is_reported():
    st = V.pod_status([crashloop_pod(reason="OOMKilled", exit_code=137)], DEPLOYMENT, now=NOW)
    assert {"CRASH_LOOP", "OOM_KILLED"} <= set(codes(st))


def test_image_pull_backoff():
    p = pod(phase="Pending")
    p["status"]["conditions"][1]["status"] = "False"
    p["status"]["containerStatuses"][0].update({
        "state": {"waiting": {"reason": "ImagePullBackOff",
                              "message": 'Back-off pulling image "ghcr.io/mlflow/mlflow:v9.9.9"'}},
        "ready": False, "started": False})
    st = V.pod_status([p], DEPLOYMENT, now=NOW)
    assert codes(st) == ["IMAGE_PULL_FAILED"]
    assert st["findings"][0]["evidence"]["reason"] == "ImagePullBackOff"


def test_pending_unschedulable_with_reason():
    p = copy.deepcopy(POD)
    p["status"] = {"phase": "Pending", "qosClass": "Burstable", "conditions": [
        {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
         "lastTransitionTime": "2025-10-28T11:59:00Z", "reason": "Unschedulable",
         "message": "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available"}]}
    st = V.pod_status([p], DEPLOYMENT, now=NOW)
    assert codes(st) == ["POD_PENDING"]
    assert st["findings"][0]["evidence"]["reason"] == "Unschedulable"
    assert "Insufficient memory" in st["findings"][0]["message"]


def test_running_not_ready():
    p = pod()
    p["status"]["conditions"][1] = {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                                    "message": "containers with unready status: [mlflow]"}
    p["status"]["containerStatuses"][0]["ready"] = False
    st = V.pod_status([p], DEPLOYMENT, now=NOW)
    assert codes(st) == ["POD_NOT_READY"]
    assert st["details"]["pods"][0]["ready"] is False


def test_restarts_recent_vs_old():
    p = pod()
    p["status"]["containerStatuses"][0].update({"restartCount": 2, "lastState": {"terminated": {
        "exitCode": 137, "reason": "Error", "startedAt": "2025-10-28T11:00:00Z", "finishedAt": "2025-10-28T11:30:00Z"}}})
    recent = V.pod_status([p], DEPLOYMENT, now=NOW, restart_window_seconds=3600)
    assert recent["findings"][0]["code"] == "RESTARTS"
    assert recent["findings"][0]["severity"] == "warning"
    old = V.pod_status([p], DEPLOYMENT, now="2025-10-29T12:00:00Z", restart_window_seconds=3600)
    assert old["findings"][0]["severity"] == "info"
    assert old["status"] == "ok"


def test_rollout_stalled_and_incomplete_and_zero():
    dep = copy.deepcopy(DEPLOYMENT)
    dep["status"]["conditions"][1].update({"status": "False", "reason": "ProgressDeadlineExceeded",
                                           "message": 'ReplicaSet "x" has timed out progressing.'})
    assert "ROLLOUT_STALLED" in codes(V.pod_status([POD], dep, now=NOW))
    dep = copy.deepcopy(DEPLOYMENT)
    dep["metadata"]["generation"] = 3
    dep["status"].update({"updatedReplicas": 0, "unavailableReplicas": 1, "availableReplicas": 0})
    st = V.pod_status([POD], dep, now=NOW)
    assert "ROLLOUT_INCOMPLETE" in codes(st)
    assert st["details"]["rollout"]["state"] == "progressing"
    dep = copy.deepcopy(DEPLOYMENT)
    dep["spec"]["replicas"] = 0
    assert codes(V.pod_status([], dep, now=NOW)) == ["SCALED_TO_ZERO"]


def test_missing_deployment_and_no_pods():
    st = V.pod_status([], None, deployment_name="mlflow-deployment", namespace="asgard")
    assert codes(st) == ["DEPLOYMENT_NOT_FOUND"]
    assert "asgard" in st["findings"][0]["message"]
    assert codes(V.pod_status({"resources": []}, DEPLOYMENT, now=NOW)) == ["NO_PODS"]


def test_terminating_pods_are_ignored():
    p = pod()
    p["metadata"]["deletionTimestamp"] = "2025-10-28T11:59:00Z"
    st = V.pod_status([p, POD], DEPLOYMENT, now=NOW)
    assert st["status"] == "ok"
    assert st["details"]["terminating_pods"] == 1


def test_pod_status_bad_input_names_the_field():
    with pytest.raises(AnsibleFilterError, match="pods: expected a list"):
        FILTERS["verify_pod_status"]("nonsense", DEPLOYMENT)
    with pytest.raises(AnsibleFilterError, match="now: expected an ISO 8601"):
        FILTERS["verify_pod_status"]([POD], DEPLOYMENT, now="yesterday")
    with pytest.raises(AnsibleFilterError, match="restart_window_seconds: expected an integer"):
        FILTERS["verify_pod_status"]([POD], DEPLOYMENT, restart_window_seconds="soon")


# ------------------------------------------------------------------------------------------------ step 2
def test_log_scan_counts_and_samples():
    logs = [{"pod": "p1", "container": "mlflow", "previous": False, "text": GUNICORN_LOG}]
    st = V.log_scan(logs, None, max_samples=1)
    counts = st["details"]["counts"]
    assert counts["WORKER_TIMEOUT"] == 2
    assert counts["WORKER_KILLED"] == 2
    assert counts["INVALID_HOST_HEADER"] == 1
    assert counts["ERROR_LINES"] == 4  # 2 CRITICAL + 2 ERROR lines
    assert counts["TRACEBACK"] == 0
    wt = next(f for f in st["findings"] if f["code"] == "WORKER_TIMEOUT")
    assert wt["evidence"]["samples"] == ["[2025-10-28 11:42:13 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:9)"]
    assert wt["evidence"]["sources"] == ["p1/mlflow"]
    assert st["status"] == "warning"
    assert st["details"]["lines_scanned"] == len(GUNICORN_LOG.splitlines())


def test_log_scan_previous_container_and_redaction():
    # k8s_log results as registered by a loop: log_lines + item, one failed (no previous container)
    results = {"results": [
        {"log_lines": [], "log": "", "item": {"pod": "p1", "container": "mlflow", "previous": False}},
        {"log_lines": SCHEMA_LOG.splitlines(), "item": {"pod": "p1", "container": "mlflow", "previous": True}},
        {"failed": True, "msg": "previous terminated container not found",
         "item": {"pod": "p2", "container": "mlflow", "previous": True}},
    ]}
    st = FILTERS["verify_log_scan"](results)
    assert st["status"] == "failed"  # out-of-date schema is critical
    assert "DB_SCHEMA_OUTDATED" in codes(st)
    assert st["details"]["sources"] == ["p1/mlflow", "p1/mlflow (previous)"]
    dumped = json.dumps(st)
    assert "s3cr3tpw" not in dumped
    assert "postgresql://mlflow:***@postgres" in dumped


def test_log_patterns_are_a_variable_and_validated():
    pats = [{"code": "OOPS", "pattern": "oops", "severity": "critical", "message": "oops seen"}]
    st = V.log_scan([{"pod": "p", "container": "c", "text": "fine\noops\nOOPS"}], pats)
    assert st["details"]["counts"] == {"OOPS": 1}
    assert st["findings"][0]["message"] == "oops seen: 1 line(s)"
    with pytest.raises(AnsibleFilterError, match=r"verify_log_patterns\[0\]\.pattern: invalid regular expression"):
        FILTERS["verify_log_scan"]([], [{"code": "X", "pattern": "(unclosed"}])
    with pytest.raises(AnsibleFilterError, match=r"verify_log_patterns\[0\]\.code"):
        FILTERS["verify_log_scan"]([], [{"code": "lower", "pattern": "x"}])
    with pytest.raises(AnsibleFilterError, match=r"verify_log_patterns\[0\]\.severity"):
        FILTERS["verify_log_scan"]([], [{"code": "X", "pattern": "x", "severity": "bad"}])


def test_log_scan_clean_log_is_ok():
    st = V.log_scan([{"pod": "p", "container": "mlflow", "text": "INFO: Uvicorn running on http://0.0.0.0:5000\n"}])
    assert st["status"] == "ok" and st["findings"] == []


# ------------------------------------------------------------------------------------------------ step 3
def test_service_healthy_with_endpoint_slices():
    st = FILTERS["verify_service"]({"resources": [SERVICE]}, [POD], DEPLOYMENT, None, {"resources": [ENDPOINT_SLICE]},
                                   expected_port=5000, server_port=5000)
    assert st["status"] == "ok", st["findings"]
    assert st["details"]["ready_endpoints"] == 1
    assert st["details"]["matched_pods"] == 1


def test_service_with_legacy_endpoints():
    st = V.service_connectivity(SERVICE, [POD], DEPLOYMENT, ENDPOINTS, None)
    assert st["status"] == "ok"
    ep = copy.deepcopy(ENDPOINTS)
    ep["subsets"][0]["notReadyAddresses"] = ep["subsets"][0].pop("addresses")
    st = V.service_connectivity(SERVICE, [POD], DEPLOYMENT, ep, None)
    assert codes(st) == ["NO_READY_ENDPOINTS"]
    assert st["findings"][0]["evidence"]["not_ready"] == 1


def test_service_missing():
    st = V.service_connectivity(None, [POD], DEPLOYMENT, service_name="mlflow-service", namespace="asgard")
    assert codes(st) == ["SERVICE_NOT_FOUND"]


def test_service_selector_mismatch():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["selector"] = {"app": "mlflow-server"}
    sl = copy.deepcopy(ENDPOINT_SLICE)
    sl["endpoints"] = []
    st = V.service_connectivity(svc, [POD], DEPLOYMENT, None, [sl])
    assert set(codes(st)) == {"SERVICE_SELECTOR_MISMATCH", "NO_READY_ENDPOINTS"}
    mm = next(f for f in st["findings"] if f["code"] == "SERVICE_SELECTOR_MISMATCH")
    assert mm["evidence"]["selector"] == {"app": "mlflow-server"}
    assert mm["evidence"]["pod_labels"] == {"app": "mlflow"}


def test_service_port_and_target_port_mismatch():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["ports"] = [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 5000}]
    assert "SERVICE_PORT_MISSING" in codes(V.service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]))
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["ports"][0]["targetPort"] = 8080
    st = V.service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE], server_port=5000)
    assert codes(st) == ["TARGET_PORT_MISMATCH"]
    assert st["findings"][0]["evidence"]["target_port"] == 8080
    svc["spec"]["ports"][0]["targetPort"] = "web"  # a name the container does not declare
    assert codes(V.service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE])) == ["TARGET_PORT_MISMATCH"]
    svc["spec"]["ports"][0]["targetPort"] = "http"  # declared name -> 5000
    assert codes(V.service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE], server_port=5000)) == []


# ------------------------------------------------------------------------------------------------ step 4
def test_probe_healthy_and_root_not_found():
    ok = FILTERS["verify_probe"](probe())
    assert ok["status"] == "ok"
    assert ok["details"]["checks"]["root"]["status"] == 200
    assert ok["summary"].startswith("health 200 4ms, root 200 8ms")
    bad = V.probe_result(probe(root_status=404, title=False, healthy=False, findings=[
        {"code": "ROOT_NOT_FOUND", "severity": "error", "message": "GET / answered 404",
         "evidence": {"status": 404, "static_prefix": "/static"}}]))
    assert bad["status"] == "failed"
    assert bad["findings"][0]["severity"] == "critical"
    assert bad["findings"][0]["step"] == "probe"


def test_probe_failed_module_and_unhealthy_without_findings():
    st = V.probe_result({"failed": True, "msg": "namespace nope not found"})
    assert codes(st) == ["PROBE_ERROR"]
    st = V.probe_result(probe(healthy=False))
    assert codes(st) == ["PROBE_UNHEALTHY"]
    assert V.probe_result({"skipped": True})["summary"] == "skipped"


# -------------------------------------------------------------------------------------------- settings
def test_settings_findings_seed_before_and_after():
    st = FILTERS["verify_settings"](SEED_SETTINGS, min_workers=4, min_gunicorn_timeout=300)
    # no prefix expected (the default): the seed's /static is a mismatch, fixed by the patch role
    assert set(codes(st)) == {"TOO_FEW_WORKERS", "SHORT_WORKER_TIMEOUT", "STATIC_PREFIX_MISMATCH"}
    assert st["summary"] == "server gunicorn, workers 2, timeout 120, static prefix /static"
    assert V.settings_findings(GOOD_SETTINGS)["findings"] == []
    # uvicorn: no gunicorn timeout finding
    assert codes(V.settings_findings({"server": "uvicorn", "workers": 4})) == []


def test_normalize_settings_shapes():
    nested = {"settings": {"server_kind": "gunicorn", "workers": "2", "gunicorn": {"timeout": "120", "keep_alive": 5},
                           "static_prefix": None}}
    n = V.normalize_settings(nested)
    assert (n["server"], n["workers"], n["gunicorn_timeout"], n["keep_alive"], n["static_prefix"]) == \
        ("gunicorn", 2, 120, 5, "")
    with pytest.raises(AnsibleFilterError, match="settings: expected the mapping"):
        FILTERS["verify_normalize_settings"]("x")


# ------------------------------------------------------------------------------------------------ plan
def _seed_steps():
    return [
        V.pod_status([POD], DEPLOYMENT, now=NOW),
        V.settings_findings(SEED_SETTINGS),
        V.log_scan([{"pod": "p", "container": "mlflow", "text": GUNICORN_LOG}]),
        V.service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]),
        V.probe_result(probe(root_status=404, title=False, healthy=False, findings=[
            {"code": "ROOT_NOT_FOUND", "severity": "error", "message": "GET / 404", "evidence": {}}])),
    ]


def test_plan_for_the_seed_incident_patches_everything_once():
    p = FILTERS["verify_plan"](_seed_steps(), SEED_SETTINGS, max_restarts=1)
    assert [a["action"] for a in p["actions"]] == ["patch"]
    assert p["patch_targets"] == ["workers", "timeout", "static_prefix", "allowed_hosts"]
    assert "ROOT_NOT_FOUND" in p["actions"][0]["reason"]
    assert p["restart"] is False
    assert p["report_only"] == []


def test_plan_healthy_is_empty():
    steps = [V.pod_status([POD], DEPLOYMENT, now=NOW), V.settings_findings(GOOD_SETTINGS),
             V.log_scan([{"pod": "p", "container": "mlflow", "text": ""}]),
             V.service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]), V.probe_result(probe())]
    p = V.plan(steps, GOOD_SETTINGS)
    assert p == {"actions": [], "report_only": [], "patch_targets": [], "restart": False, "restart_reason": "",
                 "migrate": False, "needed": False}


def test_plan_crashloop_without_config_cause_restarts_within_budget():
    steps = [V.pod_status([crashloop_pod()], DEPLOYMENT, now=NOW), V.settings_findings(GOOD_SETTINGS)]
    p = V.plan(steps, GOOD_SETTINGS, max_restarts=1, restarts_done=0)
    assert [a["action"] for a in p["actions"]] == ["restart"]
    assert p["actions"][0]["reason"] == ["CRASH_LOOP"]
    spent = V.plan(steps, GOOD_SETTINGS, max_restarts=1, restarts_done=1)
    assert spent["actions"] == []
    assert spent["report_only"][0]["code"] == "CRASH_LOOP"
    assert "restart budget used (1/1" in spent["report_only"][0]["message"]


def test_plan_oom_or_image_is_never_restarted():
    steps = [V.pod_status([crashloop_pod(reason="OOMKilled", exit_code=137)], DEPLOYMENT, now=NOW)]
    p = V.plan(steps, GOOD_SETTINGS, max_restarts=3)
    assert p["actions"] == []
    assert {r["code"] for r in p["report_only"]} == {"OOM_KILLED", "CRASH_LOOP"}


def test_plan_schema_outdated_migrates_then_restarts():
    steps = [V.pod_status([crashloop_pod()], DEPLOYMENT, now=NOW),
             V.log_scan([{"pod": "p", "container": "mlflow", "previous": True, "text": SCHEMA_LOG}])]
    p = V.plan(steps, GOOD_SETTINGS, max_restarts=1)
    assert [a["action"] for a in p["actions"]] == ["migrate", "restart"]
    assert p["migrate"] is True


def test_plan_service_mismatch_is_report_only():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["selector"] = {"app": "other"}
    steps = [V.pod_status([POD], DEPLOYMENT, now=NOW),
             V.service_connectivity(svc, [POD], DEPLOYMENT, None, [{**ENDPOINT_SLICE, "endpoints": []}])]
    p = V.plan(steps, GOOD_SETTINGS, max_restarts=3)
    assert p["actions"] == []
    assert {r["code"] for r in p["report_only"]} == {"SERVICE_SELECTOR_MISMATCH", "NO_READY_ENDPOINTS"}
    assert all(r["next_step"] for r in p["report_only"])


def test_plan_root_404_without_prefix_is_not_guessed():
    steps = [V.probe_result(probe(root_status=404, title=False, healthy=False, findings=[
        {"code": "ROOT_NOT_FOUND", "severity": "error", "message": "GET / 404", "evidence": {}}]))]
    p = V.plan(steps, GOOD_SETTINGS)
    assert p["actions"] == []
    assert p["report_only"][0]["code"] == "ROOT_NOT_FOUND"


def test_plan_enabled_limits_actions():
    p = V.plan(_seed_steps(), SEED_SETTINGS, enabled=["restart"])
    assert p["actions"] == []
    assert "ROOT_NOT_FOUND" in {r["code"] for r in p["report_only"]}


# ------------------------------------------------------------------------------------------------ report
def _after_steps():
    return [V.pod_status([POD], DEPLOYMENT, now=NOW), V.settings_findings(GOOD_SETTINGS),
            V.log_scan([{"pod": "p", "container": "mlflow", "text": "INFO ok\n"}]),
            V.service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]), V.probe_result(probe())]


def test_report_before_after_from_measurements():
    before = _seed_steps()
    p = V.plan(before, SEED_SETTINGS)
    rem = [{"action": "patch", "changed": True, "reason": p["actions"][0]["reason"],
            "description": p["actions"][0]["description"]}]
    rep = FILTERS["verify_report"](before, _after_steps(), plan_result=p, remediated=rem,
                                   settings_before=SEED_SETTINGS, settings_after=GOOD_SETTINGS,
                                   meta={"namespace": "asgard", "deployment": "mlflow-deployment",
                                         "service": "mlflow-service"})
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
    assert rep["status"] == "healthy" and rep["healthy"] is True
    assert rep["remaining"] == []
    assert json.loads(json.dumps(rep)) == rep  # JSON-serialisable for verify_report_path / set_stats
    text = "\n".join(FILTERS["verify_report_text"](rep))
    assert "MLflow verify: HEALTHY - asgard/mlflow-deployment" in text
    assert "(was failed)" in text
    assert "| Worker timeout     | 120s" in text
    md = FILTERS["verify_report_markdown"](rep)
    assert md.startswith("# MLflow verify report: asgard/mlflow-deployment")
    assert "## Before vs After" in md and "## Root Cause Analysis" in md
    assert "**ROOT_NOT_FOUND**" in md
    assert "s3cr3tpw" not in md + text + json.dumps(rep)


def test_report_unhealthy_lists_next_steps():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["selector"] = {"app": "other"}
    steps = [V.pod_status([POD], DEPLOYMENT, now=NOW),
             V.service_connectivity(svc, [POD], DEPLOYMENT, None, [{**ENDPOINT_SLICE, "endpoints": []}])]
    rep = V.build_report(steps, None, plan_result=V.plan(steps), settings_before=GOOD_SETTINGS)
    assert rep["status"] == "unhealthy" and rep["healthy"] is False
    assert any(n.startswith("SERVICE_SELECTOR_MISMATCH: make the Service selector match") for n in rep["next_steps"])
    text = "\n".join(V.render_text(rep))
    assert "Next steps for a human:" in text and "[FAIL] 3. Service connectivity" in text
    with pytest.raises(AnsibleFilterError, match="report: expected the mapping"):
        FILTERS["verify_report_text"]({"x": 1})


# ------------------------------------------------------------------------------------------- environment
@pytest.mark.parametrize("env,hostvars,expected", [
    ({}, {}, False),
    ({"AWX_HOST": "https://awx"}, {}, True),
    ({"CI": "true"}, {}, True),
    ({"CI": "false"}, {}, False),
    ({}, {"tower_job_id": 42}, True),
    ({}, {"awx_job_id": ""}, False),
])
def test_unattended(env, hostvars, expected):
    assert FILTERS["verify_unattended"](hostvars, environ=env) is expected


@pytest.mark.parametrize("text,expected", [
    ("postgresql://u:pa55@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("password=hunter2 rest", "password=*** rest"),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiIs", "Authorization: Bearer ***"),
    ("nothing secret here", "nothing secret here"),
])
def test_redact(text, expected):
    assert FILTERS["verify_redact"](text) == expected
