"""MLflow on a real PostgreSQL backend store (Debian's postgresql on the host, reached by pods at 10.244.0.1).

- The deploy role's upgrade path (issue 5): MLflow 2.22.5 -> 3.17.2 runs the role's `mlflow db upgrade` Job
  before the rollout; alembic_version moves to 3.17.2's head; experiments and runs keep their ids. The same test
  checks the inline credentials: the URI with its password only in a Secret, never in -vvv or --diff output.
- What MLflow itself does when the image changes without the role (measured, kept as a test, at the end of the
  verify test on its healed 2.22.5): 3.17.2 migrates a 2.22.5 store by itself at start (its table check is a subset
  check: 46 tables are missing, so it "initializes" and that runs every migration), so no out-of-date schema
  arises on that path.
- The out-of-date schema that does arise (issue 7): a store written by MLflow 2.16.2 (revision 4465047574b1, the
  same tables as 2.22.5) under a 2.22.5 server: "Detected out-of-date database schema", the server exits, the
  pod crash-loops. verify.yml finds DB_SCHEMA_OUTDATED, runs the migration Job and heals it; audit mode fails.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from kubernetes import client as k8s

from helpers.ansible_runner import run_playbook
from helpers.postgres import PostgresServer, seed_store

pytestmark = pytest.mark.lab

OLD = "ghcr.io/mlflow/mlflow:v2.22.5"
NEW = "ghcr.io/mlflow/mlflow:v3.17.2"
HEAD_2_22_5 = "0584bdc529eb"
HEAD_3_17_2 = "dc11669786a5"
REV_2_16_2 = "4465047574b1"
# percent-encoded in the URI (%40, %25): the Secret, the Job's $(VAR) args and alembic's config must all cope
PASSWORD = "Pg@h1%pass-7f3"
JOB = "mlflow-deployment-db-upgrade"
TIMINGS: dict[str, float] = {}


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def pg(lab):
    d = tempfile.mkdtemp(prefix="asgard-pg-", dir="/tmp")  # the postgres user must reach it
    srv = PostgresServer(d, password=PASSWORD)
    try:
        yield srv.start()
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _print_timings():
    yield
    for k, v in TIMINGS.items():
        print(f"TIMING {k}: {v}s")


# ----------------------------------------------------------------------------------------------- helpers
def deploy(lab, ns: str, pg: PostgresServer, image: str, run_kw: dict | None = None, **variables):
    """playbooks/deploy.yml with the store URI inline (the role puts it in a Secret); ``run_kw`` goes to run_playbook
    (verbosity, diff, json_output). The password, as typed and as encoded in the URI, is in no output."""
    extra = {"deploy_namespace": ns, "deploy_workers": 1, "deploy_wait_timeout": 300, "deploy_image": image,
             "deploy_backend_store_uri": pg.uri("10.244.0.1"), "deploy_pvc_size": "1Gi", **variables}
    t0 = time.monotonic()
    res = run_playbook("playbooks/deploy.yml", kubeconfig=lab.kubeconfig, env=lab.env(), extra_vars=extra, timeout=900,
                       **(run_kw or {}))
    TIMINGS[f"{ns} deploy {image.rsplit(':', 1)[-1]} #{len([k for k in TIMINGS if k.startswith(ns)])}"] = \
        round(time.monotonic() - t0, 1)
    for secret in (PASSWORD, quote(PASSWORD, safe="")):
        assert secret not in res.stdout + res.stderr
    return res


def verify(lab, ns: str, tmp_path: Path, name: str, **extra):
    report = tmp_path / f"{name}.json"
    ev = {"verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(report),
          "verify_rollout_timeout": 300, "verify_min_workers": 1, **extra}
    t0 = time.monotonic()
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, extra_vars=ev, env=lab.env(), timeout=900)
    TIMINGS[f"{ns} verify {name}"] = round(time.monotonic() - t0, 1)
    assert PASSWORD not in res.stdout + res.stderr
    rep = json.loads(report.read_text()) if report.exists() else {}
    assert PASSWORD not in json.dumps(rep)
    return res, rep


def get(lab, path: str, **params) -> dict:
    r = lab.request("GET", path, params=params or None)
    r.raise_for_status()
    return r.json()


def live_pods(lab, ns: str, selector: str = "app=mlflow") -> list[dict]:
    return [p for p in get(lab, f"/api/v1/namespaces/{ns}/pods", labelSelector=selector)["items"]
            if not p["metadata"].get("deletionTimestamp")]


def ready_pod(lab, ns: str, image: str, timeout: float = 300) -> dict:
    """The single Ready mlflow pod running ``image`` (waits for it)."""
    end = time.monotonic() + timeout
    while True:
        pods = live_pods(lab, ns)
        ready = [p for p in pods if p["spec"]["containers"][0]["image"] == image and p["status"].get("podIP")
                 and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])]
        if len(ready) == 1 and len(pods) == 1:
            return ready[0]
        if time.monotonic() > end:
            raise AssertionError([(p["metadata"]["name"], p["spec"]["containers"][0]["image"], p["status"].get("phase"),
                                   p["status"].get("containerStatuses")) for p in pods])
        time.sleep(2)


def pod_log(lab, ns: str, pod: str, container: str | None = None) -> str:
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{pod}/log", params={"container": container} if container else None)
    r.raise_for_status()
    return r.text


def api(ip: str, method: str, path: str, **kw) -> dict:
    r = requests.request(method, f"http://{ip}:5000/api/2.0/mlflow/{path}", timeout=30, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    return r.json()


def store_snapshot(ip: str) -> dict:
    """Every experiment and run the server returns through its REST API, by id."""
    exps = api(ip, "POST", "experiments/search", json={"max_results": 1000, "view_type": "ALL"})["experiments"]
    ids = sorted(e["experiment_id"] for e in exps)
    runs = api(ip, "POST", "runs/search", json={"experiment_ids": ids, "max_results": 1000, "run_view_type": "ALL"})
    return {"experiments": {e["experiment_id"]: e["name"] for e in exps},
            "runs": {r["info"]["run_id"]: (r["info"]["experiment_id"], r["info"]["run_name"],
                                           {p["key"]: p["value"] for p in r["data"].get("params", [])})
                     for r in runs.get("runs", [])}}


def revision(pg: PostgresServer) -> str:
    return pg.psql("SELECT version_num FROM alembic_version")


def wait_pod_log(lab, ns: str, text: str, skip: set[str] = frozenset(), timeout: float = 420) -> bool:
    """Poll the mlflow container logs (current and previous) of the live MLflow pods, but those named in ``skip``,
    until one holds ``text``; False after ``timeout`` (the crash-loop back-off grows to minutes; a loaded machine
    starts 2.22.5 slowly)."""
    end = time.monotonic() + timeout
    while not any(text in lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{p['metadata']['name']}/log",
                                      params={"container": "mlflow", "previous": prev}).text
                  for p in live_pods(lab, ns) if p["metadata"]["name"] not in skip for prev in ("false", "true")):
        if time.monotonic() > end:
            return False
        time.sleep(3)
    return True


def job_pod_log(lab, ns: str, job: str) -> str:
    pods = get(lab, f"/api/v1/namespaces/{ns}/pods", labelSelector=f"job-name={job}")["items"]
    assert pods, f"no pod of Job {job}"
    return "\n".join(pod_log(lab, ns, p["metadata"]["name"]) for p in pods)


# ----------------------------------------------------------------------------------------------- tests
def test_upgrade_2_22_5_to_3_17_2_runs_the_migration_job_and_keeps_the_data(lab, lab_namespace, pg):
    """Also the inline credentials (was test_deploy_role's test_inline_credentials_only_in_a_secret_never_logged):
    the URI with its password is stored in a Secret, passed by secretKeyRef, the server starts on it, and the
    password is absent from every output: -vvv stdout/stderr and the --diff of the first run and of the rerun."""
    ns = lab_namespace
    uri = pg.uri("10.244.0.1")
    vvv = {"diff": True, "verbosity": 3, "json_output": False}
    old = deploy(lab, ns, pg, OLD, run_kw=vvv)
    assert old.rc == 0, old.output.replace(PASSWORD, "<PASSWORD>").replace(quote(PASSWORD, safe=""), "<PASSWORD>")
    assert "ESTABLISH LOCAL CONNECTION" in old.stdout  # really -vvv
    assert "Secret" in old.stdout and "(content redacted)" in old.stdout, old.output
    assert revision(pg) == HEAD_2_22_5
    secret = get(lab, f"/api/v1/namespaces/{ns}/secrets/mlflow-backend-store")
    assert base64.b64decode(secret["data"]["uri"]).decode() == uri
    dep = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert PASSWORD not in str(dep) and quote(PASSWORD, safe="") not in str(dep)
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-backend-store", "key": "uri"}
    assert not any(a.startswith("--backend-store-uri") for a in c["args"])
    pod = ready_pod(lab, ns, OLD)
    ip = pod["status"]["podIP"]
    assert requests.get(f"http://{ip}:5000/version", timeout=15).text == "2.22.5"
    exp_id = api(ip, "POST", "experiments/create", json={"name": "before-upgrade"})["experiment_id"]
    # the server really uses that database: the experiment created through it is a row in PostgreSQL
    assert pg.psql(f"SELECT name FROM experiments WHERE experiment_id = {int(exp_id)}") == "before-upgrade"
    run = api(ip, "POST", "runs/create", json={"experiment_id": exp_id, "run_name": "r1", "start_time": 1700000000000})
    run_id = run["run"]["info"]["run_id"]
    api(ip, "POST", "runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"})
    api(ip, "POST", "runs/log-metric", json={"run_id": run_id, "key": "loss", "value": 0.25, "timestamp": 1700000000001,
                                             "step": 3})
    before = store_snapshot(ip)
    assert before["runs"][run_id] == (exp_id, "r1", {"lr": "0.1"})

    new = deploy(lab, ns, pg, NEW)
    assert new.rc == 0, new.output
    assert new.task("Result | what was deployed")[0]["ansible_facts"]["deploy_result"]["db_upgraded"] is True
    job = get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs/{JOB}")
    assert job["status"].get("succeeded") == 1, job["status"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == NEW
    assert PASSWORD not in json.dumps(job)
    jlog = job_pod_log(lab, ns, JOB)
    # the Job did the migration, not the new server at its start (3.17.2 logs no alembic revision lines)
    assert "Updating database tables" in jlog, jlog[-2000:]
    assert revision(pg) == HEAD_3_17_2
    pod = ready_pod(lab, ns, NEW)
    ip = pod["status"]["podIP"]
    slog = pod_log(lab, ns, pod["metadata"]["name"], "mlflow")
    assert "Updating database tables" not in slog and "out-of-date" not in slog, slog[-2000:]
    assert requests.get(f"http://{ip}:5000/version", timeout=15).text == "3.17.2"
    assert store_snapshot(ip) == before
    got = api(ip, "GET", "runs/get", params={"run_id": run_id})["run"]
    assert [(m["key"], m["value"], m["step"]) for m in got["data"]["metrics"]] == [("loss", 0.25, 3)]

    dep = get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment")
    assert PASSWORD not in str(dep) and quote(PASSWORD, safe="") not in str(dep)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e for e in c["env"]}["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == \
        {"name": "mlflow-backend-store", "key": "uri"}
    assert not any(a.startswith("--backend-store-uri") for a in c["args"])

    # the rerun, -vvv --diff as well: nothing changes, the password is in no output
    again = deploy(lab, ns, pg, NEW, run_kw=vvv)
    assert again.rc == 0, again.output.replace(PASSWORD, "<PASSWORD>").replace(quote(PASSWORD, safe=""), "<PASSWORD>")
    assert "ESTABLISH LOCAL CONNECTION" in again.stdout
    assert "changed=0" in again.stdout, again.stdout[-3000:].replace(PASSWORD, "<PASSWORD>")
    assert get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs/{JOB}")["metadata"]["uid"] == job["metadata"]["uid"]


def test_outdated_schema_is_found_and_migrated_by_verify(lab, lab_namespace, pg, tmp_path, k8s_client):
    """verify.yml finds DB_SCHEMA_OUTDATED and heals it. Then, on the healed 2.22.5 (its store at 2.22.5's head),
    the image changed without the role (was test_image_changed_without_the_role_3_17_2_migrates_a_2_22_5_store_itself):
    `kubectl set image` 2.22.5 -> 3.17.2, no migration Job: 3.17.2 does not refuse the store, it migrates it at
    start (measured; so DB_SCHEMA_OUTDATED cannot come from this path)."""
    ns = lab_namespace
    seeded = seed_store(pg.uri("127.0.0.1"), "2.16.2", ("old-a", "old-b"))
    assert seeded["mlflow_version"] == "2.16.2"
    assert revision(pg) == REV_2_16_2
    rows_before = pg.psql("SELECT experiment_id, name FROM experiments ORDER BY 1; SELECT run_uuid FROM runs ORDER BY 1")

    # a 2.22.5 Deployment on that store without the role's migration (deploy_db_upgrade: false, as when
    # migrations are left to another process): the server refuses the store and exits, the pod crash-loops; the
    # role's rollout wait gives up after 20 s (the pod never gets Ready), the loop below polls for the refusal
    broken = deploy(lab, ns, pg, OLD, deploy_pvc_enabled=False, deploy_db_upgrade=False, deploy_wait_timeout=20)
    assert broken.rc != 0
    refused = "Detected out-of-date database schema (found version 4465047574b1, but expected 0584bdc529eb)"
    assert wait_pod_log(lab, ns, refused), broken.output
    assert revision(pg) == REV_2_16_2

    # audit only: fails naming the finding, changes nothing
    audit, rep = verify(lab, ns, tmp_path, "audit", verify_remediate=False)
    assert audit.rc != 0 and audit.changed == 0, audit.changed_tasks()
    assert "DB_SCHEMA_OUTDATED" in audit.stdout
    assert "DB_SCHEMA_OUTDATED" in {f["code"] for f in rep["findings_before"]}, rep.keys()
    assert revision(pg) == REV_2_16_2
    assert get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs")["items"] == []

    # a migration that cannot run (the app role may not read alembic_version, as when DDL rights are kept from
    # it): the Job fails, verify ends promptly (no wait for a Complete that never comes, no restart planned only
    # for the migration), names the finding and the Job's error, and the store is unchanged
    pg.psql("ALTER TABLE alembic_version OWNER TO postgres")
    t0 = time.monotonic()
    # verify_max_restarts 0 keeps this bound whatever the plan does (since 0.2.0 a failed migration plans no
    # restart at all: DB_SCHEMA_OUTDATED still present after its migration explains the crash loop)
    failing, rep = verify(lab, ns, tmp_path, "migration-fails", verify_max_restarts=0)
    assert failing.rc != 0
    assert time.monotonic() - t0 < 180
    migrations = [a for a in rep["remediated"] if a["action"] == "migrate"]
    assert migrations and all(a["failed"] for a in migrations), rep["remediated"]
    assert "permission denied for table alembic_version" in migrations[0]["description"], migrations
    assert "restart" not in [a["action"] for a in rep["remediated"]], rep["remediated"]
    assert "DB_SCHEMA_OUTDATED" in {f["code"] for f in rep["remaining"]}
    assert "DB_SCHEMA_OUTDATED" in failing.stdout
    pg.psql("ALTER TABLE alembic_version OWNER TO mlflow")
    assert revision(pg) == REV_2_16_2
    # the crash-looping pod's last log is still the permission error and its back-off is long by now: a fresh pod
    # shows the refusal again at once, so verify's first check can see DB_SCHEMA_OUTDATED (no round spent restarting
    # a crash loop that has not logged the schema line yet)
    stale = {p["metadata"]["name"] for p in live_pods(lab, ns)}
    for name in stale:
        lab.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}").raise_for_status()
    assert wait_pod_log(lab, ns, refused, skip=stale)

    # heal: the migration Job (2.22.5's `mlflow db upgrade`), then the pods pick the schema up
    # three rounds allowed: had the pods' last log still been the permission error of the step before (no schema line;
    # the fresh pod above shows the schema line), the first round would be a restart, the second the migration, the
    # third the restart that picks it up; with the schema line seen, migrate -> restart
    heal, rep = verify(lab, ns, tmp_path, "heal", verify_remediation_rounds=3)
    assert heal.rc == 0, heal.output
    # the schema finding is in the first check, or (the pods' last log still the permission error) in the check after
    # round 1's restart: CI saw restart -> migrate -> the migration's own restart
    seen = {f["code"] for f in rep["findings_before"]} | {c for r in rep["rounds"] for c in r.get("findings_after") or []}
    assert "DB_SCHEMA_OUTDATED" in seen, rep["rounds"]
    assert "migrate" in [a["action"] for a in rep["remediated"] if a.get("changed") and not a.get("failed")], rep["remediated"]
    assert rep["status"] == "healthy", rep.get("findings_after")
    assert revision(pg) == HEAD_2_22_5
    jobs = get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]
    assert [j["status"].get("succeeded") for j in jobs] == [1], [j["status"] for j in jobs]
    assert jobs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == OLD
    assert f"Running upgrade {REV_2_16_2} -> " in job_pod_log(lab, ns, jobs[0]["metadata"]["name"])
    ip = ready_pod(lab, ns, OLD)["status"]["podIP"]
    snap = store_snapshot(ip)
    assert {v: k for k, v in snap["experiments"].items() if v != "Default"} == seeded["experiments"]
    assert {k: v[0] for k, v in snap["runs"].items()} == {seeded["runs"][n]: seeded["experiments"][n] for n in seeded["runs"]}
    assert snap["runs"][seeded["runs"]["old-a"]][2] == {"p": "old-a"}
    assert pg.psql("SELECT experiment_id, name FROM experiments ORDER BY 1; SELECT run_uuid FROM runs ORDER BY 1") \
        == rows_before

    again, rep = verify(lab, ns, tmp_path, "again")
    assert again.rc == 0 and again.changed == 0, again.changed_tasks()
    assert rep["status"] == "healthy"

    # the image changed without the role: 3.17.2 migrates the 2.22.5 store itself at start, no Job runs for it
    ip = ready_pod(lab, ns, OLD)["status"]["podIP"]
    api(ip, "POST", "experiments/create", json={"name": "kept"})
    before = store_snapshot(ip)
    assert revision(pg) == HEAD_2_22_5
    job_uids = [j["metadata"]["uid"] for j in jobs]
    t0 = time.monotonic()
    k8s.AppsV1Api(k8s_client).patch_namespaced_deployment(
        "mlflow-deployment", ns, {"spec": {"template": {"spec": {"containers": [{"name": "mlflow", "image": NEW}]}}}})
    pod = ready_pod(lab, ns, NEW)
    TIMINGS[f"{ns} image patch to Ready"] = round(time.monotonic() - t0, 1)
    slog = pod_log(lab, ns, pod["metadata"]["name"], "mlflow")
    assert "Creating initial MLflow database tables" in slog and "Updating database tables" in slog, slog[-3000:]
    assert "out-of-date" not in slog
    assert revision(pg) == HEAD_3_17_2
    # no Job for the image change: only the heal's migration Job is there
    assert [j["metadata"]["uid"] for j in get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]] == job_uids
    assert store_snapshot(pod["status"]["podIP"]) == before
