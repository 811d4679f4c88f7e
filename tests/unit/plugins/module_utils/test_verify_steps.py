"""Unit tests of the verify steps 1-4 (plugins/module_utils/_step_*.py) on API objects in the shapes the API server
returns (verify_fixtures.py). Moved from tests/unit/plugins/filter/test_verify.py with the filters they went
through (the module asgard.mlflow.mlflow_verify calls these functions directly)."""

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

from ansible_collections.asgard.mlflow.plugins.module_utils._step_logs import (  # noqa: E402
    DEFAULT_LOG_PATTERNS,
    log_scan,
    log_targets,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._step_pods import pod_status  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_probe import probe_result  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_service import service_connectivity  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_settings import settings_findings  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_render import console  # noqa: E402
from verify_fixtures import (  # noqa: E402
    DEPLOYMENT,
    ENDPOINT_SLICE,
    ENDPOINTS,
    GOOD_SETTINGS,
    GUNICORN_LOG,
    NOW,
    POD,
    SCHEMA_LOG,
    SEED_SETTINGS,
    SERVICE,
    UVICORN,
    crashloop_pod,
    pod,
    probe,
    settings,
)


def codes(step):
    return [f["code"] for f in step["findings"]]


# ------------------------------------------------------------------------------------------------ step 1
def test_healthy_pod_and_complete_rollout():
    st = pod_status([POD], DEPLOYMENT, now=NOW)
    assert st["status"] == "ok", st
    assert st["findings"] == []
    assert st["details"]["rollout"]["state"] == "complete"
    assert st["summary"] == "1/1 pod(s) ready, rollout complete"


def test_crashloop_with_exit_code_and_restarts():
    st = pod_status([crashloop_pod()], DEPLOYMENT, now=NOW)
    assert st["status"] == "failed"
    crash = next(f for f in st["findings"] if f["code"] == "CRASH_LOOP")
    assert crash["evidence"]["restarts"] == 5
    assert crash["evidence"]["exit_code"] == 1
    assert "crash looping (5 restarts, last exit 1 Error)" in crash["message"]
    assert "POD_NOT_READY" not in codes(st)  # the crash loop explains it


def test_crashloop_caught_while_the_container_runs_between_two_backoffs():
    """The kubelet shows CrashLoopBackOff only while it waits; in the second the container runs again (not ready,
    restarted before, the last run failed within the window) it is the same crash loop, not a plain restart."""
    p = crashloop_pod(exit_code=2)
    p["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2025-10-28T11:58:05Z"}}
    st = pod_status([p], DEPLOYMENT, now=NOW, restart_window_seconds=3600)
    assert "CRASH_LOOP" in codes(st) and "RESTARTS" not in codes(st), st["findings"]
    # long ago, or a first restart only: not a loop
    assert "CRASH_LOOP" not in codes(pod_status([p], DEPLOYMENT, now="2025-10-29T12:00:00Z", restart_window_seconds=3600))
    p["status"]["containerStatuses"][0]["restartCount"] = 1
    assert "CRASH_LOOP" not in codes(pod_status([p], DEPLOYMENT, now=NOW, restart_window_seconds=3600))


def test_oomkilled_is_reported():
    st = pod_status([crashloop_pod(reason="OOMKilled", exit_code=137)], DEPLOYMENT, now=NOW)
    assert {"CRASH_LOOP", "OOM_KILLED"} <= set(codes(st))


def test_image_pull_backoff():
    p = pod(phase="Pending")
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ImagePullBackOff",
                                                                "message": "Back-off pulling image"}}
    p["status"]["conditions"][1]["status"] = "False"
    st = pod_status([p], DEPLOYMENT, now=NOW)
    assert codes(st) == ["IMAGE_PULL_FAILED"]


def test_pending_unschedulable_with_reason():
    p = pod(phase="Pending", containerStatuses=[])
    p["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": "0/1 nodes are available: 1 Insufficient memory."}]
    st = pod_status([p], DEPLOYMENT, now=NOW)
    assert codes(st) == ["POD_PENDING"]
    assert "Insufficient memory" in st["findings"][0]["message"]


def test_running_not_ready():
    p = pod()
    p["status"]["conditions"][1] = {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                                    "message": "containers with unready status: [mlflow]"}
    st = pod_status([p], DEPLOYMENT, now=NOW)
    assert codes(st) == ["POD_NOT_READY"]
    assert st["findings"][0]["evidence"]["container"] == "mlflow"


def test_restarts_recent_vs_old():
    p = crashloop_pod()
    p["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2025-10-28T11:58:05Z"}}
    p["status"]["containerStatuses"][0]["ready"] = True
    p["status"]["conditions"][1]["status"] = "True"
    recent = pod_status([p], DEPLOYMENT, now=NOW, restart_window_seconds=3600)
    assert [(f["code"], f["severity"]) for f in recent["findings"]] == [("RESTARTS", "warning")]
    old = pod_status([p], DEPLOYMENT, now="2025-10-29T12:00:00Z", restart_window_seconds=3600)
    assert [(f["code"], f["severity"]) for f in old["findings"]] == [("RESTARTS", "info")]


def test_rollout_stalled_and_incomplete_and_zero():
    dep = copy.deepcopy(DEPLOYMENT)
    dep["status"]["conditions"][1].update(reason="ProgressDeadlineExceeded", status="False",
                                          message='ReplicaSet "x" has timed out progressing.')
    assert "ROLLOUT_STALLED" in codes(pod_status([POD], dep, now=NOW))
    dep = copy.deepcopy(DEPLOYMENT)
    dep["metadata"]["generation"] = 3
    st = pod_status([POD], dep, now=NOW)
    assert codes(st) == ["ROLLOUT_INCOMPLETE"] and st["details"]["rollout"]["state"] == "progressing"
    dep = copy.deepcopy(DEPLOYMENT)
    dep["spec"]["replicas"] = 0
    assert codes(pod_status([], dep, now=NOW)) == ["SCALED_TO_ZERO"]


def test_missing_deployment_and_no_pods():
    st = pod_status([], None, deployment_name="mlflow-deployment", namespace="asgard")
    assert codes(st) == ["DEPLOYMENT_NOT_FOUND"]
    assert "mlflow-deployment not found in namespace asgard" in st["findings"][0]["message"]
    assert codes(pod_status({"items": []}, DEPLOYMENT, now=NOW)) == ["NO_PODS"]


def test_terminating_pods_are_ignored():
    p = pod()
    p["metadata"]["deletionTimestamp"] = "2025-10-28T11:59:00Z"
    st = pod_status([p, POD], DEPLOYMENT, now=NOW)
    assert st["status"] == "ok"
    assert st["details"]["terminating_pods"] == 1


def test_pod_status_bad_input_names_the_field():
    with pytest.raises(VerifyError, match="pods: expected a list"):
        pod_status("nonsense", DEPLOYMENT)
    with pytest.raises(VerifyError, match="now: expected an ISO 8601"):
        pod_status([POD], DEPLOYMENT, now="yesterday")
    with pytest.raises(VerifyError, match="restart_window_seconds: expected an integer"):
        pod_status([POD], DEPLOYMENT, restart_window_seconds="soon")


def test_the_mlflow_container_is_found_by_the_one_rule_not_by_words_in_a_sidecar():
    """A log shipper listed first whose command mentions mlflow and server: step 1 judges THE MLflow container."""
    p = crashloop_pod()
    sidecar = {"name": "shipper", "image": "busybox:1.36", "command": ["tail", "-F", "/mlflow/logs/server.log"]}
    p["spec"]["containers"].insert(0, sidecar)
    p["status"]["containerStatuses"].insert(0, {"name": "shipper", "state": {"running": {}}, "ready": True,
                                                "restartCount": 0})
    p["status"]["containerStatuses"][1]["state"] = {"running": {"startedAt": "2025-10-28T11:58:05Z"}}
    st = pod_status([p], DEPLOYMENT, now=NOW)
    # MLflow's container runs again between two crashes (5 restarts, exit 1): its crash loop, not the sidecar's state
    crash = next(f for f in st["findings"] if f["code"] == "CRASH_LOOP")
    assert crash["evidence"]["container"] == "mlflow"
    assert log_targets([p]) == [{"pod": p["metadata"]["name"], "container": "mlflow", "previous": False},
                                {"pod": p["metadata"]["name"], "container": "mlflow", "previous": True}]


# ------------------------------------------------------------------------------------------------ step 1b
def test_settings_findings_seed_before_and_after():
    st = settings_findings(SEED_SETTINGS, min_workers=4, min_gunicorn_timeout=300)
    # no prefix expected (the default): the seed's /static is a mismatch, fixed by the patch role
    assert set(codes(st)) == {"TOO_FEW_WORKERS", "SHORT_WORKER_TIMEOUT", "STATIC_PREFIX_MISMATCH"}
    assert all(f["step"] == "settings" for f in st["findings"])
    assert st["summary"] == "server gunicorn, workers 2, timeout 120, static prefix /static"
    assert settings_findings(GOOD_SETTINGS)["findings"] == []
    assert codes(settings_findings(UVICORN)) == []  # uvicorn: no gunicorn timeout finding


def test_workers_said_twice():
    st = settings_findings(settings("gunicorn", workers=4, workers_in_opts=2))
    assert codes(st) == ["WORKERS_INCONSISTENT"]
    assert st["findings"][0]["evidence"] == {"workers": 4, "workers_in_opts": 2}


def test_settings_that_cannot_be_read_are_the_steps_finding():
    err = {"code": "SEVERAL_MLFLOW_CONTAINERS", "message": "several containers run `mlflow server`: 'a', 'b'",
           "evidence": {"containers": ["a", "b"]}}
    st = settings_findings(None, error=err)
    assert codes(st) == ["SEVERAL_MLFLOW_CONTAINERS"] and st["status"] == "failed"
    assert settings_findings(None)["status"] == "skipped"


# ------------------------------------------------------------------------------------------------ step 2
def test_log_scan_counts_and_samples():
    logs = [{"pod": "p1", "container": "mlflow", "previous": False, "text": GUNICORN_LOG}]
    st = log_scan(logs, None, max_samples=1)
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
    logs = [{"pod": "p1", "container": "mlflow", "previous": False, "text": ""},
            {"pod": "p1", "container": "mlflow", "previous": True, "text": SCHEMA_LOG},
            {"pod": "p2", "container": "mlflow", "previous": True, "text": "", "failed": True,
             "error": "previous terminated container not found"}]
    st = log_scan(logs)
    assert st["status"] == "failed"  # out-of-date schema is critical
    assert "DB_SCHEMA_OUTDATED" in codes(st)
    assert st["details"]["sources"] == ["p1/mlflow", "p1/mlflow (previous)"]
    dumped = json.dumps(st)
    assert "s3cr3tpw" not in dumped
    assert "postgresql://mlflow:***@postgres" in dumped


def test_log_patterns_are_a_variable_and_validated():
    pats = [{"code": "OOPS", "pattern": "oops", "severity": "critical", "message": "oops seen"}]
    st = log_scan([{"pod": "p", "container": "c", "text": "fine\noops\nOOPS"}], pats)
    assert st["details"]["counts"] == {"OOPS": 1}
    assert st["findings"][0]["message"] == "oops seen: 1 line(s)"
    with pytest.raises(VerifyError, match=r"verify_log_patterns\[0\]\.pattern: invalid regular expression"):
        log_scan([], [{"code": "X", "pattern": "(unclosed"}])
    with pytest.raises(VerifyError, match=r"verify_log_patterns\[0\]\.code"):
        log_scan([], [{"code": "lower", "pattern": "x"}])
    with pytest.raises(VerifyError, match=r"verify_log_patterns\[0\]\.severity"):
        log_scan([], [{"code": "X", "pattern": "x", "severity": "bad"}])
    with pytest.raises(VerifyError, match=r"verify_log_patterns\[0\]: unknown key\(s\) sev"):
        log_scan([], [{"code": "X", "pattern": "x", "sev": "warning"}])


def test_a_known_code_takes_the_catalogues_severity_and_meaning():
    st = log_scan([{"pod": "p", "container": "c", "text": "Detected out-of-date database schema"}],
                  [{"code": "DB_SCHEMA_OUTDATED", "pattern": "out-of-date"}])
    [f] = st["findings"]
    assert f["severity"] == "critical" and f["message"].startswith("the backend store schema is older")


def test_default_patterns_come_from_the_catalogue():
    by = {p["code"]: p for p in DEFAULT_LOG_PATTERNS}
    assert by["DB_SCHEMA_OUTDATED"]["severity"] == "critical" and by["ERROR_LINES"]["severity"] == "info"


def test_log_scan_clean_log_is_ok():
    st = log_scan([{"pod": "p", "container": "mlflow", "text": "INFO: Uvicorn running on http://0.0.0.0:5000\n"}])
    assert st["status"] == "ok" and st["findings"] == []


# ------------------------------------------------------------------------------------------------ step 3
def test_service_healthy_with_endpoint_slices():
    st = service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE], expected_port=5000, server_port=5000)
    assert st["status"] == "ok", st["findings"]
    assert st["details"]["ready_endpoints"] == 1
    assert st["details"]["matched_pods"] == 1


def test_service_with_legacy_endpoints():
    st = service_connectivity(SERVICE, [POD], DEPLOYMENT, ENDPOINTS, None)
    assert st["status"] == "ok"
    ep = copy.deepcopy(ENDPOINTS)
    ep["subsets"][0]["notReadyAddresses"] = ep["subsets"][0].pop("addresses")
    st = service_connectivity(SERVICE, [POD], DEPLOYMENT, ep, None)
    assert codes(st) == ["NO_READY_ENDPOINTS"]
    assert st["findings"][0]["evidence"]["not_ready"] == 1


def test_service_missing():
    st = service_connectivity(None, [POD], DEPLOYMENT, service_name="mlflow-service", namespace="asgard")
    assert codes(st) == ["SERVICE_NOT_FOUND"]


def test_service_selector_mismatch():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["selector"] = {"app": "mlflow-server"}
    sl = copy.deepcopy(ENDPOINT_SLICE)
    sl["endpoints"] = []
    st = service_connectivity(svc, [POD], DEPLOYMENT, None, [sl])
    assert set(codes(st)) == {"SERVICE_SELECTOR_MISMATCH", "NO_READY_ENDPOINTS"}
    mm = next(f for f in st["findings"] if f["code"] == "SERVICE_SELECTOR_MISMATCH")
    assert mm["evidence"]["selector"] == {"app": "mlflow-server"}
    assert mm["evidence"]["pod_labels"] == {"app": "mlflow"}


def test_service_without_selector_is_one_code_critical():
    """SERVICE_NO_SELECTOR and the probe's SERVICE_WITHOUT_SELECTOR were one fact under two codes and two
    severities: one code now (the old one an alias), critical (nothing can be forwarded to it)."""
    svc = copy.deepcopy(SERVICE)
    del svc["spec"]["selector"]
    st = service_connectivity(svc, [POD], DEPLOYMENT, None, [])
    assert codes(st) == ["SERVICE_NO_SELECTOR"] and st["findings"][0]["severity"] == "critical"


def test_service_port_and_target_port_mismatch():
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["ports"] = [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 5000}]
    assert "SERVICE_PORT_MISSING" in codes(service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]))
    svc = copy.deepcopy(SERVICE)
    svc["spec"]["ports"][0]["targetPort"] = 8080
    st = service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE], server_port=5000)
    assert codes(st) == ["TARGET_PORT_MISMATCH"]
    assert st["findings"][0]["evidence"]["target_port"] == 8080
    svc["spec"]["ports"][0]["targetPort"] = "web"  # a name the container does not declare
    assert codes(service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE])) == ["TARGET_PORT_MISMATCH"]
    svc["spec"]["ports"][0]["targetPort"] = "http"  # declared name -> 5000
    assert codes(service_connectivity(svc, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE], server_port=5000)) == []


# ------------------------------------------------------------------------------------------------ step 4
def test_probe_healthy_and_root_not_found():
    ok = probe_result(probe())
    assert ok["status"] == "ok"
    assert ok["details"]["checks"]["root"]["status"] == 200
    assert ok["summary"].startswith("health 200 4ms, root 200 8ms")
    bad = probe_result(probe(root_status=404, title=False, healthy=False, findings=[
        {"code": "ROOT_NOT_FOUND", "severity": "critical", "message": "GET / answered 404",
         "evidence": {"status": 404, "static_prefix": "/static"}}]))
    assert bad["status"] == "failed"
    assert bad["findings"][0]["severity"] == "critical"
    assert bad["findings"][0]["step"] == "probe"


def test_probe_error_and_unhealthy_without_findings():
    st = probe_result({"healthy": False, "error": "namespace nope not found", "findings": []})
    assert codes(st) == ["PROBE_ERROR"]
    st = probe_result(probe(healthy=False))
    assert codes(st) == ["PROBE_UNHEALTHY"]
    assert probe_result(None)["status"] == "skipped"


def test_probe_old_codes_are_read_as_the_merged_ones():
    st = probe_result({"healthy": False, "findings": [
        {"code": "PORT_NOT_FOUND", "message": "service has no port 5000", "evidence": {}}]})
    assert codes(st) == ["SERVICE_PORT_MISSING"]


# ------------------------------------------------------------------------------------------------ console
def test_console_says_each_step_in_the_seeds_words():
    steps = [pod_status([POD], DEPLOYMENT, now=NOW), settings_findings(SEED_SETTINGS),
             log_scan([{"pod": "p", "container": "mlflow", "text": GUNICORN_LOG}]),
             service_connectivity(SERVICE, [POD], DEPLOYMENT, None, [ENDPOINT_SLICE]), probe_result(probe())]
    lines = console(steps)
    assert [ln.split(":")[0] for ln in lines] == ["1. Checks pod status", "2. Scans logs for errors",
                                                  "3. Verifies service connectivity", "4. Tests health endpoint"]
    # the settings are part of the seed's step 1: their warnings make line 1 a WARNING
    assert lines[0].startswith("1. Checks pod status: WARNING - 1/1 pod(s) ready, rollout complete; server gunicorn")
    assert "TOO_FEW_WORKERS" in lines[0]
    assert lines[3].startswith("4. Tests health endpoint: OK - health 200")
