"""playbooks/verify.yml on the lab with real MLflow pods: each finding -> remediation pair from a broken
state to a healthy one (or, report-only, a failure naming the finding), idempotence, check mode, audit mode."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.fleet_objects import wait_serving  # noqa: E402
from helpers.lab_objects import codes  # noqa: E402

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "playbooks" / "files" / "seed-before.yml"
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
TIMINGS: dict[str, float] = {}


# ----------------------------------------------------------------------------------------------- helpers
def apply(lab, ns: str, objs: list[dict]) -> None:
    for obj in objs:
        kind = obj["kind"]
        path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "Service": f"/api/v1/namespaces/{ns}/services"}[kind]
        r = lab.request("POST", path, json=obj)
        assert r.status_code == 201, r.text


def seed_objects() -> list[dict]:
    return [o for o in yaml.safe_load_all(SEED.read_text()) if o]


def deployment(lab, ns: str, name: str = "mlflow-deployment") -> dict:
    r = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def pods(lab, ns: str, selector: str = "app=mlflow") -> list[dict]:
    r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": selector})
    return [p for p in r.json().get("items", []) if not p["metadata"].get("deletionTimestamp")]


def wait_log(lab, ns: str, needle: str, selector: str = "app=mlflow", timeout: float = 180) -> str:
    """Wait until a pod's log says the server listens (TCP/readiness come earlier than MLflow answers)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in pods(lab, ns, selector):
            r = lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{p['metadata']['name']}/log",
                            params={"container": "mlflow"})
            if r.status_code == 200 and needle in r.text:
                return p["metadata"]["name"]
        time.sleep(1)
    raise AssertionError(f"no pod in {ns} logged {needle!r} within {timeout}s")


def verify(lab, ns: str, tmp_path: Path, name: str, check: bool = False, **extra):
    report = tmp_path / f"{name}.json"
    ev = {"verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(report),
          "verify_rollout_timeout": 300}
    ev.update(extra)
    t0 = time.monotonic()
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, extra_vars=ev, check=check,
                       env=lab.env(), timeout=900)
    TIMINGS[f"{ns}:{name}"] = round(time.monotonic() - t0, 1)
    rep = json.loads(report.read_text()) if report.exists() else {}
    return res, rep




def rows(rep: dict) -> dict:
    return {r["metric"]: r for r in rep["before_after"]}


# ------------------------------------------------------------------------------------------------- tests
def test_seed_incident_check_mode_audit_heal_and_idempotent_rerun(lab, lab_namespace, tmp_path):
    """The seed's 'Before' (sh -c, gunicorn --timeout 120 --workers 2, --static-prefix=/static): 404 on /."""
    ns = lab_namespace
    apply(lab, ns, seed_objects())
    wait_log(lab, ns, "Listening at")
    # gunicorn listens before its sync workers have imported MLflow: on a loaded machine (CI) the first /health of
    # verify then times out (TIMEOUT, RETRIED) and / is never seen answering 404; wait until a worker serves
    wait_serving(lab, ns, "app=mlflow", "/static/health", timeout=300)
    gen0 = deployment(lab, ns)["metadata"]["generation"]
    # the number of workers is not what this test is about: keep the seed's 2 (the default target is 4, and each
    # gunicorn worker imports MLflow again when the healed pod starts)
    workers = {"verify_min_workers": 2, "verify_patch_vars": {"patch_workers": 2}}

    # check mode: reports what it would remediate, changes nothing
    res, rep = verify(lab, ns, tmp_path, "check", check=True, **workers)
    assert res.rc == 0, res.output
    assert rep["status"] == "unhealthy"
    assert [a["action"] for a in rep["plan"]["actions"]] == ["patch"]
    assert {"ROOT_NOT_FOUND", "SHORT_WORKER_TIMEOUT"} <= codes(rep["findings_before"])
    assert deployment(lab, ns)["metadata"]["generation"] == gen0

    # report-only audit: fails on the unhealthy server, changes nothing
    res, rep = verify(lab, ns, tmp_path, "audit", verify_remediate=False, **workers)
    assert res.rc != 0
    assert res.changed == 0, res.changed_tasks()
    assert "ROOT_NOT_FOUND" in codes(rep["remaining"])
    assert any(n.startswith("ROOT_NOT_FOUND: remove --static-prefix") for n in rep["next_steps"])
    assert deployment(lab, ns)["metadata"]["generation"] == gen0

    # the heal
    res, rep = verify(lab, ns, tmp_path, "heal", **workers)
    assert res.rc == 0, res.output
    assert rep["status"] == "healthy", rep["remaining"]
    assert rep["remediated"][0]["action"] == "patch" and rep["remediated"][0]["changed"] is True
    assert "ROOT_NOT_FOUND" in rep["remediated"][0]["reason"]
    r = rows(rep)
    assert (r["Worker timeout"]["before"], r["Worker timeout"]["after"]) == ("120s", "300s")
    assert (r["Static prefix"]["before"], r["Static prefix"]["after"]) == ("/static", "none")
    assert r["Dashboard (/)"]["before"] == "404 Error"
    assert r["Dashboard (/)"]["after"] == "200 OK (MLflow UI)"
    assert rep["measurements"]["after"]["root_status"] == 200
    dep = deployment(lab, ns)
    assert dep["metadata"]["generation"] > gen0
    script = dep["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--static-prefix" not in script and "--timeout 300" in script
    assert re.search(r"--workers[= ]2\b", script), script

    # a second run after the remediation changes nothing
    res, rep = verify(lab, ns, tmp_path, "rerun", **workers)
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert rep["status"] == "healthy" and rep["remediated"] == []
    assert deployment(lab, ns)["metadata"]["generation"] == dep["metadata"]["generation"]
    print("\nverify wall times (s):", json.dumps(TIMINGS))


def _uvicorn_deployment(name: str, env: list[dict], command: list[str], args: list[str], volumes=None,
                        mounts=None, readiness=None) -> dict:
    labels = {"app": "mlflow"}
    c = {"name": "mlflow", "image": IMAGE, "command": command, "args": args,
         "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}] + env,
         "ports": [{"name": "http", "containerPort": 5000}],
         "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}] + (mounts or [])}
    if readiness:
        c["readinessProbe"] = readiness
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 5, "enableServiceLinks": False,
                                           "containers": [c],
                                           "volumes": [{"name": "data", "emptyDir": {}}] + (volumes or [])}}}}


def _service(selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow-service"},
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}}


SERVER_ARGS = ["server", "--host=0.0.0.0", "--port=5000", "--workers=1",
               "--backend-store-uri=sqlite:////mlflow/mlflow.db", "--default-artifact-root=/mlflow/artifacts"]


def test_invalid_host_is_healed_with_allowed_hosts(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    apply(lab, ns, [_uvicorn_deployment("mlflow-deployment", [
        {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "localhost:*,127.0.0.1:*"}], ["mlflow"], SERVER_ARGS),
        _service({"app": "mlflow"})])
    wait_log(lab, ns, "Uvicorn running")
    res, rep = verify(lab, ns, tmp_path, "heal", verify_min_workers=1)
    assert res.rc == 0, res.output
    assert "INVALID_HOST" in codes(rep["findings_before"])
    assert rep["remediated"][0]["action"] == "patch"
    assert "INVALID_HOST" in rep["remediated"][0]["reason"]
    assert rep["status"] == "healthy", rep["remaining"]
    env = {e["name"]: e.get("value") for e in deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert f"mlflow-service.{ns}.svc.cluster.local:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]
    res, rep = verify(lab, ns, tmp_path, "rerun", verify_min_workers=1)
    assert res.rc == 0 and res.changed == 0, res.changed_tasks()
    # the healed, serving MLflow is then the one a mis-selecting Service misses (one MLflow start less than a
    # namespace of its own): test_service_selector_mismatch_is_reported_never_guessed continues here
    selector_mismatch_is_reported_never_guessed(lab, ns, tmp_path)


def test_hung_pod_without_config_cause_gets_one_rollout_restart(lab, lab_namespace, tmp_path):
    """The first pod hangs (never listens), a new pod works: pod not ready -> bounded rollout restart."""
    ns = lab_namespace
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    script = ("if [ -e /shared/hung-once ]; then exec mlflow " + " ".join(SERVER_ARGS) + "; "
              "else touch /shared/hung-once; exec sleep 3600; fi")
    apply(lab, ns, [_uvicorn_deployment(
        "mlflow-deployment", [], ["/bin/sh", "-c"], [script],
        volumes=[{"name": "shared", "hostPath": {"path": str(shared), "type": "DirectoryOrCreate"}}],
        mounts=[{"name": "shared", "mountPath": "/shared"}],
        readiness={"tcpSocket": {"port": 5000}, "periodSeconds": 1}), _service({"app": "mlflow"})])
    end = time.monotonic() + 60
    while not (shared / "hung-once").exists() and time.monotonic() < end:
        time.sleep(0.5)
    assert (shared / "hung-once").exists()
    before_pods = {p["metadata"]["name"] for p in pods(lab, ns)}
    # the Host header MLflow's default allow-list accepts: this test is about the restart alone
    res, rep = verify(lab, ns, tmp_path, "heal", verify_min_workers=1, verify_probe_deadline=20,
                      verify_probe_host_header="localhost:5000")
    assert res.rc == 0, res.output
    assert "POD_NOT_READY" in codes(rep["findings_before"])
    assert [r["action"] for r in rep["remediated"]] == ["restart"]
    assert rep["remediated"][0]["changed"] is True
    assert rep["status"] == "healthy", rep["remaining"]
    tmpl = deployment(lab, ns)["spec"]["template"]["metadata"].get("annotations", {})
    assert "kubectl.kubernetes.io/restartedAt" in tmpl
    assert not before_pods & {p["metadata"]["name"] for p in pods(lab, ns)}


def selector_mismatch_is_reported_never_guessed(lab, ns: str, tmp_path: Path) -> None:
    """On a serving MLflow, the Service's selector is changed to one that selects no pod: reported, never guessed."""
    r = lab.request("PATCH", f"/api/v1/namespaces/{ns}/services/mlflow-service",
                    json={"spec": {"selector": {"app": "mlflow-typo"}}},
                    headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["selector"] == {"app": "mlflow-typo"}
    svc_before = lab.request("GET", f"/api/v1/namespaces/{ns}/services/mlflow-service").json()
    gen = deployment(lab, ns)["metadata"]["generation"]
    res, rep = verify(lab, ns, tmp_path, "report", verify_min_workers=1, verify_probe_deadline=10)
    assert res.rc != 0
    assert res.changed == 0, res.changed_tasks()
    assert "SERVICE_SELECTOR_MISMATCH" in codes(rep["remaining"])
    mm = next(f for f in rep["remaining"] if f["code"] == "SERVICE_SELECTOR_MISMATCH")
    assert mm["evidence"]["selector"] == {"app": "mlflow-typo"}
    assert rep["plan"]["actions"] == []
    assert any(n.startswith("SERVICE_SELECTOR_MISMATCH: make the Service selector match") for n in rep["next_steps"])
    svc_after = lab.request("GET", f"/api/v1/namespaces/{ns}/services/mlflow-service").json()
    assert svc_after["metadata"]["resourceVersion"] == svc_before["metadata"]["resourceVersion"]
    assert deployment(lab, ns)["metadata"]["generation"] == gen

