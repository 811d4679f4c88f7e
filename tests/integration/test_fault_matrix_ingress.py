"""The fault matrix, production path (issue 18): faults an operator meets on the Ingress in front of MLflow, sent
through the lab's real nginx ingress controller (docs/lab.md "Ingress and Gateway API"), verify.yml typed on the
command line (``-e name=value``) as an operator runs it, and the store compared before and after each fault
(tests/integration/fault_matrix_lab.py).

ingress-nginx semantics the rows rely on (kubernetes/ingress-nginx docs/user-guide/nginx-configuration/
annotations.md): ``proxy-body-size`` is nginx's ``client_max_body_size`` (413 above it), ``proxy-read-timeout`` is
``proxy_read_timeout`` in seconds (504 when the upstream sends nothing for that long). An Ingress path is matched
against the request path as sent, and the request reaches the Service with that path (Kubernetes docs,
concepts/services-networking/ingress "Path types"). MLflow >= 3.5 answers 403 "Invalid Host header" for a Host
outside ``--allowed-hosts`` / ``MLFLOW_SERVER_ALLOWED_HOSTS`` (mlflow-server-facts.md).

All rows share one MLflow (gunicorn with one sync worker, so that one slow request really holds the server: the
upstream side of a 504); each creates its own Ingress and deletes it after. The allowed-hosts row changes the
Deployment (its heal restarts MLflow), so it runs last (the module's order), on a host outside the allowed ones."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_matrix_lab import (LOCAL_HOST, allowed_hosts, assert_store, deployment, healed_row,  # noqa: E402
                              new_namespace, server_args, serving_pod, slow_post, start_healthy)
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.ingress import create as create_object  # noqa: E402
from helpers.ingress import request, tls_secret, wait_for, wait_synced  # noqa: E402
from helpers.lab_objects import codes, get_deployment  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("fault_matrix_rows")]
ANN = "nginx.ingress.kubernetes.io/"
ING_PATH = "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"
UPLOAD = "/api/2.0/mlflow-artifacts/artifacts/fault-matrix/upload.bin"
# what the deploy role writes for this server (no body limit, timeouts = gunicorn's 300 s): each row changes one
SIZED = {ANN + "proxy-body-size": "0", ANN + "proxy-read-timeout": "300", ANN + "proxy-send-timeout": "300"}


@pytest.fixture(scope="module")
def behind_ingress(lab):
    """One MLflow 3.17 under gunicorn (one sync worker, --timeout 300), artifacts served, every *.example.test
    host allowed: the server is healthy, only the Ingress in front of it is at fault."""
    ns = new_namespace(lab)
    env = {"MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts(ns) + ",*.example.test"}
    dep = deployment(env=env, args=server_args(extra=["--gunicorn-opts=--timeout 300",
                                                      "--artifacts-destination=/mlflow/artifacts"]))
    pod, base, before = start_healthy(lab, ns, dep)
    yield {"ns": ns, "base": base, "before": before}
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def mlflow_ingress(name: str, host: str, annotations: dict | None = None, path: str = "/",
                   tls_secret_name: str | None = None) -> dict:
    """An Ingress to mlflow-service:5000 sized for the server (SIZED) but for the given annotations."""
    annotations = {**SIZED, **(annotations or {})}
    spec = {"ingressClassName": "nginx",
            "rules": [{"host": host, "http": {"paths": [{"path": path, "pathType": "Prefix", "backend": {
                "service": {"name": "mlflow-service", "port": {"number": 5000}}}}]}}]}
    if tls_secret_name:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret_name}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec}


def read_ingress(lab, ns: str, name: str) -> dict:
    r = lab.request("GET", ING_PATH.format(ns=ns) + f"/{name}")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def ingress(lab):
    """Create an Ingress and wait until nginx serves it; deleted after the test (rows share the namespace)."""
    made = []

    def make(ns: str, obj: dict) -> dict:
        create_object(lab, ns, obj)
        made.append((ns, obj["metadata"]["name"]))
        ing = wait_for(lambda: (lambda i: i if (i.get("status") or {}).get("loadBalancer", {}).get("ingress") else None)(
            read_ingress(lab, ns, obj["metadata"]["name"])), 60, 0.2, f"Ingress {obj['metadata']['name']} served")
        wait_synced(lab, rv=ing["metadata"]["resourceVersion"])
        return ing

    yield make
    for ns, name in made:
        lab.request("DELETE", ING_PATH.format(ns=ns) + f"/{name}")


def verify(lab, ns: str, tmp_path: Path, name: str, *cli_vars: str, check: bool = False):
    """verify.yml typed on the command line, as an operator runs it."""
    rep_path = tmp_path / f"verify-{name}.json"
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=900, check=check,
                       diff=check, cli_vars=[f"verify_namespace={ns}", "verify_port_forward=false",
                                             "verify_min_workers=1", "verify_rollout_timeout=240",
                                             f"verify_report_path={rep_path}", *cli_vars])
    return res, (json.loads(rep_path.read_text()) if rep_path.exists() else {})


def annotations(lab, ns: str, name: str) -> dict:
    return read_ingress(lab, ns, name)["metadata"].get("annotations") or {}


def wait_served(lab, ns: str, name: str) -> None:
    """nginx serves the Ingress as it is now (verify's last write is its Lease, which the controller ignores)."""
    wait_synced(lab, rv=read_ingress(lab, ns, name)["metadata"]["resourceVersion"])


def generation(lab, ns: str) -> int:
    return get_deployment(lab, ns)["metadata"]["generation"]


# ------------------------------------------------------------------------------------------------ the rows
def test_ingress_body_size_1m_refuses_a_20mb_upload(lab, behind_ingress, ingress, tmp_path):
    t0 = time.monotonic()
    ns, name = behind_ingress["ns"], "small-body"
    host = f"body.{ns}.example.test"
    ingress(ns, mlflow_ingress(name, host, {ANN + "proxy-body-size": "1m"}))
    blob = os.urandom(20 * 1000 * 1000)
    put = {"data": blob, "headers": {"Content-Type": "application/octet-stream"}, "timeout": 120}
    assert request(lab, "PUT", host, UPLOAD, **put).status_code == 413
    gen = generation(lab, ns)

    res, rep = verify(lab, ns, tmp_path, "audit", f"verify_ingress_name={name}", "verify_remediate=false")
    assert "INGRESS_BODY_TOO_SMALL" in codes(rep["findings_before"]), rep["findings_before"]
    assert annotations(lab, ns, name)[ANN + "proxy-body-size"] == "1m" and res.changed == 0, res.changed_tasks()

    res, rep = verify(lab, ns, tmp_path, "heal", f"verify_ingress_name={name}")
    assert res.rc == 0, res.output
    assert [r for r in rep["remediated"] if r["action"] == "patch_ingress" and r["changed"]], rep["remediated"]
    assert "INGRESS_BODY_TOO_SMALL" not in codes(rep["remaining"]), rep["remaining"]
    size = annotations(lab, ns, name)[ANN + "proxy-body-size"]
    assert generation(lab, ns) == gen, "an Ingress fault must not restart MLflow"
    wait_served(lab, ns, name)
    up = request(lab, "PUT", host, UPLOAD, **put)
    assert up.status_code == 200, (up.status_code, up.text[:300])
    got = requests.get(behind_ingress["base"] + UPLOAD, headers={"Host": LOCAL_HOST}, timeout=120)
    assert got.status_code == 200 and got.content == blob, "the artifact read back at the pod differs"
    store = assert_store(lab, ns, behind_ingress["before"], behind_ingress["base"])
    healed_row("ingress_body_size_413", t0, fault="Ingress proxy-body-size 1m: a 20 MB artifact upload through it "
               "answers 413", injected_by="Ingress annotation (lab nginx)", finding="INGRESS_BODY_TOO_SMALL (ingress)",
               detected_by="verify.yml (-e strings; audit first: nothing changed)",
               outcome=f"healed: merge patch of proxy-body-size to {size} (MLflow not restarted); the 20 MB upload "
               "answers 200 and reads back byte for byte", store=store)


def test_ingress_read_timeout_10s_cuts_a_slow_request(lab, behind_ingress, ingress, tmp_path):
    t0 = time.monotonic()
    ns, name = behind_ingress["ns"], "short-timeout"
    host = f"slow.{ns}.example.test"
    ingress(ns, mlflow_ingress(name, host, {ANN + "proxy-read-timeout": "10"}))
    ip = behind_ingress["base"].split("//")[1].split(":")[0]

    def through_ingress_while_busy() -> tuple[int, float]:
        """A request body trickling to the pod for 20 s holds gunicorn's only sync worker; a search sent through
        the Ingress meanwhile waits for it (the upstream is slow, not broken)."""
        busy = threading.Thread(target=slow_post, args=(ip, 20), daemon=True)
        busy.start()
        time.sleep(2)
        start = time.monotonic()
        r = request(lab, "GET", host, "/api/2.0/mlflow/experiments/search?max_results=1", timeout=120)
        waited = time.monotonic() - start
        busy.join(60)
        return r.status_code, waited

    status, waited = through_ingress_while_busy()
    assert status == 504, (status, waited)

    res, rep = verify(lab, ns, tmp_path, "heal", f"verify_ingress_name={name}")
    assert res.rc == 0, res.output
    found = [f for f in rep["findings_before"] if f["code"] == "INGRESS_TIMEOUT_TOO_SHORT"]
    assert found, rep["findings_before"]
    assert [r for r in rep["remediated"] if r["action"] == "patch_ingress" and r["changed"]], rep["remediated"]
    after = annotations(lab, ns, name)[ANN + "proxy-read-timeout"]
    assert int(after) >= 300, after  # at least gunicorn's --timeout
    wait_served(lab, ns, name)
    status2, waited2 = through_ingress_while_busy()
    assert status2 == 200, (status2, waited2)
    store = assert_store(lab, ns, behind_ingress["before"], behind_ingress["base"])
    healed_row("ingress_read_timeout_504", t0, fault="Ingress proxy-read-timeout 10 s while gunicorn allows 300 s: a "
               f"request behind a slow one answers 504 after {waited:.0f} s",
               injected_by="Ingress annotation + a 20 s request body to the pod", finding="INGRESS_TIMEOUT_TOO_SHORT "
               "(ingress)", detected_by="verify.yml (-e strings)",
               outcome=f"healed: proxy-read-timeout {after}; the same request answers 200 after {waited2:.0f} s",
               store=store)


def test_ingress_path_mlflow_on_a_server_without_prefix(lab, behind_ingress, ingress, tmp_path):
    t0 = time.monotonic()
    ns, name = behind_ingress["ns"], "wrong-path"
    host = f"path.{ns}.example.test"
    before = ingress(ns, mlflow_ingress(name, host, path="/mlflow"))
    assert request(lab, "GET", host, "/mlflow/").status_code == 404
    gen = generation(lab, ns)

    res, rep = verify(lab, ns, tmp_path, "path", f"verify_ingress_name={name}")
    assert res.rc != 0, "a critical finding fails the run"
    assert "INGRESS_PATH_MISMATCH" in codes(rep["remaining"]), rep["remaining"]
    assert rep["remediated"] == [] and res.changed == 0, res.changed_tasks()
    now = read_ingress(lab, ns, name)
    assert now["spec"] == before["spec"] and now["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert generation(lab, ns) == gen
    store = assert_store(lab, ns, behind_ingress["before"], behind_ingress["base"])
    healed_row("ingress_path_404", t0, fault="Ingress path /mlflow in front of a server without --static-prefix: "
               "GET /mlflow/ answers 404", injected_by="Ingress spec", finding="INGRESS_PATH_MISMATCH (ingress, critical)",
               detected_by="verify.yml (-e strings)", outcome="reported (rc != 0, critical); "
               "no path guessed, nothing changed", store=store)


def test_ingress_tls_certificate_expired(lab, behind_ingress, ingress, tmp_path):
    import trustme

    t0 = time.monotonic()
    ns, name = behind_ingress["ns"], "expired-tls"
    host = f"tls.{ns}.example.test"
    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(host, not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=2))
    key = leaf.private_key_pem.bytes()
    create_object(lab, ns, tls_secret("expired-tls", leaf.cert_chain_pems[0].bytes(), key))
    before = ingress(ns, mlflow_ingress(name, host, tls_secret_name="expired-tls"))
    with ca.cert_pem.tempfile() as ca_file, pytest.raises(requests.exceptions.SSLError, match="expired"):
        request(lab, "GET", host, "/health", https=True, verify=ca_file)
    gen = generation(lab, ns)

    res, rep = verify(lab, ns, tmp_path, "tls", f"verify_ingress_name={name}")
    assert res.rc != 0, "an expired certificate is critical"
    f = next(f for f in rep["remaining"] if f["code"] == "INGRESS_TLS_EXPIRING")
    assert f["evidence"]["days_left"] < 0 and f["severity"] == "critical", f
    assert rep["remediated"] == [] and res.changed == 0, res.changed_tasks()
    assert read_ingress(lab, ns, name)["spec"] == before["spec"] and generation(lab, ns) == gen
    assert key.decode().split("\n")[1] not in res.output + json.dumps(rep), "the TLS key was printed"
    store = assert_store(lab, ns, behind_ingress["before"], behind_ingress["base"])
    healed_row("ingress_tls_expired", t0, fault="Ingress TLS Secret with a certificate expired 2 days ago: clients "
               "refuse the handshake", injected_by="kubernetes.io/tls Secret (trustme)",
               finding="INGRESS_TLS_EXPIRING (ingress, critical)", detected_by="verify.yml (-e strings)",
               outcome="reported (rc != 0, names the Secret and the date); nothing changed; the key printed 0 times",
               store=store)


def test_ingress_host_missing_from_the_allowed_hosts(lab, behind_ingress, ingress, tmp_path):
    """Last of the module: the heal patches the shared Deployment (the pod is replaced). The host is outside the
    allowed *.example.test."""
    t0 = time.monotonic()
    ns, before = behind_ingress["ns"], behind_ingress["before"]
    pod, _ = serving_pod(lab, ns)
    name, host = "mlflow-ingress", f"mlflow.{ns}.example.org"
    ingress(ns, mlflow_ingress(name, host))
    r = request(lab, "GET", host, "/")
    assert r.status_code == 403 and "Invalid Host header" in r.text, (r.status_code, r.text[:200])

    res, rep = verify(lab, ns, tmp_path, "heal")
    assert res.rc == 0, res.output
    assert "INGRESS_HOST_NOT_ALLOWED" in codes(rep["findings_before"]), rep["findings_before"]
    assert rep["remediated"][0]["action"] == "patch", rep["remediated"]
    assert rep["status"] == "healthy", rep["remaining"]
    pod2, base2 = serving_pod(lab, ns, exclude=(pod,))
    behind_ingress["base"] = base2  # the shared server's new address (for a case after this one)
    r = request(lab, "GET", host, "/")
    assert r.status_code == 200 and "<title>MLflow</title>" in r.text, (r.status_code, r.text[:200])
    store = assert_store(lab, ns, before, base2)
    healed_row("ingress_host_not_allowed_403", t0, fault="Ingress host missing from MLflow's allowed hosts: GET / "
               "through the Ingress answers 403 Invalid Host header", injected_by="Ingress host + Deployment env",
               finding="INGRESS_HOST_NOT_ALLOWED (ingress)", detected_by="verify.yml (-e strings)",
               outcome="healed: patch adds the host to the allowed hosts (include mode); GET / through the Ingress 200 "
               "with the MLflow title", store=store)

