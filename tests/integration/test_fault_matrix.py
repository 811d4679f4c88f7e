"""The fault matrix (issue 8): one fault injected through the lab per test, and its outcome asserted.

For each fault: the finding that detects it (from playbooks/verify.yml's JSON report, or from the module/role
named in the row), the outcome (healed, or refused with a clear message where healing would be a guess), and
the backend store unchanged: one experiment and one run are created through the pod IP before the fault (the
schema row writes its store with MLflow 2.16.2 from the host instead), and
the experiment and run ids are compared after it (through the pod IP when a server answers, and always in the
SQLite file on the PersistentVolumeClaim).

MLflow pods are cheap ones (1 worker, job execution off, SQLite on a PVC so the store survives pod replacement).
docs/fault-matrix.md is generated at the end of a session from the cases that passed in it; a partial run (``-k``)
replaces only its rows and the others keep their last results (tests/integration/fault_matrix_report.py).

The patch role's variables are written with the prefix constant ``P`` below (``patch_``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fault_matrix_report as report  # noqa: E402
from helpers.ansible_runner import run_playbook, start_playbook  # noqa: E402
from helpers.kubectl import PortForward  # noqa: E402
from helpers.lab_objects import codes, get_deployment, json_patch, live_pods, wait_container_waiting  # noqa: E402
from helpers.postgres import seed_store as seed_old_store  # noqa: E402
from fault_matrix_lab import (LOCAL_HOST, PVC, assert_store, create,  # noqa: E402
                              deployment, healed_row, new_namespace, pod_log, seed_store, server_args,
                              service, serving_pod, slow_post, start_healthy, store_via_file, verify)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("fault_matrix_rows")]
OLD_IMAGE = "ghcr.io/mlflow/mlflow:v2.22.5"
OLDEST = "2.16.2"  # an MLflow the lab has no image for: written from the host (helpers.postgres.seed_store)
REV_2_16_2 = "4465047574b1"  # alembic revision a 2.16.2 store is left at
HEAD_2_22_5 = "0584bdc529eb"  # what 2.22.5 expects
P = "patch_"  # patch role variable prefix


# ------------------------------------------------------------------------------------------------ the matrix
def test_worker_timeout_under_slow_upload(lab, ns, tmp_path):
    t0 = time.monotonic()
    pod, base, before = start_healthy(lab, ns, deployment(args=server_args(extra=["--gunicorn-opts=--timeout 2"])))
    # a request body that trickles in for 6 s: gunicorn (sync, --timeout 2) kills the worker
    ip = base.split("//")[1].split(":")[0]
    status = slow_post(ip, seconds=6)
    log = pod_log(lab, ns, pod)
    assert "WORKER TIMEOUT" in log, log[-2000:]
    assert status in (None, 500, 502), status

    res, rep = verify(lab, ns, tmp_path, "heal")
    assert res.rc == 0, res.output
    found = codes(rep["findings_before"])
    assert {"WORKER_TIMEOUT", "SHORT_WORKER_TIMEOUT"} <= found, found
    assert rep["remediated"][0]["action"] == "patch", rep["remediated"]
    assert rep["status"] == "healthy", rep["remaining"]
    args = " ".join(get_deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--timeout 300" in args, args
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,))
    # the same slow upload now completes
    assert slow_post(base2.split("//")[1].split(":")[0], seconds=6) == 200
    store = assert_store(lab, ns, before, base2)
    healed_row("worker_timeout", t0, fault="gunicorn --timeout 2, a request body trickling in for 6 s",
               injected_by="Deployment args + slow body to the pod IP",
               finding="WORKER_TIMEOUT (log), SHORT_WORKER_TIMEOUT (settings)", detected_by="verify.yml",
               outcome="healed: patch to --timeout 300; the same slow upload then answers 200", store=store)


def test_invalid_host_403(lab, ns, tmp_path):
    t0 = time.monotonic()
    pod, base, before = start_healthy(lab, ns, deployment(env={"MLFLOW_SERVER_ALLOWED_HOSTS": "localhost:*"}))
    svc_host = f"mlflow-service.{ns}.svc.cluster.local:5000"
    r = requests.get(base + "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": svc_host}, timeout=10)
    assert r.status_code == 403 and "Invalid Host header" in r.text
    res, rep = verify(lab, ns, tmp_path, "heal")
    assert res.rc == 0, res.output
    assert "INVALID_HOST" in codes(rep["findings_before"])
    assert rep["remediated"][0]["action"] == "patch" and "INVALID_HOST" in rep["remediated"][0]["reason"]
    assert rep["status"] == "healthy", rep["remaining"]
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,))
    r = requests.get(base2 + "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": svc_host}, timeout=10)
    assert r.status_code == 200, r.text
    store = assert_store(lab, ns, before, base2)
    healed_row("invalid_host_403", t0, fault="MLFLOW_SERVER_ALLOWED_HOSTS=localhost:*: 403 Invalid Host header for "
               "the Service DNS name", injected_by="Deployment env", finding="INVALID_HOST (probe)",
               detected_by="verify.yml", outcome="healed: patch adds the Service DNS names (include mode)", store=store)


def test_liveness_kills_from_starved_health(lab, ns, tmp_path):
    t0 = time.monotonic()
    tight = {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2}
    pod, base, before = start_healthy(lab, ns, deployment(liveness=tight, ns=ns))
    # the health endpoint stops answering the kubelet (as a starved sync worker would): liveness kills
    r = lab.request("POST", f"/lab/pods/{ns}/{pod}/fault", json={"refusePorts": [5000]})
    assert r.status_code in (200, 201), r.text
    end = time.monotonic() + 180
    restarts = 0
    while time.monotonic() < end and restarts < 1:
        p = lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{pod}").json()
        restarts = sum(c.get("restartCount", 0) for c in p.get("status", {}).get("containerStatuses", []))
        time.sleep(1)
    assert restarts >= 1, "the liveness probe never killed the container"
    res, rep = verify(lab, ns, tmp_path, "heal")
    assert res.rc == 0, res.output
    found = codes(rep["findings_before"])
    assert found & {"RESTARTS", "CRASH_LOOP", "POD_NOT_READY", "TUNNEL_ERROR", "HEALTH_FAILED"}, found
    actions = [a["action"] for a in rep["remediated"]]
    assert actions and set(actions) <= {"patch", "restart"}, rep["remediated"]
    assert rep["status"] == "healthy", rep["remaining"]
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,))
    store = assert_store(lab, ns, before, base2)
    live = get_deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0].get("livenessProbe", {})
    healed_row("liveness_kills", t0, fault="liveness probe (1 s timeout, 2 failures) on a health endpoint that stops "
               "answering", injected_by="pod fault refusePorts [5000]",
               finding=", ".join(sorted(found & {"RESTARTS", "CRASH_LOOP", "POD_NOT_READY", "TUNNEL_ERROR",
                                                 "HEALTH_FAILED"})),
               detected_by="verify.yml",
               outcome=f"healed: {' + '.join(actions)}; liveness now timeout {live.get('timeoutSeconds')} s x "
                       f"{live.get('failureThreshold')}", store=store)


def test_crash_loop_from_bad_flag_is_refused(lab, ns, tmp_path):
    t0 = time.monotonic()
    pod, base, before = start_healthy(lab, ns, deployment(ns=ns))
    json_patch(lab, ns, [{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--no-such-flag"}])
    assert wait_container_waiting(lab, ns, "CrashLoopBackOff", timeout=120) == "CrashLoopBackOff"
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    # a restart cannot help a bad flag: verify must classify it and restart nothing
    res, rep = verify(lab, ns, tmp_path, "refuse")
    assert res.rc != 0, "verify passed on a crash-looping server"
    assert res.changed == 0, res.changed_tasks()
    found = codes(rep["findings_before"])
    assert {"CRASH_LOOP", "CONTAINER_CONFIG_ERROR"} <= found, found
    assert rep["status"] == "unhealthy"
    [cfg] = [f for f in rep["remaining"] if f["code"] == "CONTAINER_CONFIG_ERROR"]
    assert "No such option '--no-such-flag'" in cfg["evidence"]["line"] and cfg["evidence"]["exit_code"] == 2, cfg
    assert rep["remediated"] == [] and rep["plan"]["actions"] == [], rep["remediated"]
    assert rep["next_steps"][0].startswith("CONTAINER_CONFIG_ERROR: fix the command/args of container mlflow")
    # the flag is still there (not guessed away), and no rollout happened
    dep = get_deployment(lab, ns)
    assert "--no-such-flag" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert dep["metadata"]["generation"] == gen
    store = assert_store(lab, ns, before, None)
    healed_row("crash_loop_bad_flag", t0, fault="an unknown flag (--no-such-flag) added to mlflow server",
               injected_by="Deployment JSON patch (Recreate)",
               finding="CONTAINER_CONFIG_ERROR (log of the exited container, exit code 2) + CRASH_LOOP (pods)",
               detected_by="verify.yml",
               outcome=f"refused (rc {res.rc}), no restart, flag left in place, generation unchanged; evidence "
                       f"`{cfg['evidence']['line'][:60]}`; next step: fix the container args", store=store)


def test_service_named_mlflow_with_service_links(lab, ns, tmp_path):
    t0 = time.monotonic()
    pod, base, before = start_healthy(lab, ns, deployment(args=server_args(port=False), ns=ns))
    create(lab, ns, service("mlflow"))
    json_patch(lab, ns, [{"op": "replace", "path": "/spec/template/spec/enableServiceLinks", "value": True}])
    end = time.monotonic() + 120
    log = ""
    while time.monotonic() < end and "Invalid value for '--port'" not in log:
        for p in live_pods(lab, ns):
            log = pod_log(lab, ns, p["metadata"]["name"]) + pod_log(lab, ns, p["metadata"]["name"], previous=True)
        time.sleep(1)
    assert "Invalid value for '--port'" in log, log[-1500:]
    # detection: verify (report only), then the heal through the patch role
    res, rep = verify(lab, ns, tmp_path, "detect", verify_remediate=False)
    assert res.rc != 0
    found = codes(rep["findings_before"])
    assert found & {"CRASH_LOOP", "POD_NOT_READY", "ROLLOUT_STALLED", "NO_READY_POD"}, found
    assert "CONTAINER_CONFIG_ERROR" in found and rep["remediated"] == [], found  # a config error: not restarted
    res = run_playbook("playbooks/patch.yml", env=lab.env(), timeout=600,
                       extra_vars={f"{P}namespace": ns, f"{P}workers": 1, f"{P}wait_timeout": 240})
    assert res.rc == 0, res.output
    spec = get_deployment(lab, ns)["spec"]["template"]["spec"]
    assert spec["enableServiceLinks"] is False and "--port=5000" in " ".join(spec["containers"][0]["args"]) \
        or "--port 5000" in " ".join(spec["containers"][0]["args"]), spec
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,))
    store = assert_store(lab, ns, before, base2)
    healed_row("service_links_mlflow", t0, fault="a Service named mlflow + enableServiceLinks: MLFLOW_PORT=tcp://... "
               "and no --port: \"Invalid value for '--port'\"", injected_by="Service + Deployment JSON patch",
               finding=", ".join(sorted(found & {"CONTAINER_CONFIG_ERROR", "CRASH_LOOP", "POD_NOT_READY",
                                                 "ROLLOUT_STALLED", "NO_READY_POD"})),
               detected_by="verify.yml (audit); the patch role's compliance filter (port, enableServiceLinks)",
               outcome="healed by playbooks/patch.yml: --port 5000 and enableServiceLinks false", store=store)


def test_out_of_date_schema_after_image_upgrade(lab, ns, tmp_path):
    """MLflow 2.16.2 -> 2.22.5 without a migration: the SQLite store on the PVC is written by a real MLflow 2.16.2
    (mlflow-skinny from the host, tests/helpers/postgres.py seed_store; alembic revision 4465047574b1, the same
    tables as 2.22.5), then the Deployment runs ghcr.io/mlflow/mlflow:v2.22.5 on it. 2.22.5 refuses the store
    ("Detected out-of-date database schema (found version 4465047574b1, but expected 0584bdc529eb)") and exits,
    the pod crash-loops; verify.yml finds DB_SCHEMA_OUTDATED in the log, runs its migration Job (2.22.5's
    `mlflow db upgrade`) and the pods come back healthy at revision 0584bdc529eb with the store's experiments and
    runs unchanged (ids from seed_store's answer, compared in the file and through the API).

    Why not 2.22.5 -> 3.17.2 (this row's earlier form): measured, MLflow 3.17.2 does NOT refuse a 2.22.5 store.
    Tables added since 2.22 are missing, so its SqlAlchemyStore runs _initialize_tables(), i.e. every migration,
    at start ("Creating initial MLflow database tables...", "Updating database tables"); no out-of-date schema
    arises on that path (also proven on PostgreSQL by tests/integration/test_postgres_backend.py)."""
    t0 = time.monotonic()
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", json=PVC)
    assert r.status_code == 201, r.text
    # lab internals: the kubelet bind-mounts <state>/pvcs/<ns>/<claim>-<uid> (tests/lab/asgardlab/kubelet/pod.py)
    pvc_dir = lab.state_dir / "pvcs" / ns / f"data-{r.json()['metadata']['uid']}"
    pvc_dir.mkdir(parents=True, exist_ok=True)
    pvc_dir.chmod(0o777)
    db = pvc_dir / "mlflow.db"
    seeded = seed_old_store(f"sqlite:///{db}", OLDEST, ("old-a", "old-b"))
    assert seeded["mlflow_version"] == OLDEST, seeded
    os.chown(db, 1000, 1000)  # the pod's runAsUser/runAsGroup
    # the Default experiment (id 0) is created by the store itself, the rest comes from seed_store's answer
    before = {"experiments": sorted(["0", *seeded["experiments"].values()]), "runs": sorted(seeded["runs"].values())}
    assert store_via_file(lab, ns) == before
    assert alembic_revision(db) == REV_2_16_2

    # 2.22.5 serves with gunicorn: --timeout 300 so that only the injected fault is wrong (verify would also patch
    # SHORT_WORKER_TIMEOUT otherwise), as allowed_hosts() does for INVALID_HOST
    create(lab, ns, deployment(image=OLD_IMAGE, ns=ns, args=server_args(extra=["--gunicorn-opts=--timeout 300"])),
           service())
    refused = f"Detected out-of-date database schema (found version {REV_2_16_2}, but expected {HEAD_2_22_5})"
    end = time.monotonic() + 240
    log, crashed = "", None
    while time.monotonic() < end and not (refused in log and crashed):
        for p in live_pods(lab, ns):
            log = pod_log(lab, ns, p["metadata"]["name"]) + pod_log(lab, ns, p["metadata"]["name"], previous=True)
            st = (p["status"].get("containerStatuses") or [{}])[0]
            crashed = crashed or (st.get("restartCount", 0) >= 1 and st)
        time.sleep(1)
    assert refused in log and crashed, (log[-1500:], crashed)
    assert alembic_revision(db) == REV_2_16_2  # the server refused the store, it did not touch it

    res, rep = verify(lab, ns, tmp_path, "heal", verify_migration_timeout=300)
    assert res.rc == 0, res.output
    assert rep["status"] == "healthy", rep["remaining"]
    found = codes(rep["findings_before"])
    assert "DB_SCHEMA_OUTDATED" in found, found
    done = [a for a in rep["remediated"] if a.get("changed") and not a.get("failed")]
    assert "migrate" in [a["action"] for a in done], rep["remediated"]
    assert {a["action"] for a in done} <= {"migrate", "restart"}, rep["remediated"]  # nothing else was patched
    assert alembic_revision(db) == HEAD_2_22_5
    jobs = lab.request("GET", f"/apis/batch/v1/namespaces/{ns}/jobs").json()["items"]
    assert [j["status"].get("succeeded") for j in jobs] == [1], [j["status"] for j in jobs]
    assert jobs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE
    pod2, base2 = serving_pod(lab, ns)
    version = requests.get(base2 + "/version", headers={"Host": LOCAL_HOST}, timeout=10).text
    assert version == "2.22.5", version
    store = assert_store(lab, ns, before, base2)
    restarts = crashed.get("restartCount", 0)
    healed_row("schema_outdated_after_upgrade", t0,
               fault=f"MLflow {OLDEST} -> 2.22.5 without a migration: a SQLite store written by {OLDEST} "
                     f"(revision {REV_2_16_2}); 2.22.5 exits \"Detected out-of-date database schema\", the pod "
                     f"crash-loops (restartCount {restarts} when seen)",
               injected_by=f"seed_store (mlflow-skinny=={OLDEST}) on the PVC + Deployment image v2.22.5",
               finding="DB_SCHEMA_OUTDATED (log); with it: " + ", ".join(sorted(found - {"DB_SCHEMA_OUTDATED"})),
               detected_by="verify.yml (log scan)",
               outcome="healed: " + " + ".join(f"{a['action']} ({', '.join(a.get('reason') or [])})" for a in done)
               + f"; the Job ran 2.22.5's `mlflow db upgrade`: revision {REV_2_16_2} -> {HEAD_2_22_5}, "
               "GET /version 2.22.5, healthy", store=store)


def alembic_revision(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        con.close()


# ------------------------------------------------------------- cases sharing one healthy Deployment (in order)
@pytest.fixture(scope="module")
def healthy(lab):
    ns = new_namespace(lab)
    pod, base, before = start_healthy(lab, ns, deployment(ns=ns))
    yield {"ns": ns, "before": before}
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def test_api_server_429_503_and_dropped_connection_during_a_playbook(lab, healthy, tmp_path):
    t0 = time.monotonic()
    ns = healthy["ns"]
    mark = lab.log_mark()
    lab.faults.clear()
    try:
        lab.faults.add(kind="http_status", status=429, count=2, path_regex=f"/namespaces/{ns}/deployments", method="GET")
        lab.faults.add(kind="http_status", status=503, count=2, path_regex=f"/namespaces/{ns}/pods$", method="GET")
        lab.faults.add(kind="drop_connection", count=1, path_regex=f"/namespaces/{ns}/services", method="GET")
        res, rep = verify(lab, ns, tmp_path, "api-faults")
    finally:
        left = lab.faults.list()
        lab.faults.clear()
    seen = [(r["method"], r["path"], r["status"]) for r in lab.requests_since(mark) if f"/namespaces/{ns}/" in r["path"]]
    injected = [s for s in seen if s[2] in (429, 503)]
    assert injected, f"no fault fired: {seen[:20]} (faults left: {left})"
    if res.rc == 0:
        assert rep["status"] == "healthy", rep["remaining"]
        outcome = f"survived: rc 0, healthy, {len(injected)} 429/503 answers retried"
    else:
        # refused: the failure must name the API error, and nothing was written
        text = res.stdout + res.stderr
        assert any(w in text for w in ("429", "503", "Too Many Requests", "Service Unavailable", "Connection")), text[-3000:]
        outcome = f"failed clearly (rc {res.rc}) naming the API error; no retry"
    writes = [s for s in seen if s[0] in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes == [], writes
    assert res.rc == 0, f"verify.yml does not survive transient API errors:\n{res.output[-4000:]}"
    pod, base = serving_pod(lab, ns)
    store = assert_store(lab, ns, healthy["before"], base)
    healed_row("api_429_503_drop", t0, fault="API server: 2x 429 on Deployment GETs, 2x 503 on pod lists, "
               "1 dropped connection on Service GETs", injected_by="POST /lab/faults",
               finding="(transport) answers 429/503 in the request log", detected_by="lab request log + verify.yml rc",
               outcome=outcome, store=store)


def test_pod_deleted_mid_probe(lab, healthy, tmp_path):
    t0 = time.monotonic()
    ns = healthy["ns"]
    old, _ = serving_pod(lab, ns)
    pb = tmp_path / "probe.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "probe", "asgard.mlflow.mlflow_probe": {"namespace": ns, "deadline": 150, "timeout": 10, "retries": 20,
                                                         "host_header": LOCAL_HOST},
         "register": "out"},
        {"name": "show", "ansible.builtin.debug": {"var": "out"}}]}]))
    mark = lab.log_mark()
    # the first tunnel attempts get 503: the probe backs off, and the pod is deleted in that window
    lab.faults.add(kind="http_status", status=503, count=2, path_regex=f"/namespaces/{ns}/pods/[^/]+/portforward")
    out = tmp_path / "probe.out"
    with open(out, "w") as f:
        from helpers.ansible_runner import ansible_env
        env = ansible_env(tmpdir=lab.env()["TMPDIR"], KUBECONFIG=str(lab.kubeconfig),
                          ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ansible-playbook"), str(pb)], stdout=f,
                                stderr=subprocess.STDOUT, env=env, cwd=report.REPO)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if any("portforward" in r["path"] and r["status"] == 503 for r in lab.requests_since(mark, namespace=ns)):
                break
            time.sleep(0.2)
        r = lab.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{old}", json={"gracePeriodSeconds": 0})
        assert r.status_code == 200, r.text
        proc.wait(timeout=300)
    finally:
        lab.faults.clear()
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    data = json.loads(text[text.find("{"):])
    result = [h for p in data["plays"] for t in p["tasks"] if t["task"]["name"] == "probe" for h in t["hosts"].values()][0]
    found = codes(result.get("findings"))
    assert proc.returncode == 0, text[-3000:]
    assert "POD_REPLACED" in found or result["pod"] != old, result
    assert result["healthy"] is True, result.get("findings")
    assert result["pod"] != old
    pod, base = serving_pod(lab, ns)
    store = assert_store(lab, ns, healthy["before"], base)
    healed_row("pod_deleted_mid_probe", t0, fault="the pod deleted (grace 0) while mlflow_probe backs off from "
               "503 on the tunnel", injected_by="POST /lab/faults (503 x2 on portforward) + pod DELETE",
               finding=", ".join(sorted(found)) or "(none)", detected_by="mlflow_probe",
               outcome=f"healed: the probe followed the replacement pod ({result['pod']}), healthy", store=store)


def service_selector(lab, ns: str, app: str) -> str:
    """Merge-patch the selector of mlflow-service to app=<app>; its resourceVersion after."""
    r = lab.request("PATCH", f"/api/v1/namespaces/{ns}/services/mlflow-service",
                    data=json.dumps({"spec": {"selector": {"app": app}}}),
                    headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["spec"]["selector"] == {"app": app}, r.text
    return r.json()["metadata"]["resourceVersion"]


def test_service_selector_mismatch_is_refused(lab, healthy, tmp_path):
    """The shared healthy Deployment, its Service's selector typed wrong (app=mlflow-typo) for this case only (put
    back after it, before the next case)."""
    t0 = time.monotonic()
    ns = healthy["ns"]
    pod, base = serving_pod(lab, ns)
    svc_rv = service_selector(lab, ns, "mlflow-typo")
    try:
        dep_gen = get_deployment(lab, ns)["metadata"]["generation"]
        res, rep = verify(lab, ns, tmp_path, "refuse")
        assert res.rc != 0
        assert rep, f"verify.yml wrote no report:\n{res.output[-5000:]}"
        found = codes(rep["findings_before"])
        assert "SERVICE_SELECTOR_MISMATCH" in found, found
        assert rep["remediated"] == [], rep["remediated"]
        msgs = [f["message"] for f in rep["remaining"] if f["code"] == "SERVICE_SELECTOR_MISMATCH"]
        assert msgs and "mlflow-typo" in msgs[0], rep["remaining"]
        after_rv = lab.request("GET", f"/api/v1/namespaces/{ns}/services/mlflow-service").json()["metadata"]["resourceVersion"]
        assert after_rv == svc_rv and get_deployment(lab, ns)["metadata"]["generation"] == dep_gen
        store = assert_store(lab, ns, healthy["before"], base)
    finally:
        service_selector(lab, ns, "mlflow")
    healed_row("service_selector_mismatch", t0, fault="Service selector app=mlflow-typo (no pod behind the Service)",
               injected_by="Service spec", finding="SERVICE_SELECTOR_MISMATCH (service)", detected_by="verify.yml",
               outcome=f"refused (rc {res.rc}), nothing changed: {msgs[0][:140]}", store=store)


def controller_port() -> int:
    """127.0.0.1:5000 when free; the lab machine is shared, so another free port otherwise (the row says which)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 5000))
            return 5000
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def stop_forward(lab, port: int, tmp_path: Path) -> None:
    pb = tmp_path / "stop.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "stop", "asgard.mlflow.port_forward": {"state": "absent", "local_port": port}}]}]))
    run_playbook(pb, env=lab.env(), timeout=120)


def test_port_held_by_stale_kubectl_port_forward(lab, healthy, tmp_path):
    """verify.yml step 5 ("clean up old port-forwards") against a real, working ``kubectl port-forward`` (kubectl
    1.32, its default WebSocket tunnel) holding the port: cleanup stops it and step 6 forwards on the port."""
    t0 = time.monotonic()
    ns = healthy["ns"]
    # an earlier case of this module may have replaced the pod: kubectl port-forward svc/... picks one of the
    # Service's pods, so wait until the one left serves
    serving_pod(lab, ns)
    end = time.monotonic() + 120
    while len(live_pods(lab, ns)) != 1 and time.monotonic() < end:
        time.sleep(1)
    port = controller_port()
    stale = PortForward(lab.env(), "-n", ns, "svc/mlflow-service", f"{port}:5000")
    try:
        assert stale.port == port
        r = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert r.status_code == 200 and r.text.strip() == "OK", "the stale kubectl port-forward did not forward"
        res, rep = verify(lab, ns, tmp_path, "stale-kubectl", verify_port_forward=True,
                          verify_port_forward_local_port=port, verify_port_forward_cleanup=True)
        assert res.rc == 0, res.output
        assert stale.wait(timeout=30) is not None, "the stale kubectl port-forward is still running"
        r = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert r.status_code == 200 and r.text.strip() == "OK"
        step = {s["step"]: s for s in rep.get("steps") or []}
        assert "PORT_FORWARD_FAILED" not in codes(rep.get("remaining"))
        # step 5 stopped the stale kubectl: its pid is in what the port_forward task stopped (the count in the
        # summary may also include an earlier forwarder of ours on the port)
        stopped = [s.get("pid") for t in res.tasks()
                   if t.get("task", {}).get("name", "").split(" : ")[-1].startswith("Steps 5-6")
                   for h in t.get("hosts", {}).values() for s in h.get("stopped") or []]
        assert stale.pid in stopped, (step["cleanup"], stopped)
    finally:
        stale.stop()
        stop_forward(lab, port, tmp_path)
    pod, base = serving_pod(lab, ns)
    store = assert_store(lab, ns, healthy["before"], base)
    healed_row("port_held_by_stale_kubectl", t0, fault=f"127.0.0.1:{port} held by a stale `kubectl port-forward "
               f"svc/mlflow-service {port}:5000`", injected_by="a real kubectl 1.32 port-forward, serving the port",
               finding="port_forward: kubectl port-forward holding the local port", detected_by="verify.yml "
               "(port_forward step, cleanup)", outcome=f"healed: the stale process stopped, forward on {port} "
               f"answers /health 200 (step 5: {step['cleanup']['summary']})", store=store)


def test_port_held_by_unrelated_process_is_refused(lab, healthy, tmp_path):
    """verify.yml step 6 with cleanup on: the unrelated holder is left alone, PORT_FORWARD_FAILED names it and the
    run fails (the operator asked for the forward); MLflow itself stays healthy."""
    t0 = time.monotonic()
    ns = healthy["ns"]
    port = controller_port()
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        res, rep = verify(lab, ns, tmp_path, "port-held", verify_port_forward=True,
                          verify_port_forward_local_port=port, verify_port_forward_cleanup=True)
        assert other.poll() is None, "an unrelated process was killed"
        assert res.rc != 0, "verify.yml passed although its port-forward could not start"
        assert res.changed == 0, res.changed_tasks()
        assert rep["healthy"] is True and rep["status"] == "degraded", rep["remaining"]
        [pf] = [f for f in rep["remaining"] if f["code"] == "PORT_FORWARD_FAILED"]
        msg = pf["message"]
        assert str(port) in msg and "http.server" in msg and str(other.pid) in msg, msg
        assert any(n.startswith("PORT_FORWARD_FAILED: ") for n in rep["next_steps"]), rep["next_steps"]
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # still the http.server
    finally:
        other.kill()
        other.wait()
    pod, base = serving_pod(lab, ns)
    store = assert_store(lab, ns, healthy["before"], base)
    healed_row("port_held_by_unrelated_process", t0, fault=f"127.0.0.1:{port} held by `python -m http.server`",
               injected_by="an unrelated process on the port", finding="PORT_FORWARD_FAILED (step 6, names the holder)",
               detected_by="verify.yml (port_forward step)",
               outcome=f"refused (rc {res.rc}), process left alone, MLflow healthy: {msg[:150]}", store=store)


# ---------------------------------------------------- issue 14: what an operator types is what happens
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def writes_in(lab, mark: int, ns: str) -> list[str]:
    return [f"{r['method']} {r['path']} -> {r['status']}" for r in lab.requests_since(mark)
            if r["method"] in WRITES and f"/namespaces/{ns}/" in r["path"]]


def typed_verify(lab, ns: str, tmp_path: Path, name: str, *argv: str, env: dict | None = None):
    """verify.yml with every variable typed on the command line as strings (`-e name=value`), as an operator does."""
    rep_path = tmp_path / f"verify-{name}.json"
    res = start_playbook("playbooks/verify.yml", env=lab.env(**(env or {})), argv=[
        "-e", f"verify_namespace={ns}", "-e", "verify_port_forward=false", "-e", f"verify_report_path={rep_path}",
        "-e", "verify_min_workers=1", "-e", "verify_rollout_timeout=240", "-e", "verify_probe_deadline=45", *argv])
    return res, rep_path


def finished(run) -> tuple:
    res, rep_path = run
    res = res.wait(900)
    return res, (json.loads(rep_path.read_text()) if rep_path.exists() else {})


def claimed_changes(rep: dict) -> int:
    """Remediation actions a report says changed the Deployment (patch, restart)."""
    return sum(1 for a in rep.get("remediated") or [] if a.get("changed") and a.get("action") in ("patch", "restart"))


def test_static_prefix_audit_typed_then_two_runs_at_once(lab, ns, tmp_path):
    """Three rows on one broken Deployment (--static-prefix=/static: GET / answers 404). Item 1: `-e
    verify_remediate=false` on the command line is an audit: nothing is written. Item 6: then two verify.yml runs
    start at the same moment: one remediates, the other waits for the Lease or reports REMEDIATION_IN_PROGRESS, and
    no report claims a change it did not make (the changes the two reports claim are exactly the Deployment's
    generation steps). static_prefix_404: the run that remediated healed the fault (ROOT_NOT_FOUND found, patch,
    healthy, GET / 200 with the MLflow title), asserted on its report as on a run alone."""
    t0 = t_start = time.monotonic()
    pod, base, before = start_healthy(lab, ns, deployment(args=server_args(extra=["--static-prefix=/static"]), ns=ns),
                                      prefix="/static")
    assert requests.get(base.removesuffix("/static") + "/", headers={"Host": LOCAL_HOST}, timeout=10).status_code == 404
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    mark = lab.log_mark()
    res, rep = finished(typed_verify(lab, ns, tmp_path, "audit", "-e", "verify_remediate=false"))
    written = writes_in(lab, mark, ns)
    assert written == [], f"-e verify_remediate=false wrote to the cluster: {written}"
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen
    assert rep["meta"]["remediate"] is False and rep["remediated"] == [] and res.changed == 0, rep["remediated"]
    assert "ROOT_NOT_FOUND" in codes(rep["findings_before"]) and res.rc != 0  # unhealthy, and said so
    store = assert_store(lab, ns, before, base)
    healed_row("audit_typed_on_command_line", t0, fault="--static-prefix=/static (GET / 404); the operator types "
               "`-e verify_remediate=false` (a string)", injected_by="Deployment args + the command line",
               finding="ROOT_NOT_FOUND (probe)", detected_by="verify.yml (audit)",
               outcome=f"refused as asked: rc {res.rc}, no write in the namespace, generation {gen} unchanged, "
                       "report remediate false, nothing remediated", store=store)

    t0 = time.monotonic()
    mark = lab.log_mark()
    runs = [typed_verify(lab, ns, tmp_path, "a"), typed_verify(lab, ns, tmp_path, "b")]
    (ra, rep_a), (rb, rep_b) = finished(runs[0]), finished(runs[1])
    gen_after = get_deployment(lab, ns)["metadata"]["generation"]
    claims = claimed_changes(rep_a) + claimed_changes(rep_b)
    patches = [w for w in writes_in(lab, mark, ns) if w.startswith("PATCH") and "/deployments/" in w]
    assert claims == gen_after - gen, (f"the reports claim {claims} change(s), the generation moved "
                                       f"{gen_after - gen}: {rep_a.get('remediated')} / {rep_b.get('remediated')}")
    assert [claimed_changes(rep_a) > 0, claimed_changes(rep_b) > 0].count(True) == 1, "one run remediates"
    assert len(patches) >= 1
    for res, rep in ((ra, rep_a), (rb, rep_b)):
        found = codes(rep.get("findings_before")) | codes(rep.get("remaining"))
        assert res.rc == 0 or "REMEDIATION_IN_PROGRESS" in found, res.output[-4000:]
    waiter = rep_b if claimed_changes(rep_a) else rep_a
    assert waiter["status"] == "healthy" or "REMEDIATION_IN_PROGRESS" in codes(waiter.get("remaining")), waiter
    assert not [a for a in waiter.get("remediated") or [] if a.get("failed")], waiter["remediated"]
    lease = lab.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/"
                        "asgard-mlflow-remediation-mlflow-deployment")
    assert lease.status_code == 200 and not lease.json()["spec"].get("holderIdentity"), lease.text
    # static_prefix_404: what a run alone asserts, on the run that remediated
    healer_res, healer = (ra, rep_a) if claimed_changes(rep_a) else (rb, rep_b)
    assert healer_res.rc == 0, healer_res.output
    assert "ROOT_NOT_FOUND" in codes(healer["findings_before"])
    assert healer["remediated"][0]["action"] == "patch" and "ROOT_NOT_FOUND" in healer["remediated"][0]["reason"]
    assert healer["status"] == "healthy", healer["remaining"]
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,))
    r = requests.get(base2 + "/", headers={"Host": LOCAL_HOST}, timeout=10)
    assert r.status_code == 200 and "<title>MLflow</title>" in r.text
    # the API moved from /static/api to /api with the prefix: the same store behind it
    store = assert_store(lab, ns, before, base2)
    healed_row("static_prefix_404", t_start, fault="--static-prefix=/static: GET / answers 404",
               injected_by="Deployment args", finding="ROOT_NOT_FOUND (probe)", detected_by="verify.yml",
               outcome="healed: patch removes --static-prefix; GET / 200 with the MLflow title", store=store)
    how = "waited for the Lease, then found it healthy" if waiter["status"] == "healthy" else \
        "reported REMEDIATION_IN_PROGRESS"
    healed_row("two_verify_runs_at_once", t0, fault="two verify.yml runs started at the same moment on one broken "
               "Deployment (--static-prefix=/static)", injected_by="two ansible-playbook processes",
               finding="ROOT_NOT_FOUND (probe); the Lease asgard-mlflow-remediation-mlflow-deployment",
               detected_by="verify.yml + remediation_lock",
               outcome=f"healed once: one run patched, the other {how}; changes claimed {claims} = generation steps "
                       f"{gen_after - gen}; the Lease released", store=store)


def test_forward_retarget_to_a_typo(lab, healthy, tmp_path):
    """Item 3: a working forward on the port, then `verify.yml -e verify_namespace=<typo>`: the forward keeps
    running and answering, the state file names it, the report says nothing was stopped."""
    t0 = time.monotonic()
    ns = healthy["ns"]
    port = free_port()
    xdg = {"XDG_STATE_HOME": str(tmp_path / "state")}
    pb = tmp_path / "forward.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "forward", "asgard.mlflow.port_forward": {"namespace": ns, "local_port": port}, "register": "fwd"}]}]))
    res = run_playbook(pb, env=lab.env(**xdg), timeout=300)
    assert res.rc == 0, res.output
    pid = res.task("forward")[0]["pid"]
    try:
        wait_listening(port)
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        typo = f"{ns}-typo"
        res, rep = finished(typed_verify(lab, typo, tmp_path, "typo", "-e", "verify_port_forward=true",
                                         "-e", f"verify_port_forward_local_port={port}", env=xdg))
        r = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert r.status_code == 200, "the working forward was stopped"
        state = json.loads((tmp_path / "state" / "asgard-mlflow" / "port-forwards" / f"127.0.0.1_{port}.json").read_text())
        assert state["pid"] == pid
        # the typed core checks the namespace before anything else: a bad-input error, steps 5-6 never run
        assert res.rc != 0
        assert f"verify_namespace: namespace {typo!r} does not exist (NAMESPACE_NOT_FOUND)" in res.output, res.output[-3000:]
        assert "Nothing was changed" in res.output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    pod, base = serving_pod(lab, ns)
    store = assert_store(lab, ns, healthy["before"], base)
    healed_row("forward_retarget_to_a_typo", t0, fault=f"a working forward on 127.0.0.1:{port}, then "
               "`verify.yml -e verify_namespace=<a namespace that does not exist>`", injected_by="the command line",
               finding="NAMESPACE_NOT_FOUND (bad input: verify_namespace)", detected_by="verify.yml (its first read)",
               outcome=f"refused (rc {res.rc}) before anything else: 'Nothing was changed', the forward (pid "
                       f"{pid}) keeps answering /health 200 and its state file names it", store=store)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCHEMA_LINE = ("alembic: Detected out-of-date database schema (found version 4465047574b1, but expected "
               "0584bdc529eb). Take a backup of your database, then run 'mlflow db upgrade <database_uri>'")


def test_sidecars_before_the_mlflow_container(lab, ns, tmp_path):
    """Item 4: two log-shipping sidecars listed before MLflow, both with "mlflow" and "server" in their command
    (`tail -F /mlflow/logs/server.log`, shipping a line that says the schema is out of date, and
    `sh -c 'exec sleep infinity # fluent-bit -c /etc/mlflow/server.conf'`); MLflow on port 8080 with gunicorn
    --timeout 2 has really killed a worker. verify must scan MLflow's log (WORKER_TIMEOUT; the sidecar's line is not
    MLflow's and starts no migration), use its port (8080) and patch its container only."""
    t0 = time.monotonic()
    dep = deployment(args=[a.replace("--port=5000", "--port=8080") for a in server_args(extra=["--gunicorn-opts=--timeout 2"])],
                     ns=ns)
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    c["ports"] = [{"name": "http", "containerPort": 8080}]
    c["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    shipper = {"name": "log-shipper", "image": "busybox:1.36", "volumeMounts": [{"name": "logs", "mountPath": "/mlflow/logs"}],
               "command": ["sh", "-c", f"mkdir -p /mlflow/logs && echo \"{SCHEMA_LINE}\" >> /mlflow/logs/server.log "
                                       "&& exec tail -F /mlflow/logs/server.log"]}
    watcher = {"name": "config-watch", "image": "busybox:1.36",
               "command": ["sh", "-c", "exec sleep infinity # fluent-bit -c /etc/mlflow/server.conf"]}
    spec["containers"] = [shipper, watcher, c]
    spec["volumes"].append({"name": "logs", "emptyDir": {}})
    svc = service()
    svc["spec"]["ports"][0]["targetPort"] = "http"
    create(lab, ns, PVC, dep, svc)
    pod, base = serving_pod(lab, ns, port=8080)
    for attempt in range(3):  # gunicorn --timeout 2 kills a worker that a loaded machine keeps busy for 2 s
        try:
            before = seed_store(base)
            break
        except AssertionError:
            if attempt == 2:
                raise
    shipped = lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{pod}/log", params={"container": "log-shipper"}).text
    assert "out-of-date database schema" in shipped, shipped
    end = time.monotonic() + 120
    while "WORKER TIMEOUT" not in pod_log(lab, ns, pod) and time.monotonic() < end:
        slow_post(base.split("//")[1].split(":")[0], seconds=6, port=8080)
    assert "WORKER TIMEOUT" in pod_log(lab, ns, pod)
    containers = get_deployment(lab, ns)["spec"]["template"]["spec"]["containers"]

    mark = lab.log_mark()
    res, rep = finished(typed_verify(lab, ns, tmp_path, "heal"))
    found = codes(rep.get("findings_before"))
    assert "WORKER_TIMEOUT" in found, f"MLflow's own log was not scanned: {sorted(found)}"
    assert "DB_SCHEMA_OUTDATED" not in found, "a sidecar's log was scanned as MLflow's"
    assert not [f for f in found if "PORT" in f], sorted(found)
    jobs = [w for w in writes_in(lab, mark, ns) if "/jobs" in w]
    assert jobs == [], f"a migration Job for a line in a sidecar's log: {jobs}"
    assert res.rc == 0 and rep["status"] == "healthy", res.output[-4000:]
    after = get_deployment(lab, ns)["spec"]["template"]["spec"]["containers"]
    assert [x["name"] for x in after] == ["log-shipper", "config-watch", "mlflow"] and after[:2] == containers[:2]
    args = " ".join(after[2]["args"])
    assert "--timeout 300" in args or "--timeout=300" in args, args
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,), port=8080)
    store = assert_store(lab, ns, before, base2)
    healed_row("sidecars_before_mlflow", t0, fault="sidecars listed before MLflow: `tail -F /mlflow/logs/server.log` "
               "(shipping an out-of-date-schema line) and `sh -c 'exec sleep infinity # fluent-bit -c "
               "/etc/mlflow/server.conf'`; MLflow on 8080, gunicorn --timeout 2, a real WORKER TIMEOUT",
               injected_by="Deployment containers + slow body to the pod IP",
               finding="WORKER_TIMEOUT (MLflow's log), SHORT_WORKER_TIMEOUT; no DB_SCHEMA_OUTDATED from the sidecar",
               detected_by="verify.yml (one container rule)",
               outcome="healed: the MLflow container patched to --timeout 300, sidecars untouched, no migration Job",
               store=store)


def gunicorn_env_timeout(lab, ns: str, pod: str) -> tuple[list[str], str]:
    """(command line, GUNICORN_CMD_ARGS) of the pod's gunicorn (lab containers are host processes tagged with
    their container id)."""
    p = lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{pod}").json()
    cid = p["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1].encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            cmd = [a.decode() for a in (d / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if any(e.startswith(b"ASGARDLAB_CONTAINER_ID=") and e.endswith(b"-" + cid) for e in env) \
                and any("gunicorn" in a for a in cmd[:3]):
            envs = dict(e.decode().split("=", 1) for e in env if b"=" in e)
            return cmd, envs.get("GUNICORN_CMD_ARGS", "")
    raise AssertionError(f"no gunicorn process in pod {pod}")


def test_gunicorn_cmd_args_timeout(lab, ns, tmp_path):
    """Item 5: `--gunicorn-opts "--workers 2"` and GUNICORN_CMD_ARGS="--timeout 60": gunicorn really runs with a
    60 s timeout (its command line has none, its environment says 60). verify must report 60 s as Before, heal to
    >= 300 s, and leave no source that still says 60 without a word."""
    t0 = time.monotonic()
    args = [a for a in server_args() if not a.startswith("--workers")] + ["--gunicorn-opts", "--workers 2"]
    pod, base, before = start_healthy(lab, ns, deployment(args=args, env={"GUNICORN_CMD_ARGS": "--timeout 60"}, ns=ns))
    cmd, env_args = gunicorn_env_timeout(lab, ns, pod)
    assert env_args == "--timeout 60" and "--timeout" not in cmd, (cmd, env_args)
    res, rep = finished(typed_verify(lab, ns, tmp_path, "heal", "-e", "verify_min_workers=2"))
    row = {r["metric"]: r for r in rep["before_after"]}["Worker timeout"]
    assert row["before"] == "60s", f"Before must be the timeout gunicorn really runs with: {row}"
    assert "SHORT_WORKER_TIMEOUT" in codes(rep["findings_before"])
    assert res.rc == 0 and rep["status"] == "healthy", res.output[-4000:]
    c = get_deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
    said = json.dumps([rep.get("remaining"), rep.get("next_steps"), rep.get("remediated")])
    assert "--timeout 60" not in env.get("GUNICORN_CMD_ARGS", "") or "GUNICORN_CMD_ARGS" in said, \
        f"GUNICORN_CMD_ARGS still says --timeout 60 and the report does not say so: {env}"
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,))
    cmd2, env2 = gunicorn_env_timeout(lab, ns, pod2)
    effective = " ".join(cmd2) + " " + env2
    assert "--timeout 300" in effective or "--timeout=300" in effective, effective
    store = assert_store(lab, ns, before, base2)
    healed_row("gunicorn_cmd_args_timeout", t0, fault='`--gunicorn-opts "--workers 2"` + GUNICORN_CMD_ARGS="--timeout 60" '
               "(gunicorn runs with 60 s)", injected_by="Deployment args + env",
               finding=f"SHORT_WORKER_TIMEOUT; Before {row['before']} (the real value)", detected_by="verify.yml",
               outcome=f"healed: After {row['after']}; the running gunicorn has --timeout 300 and no source says 60 "
                       "unreported", store=store)


def test_wrong_credentials_reported(lab, ns, tmp_path):
    """MLflow --app-name basic-auth and a wrong verify_auth_password: AUTH_REJECTED, reported (never restarted: the
    Deployment generation is unchanged), neither password in the output or the report, the store unchanged."""
    t0 = time.monotonic()
    admin_pw, wrong = "Fm-Adm1n-Pw-5521", "Fm-Wr0ng-Pw-9034"
    dep = deployment(args=server_args(extra=["--app-name=basic-auth"]), ns=ns,
                     env={"MLFLOW_AUTH_ADMIN_PASSWORD": admin_pw, "MLFLOW_FLASK_SERVER_SECRET_KEY": "fault-matrix-only"})
    dep["spec"]["template"]["spec"]["containers"][0]["workingDir"] = "/mlflow"  # basic_auth.db on the PVC
    pod, base, before = start_healthy(lab, ns, dep, auth=("admin", admin_pw))
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    res, rep = verify(lab, ns, tmp_path, "wrong", verify_auth_username="admin", verify_auth_password=wrong)
    text = (tmp_path / "verify-wrong.json").read_text()
    assert res.rc != 0 and res.changed == 0, res.output  # critical: the run fails at the end, having changed nothing
    assert "AUTH_REJECTED" in codes(rep["remaining"]), rep["remaining"]
    assert rep["plan"]["actions"] == [] and rep["remediated"] == []
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen
    for secret in (admin_pw, wrong):
        assert (res.stdout + res.stderr + text).count(secret) == 0
    store = assert_store(lab, ns, before, base, ("admin", admin_pw))
    healed_row("wrong_credentials_reported", t0, fault="MLflow --app-name basic-auth, verify_auth_password wrong",
               injected_by="Deployment args/env + -e", finding="AUTH_REJECTED (probe)", detected_by="verify.yml",
               outcome="reported, not restarted (generation unchanged); passwords printed 0 times", store=store)
