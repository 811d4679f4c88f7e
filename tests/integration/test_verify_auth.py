"""playbooks/verify.yml against a real MLflow with basic auth (``--app-name basic-auth``), deployed by the deploy role
with ``deploy_auth_enabled`` (admin credentials in Secret mlflow-auth), driven from a shell with ``-e name=value``.

One Deployment (one MLflow start) for the module, made by the deploy role at ``-vvv --diff`` with the password in a
vars file (the first test checks what it made, the password never printed, and that a rerun changes nothing): verify
with the deploy role's Secret is healthy and changes nothing; without credentials AUTH_REQUIRED, with a wrong password AUTH_REJECTED - both reported, nothing restarted,
and neither password ever printed (``-vvv``) nor written to the report; bad auth input fails naming the field.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests

from helpers.ansible_runner import run_playbook
from helpers.lab_objects import api_get, codes, deploy, get_deployment, ready_pod_ip

pytestmark = pytest.mark.lab

PASSWORD = "Vfy-Adm1n-S3cret-Pw"
WRONG = "Wr0ng-Guess-Pw-4471"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def deploy_auth(lab, ns: str):
    """``-e deploy_auth_enabled=true`` with the password in a vars file (as a vaulted variable arrives), at -vvv and
    with --diff: the password appears 0 times in the output."""
    res = deploy(lab, ns, "deploy_auth_enabled=true", verbosity=3, diff=True, json_output=False,
                 extra_vars={"deploy_auth_admin_password": PASSWORD})
    out = res.stdout + res.stderr
    assert res.rc == 0, res.output.replace(PASSWORD, "<PASSWORD>")
    assert out.count(PASSWORD) == 0
    assert "ESTABLISH LOCAL CONNECTION" in res.stdout  # really -vvv
    return res


@pytest.fixture(scope="module")
def deployed(lab):
    """A namespace with MLflow deployed by the deploy role with basic auth on (one MLflow start for the module), and
    that deploy run."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    first = deploy_auth(lab, ns)
    yield ns, first
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


@pytest.fixture
def auth_ns(deployed):
    return deployed[0]


def test_basic_auth_from_a_created_secret_never_printed(lab, deployed):
    """The deploy role with MLflow's own basic auth (``--app-name basic-auth``): the admin credentials only in a
    Secret the role creates (no_log); at -vvv and with --diff the password appears 0 times in the output, twice over
    (create, then an idempotent rerun); the Secret holds it and the Deployment only references it; MLflow answers
    401 without or with wrong credentials and 200 with the admin's, while /health stays open for the probes."""
    ns, first = deployed
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

    again = deploy_auth(lab, ns)
    assert "changed=0" in again.stdout, again.stdout[-3000:].replace(PASSWORD, "<PASSWORD>")


def verify(lab, ns: str, tmp_path, name: str, *cli_vars: str, verbosity: int = 0):
    report = tmp_path / f"{name}.json"
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=600,
                       verbosity=verbosity, json_output=verbosity == 0,
                       cli_vars=[f"verify_namespace={ns}", "verify_port_forward=false", "verify_min_workers=1",
                                 f"verify_report_path={report}", *cli_vars])
    rep = json.loads(report.read_text()) if report.exists() else {}
    return res, rep, (report.read_text() if report.exists() else "")


def probe_step(rep: dict) -> dict:
    """Step 4 of the report: {step, status, summary ('health 200 3ms, root 200 ...'), findings (codes)}."""
    return next(s for s in rep["steps"] if s["step"] == "probe")


def probe_codes(rep: dict) -> set[str]:
    return set(probe_step(rep)["findings"])


@pytest.mark.parametrize("secret", [
    '{"verify_auth_secret": {"name": "mlflow-auth"}}',  # -e '{...}' (JSON, typed)
    'verify_auth_secret={"name":"mlflow-auth"}',  # -e name=<JSON text>: a string (no spaces: -e splits k=v on them)
    "verify_auth_secret=mlflow-auth",  # just the Secret's name
    "verify_auth_secret=name=mlflow-auth,key=admin_password",
])
def test_deploy_secret_authenticates_step_4_healthy_nothing_changed(lab, auth_ns, tmp_path, secret):
    gen = get_deployment(lab, auth_ns)["metadata"]["generation"]
    res, rep, _ = verify(lab, auth_ns, tmp_path, "ok", "verify_auth_username=admin", secret)
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert rep["status"] == "healthy", rep.get("remaining")
    assert not {"AUTH_REQUIRED", "AUTH_REJECTED", "ROOT_FAILED"} & codes(rep["findings"]), rep["findings"]
    probe = probe_step(rep)
    assert probe["status"] == "ok" and "root 200" in probe["summary"] and "api 200" in probe["summary"], probe
    assert get_deployment(lab, auth_ns)["metadata"]["generation"] == gen


def test_deploy_secret_also_serves_the_deep_check_and_is_never_printed_at_vvv(lab, auth_ns, tmp_path):
    """The password read from the Secret is no module parameter (Ansible cannot mask it): it must never be emitted.
    With no verify_transaction_username the deep check (step 4b) authenticates with the same credentials."""
    gen = get_deployment(lab, auth_ns)["metadata"]["generation"]
    res, rep, text = verify(lab, auth_ns, tmp_path, "vvv", "verify_auth_secret=mlflow-auth", "verify_transaction=true",
                            '{"verify_transaction_options": {"artifact_size": 4096, "min_upload_rate": 0}}',
                            verbosity=3)
    out = res.stdout + res.stderr
    assert res.rc == 0, res.output.replace(PASSWORD, "<PASSWORD>")
    assert "ESTABLISH LOCAL CONNECTION" in res.stdout and "changed=0" in res.stdout
    assert out.count(PASSWORD) == 0 and text.count(PASSWORD) == 0
    assert rep["status"] == "healthy", rep.get("remaining")
    deep = next(s for s in rep["steps"] if s["step"] == "transaction")
    assert deep["status"] == "ok" and deep["summary"].startswith("passed"), deep
    assert get_deployment(lab, auth_ns)["metadata"]["generation"] == gen


def test_no_credentials_is_auth_required_reported_nothing_restarted(lab, auth_ns, tmp_path):
    gen = get_deployment(lab, auth_ns)["metadata"]["generation"]
    res, rep, _ = verify(lab, auth_ns, tmp_path, "none")
    # AUTH_REQUIRED is a warning: the run succeeds (verify_fail_when_unhealthy fails only on critical findings)
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert "AUTH_REQUIRED" in probe_codes(rep) and "PROBE_UNHEALTHY" not in codes(rep["findings"]), rep["findings"]
    assert rep["plan"]["actions"] == [] and rep["remediated"] == []
    assert any(n.startswith("AUTH_REQUIRED: ") and "verify_auth_secret" in n for n in rep["next_steps"]), rep["next_steps"]
    assert get_deployment(lab, auth_ns)["metadata"]["generation"] == gen


def test_wrong_password_is_auth_rejected_never_printed(lab, auth_ns, tmp_path):
    gen = get_deployment(lab, auth_ns)["metadata"]["generation"]
    res, rep, text = verify(lab, auth_ns, tmp_path, "wrong", "verify_auth_username=admin",
                            f"verify_auth_password={WRONG}", verbosity=3)
    out = res.stdout + res.stderr
    assert "ESTABLISH LOCAL CONNECTION" in res.stdout  # really -vvv
    assert out.count(WRONG) == 0 and out.count(PASSWORD) == 0
    assert text.count(WRONG) == 0 and text.count(PASSWORD) == 0
    assert "AUTH_REJECTED" in probe_codes(rep), rep["findings"]
    f = next(f for f in rep["findings"] if f["code"] == "AUTH_REJECTED")
    assert f["severity"] == "critical" and f["evidence"]["source"] == "verify_auth_password"
    assert rep["plan"]["actions"] == [] and rep["remediated"] == []
    # critical: the run fails at the end (verify_fail_when_unhealthy), after the report, having changed nothing
    assert res.rc != 0 and "changed=0" in res.stdout
    assert get_deployment(lab, auth_ns)["metadata"]["generation"] == gen


@pytest.mark.parametrize("cli, expected", [
    (["verify_auth_username=admin"], "verify_auth_username: set where its password comes from"),
    (["verify_auth_secret=no-such-secret"], "verify_auth_secret.name: Secret {ns}/no-such-secret does not exist"),
    (['verify_auth_secret={"name":"mlflow-auth","key":"password"}'],
     "verify_auth_secret.key: Secret {ns}/mlflow-auth has no key 'password'"),
    (['verify_auth_secret={"key":"admin_password"}'], "verify_auth_secret.name: missing"),
    # -e splits key=value on spaces: what is left is not JSON, and the error says what was expected
    (['verify_auth_secret={"name": "mlflow-auth"}'], "verify_auth_secret: expected a mapping {name: <Secret name>"),
])
def test_bad_auth_input_fails_naming_the_field_nothing_changed(lab, auth_ns, tmp_path, cli, expected):
    gen = get_deployment(lab, auth_ns)["metadata"]["generation"]
    res, _, _ = verify(lab, auth_ns, tmp_path, "bad", *cli)
    assert res.rc != 0
    msgs = [h.get("msg") or "" for t in res.tasks() for h in t.get("hosts", {}).values() if h.get("failed")]
    assert any(expected.replace("{ns}", auth_ns) in m for m in msgs), (msgs, res.output)
    assert res.changed == 0
    assert (res.stdout + res.stderr).count(PASSWORD) == 0
    assert get_deployment(lab, auth_ns)["metadata"]["generation"] == gen
