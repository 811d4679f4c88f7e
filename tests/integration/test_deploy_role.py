"""The deploy role against the lab: real ansible-playbook, real kubernetes.core, real MLflow pods.

Each test deploys into its own namespace (``lab_namespace``) with one worker to keep memory low, and talks to
the pod at its IP from the host (the lab's bridge), with the Host headers real clients send. Inline credentials (a
PostgreSQL URI with a password: in a Secret only, never logged at -vvv or in --diff) are tested on the PostgreSQL
deployment test_postgres_backend.py makes anyway (its upgrade test), not on a deployment of their own."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from helpers.ansible_runner import run_playbook
from helpers import lab_objects
from helpers.lab_objects import api_get, ready_pod_ip

pytestmark = pytest.mark.lab

PLAYBOOK = "playbooks/deploy.yml"


def deploy(lab, ns: str, check: bool = False, diff: bool = False, **variables):
    extra = {"deploy_namespace": ns, "deploy_workers": 1, "deploy_wait_timeout": 240, **variables}
    return run_playbook(PLAYBOOK, kubeconfig=lab.kubeconfig, env=lab.env(), extra_vars=extra, check=check, diff=diff,
                        timeout=900)


def deployment(lab, ns: str) -> dict:
    return api_get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment")


def result_fact(res) -> dict:
    hosts = res.task("Result | what was deployed")
    assert hosts, res.output
    return hosts[0]["ansible_facts"]["deploy_result"]


def http(ip: str, path: str, host: str | None = None, **kw) -> requests.Response:
    headers = {"Host": host} if host else {}
    return requests.get(f"http://{ip}:5000{path}", headers=headers, timeout=15, **kw)


def test_default_deploy_idempotent_and_check_mode(lab, lab_namespace):
    ns = lab_namespace
    t0 = time.monotonic()
    res = deploy(lab, ns)
    elapsed = time.monotonic() - t0
    assert res.rc == 0, res.output
    assert res.changed > 0
    print(f"first deploy: {elapsed:.1f}s")
    fact = result_fact(res)
    assert fact["server"] == "uvicorn" and fact["mlflow_version"] == "3.17.2" and fact["health_path"] == "/health"
    assert fact["service_dns"] == f"mlflow-service.{ns}.svc.cluster.local:5000"
    assert fact["port_forward"].startswith(f"kubectl port-forward -n {ns} svc/mlflow-service 5000:5000")

    ip = ready_pod_ip(lab, ns)
    assert http(ip, "/health").text == "OK"
    assert "<title>MLflow</title>" in http(ip, "/").text
    # in-cluster style request: the Service DNS name as Host is allowed, a foreign Host is not
    api = "/api/2.0/mlflow/experiments/search?max_results=1"
    for host in (f"mlflow-service.{ns}.svc.cluster.local:5000", f"mlflow-service.{ns}:5000", "mlflow-service:5000",
                 "localhost:5000", "127.0.0.1:5000"):
        r = http(ip, api, host=host)
        assert r.status_code == 200, (host, r.status_code, r.text[:200])
    assert http(ip, api, host="evil.example.net").status_code == 403

    dep = deployment(lab, ns)
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["enableServiceLinks"] is False
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert "--port=5000" in pod_spec["containers"][0]["args"]

    # second run: nothing changes
    again = deploy(lab, ns)
    assert again.rc == 0, again.output
    assert again.changed == 0, again.changed_tasks()
    generation = deployment(lab, ns)["metadata"]["generation"]

    # check mode with a change: reported, shown as a diff, not applied
    check = deploy(lab, ns, check=True, diff=True, deploy_workers=2)
    assert check.rc == 0, check.output
    assert "Deployment | apply and wait for the rollout" in " ".join(check.changed_tasks())
    after = deployment(lab, ns)
    assert after["metadata"]["generation"] == generation
    assert "--workers=1" in after["spec"]["template"]["spec"]["containers"][0]["args"]
    # check mode without a change reports none
    check_same = deploy(lab, ns, check=True, diff=True)
    assert check_same.rc == 0, check_same.output
    assert check_same.changed == 0, check_same.changed_tasks()


def test_check_mode_on_a_missing_namespace_creates_nothing(lab, lab_namespace):
    """As an operator types it: -e strings (the create switch as "yes"), --check --diff, -vvv. The role does not
    read the namespace when it creates it: the create's method (check mode too) says it does not exist yet."""
    ns = lab_namespace + "-new"
    res = lab_objects.deploy(lab, ns, "deploy_create_namespace=yes", check=True, diff=True, verbosity=3,
                             json_output=False)
    assert res.rc == 0, res.output
    assert "ESTABLISH LOCAL CONNECTION" in res.stdout  # really -vvv
    assert "changed=" in res.stdout and "changed=0" not in res.stdout, res.stdout[-3000:]
    assert f"check mode: namespace {ns} does not exist yet" in res.stdout, res.output
    assert "Deployment/mlflow-deployment" in res.stdout
    assert lab.request("GET", f"/api/v1/namespaces/{ns}").status_code == 404


def test_gunicorn_with_static_prefix(lab, lab_namespace):
    ns = lab_namespace
    res = deploy(lab, ns, deploy_server="gunicorn", deploy_static_prefix="/mlflow")
    assert res.rc == 0, res.output
    fact = result_fact(res)
    assert fact["server"] == "gunicorn" and fact["health_path"] == "/mlflow/health"
    args = deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--gunicorn-opts=--timeout 300 --worker-class sync --keep-alive 5" in args
    ip = ready_pod_ip(lab, ns)  # Ready means the probes on /mlflow/health pass
    assert http(ip, "/mlflow/health").text == "OK"
    assert "<title>MLflow</title>" in http(ip, "/mlflow/").text
    r = http(ip, "/mlflow/api/2.0/mlflow/experiments/search?max_results=1", host=f"mlflow-service.{ns}.svc.cluster.local:5000")
    assert r.status_code == 200, r.text[:200]
    # gunicorn serves the Flask app: FastAPI-only routes such as OTLP traces are absent
    assert requests.post(f"http://{ip}:5000/mlflow/v1/traces", timeout=15).status_code in (404, 405)
    again = deploy(lab, ns, deploy_server="gunicorn", deploy_static_prefix="/mlflow")
    assert again.rc == 0 and again.changed == 0, again.changed_tasks()


def test_upgrade_runs_migration_and_failed_migration_keeps_old_version(lab, lab_namespace):
    """Backend store from an existing Secret (secretKeyRef in the Deployment, $(VAR) in the Job's args)."""
    ns = lab_namespace
    uri = "sqlite:////mlflow/store.db"
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store"},
        "data": {"dsn": base64.b64encode(uri.encode()).decode()}})
    assert r.status_code == 201, r.text
    store = {"deploy_backend_store_secret": {"name": "store", "key": "dsn"}, "deploy_backend_store_uri": ""}

    old = deploy(lab, ns, deploy_image="ghcr.io/mlflow/mlflow:v2.22.5", **store)
    assert old.rc == 0, old.output
    assert result_fact(old)["server"] == "gunicorn"
    ip = ready_pod_ip(lab, ns)
    r = requests.post(f"http://{ip}:5000/api/2.0/mlflow/experiments/create", json={"name": "before-upgrade"}, timeout=15)
    assert r.status_code == 200, r.text
    exp_id = r.json()["experiment_id"]

    new = deploy(lab, ns, **store)
    assert new.rc == 0, new.output
    assert result_fact(new)["db_upgraded"] is True
    job = api_get(lab, f"/apis/batch/v1/namespaces/{ns}/jobs/mlflow-deployment-db-upgrade")
    assert job["status"].get("succeeded") == 1
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    ip = ready_pod_ip(lab, ns)
    assert http(ip, "/version").text == "3.17.2"
    got = http(ip, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=before-upgrade").json()
    assert got["experiment"]["experiment_id"] == exp_id
    again = deploy(lab, ns, **store)
    assert again.rc == 0 and again.changed == 0, again.changed_tasks()

    # a migration that cannot work (3.17.2 schema, 2.22.5 alembic): the role fails, 3.17.2 keeps serving
    bad = deploy(lab, ns, deploy_image="ghcr.io/mlflow/mlflow:v2.22.5", **store)
    assert bad.rc != 0
    assert "mlflow db upgrade for MLflow 3.17.2 -> 2.22.5 failed" in bad.stdout, bad.output
    assert "still runs ghcr.io/mlflow/mlflow:v3.17.2" in bad.stdout
    dep = deployment(lab, ns)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    assert dep["spec"]["replicas"] == 1
    ip = ready_pod_ip(lab, ns)
    assert http(ip, "/version").text == "3.17.2"
