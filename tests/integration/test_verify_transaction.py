"""playbooks/verify.yml with step 4b (verify_transaction: the deep check) against real MLflow pods in the lab.

- gunicorn with --timeout 2 and a 20 MB artifact paced at 4000 KiB/s (~5 s): the sync worker is killed mid-upload
  -> WORKER_KILLED_DURING_REQUEST; verify heals it with the patch role (gunicorn --timeout >= 300), re-runs the
  same transaction (same size and pacing), which passes; a second run changes nothing.
- MLflow --app-name basic-auth: the deep check passes with credentials and gives TRANSACTION_AUTH_FAILED without;
  the password never appears in the output or the report.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from test_verify_heal import apply, codes, deployment, rows, wait_log  # noqa: E402

pytestmark = pytest.mark.lab
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
BIG = {"artifact_size": 20_000_000, "upload_rate_limit": 4000, "timeout": 30}
ADMIN_PASSWORD = "Asg-lab-Pw-7731"  # only in this lab pod; the test asserts it is never printed


def mlflow_objects(ns: str, extra_args: list[str], extra_env: list[dict] | None = None) -> list[dict]:
    labels = {"app": "mlflow"}
    c = {"name": "mlflow", "image": IMAGE, "command": ["mlflow", "server"],
         "args": ["--host=0.0.0.0", "--port=5000", "--workers=1", "--backend-store-uri=sqlite:////db/mlflow.db",
                  "--serve-artifacts", "--artifacts-destination=/art", *extra_args],
         "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
                 {"name": "MLFLOW_SERVER_ALLOWED_HOSTS",
                  "value": f"mlflow-service.{ns}.svc.cluster.local:5000,localhost:*"}] + (extra_env or []),
         "workingDir": "/art",
         "ports": [{"name": "http", "containerPort": 5000}],
         "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
         "volumeMounts": [{"name": "db", "mountPath": "/db"}, {"name": "art", "mountPath": "/art"}]}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow-deployment", "labels": labels},
           "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"terminationGracePeriodSeconds": 5, "enableServiceLinks": False,
                                          "containers": [c],
                                          # the database survives the rollout of the patch (same node, same dir)
                                          "volumes": [{"name": "db", "emptyDir": {}},
                                                      {"name": "art", "emptyDir": {}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow-service"},
           "spec": {"selector": labels, "ports": [{"name": "http", "port": 5000, "targetPort": "http"}]}}
    return [dep, svc]


def verify(lab, ns: str, tmp_path: Path, name: str, check: bool = False, **extra):
    report = tmp_path / f"{name}.json"
    ev = {"verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(report),
          "verify_markdown_report_path": str(tmp_path / f"{name}.md"),
          "verify_rollout_timeout": 300, "verify_min_workers": 1, "verify_transaction": True}
    ev.update(extra)
    t0 = time.monotonic()
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, extra_vars=ev, check=check,
                       env=lab.env(), timeout=900)
    print(f"\nverify {name}: {time.monotonic() - t0:.1f} s, rc={res.rc}, changed={res.changed}")
    rep = json.loads(report.read_text()) if report.exists() else {}
    return res, rep


def step(rep: dict, name: str = "transaction") -> dict:
    return next(s for s in rep["steps"] if s["step"] == name)


def test_worker_killed_during_upload_is_healed_and_the_same_transaction_then_passes(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    apply(lab, ns, mlflow_objects(ns, ["--gunicorn-opts=--timeout 2"]))
    wait_log(lab, ns, "Listening at")
    gen0 = deployment(lab, ns)["metadata"]["generation"]

    # check mode: step 4b is skipped with a clear message, nothing changes
    res, rep = verify(lab, ns, tmp_path, "check", check=True, verify_transaction_options=BIG)
    assert res.rc == 0, res.output
    st = step(rep)
    assert st["status"] == "skipped" and "verify_transaction_in_check_mode" in st["summary"], st
    assert deployment(lab, ns)["metadata"]["generation"] == gen0

    # the heal
    res, rep = verify(lab, ns, tmp_path, "heal", verify_transaction_options=BIG)
    assert res.rc == 0, res.output
    before = {f["code"]: f for f in rep["findings_before"]}
    assert "WORKER_KILLED_DURING_REQUEST" in before, rep["findings_before"]
    wk = before["WORKER_KILLED_DURING_REQUEST"]
    assert wk["step"] == "transaction" and wk["severity"] == "critical"
    assert wk["evidence"]["step"] == "upload_artifact"
    assert any("WORKER TIMEOUT" in ln or "SIGKILL" in ln for ln in wk["evidence"]["log_lines"]), wk
    # what round 1 did (the report's "plan" is what is left to do after the last round: nothing here)
    patch = next(a for a in rep["remediated"] if a["action"] == "patch")
    assert "timeout" in patch["targets"] and "WORKER_KILLED_DURING_REQUEST" in patch["reason"], patch
    assert rep["remediated"][0]["action"] == "patch" and rep["remediated"][0]["changed"] is True
    # re-run with the same size and pacing: passes, the run ends healthy
    st = step(rep)
    assert st["before"] == "failed" and st["status"] == "ok", st
    assert rep["status"] == "healthy", rep["remaining"]
    r = rows(rep)
    assert r["Deep check (4b)"]["before"] == "FAILED at upload_artifact"
    assert r["Deep check (4b)"]["after"].startswith("passed") and r["Deep check (4b)"]["change"] == "fixed"
    assert (r["Worker timeout"]["before"], r["Worker timeout"]["after"]) == ("2s", "300s")
    args = " ".join(deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--timeout 300" in args, args
    assert "WORKER_KILLED_DURING_REQUEST" in (tmp_path / "heal.md").read_text()
    print("deep check after the heal:", st["summary"])

    # a second run changes nothing (the deep check deletes its synthetic run: not a change)
    gen1 = deployment(lab, ns)["metadata"]["generation"]
    res, rep = verify(lab, ns, tmp_path, "rerun", verify_transaction_options=BIG)
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert rep["status"] == "healthy" and rep["remediated"] == [] and step(rep)["status"] == "ok"
    assert deployment(lab, ns)["metadata"]["generation"] == gen1


def test_basic_auth_passes_with_credentials_and_fails_without(lab, lab_namespace, tmp_path):
    """Step 4b alone: step 4's read-only checks get no credentials here (verify_auth_* unset; the deep check's own do not
    leak into step 4), so on a basic-auth server `/` and `/version` answer 401 there (AUTH_REQUIRED): reported, never
    restarted."""
    ns = lab_namespace
    apply(lab, ns, mlflow_objects(ns, ["--app-name=basic-auth"],
                                  [{"name": "MLFLOW_AUTH_ADMIN_PASSWORD", "value": ADMIN_PASSWORD},
                                   {"name": "MLFLOW_FLASK_SERVER_SECRET_KEY", "value": "asgard-lab-only"}]))
    wait_log(lab, ns, "Uvicorn running")
    gen0 = deployment(lab, ns)["metadata"]["generation"]
    common = {"verify_probe_api_check": False, "verify_fail_when_unhealthy": False,
              "verify_transaction_options": {"artifact_size": 4096, "min_upload_rate": 0}}

    res, rep = verify(lab, ns, tmp_path, "auth", verify_transaction_username="admin",
                      verify_transaction_password=ADMIN_PASSWORD, **common)
    assert res.rc == 0, res.output
    st = step(rep)
    assert st["status"] == "ok" and st["summary"].startswith("passed"), st
    assert not [f for f in rep["findings"] if f["step"] == "transaction"]
    assert ADMIN_PASSWORD not in res.stdout + res.stderr
    assert ADMIN_PASSWORD not in (tmp_path / "auth.json").read_text() + (tmp_path / "auth.md").read_text()

    res, rep = verify(lab, ns, tmp_path, "noauth", **common)
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert step(rep)["status"] == "failed"
    assert "TRANSACTION_AUTH_FAILED" in codes(rep["remaining"]), rep["remaining"]
    auth = next(f for f in rep["remaining"] if f["code"] == "TRANSACTION_AUTH_FAILED")
    assert auth["evidence"]["status"] == 401 and auth["severity"] == "critical"
    assert any(n.startswith("TRANSACTION_AUTH_FAILED: ") and "verify_transaction_username" in n
               for n in rep["next_steps"])
    # step 4's 401s are reported, not "healed" by a restart
    assert rep["plan"]["actions"] == [] and rep["remediated"] == []
    assert {"AUTH_REQUIRED", "TRANSACTION_AUTH_FAILED"} <= {r["code"] for r in rep["plan"]["report_only"]}
    assert deployment(lab, ns)["metadata"]["generation"] == gen0
    print("step 4 on basic auth:", step(rep, "probe"))
