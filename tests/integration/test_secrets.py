"""Issue 14 item 2: no credential is ever printed, at any verbosity, on any path.

A Deployment shaped like ones found in the field carries one known PostgreSQL password in every place a password
hides: a literal env value (MLFLOW_BACKEND_STORE_URI, which `mlflow server` reads), the userinfo of a URI in a
container's args (a sidecar's --dsn), `--backend-store-uri` inside the `sh -c` script that starts MLflow, kubectl's
`last-applied-configuration` annotation (the manifest is applied with the real `kubectl apply`), a ConfigMap value
(configMapKeyRef) and a Secret referenced by env (secretKeyRef). MLflow really runs against a real PostgreSQL with
that password, with `--static-prefix /static` (GET / answers 404), so verify finds something to heal.

Every playbook is run the way an operator runs it (`-e name=value`, `-vvv`, `--check --diff`, the default
callback), over every path: verify in check mode and for real (patch, rollout, port-forward), patch in check mode
with --diff and a patch whose new pods never become Ready (rolled back), deploy with the URI typed on the command
line (for real and in check mode). demo.yml deploys the seed's manifest, which carries no credential: not run here.
The password (and its base64 forms, and the lab's bearer token) must appear 0 times in stdout, stderr, the Ansible
log file and every file the runs write (reports, the forwarder's and the Lease renewer's state and logs, Ansible's
local/remote temp dirs).
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.lab_objects import free_port, get_deployment  # noqa: E402
from helpers.postgres import PostgresServer, ensure_lab_driver  # noqa: E402
from fault_matrix_lab import serving_pod  # noqa: E402

pytestmark = pytest.mark.lab

PASSWORD = "Cz" + uuid.uuid4().hex[:22]  # alphanumeric: its URL-encoded form is itself
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"


@pytest.fixture(scope="module")
def postgres(lab):
    ensure_lab_driver()
    with PostgresServer(Path(tempfile.mkdtemp(prefix="asgard-secrets-pg-")), password=PASSWORD) as pg:
        yield pg


def field_manifest(ns: str, uri: str) -> list[dict]:
    labels = {"app": "mlflow"}
    allowed = ",".join([f"mlflow-service.{ns}.svc.cluster.local:5000", f"mlflow-service.{ns}:5000",
                        "mlflow-service:5000", "localhost:*", "127.0.0.1:*", "10.*"])
    script = (f"exec mlflow server --host 0.0.0.0 --port 5000 --workers 1 --backend-store-uri {uri} "
              "--default-artifact-root /mlflow/artifacts --static-prefix /static")
    mlflow = {"name": "mlflow", "image": IMAGE, "command": ["/bin/sh", "-c"], "args": [script],
              "env": [{"name": "MLFLOW_BACKEND_STORE_URI", "value": uri},
                      {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}},
                      {"name": "DB_URI", "valueFrom": {"configMapKeyRef": {"name": "mlflow-config", "key": "db_uri"}}},
                      {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
                      {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": allowed}],
              "ports": [{"name": "http", "containerPort": 5000}],
              "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
              "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}]}
    sidecar = {"name": "db-watch", "image": "busybox:1.36", "command": ["sh", "-c", "exec sleep 3600", "db-watch"],
               "args": [f"--dsn={uri}"]}
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-credentials", "namespace": ns},
         "stringData": {"password": PASSWORD}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mlflow-config", "namespace": ns},
         "data": {"db_uri": uri}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow-service", "namespace": ns},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow-deployment", "namespace": ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                  "progressDeadlineSeconds": 600,
                  "template": {"metadata": {"labels": labels},
                               "spec": {"terminationGracePeriodSeconds": 3, "enableServiceLinks": False,
                                        "containers": [mlflow, sidecar],
                                        "volumes": [{"name": "data", "emptyDir": {}}]}}}},
    ]


@pytest.fixture(scope="module")
def field(lab, postgres, tmp_path_factory):
    ns = f"sec-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    manifest = tmp_path_factory.mktemp("field") / "mlflow.yaml"
    manifest.write_text(yaml.safe_dump_all(field_manifest(ns, postgres.uri())))
    out = subprocess.run(["kubectl", "apply", "-f", str(manifest)], env=lab.env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    manifest.unlink()  # the test's own copy of the password is not a file the playbooks wrote
    dep = get_deployment(lab, ns)
    assert PASSWORD in dep["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    serving_pod(lab, ns, prefix="/static")
    yield {"ns": ns, "uri": postgres.uri()}
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def needles(lab, uri: str) -> dict[str, str]:
    return {"the password": PASSWORD, "the password in base64": base64.b64encode(PASSWORD.encode()).decode(),
            "the URI in base64": base64.b64encode(uri.encode()).decode(), "the lab's bearer token": lab.token}


def leaks(text: str, found: dict[str, str]) -> list[str]:
    return [f"{what} ({text.count(n)}x)" for what, n in found.items() if n and n in text]


@pytest.fixture
def out_dir(tmp_path):
    """Where the runs write (reports, logs, XDG state); forwards they left running are stopped afterwards."""
    d = tmp_path / "written"
    d.mkdir()
    yield d
    for state in (d / "state" / "asgard-mlflow" / "port-forwards").glob("*.json"):
        stop_forward(json.loads(state.read_text()).get("pid"))


def test_no_credential_in_any_output_at_any_verbosity(lab, field, postgres, out_dir):
    ns = field["ns"]
    env = lab.env(XDG_STATE_HOME=str(out_dir / "state"), ANSIBLE_LOCAL_TEMP=str(out_dir / "ansible-local"),
                  ANSIBLE_REMOTE_TEMP=str(out_dir / "ansible-remote"), ANSIBLE_KEEP_REMOTE_FILES="0")
    port = free_port()
    verify_args = ["-e", f"verify_namespace={ns}", "-e", "verify_min_workers=1", "-e", "verify_rollout_timeout=240",
                   "-e", "verify_port_forward=true", "-e", f"verify_port_forward_local_port={port}",
                   "-e", f"verify_report_path={out_dir}/verify.json",
                   "-e", f"verify_markdown_report_path={out_dir}/verify.md"]
    patch_args = ["-e", f"patch_namespace={ns}", "-e", "patch_wait_timeout=15", "-e", "patch_wait_sleep=2"]
    deploy_ns = f"{ns}-d"
    deploy_args = ["-e", f"deploy_namespace={deploy_ns}", "-e", "deploy_replicas=0",
                   "-e", f"deploy_backend_store_uri={field['uri']}", "-e", "deploy_pvc_enabled=false"]
    results = {}

    def run(name, playbook, argv, **kw):
        log = out_dir / f"ansible-{name}.log"
        res = run_playbook(playbook, env={**env, "ANSIBLE_LOG_PATH": str(log)}, json_output=False, timeout=900,
                           argv=argv, **kw)
        results[name] = res
        return res

    gen0 = get_deployment(lab, ns)["metadata"]["generation"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the two check-mode runs only read: at the same time
        checking = pool.submit(run, "patch-check-diff", "playbooks/patch.yml", patch_args + ["-e", "patch_workers=1"],
                               verbosity=3, check=True, diff=True)
        run("verify-check-diff", "playbooks/verify.yml", verify_args, verbosity=3, check=True, diff=True)
        checking.result(timeout=1800)
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen0, "check mode changed the Deployment"
    heal = run("verify-heal", "playbooks/verify.yml", verify_args, verbosity=3, diff=True)
    report_path = out_dir / "verify.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    healed_gen = get_deployment(lab, ns)["metadata"]["generation"]
    did = []  # what each path really did (checked after the leaks, so that a leak is always what fails first)

    def deploy_runs():  # another namespace: runs while the failing patches below wait for their rollouts
        run("deploy-check-diff", "playbooks/deploy.yml", deploy_args, verbosity=3, check=True, diff=True)
        r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": deploy_ns}})
        assert r.status_code == 201, r.text
        try:
            run("deploy", "playbooks/deploy.yml", deploy_args, verbosity=3, diff=True)
        finally:
            lab.request("DELETE", f"/api/v1/namespaces/{deploy_ns}")

    # a patch whose new pod never starts: the rollout fails and is rolled back (-vvv, and at default verbosity)
    template = get_deployment(lab, ns)["spec"]["template"]
    r = lab.request("POST", f"/lab/pods/{ns}/*/fault", json={"delayStartSeconds": 3600})
    assert r.status_code in (200, 201), r.text
    deployer = concurrent.futures.ThreadPoolExecutor(1)
    deploying = deployer.submit(deploy_runs)
    try:
        for name, workers, verbosity in (("patch-failing-rollout", 2, 3),
                                         ("patch-failing-rollout-default-verbosity", 3, 0)):
            gen = get_deployment(lab, ns)["metadata"]["generation"]
            res = run(name, "playbooks/patch.yml", patch_args + ["-e", f"patch_workers={workers}"],
                      verbosity=verbosity, diff=True)
            dep = get_deployment(lab, ns)
            did.append((f"{name}: failed (rc {res.rc}), patched and rolled back (generation {gen} -> "
                        f"{dep['metadata']['generation']})",
                        res.rc != 0 and dep["metadata"]["generation"] >= gen + 2 and dep["spec"]["template"] == template))
    finally:
        lab.request("DELETE", f"/lab/pods/{ns}/*/fault")
        deployer.shutdown(wait=True)
        deploying.result()

    found = needles(lab, field["uri"])
    problems = []
    for name, res in results.items():
        for stream, text in (("stdout", res.stdout), ("stderr", res.stderr)):
            problems += [f"{name} {stream}: {x}" for x in leaks(text, found)]
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    for path in files:
        problems += [f"file {path.relative_to(out_dir)}: {x}" for x in leaks(path.read_text(errors="replace"), found)]
    assert problems == [], "credentials printed or written:\n" + "\n".join(problems)

    # the runs really did their work (or the test proves nothing): reports, logs, forward state were written ...
    names = {str(p.relative_to(out_dir)) for p in files}
    assert {"verify.json", "verify.md", "ansible-verify-heal.log", "ansible-patch-failing-rollout.log"} <= names, names
    assert any(n.startswith("state/asgard-mlflow/port-forwards/") and n.endswith(".log") for n in names), names
    # ... verify found the fault and healed it, check mode changed nothing, the failing patches were rolled back
    assert "ROOT_NOT_FOUND" in {f["code"] for f in report.get("findings_before", [])}, report.get("findings_before")
    assert heal.rc == 0 and report["status"] == "healthy" and healed_gen > gen0, (report["status"], heal.output[-3000:])
    assert [what for what, ok in did if not ok] == [], did
    assert all(res.rc == 0 for n, res in results.items() if "failing" not in n), {
        n: res.output[-2000:] for n, res in results.items() if res.rc != 0 and "failing" not in n}


def stop_forward(pid) -> None:
    import os
    import signal

    if pid:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
