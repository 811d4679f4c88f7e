"""Step 4b of the verify role: the deep check (mlflow_probe transaction: true) -> step result -> plan -> report.

The probe results below have the shape mlflow_probe returns (see tests/integration/test_probe_transaction.py
for the same results measured against real MLflow servers in the lab).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.filter import verify as F  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils import _transaction as T  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils import _verify as V  # noqa: E402

FILTERS = F.FilterModule().filters()
GUNICORN_SHORT = {"server": "gunicorn", "workers": 1, "gunicorn_timeout": 2, "static_prefix": "", "port": 5000}
UVICORN = {"server": "uvicorn", "workers": 1, "static_prefix": "", "port": 5000}
STEP_NAMES = ["get_experiment", "create_run", "log_batch", "upload_artifact", "list_artifacts", "download_artifact",
              "get_run", "finish_run", "search_runs", "delete_run"]


def passed_probe() -> dict:
    return {
        "changed": False, "healthy": True, "pod": "good-7d9f-abcde", "mlflow_version": "3.17.2",
        "checks": {"health": {"status": 200, "ok": True, "latency_ms": 4.0}},
        "findings": [],
        "transaction": {
            "ok": True, "experiment": "asgard-synthetic-healthcheck", "experiment_id": "1", "run_id": "abc",
            "host_header": "good.ns.svc.cluster.local:5000", "auth": None, "failed_step": None,
            "artifact": {"path": "1/abc/artifacts/asgard-synthetic.bin", "bytes": 20_000_000, "rate_kib_s": 3990.2,
                         "sha256": "x", "downloaded_sha256": "x", "latency_ms": 4895.0},
            "deleted_runs": ["abc"], "kept_runs": [], "elapsed_ms": 5312.4, "api_requests": 11,
            "steps": [{"name": n, "method": "GET", "path": "/api/x", "status": 200, "latency_ms": 5.0, "ok": True,
                       "bytes_sent": 0, "bytes_received": 10} for n in STEP_NAMES],
        },
    }


def killed_probe() -> dict:
    """gunicorn --timeout 2, 20 MB paced at 4000 KiB/s: the worker is killed mid-upload."""
    p = passed_probe()
    p["healthy"] = False
    t = p["transaction"]
    t.update(ok=False, failed_step="upload_artifact", elapsed_ms=3350.0)
    t["steps"] = t["steps"][:3] + [{"name": "upload_artifact", "method": "PUT", "status": 502, "ok": False,
                                    "latency_ms": 3010.0, "error": "connection closed"},
                                   {"name": "read_pod_log", "ok": True, "since_seconds": 6, "matches": 2}]
    p["findings"] = [
        {"code": "ARTIFACT_UPLOAD_FAILED", "severity": "error", "message": "upload_artifact: connection closed",
         "evidence": {"step": "upload_artifact", "status": None, "error": "connection closed"}},
        {"code": "WORKER_KILLED_DURING_REQUEST", "severity": "error",
         "message": "upload_artifact failed while the server killed a worker (gunicorn worker timeout)",
         "evidence": {"step": "upload_artifact", "pod": "slowgun-1", "since_seconds": 6,
                      "log_lines": ["[2026-11-27 09:00:01 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:9)",
                                    "[2026-11-27 09:00:02 +0000] [7] [ERROR] Worker (pid:9) was sent SIGKILL!"]}},
    ]
    return p


def with_findings(*found) -> dict:
    p = passed_probe()
    p["transaction"].update(ok=False, failed_step=found[0]["evidence"].get("step"))
    p["findings"] = list(found)
    return p


def f(code: str, severity: str = "error", step: str = "create_experiment", **ev) -> dict:
    return {"code": code, "severity": severity, "message": f"{code} at {step}", "evidence": {"step": step, **ev}}


def steps_with(txn_step: dict) -> list[dict]:
    """One round of checks in which only step 4b has findings."""
    ok_probe = V.probe_result({"healthy": True, "findings": [], "checks": {"health": {"status": 200, "ok": True}}})
    return [ok_probe, txn_step]


# ------------------------------------------------------------------------------------------ step result
def test_passed_transaction_is_ok_with_timings():
    st = FILTERS["verify_transaction"](passed_probe())
    assert st["step"] == "transaction" and st["status"] == "ok" and st["findings"] == []
    assert st["title"].startswith("4b.")
    assert st["details"]["ok"] is True and st["details"]["elapsed_ms"] == 5312.4
    assert st["details"]["api_requests"] == 11 and st["details"]["artifact_bytes"] == 20_000_000
    assert [s["name"] for s in st["details"]["steps"]] == STEP_NAMES
    assert all(s["latency_ms"] > 0 for s in st["details"]["steps"])
    assert st["summary"].startswith("passed: 10 requests in 5312 ms, artifact 20000000 bytes at 3990 KiB/s")


def test_worker_killed_is_critical_with_evidence_and_only_transaction_findings():
    p = killed_probe()
    # a read-only finding of the same probe belongs to step 4, not 4b
    p["findings"].append({"code": "ROOT_NO_TITLE", "severity": "warning", "message": "no title", "evidence": {}})
    st = FILTERS["verify_transaction"](p)
    assert st["status"] == "failed"
    assert [x["code"] for x in st["findings"]] == ["ARTIFACT_UPLOAD_FAILED", "WORKER_KILLED_DURING_REQUEST"]
    wk = next(x for x in st["findings"] if x["code"] == "WORKER_KILLED_DURING_REQUEST")
    assert wk["severity"] == "critical" and wk["step"] == "transaction"
    assert wk["evidence"]["step"] == "upload_artifact"
    assert any("WORKER TIMEOUT" in line for line in wk["evidence"]["log_lines"])
    assert st["summary"].startswith("FAILED at upload_artifact")


@pytest.mark.parametrize(("code", "severity", "status"), [
    ("WRITE_FAILED", "critical", "failed"), ("ARTIFACT_MISMATCH", "critical", "failed"),
    ("ARTIFACT_DOWNLOAD_FAILED", "critical", "failed"), ("TRANSACTION_AUTH_FAILED", "critical", "failed"),
    ("TRANSACTION_READ_FAILED", "critical", "failed"), ("SLOW_UPLOAD", "warning", "warning"),
    ("TRANSACTION_CLEANUP_FAILED", "warning", "warning"),
])
def test_severities(code, severity, status):
    st = V.transaction_result(with_findings(f(code, T.TRANSACTION_CODES[code])))
    assert st["findings"][0]["severity"] == severity and st["status"] == status


def test_every_module_code_is_known_to_the_role():
    assert set(T.TRANSACTION_CODES) <= set(V.TRANSACTION_FINDINGS)
    assert set(T.TRANSACTION_CODES) - {"TRANSACTION_SKIPPED"} <= set(V.REMEDIATION_TABLE)


def test_skipped_in_check_mode_says_why():
    registered_skip = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
    st = FILTERS["verify_transaction"](registered_skip, skipped_reason="check mode: the deep check writes")
    assert st["status"] == "skipped" and "check mode" in st["summary"]
    assert [x["code"] for x in st["findings"]] == ["TRANSACTION_SKIPPED"]
    assert st["findings"][0]["severity"] == "info"
    # the module skipped it itself (health failed): skipped too, not ok
    p = passed_probe()
    p["transaction"] = {"ok": None, "skipped": "the health check failed"}
    p["findings"] = [{"code": "TRANSACTION_SKIPPED", "severity": "info", "message": "deep check skipped: the "
                      "health check failed", "evidence": {"reason": "the health check failed"}}]
    st = V.transaction_result(p)
    assert st["status"] == "skipped" and "health check failed" in st["summary"]


def test_module_failure_without_transaction_is_reported():
    st = V.transaction_result({"failed": True, "msg": "transaction_artifact_size: 0 is out of range", "findings": []})
    assert [x["code"] for x in st["findings"]] == ["TRANSACTION_ERROR"]
    assert "transaction_artifact_size" in st["findings"][0]["message"] and st["status"] == "failed"


def test_bad_input_names_the_field():
    with pytest.raises(AnsibleFilterError, match="verify_transaction.*mlflow_probe"):
        FILTERS["verify_transaction"]("not a result")


def test_credentials_in_evidence_are_redacted():
    p = with_findings(f("TRANSACTION_AUTH_FAILED", step="create_run", status=401,
                        body="denied for https://admin:s3cret-pw@mlflow:5000 Authorization: Basic YWRtaW46czNjcmV0"))
    text = json.dumps(V.transaction_result(p))
    assert "s3cret-pw" not in text and "YWRtaW46czNjcmV0" not in text


# ------------------------------------------------------------------------------------------------- plan
def test_worker_killed_on_gunicorn_patches_the_timeout():
    st = V.transaction_result(killed_probe())
    # settings unknown and settings without SHORT_WORKER_TIMEOUT: the deep check alone drives the patch
    for settings in (None, {"server": "gunicorn", "workers": 4, "gunicorn_timeout": 2}):
        plan = FILTERS["verify_plan"](steps_with(st), settings)
        assert plan["patch_targets"] == ["timeout"] and plan["needed"] is True
        patch = next(a for a in plan["actions"] if a["action"] == "patch")
        assert patch["reason"] == ["WORKER_KILLED_DURING_REQUEST"]
        # the failed upload is explained by the killed worker: not a separate report item, no restart
        assert [r["code"] for r in plan["report_only"]] == [] and plan["restart"] is False


def test_worker_killed_without_patch_enabled_reports_both():
    plan = V.plan(steps_with(V.transaction_result(killed_probe())), GUNICORN_SHORT, enabled=["restart"])
    assert plan["patch_targets"] == [] and not plan["needed"]
    assert {r["code"] for r in plan["report_only"]} == {"WORKER_KILLED_DURING_REQUEST", "ARTIFACT_UPLOAD_FAILED"}
    assert all(r["next_step"] for r in plan["report_only"])


def test_worker_killed_on_uvicorn_is_reported_not_patched():
    plan = V.plan(steps_with(V.transaction_result(killed_probe())), UVICORN)
    assert plan["patch_targets"] == [] and not plan["needed"]
    wk = next(r for r in plan["report_only"] if r["code"] == "WORKER_KILLED_DURING_REQUEST")
    assert "uvicorn" in wk["next_step"]


def test_an_unrelated_failure_is_still_reported_next_to_the_killed_worker():
    p = killed_probe()
    p["findings"].append(f("WRITE_FAILED", step="log_batch", status=500))
    plan = V.plan(steps_with(V.transaction_result(p)), GUNICORN_SHORT)
    assert plan["patch_targets"] == ["timeout"]
    assert [r["code"] for r in plan["report_only"]] == ["WRITE_FAILED"]


@pytest.mark.parametrize(("code", "words"), [
    ("WRITE_FAILED", "backend store"), ("ARTIFACT_UPLOAD_FAILED", "--artifacts-destination"),
    ("ARTIFACT_DOWNLOAD_FAILED", "artifact"), ("ARTIFACT_MISMATCH", "artifact"),
    ("TRANSACTION_AUTH_FAILED", "verify_transaction_username"),
])
def test_report_only_findings_carry_a_next_step(code, words):
    plan = V.plan(steps_with(V.transaction_result(with_findings(f(code, status=500)))), GUNICORN_SHORT)
    assert not plan["needed"] and plan["patch_targets"] == [] and plan["restart"] is False
    item = next(r for r in plan["report_only"] if r["code"] == code)
    assert item["severity"] == "critical" and words in item["next_step"]


def test_slow_upload_is_a_warning_without_action():
    p = with_findings(f("SLOW_UPLOAD", "warning", step="upload_artifact", rate_kib_s=12.5))
    p["transaction"].update(ok=True, failed_step=None)
    st = V.transaction_result(p)
    assert st["status"] == "warning" and st["findings"][0]["evidence"]["rate_kib_s"] == 12.5
    plan = V.plan(steps_with(st), GUNICORN_SHORT)
    assert not plan["needed"]
    assert [(r["code"], r["severity"]) for r in plan["report_only"]] == [("SLOW_UPLOAD", "warning")]
    rep = V.build_report(steps_with(st), plan_result=plan, settings_before=GUNICORN_SHORT)
    assert rep["healthy"] is True and rep["status"] == "degraded"
    assert any(n.startswith("SLOW_UPLOAD: ") for n in rep["next_steps"])


def test_basic_auth_401_of_the_read_only_checks_is_reported_not_restarted():
    """Measured on MLflow 3.17.2 --app-name basic-auth: /health 200, / and /version 401 without credentials."""
    probe = {"healthy": False, "checks": {"health": {"status": 200, "ok": True}},
             "findings": [{"code": "ROOT_FAILED", "severity": "error", "message": "GET / answers 401",
                           "evidence": {"status": 401, "body": "You are not authenticated."}},
                          {"code": "VERSION_FAILED", "severity": "warning", "message": "GET /version answers 401",
                           "evidence": {"status": 401, "body": ""}}]}
    plan = V.plan([V.probe_result(probe), V.transaction_result(passed_probe())], {"server": "uvicorn"})
    assert plan["restart"] is False and not plan["needed"]
    root = next(r for r in plan["report_only"] if r["code"] == "ROOT_FAILED")
    assert "verify_transaction_username" in root["next_step"]
    # a 500 on / is still a broken server: restart as before
    probe["findings"][0]["evidence"]["status"] = 500
    assert V.plan([V.probe_result(probe)], {"server": "uvicorn"})["restart"] is True


# ----------------------------------------------------------------------------------------------- report
def test_report_before_after_shows_the_heal():
    before = steps_with(V.transaction_result(killed_probe()))
    after = steps_with(V.transaction_result(passed_probe()))
    plan = V.plan(before, GUNICORN_SHORT)
    rep = V.build_report(before, after, plan_result=plan,
                         remediated=[{"action": "patch", "changed": True, "reason": ["WORKER_KILLED_DURING_REQUEST"],
                                      "description": "asgard.mlflow.patch: gunicorn timeout/keep-alive"}],
                         settings_before=GUNICORN_SHORT, settings_after={**GUNICORN_SHORT, "gunicorn_timeout": 300})
    assert rep["healthy"] is True and rep["status"] == "healthy" and rep["remaining"] == []
    row = next(r for r in rep["before_after"] if r["metric"] == "Deep check (4b)")
    assert row["before"] == "FAILED at upload_artifact" and row["after"].startswith("passed (")
    assert row["change"] == "fixed"
    assert [r["metric"] for r in rep["before_after"]][-2:] == ["Deep check (4b)", "Status"]
    st = next(s for s in rep["steps"] if s["step"] == "transaction")
    assert st["before"] == "failed" and st["status"] == "ok"
    assert "WORKER_KILLED_DURING_REQUEST" in {x["code"] for x in rep["findings_before"]}
    text = "\n".join(V.render_text(rep))
    assert "[OK  ] 4b. Deep check" in text and "(was failed)" in text
    md = V.render_markdown(rep)
    assert "**WORKER_KILLED_DURING_REQUEST** (critical, step transaction)" in md


def test_report_without_step_4b_has_no_deep_check_row():
    rep = V.build_report(steps_with(V.probe_result(None))[:1])
    assert "Deep check (4b)" not in [r["metric"] for r in rep["before_after"]]


def test_still_failing_after_the_heal_is_unhealthy_with_next_step():
    before = steps_with(V.transaction_result(killed_probe()))
    rep = V.build_report(before, copy.deepcopy(before), plan_result=V.plan(before, GUNICORN_SHORT))
    assert rep["healthy"] is False and rep["status"] == "unhealthy"
    assert {f["code"] for f in rep["remaining"]} == {"WORKER_KILLED_DURING_REQUEST", "ARTIFACT_UPLOAD_FAILED"}
    assert any(n.startswith("WORKER_KILLED_DURING_REQUEST: re-run verify.yml") for n in rep["next_steps"])


# ------------------------------------------------------------------------------- role variables (static)
ROLE = REPO / "roles" / "verify"
TXN_VARS = ["verify_transaction", "verify_transaction_options", "verify_transaction_username",
            "verify_transaction_password", "verify_transaction_in_check_mode"]


def test_argument_specs_document_the_new_variables_with_matching_defaults():
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    for name in TXN_VARS:
        assert name in specs and name in defaults, name
        assert specs[name]["default"] == defaults[name], name
    assert specs["verify_transaction_password"].get("no_log") is True
    assert defaults["verify_transaction"] is False and defaults["verify_transaction_in_check_mode"] is False


def test_transaction_task_hides_credentials_and_skips_in_check_mode():
    tasks = yaml.safe_load((ROLE / "tasks" / "transaction.yml").read_text())
    run = tasks[0]
    assert run["asgard.mlflow.mlflow_probe"]["transaction"] is True
    assert run["no_log"] is True and run["changed_when"] is False
    assert "ansible_check_mode" in run["when"] and "verify_transaction_in_check_mode" in run["when"]
    for path in ("report.yml", "remediate.yml", "patch.yml"):
        assert "verify_transaction_password" not in (ROLE / "tasks" / path).read_text()


def _preflight(tmp_path, **extra) -> subprocess.CompletedProcess:
    """Only the role's preflight (tag verify_preflight): no cluster is touched."""
    play = tmp_path / "p.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                     "tasks": [{"ansible.builtin.import_role": {"name": "asgard.mlflow.verify",
                                                                                "tasks_from": "preflight"}}]}]))
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps(extra))
    return subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(play), "-e", f"@{ev}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)


def test_preflight_names_bad_options_and_never_prints_the_password(tmp_path):
    r = _preflight(tmp_path, verify_transaction=True, verify_transaction_options={"artifact_size": 0, "sise": 1})
    assert r.returncode != 0 and "Bad verify_transaction_options" in r.stdout and "sise" in r.stdout, r.stdout
    r = _preflight(tmp_path, verify_transaction=True, verify_transaction_password="Zq-secret-981")
    assert r.returncode != 0 and "verify_transaction_username / verify_transaction_password" in r.stdout
    assert "Zq-secret-981" not in r.stdout + r.stderr
    r = _preflight(tmp_path, verify_transaction=True, verify_transaction_username="admin",
                   verify_transaction_password="Zq-secret-981",
                   verify_transaction_options={"artifact_size": 20_000_000, "upload_rate_limit": 4000,
                                               "keep_runs": 0, "experiment": "synthetic", "timeout": 20})
    assert r.returncode == 0, r.stdout[-2000:]
    assert "Zq-secret-981" not in r.stdout + r.stderr
