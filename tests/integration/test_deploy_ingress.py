"""The deploy role's Ingress, driven as an operator types it (``-e name=value`` strings), then used through the
lab's real nginx (ingress-nginx behaviour, docs/lab.md "Ingress and Gateway API"): the MLflow UI and health
answer through it with MLflow 3.x's Host check on, an artifact upload larger than ingress-nginx's 1 MiB default
goes through, TLS from an existing Secret is served by SNI, and a second run changes nothing. (The deploy role's
HTTPRoute is checked in test_verify_route.py, on the Deployment that module's verify tests share.)"""

from __future__ import annotations

import os

import pytest
import requests
import trustme

from helpers.ingress import create, get, request, tls_secret, wait_for, wait_synced
from helpers.lab_objects import api_get, deploy, ready_pod_ip

pytestmark = pytest.mark.lab

ANN = "nginx.ingress.kubernetes.io/"
TITLE = "<title>MLflow</title>"


def served(lab, ns: str) -> dict:
    """The Ingress once the lab's controller serves it (status.loadBalancer published) and nginx has every change."""
    ing = wait_for(lambda: (lambda i: i if (i.get("status") or {}).get("loadBalancer", {}).get("ingress") else None)(
        api_get(lab, f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/mlflow-ingress")), 60, 0.2,
        "Ingress mlflow-ingress served")
    wait_synced(lab)
    return ing


def container_env(lab, ns: str) -> dict:
    dep = api_get(lab, f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment")
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_ingress_from_cli_strings_serves_mlflow_through_nginx(lab, lab_namespace):
    """``-e deploy_ingress_enabled=true -e deploy_ingress_hosts=a,b`` (strings): both hosts route to MLflow 3.17
    through nginx (its Host check on, the hosts in MLFLOW_SERVER_ALLOWED_HOSTS), the Ingress carries the role's
    ingress-nginx annotations (no body limit, read/send timeouts = gunicorn's 300 s as unitless seconds), a 2 MiB
    artifact upload is stored and read back through the Ingress (ingress-nginx's default 1m would answer 413),
    and a second run reports no change."""
    ns = lab_namespace
    hosts = [f"mlflow.{ns}.example.test", f"ml.{ns}.example.test"]
    res = deploy(lab, ns, "deploy_ingress_enabled=true", f"deploy_ingress_hosts={hosts[0]},{hosts[1]}")
    assert res.rc == 0, res.output

    ing = served(lab, ns)
    ann = ing["metadata"]["annotations"]
    assert ann[ANN + "proxy-body-size"] == "0"
    assert ann[ANN + "proxy-read-timeout"] == "300" and ann[ANN + "proxy-send-timeout"] == "300"
    assert [r["host"] for r in ing["spec"]["rules"]] == hosts
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/"
    assert "tls" not in ing["spec"]

    allowed = container_env(lab, ns)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert set(hosts) <= set(allowed)
    # the Host check really applies: a host outside the list is refused by the server itself (/health is exempt)
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(f"http://{ready_pod_ip(lab, ns)}:5000{search}", headers={"Host": "other.example.test"},
                        timeout=15).status_code == 403

    for host in hosts:
        ui = get(lab, host, "/")
        assert ui.status_code == 200 and TITLE in ui.text, (host, ui.status_code, ui.text[:300])
        health = get(lab, host, "/health")
        assert health.status_code == 200 and health.text == "OK", (host, health.status_code, health.text[:300])
        api = get(lab, host, search)
        assert api.status_code == 200 and "experiments" in api.json(), (host, api.status_code, api.text[:300])

    blob = os.urandom(2 * 1024 * 1024)
    path = "/api/2.0/mlflow-artifacts/artifacts/ingress-test/blob.bin"
    up = request(lab, "PUT", hosts[0], path, data=blob, headers={"Content-Type": "application/octet-stream"})
    assert up.status_code == 200, (up.status_code, up.text[:300])
    down = get(lab, hosts[0], path)
    assert down.status_code == 200 and down.content == blob

    again = deploy(lab, ns, "deploy_ingress_enabled=true", f"deploy_ingress_hosts={hosts[0]},{hosts[1]}")
    assert again.rc == 0, again.output
    assert again.changed == 0, again.changed_tasks()


def test_ingress_tls_static_prefix_and_operator_annotations(lab, lab_namespace, tmp_path):
    """TLS from an existing ``kubernetes.io/tls`` Secret: nginx presents it by SNI and MLflow answers under its
    static prefix (Ingress path ``/mlflow``, Prefix); plain HTTP is redirected (308, ingress-nginx's ssl-redirect).
    The timeouts follow ``deploy_gunicorn_timeout``; the operator's ``proxy-body-size`` (JSON ``-e``) wins over the
    role's, and nginx enforces it: 2 MiB passes, 6 MiB is refused with 413 before reaching MLflow."""
    ns = lab_namespace
    host = f"secure.{ns}.example.test"
    ca = trustme.CA()
    leaf = ca.issue_cert(host)
    create(lab, ns, tls_secret("mlflow-tls", leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    args = ["deploy_ingress_enabled=yes", f"deploy_ingress_hosts={host}", "deploy_ingress_tls_secret=mlflow-tls",
            "deploy_static_prefix=/mlflow", "deploy_server=gunicorn", "deploy_gunicorn_timeout=120",
            '{"deploy_ingress_annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "5m"}}']
    res = deploy(lab, ns, *args)
    assert res.rc == 0, res.output

    ing = served(lab, ns)
    ann = ing["metadata"]["annotations"]
    assert ann[ANN + "proxy-body-size"] == "5m"
    assert ann[ANN + "proxy-read-timeout"] == "120" and ann[ANN + "proxy-send-timeout"] == "120"
    assert ing["spec"]["tls"] == [{"hosts": [host], "secretName": "mlflow-tls"}]
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/mlflow"

    ui = get(lab, host, "/mlflow/", https=True, verify=str(ca_file))
    assert ui.status_code == 200 and TITLE in ui.text, (ui.status_code, ui.text[:300])
    health = get(lab, host, "/mlflow/health", https=True, verify=str(ca_file))
    assert health.status_code == 200 and health.text == "OK", (health.status_code, health.text[:300])
    plain = get(lab, host, "/mlflow/")
    assert plain.status_code == 308 and plain.headers["Location"].startswith(f"https://{host}/mlflow")

    path = "/mlflow/api/2.0/mlflow-artifacts/artifacts/ingress-test/blob.bin"
    ok = request(lab, "PUT", host, path, https=True, verify=str(ca_file), data=os.urandom(2 * 1024 * 1024))
    assert ok.status_code == 200, (ok.status_code, ok.text[:300])
    big = request(lab, "PUT", host, path, https=True, verify=str(ca_file), data=os.urandom(6 * 1024 * 1024))
    assert big.status_code == 413, (big.status_code, big.text[:300])

    fact = [h for h in res.task("Result | what was deployed")][0]["ansible_facts"]["deploy_result"]
    assert fact["ingress_urls"] == [f"https://{host}/mlflow/"]

    again = deploy(lab, ns, *args)
    assert again.rc == 0, again.output
    assert again.changed == 0, again.changed_tasks()
