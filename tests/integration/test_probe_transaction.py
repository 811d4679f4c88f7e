"""mlflow_probe's deep check (transaction: true) through real ansible-playbook against real MLflow pods in the lab.

Servers (one namespace, deployed together): MLflow 3.17.2 on uvicorn, 3.17.2 with --static-prefix, 2.22.5
(gunicorn), 3.17.2 on gunicorn with --timeout 2, and 3.17.2 whose SQLite backend is mounted read-only.
All serve artifacts (--serve-artifacts, proxied artifact URIs).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_probe_module import create_namespace, run_module, run_module_tasks, wait_ready  # noqa: E402

pytestmark = pytest.mark.lab
V3, V2 = "ghcr.io/mlflow/mlflow:v3.17.2", "ghcr.io/mlflow/mlflow:v2.22.5"
STEPS = ["get_experiment", "create_experiment", "create_run", "log_batch", "upload_artifact", "list_artifacts",
         "download_artifact", "get_run", "finish_run", "search_runs"]
INIT_DB = ("from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as S; "
           "S('sqlite:////db/mlflow.db', '/db/unused')")


def deploy(lab, ns: str, name: str, image: str = V3, args=(), readonly_db: bool = False,
           extra_env: dict | None = None) -> None:
    labels = {"app": name}
    env = [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
           {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": f"{name}.{ns}.svc.cluster.local:5000,localhost:*"}]
    container = {
        "name": "mlflow", "image": image, "command": ["mlflow", "server"],
        "args": ["--host=0.0.0.0", "--port=5000", "--workers=1", "--backend-store-uri=sqlite:////db/mlflow.db",
                 "--serve-artifacts", "--artifacts-destination=/art", *args],
        "env": (env if image == V3 else env[:1]) + [{"name": k, "value": v} for k, v in (extra_env or {}).items()],
        "workingDir": "/art",
        "ports": [{"name": "http", "containerPort": 5000}],
        "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
        "volumeMounts": [{"name": "db", "mountPath": "/db", "readOnly": readonly_db},
                         {"name": "art", "mountPath": "/art"}],
    }
    spec = {"terminationGracePeriodSeconds": 5, "enableServiceLinks": False, "containers": [container],
            "volumes": [{"name": "db", "emptyDir": {}}, {"name": "art", "emptyDir": {}}]}
    if readonly_db:  # schema and Default experiment written first, then the server sees a read-only directory
        spec["initContainers"] = [{"name": "init-db", "image": image, "command": ["python", "-c", INIT_DB],
                                   "volumeMounts": [{"name": "db", "mountPath": "/db"}]}]
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
           "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": spec}}}
    r = lab.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", json=dep)
    assert r.status_code == 201, r.text
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": labels, "ports": [{"name": "http", "port": 5000, "targetPort": "http"}]}}
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/services", json=svc)
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def servers(lab):
    ns = create_namespace(lab)
    deploy(lab, ns, "good")
    deploy(lab, ns, "prefixed", args=["--static-prefix=/static"])
    deploy(lab, ns, "old", image=V2)
    deploy(lab, ns, "slowgun", args=['--gunicorn-opts=--timeout 2'])
    deploy(lab, ns, "readonly", readonly_db=True)
    pods = {app: wait_ready(lab, ns, app, timeout=300) for app in ("good", "prefixed", "old", "slowgun", "readonly")}
    yield ns, pods
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def deep(lab, tmp_path, ns, service, check=False, **args) -> dict:
    args = {"namespace": ns, "service": service, "transaction": True, "timeout": 15, "deadline": 120, **args}
    r = run_module(lab, tmp_path, "asgard.mlflow.mlflow_probe", args) if not check else \
        _run_check(lab, tmp_path, args)
    assert "transaction" in r, r
    return r


def deep_many(lab, tmp_path, ns, service, calls: list[dict], check: bool = False) -> list[dict]:
    """Deep checks one after the other as tasks of one playbook run (each its own module call and result)."""
    base = {"namespace": ns, "service": service, "transaction": True, "timeout": 15, "deadline": 120}
    rs = run_module_tasks(lab, tmp_path, "asgard.mlflow.mlflow_probe", [{**base, **c} for c in calls], check=check)
    for r in rs:
        assert "transaction" in r, r
    return rs


def _run_check(lab, tmp_path, args):
    return run_module(lab, tmp_path, "asgard.mlflow.mlflow_probe", args, check=True)


def codes(r) -> list[str]:
    return [f["code"] for f in r["findings"]]


def active_runs(lab, ns: str, pod: str) -> int:
    """Counted in the pod's SQLite file, independently of the module."""
    py = ("import sqlite3; c = sqlite3.connect('file:/db/mlflow.db?mode=ro', uri=True); "
          "print(c.execute(\"select count(*) from runs where lifecycle_stage='active'\").fetchone()[0])")
    res = subprocess.run(["kubectl", "-n", ns, "exec", pod, "--", "python", "-c", py], env=lab.env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip())


def assert_passed(r: dict) -> dict:
    t = r["transaction"]
    assert t["ok"] is True and r["healthy"] is True, (t, r["findings"])
    assert t["failed_step"] is None
    names = [s["name"] for s in t["steps"]]
    for step in STEPS:
        if step != "create_experiment" or step in names:
            st = next(s for s in t["steps"] if s["name"] == step)
            assert st["ok"] is True and st["status"] in (200, 404) and st["latency_ms"] > 0, st
    assert t["artifact"]["sha256"] == t["artifact"]["downloaded_sha256"]
    assert t["artifact"]["rate_kib_s"] > 0
    assert t["run_id"] in t["deleted_runs"] and t["kept_runs"] == []
    assert t["api_requests"] >= 0 and t["elapsed_ms"] > 0
    return t


def test_healthy_server_passes_and_runs_do_not_accumulate(lab, servers, tmp_path):
    ns, pods = servers
    before = active_runs(lab, ns, pods["good"])
    r1, r2 = deep_many(lab, tmp_path, ns, "good", [{}, {}])  # two module calls, one playbook run
    t1 = assert_passed(r1)
    assert t1["host_header"] == f"good.{ns}.svc.cluster.local:5000" and t1["api_base"] == "/api"
    assert t1["artifact"]["bytes"] == 65536
    assert [s["name"] for s in t1["steps"]][:2] in (["get_experiment", "create_experiment"],
                                                    ["get_experiment", "create_run"])
    t2 = assert_passed(r2)
    assert "create_experiment" not in [s["name"] for s in t2["steps"]], "the experiment is reused"
    assert t2["experiment_id"] == t1["experiment_id"]
    assert active_runs(lab, ns, pods["good"]) == before == 0
    # keep the last 2: three runs leave exactly two active synthetic runs
    kept = [r["transaction"] for r in deep_many(lab, tmp_path, ns, "good", [{"transaction_keep_runs": 2}] * 3)]
    assert all(k["ok"] for k in kept), kept
    assert len(kept[-1]["kept_runs"]) == 2 and kept[-1]["run_id"] in kept[-1]["kept_runs"]
    assert active_runs(lab, ns, pods["good"]) == 2
    r3 = deep(lab, tmp_path, ns, "good")  # back to 0: deletes the two kept ones and its own
    assert set(kept[-1]["kept_runs"]) <= set(r3["transaction"]["deleted_runs"])
    assert active_runs(lab, ns, pods["good"]) == 0
    print(f"\ndeep check on the lab: {t2['elapsed_ms']} ms, {t2['api_requests']} Kubernetes API requests; "
          f"whole probe {r2['elapsed_ms']} ms, {r2['api_requests']} requests")


def test_check_mode_skips_unless_opted_in(lab, servers, tmp_path):
    ns, pods = servers
    r, opted_in = deep_many(lab, tmp_path, ns, "good", [{}, {"transaction_in_check_mode": True}], check=True)
    assert r["transaction"]["ok"] is None and "check mode" in r["transaction"]["skipped"]
    assert "TRANSACTION_SKIPPED" in codes(r) and r["healthy"] is True
    assert_passed(opted_in)


def test_static_prefix_server_passes(lab, servers, tmp_path):
    ns, _ = servers
    t = assert_passed_prefixed(deep(lab, tmp_path, ns, "prefixed"))
    assert t["api_base"] == "/static/api"
    assert all(s["path"].startswith("/static/") for s in t["steps"] if "path" in s)


def assert_passed_prefixed(r):
    # the root page is under the prefix (ROOT_NOT_FOUND makes the probe unhealthy): judge the deep check alone
    t = r["transaction"]
    assert t["ok"] is True, (t, r["findings"])
    assert not [c for c in codes(r) if c in ("WRITE_FAILED", "ARTIFACT_UPLOAD_FAILED", "ARTIFACT_MISMATCH")]
    return t


def test_mlflow_2_passes(lab, servers, tmp_path):
    ns, _ = servers
    r = deep(lab, tmp_path, ns, "old", transaction_artifact_size=300_000)
    t = assert_passed(r)
    assert r["mlflow_version"] == "2.22.5" and r["server_header"].startswith("gunicorn")
    assert t["artifact"]["bytes"] == 300_000
    # gunicorn's sync workers close every connection: one portforward WebSocket per HTTP request
    assert t["api_requests"] == len([s for s in t["steps"] if s["name"] != "read_pod_log"])
    print(f"\n2.22.5 gunicorn deep check: {t['elapsed_ms']} ms, {t['api_requests']} Kubernetes API requests")


def test_worker_killed_during_slow_upload(lab, servers, tmp_path):
    ns, _ = servers
    # 20 MB at 4 MB/s takes ~5 s: gunicorn --timeout 2 kills the sync worker mid-upload
    # then the same server passes a small transaction (the failure is the slow upload, not the server)
    r, small = deep_many(lab, tmp_path, ns, "slowgun", [
        {"transaction_artifact_size": 20_000_000, "transaction_upload_rate_limit": 4000, "timeout": 20}, {}])
    t = r["transaction"]
    assert t["ok"] is False and r["healthy"] is False
    assert t["failed_step"] == "upload_artifact", t
    assert "ARTIFACT_UPLOAD_FAILED" in codes(r) and "WORKER_KILLED_DURING_REQUEST" in codes(r), r["findings"]
    wk = next(f for f in r["findings"] if f["code"] == "WORKER_KILLED_DURING_REQUEST")
    print("\nWORKER_KILLED evidence:", wk["evidence"], "\nupload step:",
          next(s for s in t["steps"] if s["name"] == "upload_artifact"))
    assert wk["severity"] == "critical" and wk["evidence"]["step"] == "upload_artifact"
    assert any("WORKER TIMEOUT" in line or "SIGKILL" in line for line in wk["evidence"]["log_lines"])
    # the created run is cleaned up even though the transaction failed
    assert t["run_id"] in t["deleted_runs"]
    assert_passed(small)


def test_read_only_backend_gives_write_failed(lab, servers, tmp_path):
    ns, _ = servers
    r = deep(lab, tmp_path, ns, "readonly")
    t = r["transaction"]
    assert r["checks"]["api"]["ok"] is True, "reads work"
    assert t["ok"] is False and r["healthy"] is False
    wf = next(f for f in r["findings"] if f["code"] == "WRITE_FAILED")
    print("\nWRITE_FAILED evidence:", wf["evidence"])
    assert wf["evidence"]["step"] == t["failed_step"] == "create_experiment"
    assert wf["evidence"]["status"] >= 500 and "readonly" in wf["evidence"]["body"].lower().replace("-", "")


def test_bad_transaction_input_fails_with_field_name(lab, servers, tmp_path):
    ns, _ = servers
    r = run_module(lab, tmp_path, "asgard.mlflow.mlflow_probe", {
        "namespace": ns, "service": "good", "transaction": True, "transaction_artifact_size": 0,
        "transaction_username": "admin"})
    assert r.get("failed") is True
    assert "transaction_artifact_size" in r["msg"] and "transaction_username/transaction_password" in r["msg"]

