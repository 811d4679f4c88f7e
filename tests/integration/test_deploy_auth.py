"""The deploy role with MLflow's own basic auth (``--app-name basic-auth``): the admin credentials only in a Secret
the role creates (no_log), the server asks for them, and the password never appears in any output."""

from __future__ import annotations

import base64

import pytest
import requests

from helpers.lab_objects import api_get, deploy, ready_pod_ip

pytestmark = pytest.mark.lab

PASSWORD = "Adm1n-Very-S3cret-Pw"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_basic_auth_from_a_created_secret_never_printed(lab, lab_namespace):
    """``-e deploy_auth_enabled=true`` with the password in a vars file (as a vaulted variable arrives): at -vvv and
    with --diff the password appears 0 times in the output, twice over (create, then an idempotent rerun); the
    Secret holds it and the Deployment only references it; MLflow answers 401 without or with wrong credentials
    and 200 with the admin's, while /health stays open for the probes."""
    ns = lab_namespace
    def run():
        res = deploy(lab, ns, "deploy_auth_enabled=true", verbosity=3, diff=True, json_output=False,
                     extra_vars={"deploy_auth_admin_password": PASSWORD})
        out = res.stdout + res.stderr
        assert res.rc == 0, res.output.replace(PASSWORD, "<PASSWORD>")
        assert out.count(PASSWORD) == 0
        assert "ESTABLISH LOCAL CONNECTION" in res.stdout  # really -vvv
        return res

    first = run()
    assert "mlflow-auth keys admin_username, admin_password, flask_secret_key" in first.stdout
    secret = api_get(lab, f"/api/v1/namespaces/{ns}/secrets/mlflow-auth")
    assert base64.b64decode(secret["data"]["admin_password"]).decode() == PASSWORD
    assert base64.b64decode(secret["data"]["admin_username"]).decode() == "admin"
    dep = api_get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment")
    assert PASSWORD not in str(dep)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-auth", "key": "admin_password"}

    base = f"http://{ready_pod_ip(lab, ns)}:5000"
    assert requests.get(base + "/health", timeout=15).status_code == 200
    assert requests.get(base + SEARCH, timeout=15).status_code == 401
    assert requests.get(base + SEARCH, auth=("admin", "wrong-password-123"), timeout=15).status_code == 401
    ok = requests.get(base + SEARCH, auth=("admin", PASSWORD), timeout=15)
    assert ok.status_code == 200 and "experiments" in ok.json(), (ok.status_code, ok.text[:300])

    again = run()
    assert "changed=0" in again.stdout, again.stdout[-3000:].replace(PASSWORD, "<PASSWORD>")
