"""A real MLflow server (ghcr.io/mlflow/mlflow:v3.17.2 in a lab pod) reached through the lab's nginx: by an
Ingress (the incident report's "Option 3: Ingress (Production)") and by an HTTPRoute. MLflow >= 3.5 checks the Host
header, which nginx forwards unchanged (ingress-nginx ``proxy_set_header Host $best_http_host``): a host missing
from ``--allowed-hosts`` gets 403 (shared/reference mlflow-server-facts.md, "Host header validation";
mlflow/server/security_utils.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from asgardlab.kubelet.testing import delete_namespace, make_namespace, manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ingress import (  # noqa: E402
    backend,
    create,
    get,
    ingress,
    read,
    ready_endpoints,
    request,
    wait_for,
)

GW = "gateway.networking.k8s.io/v1"


def test_mlflow_through_ingress_and_httproute(lab):
    """GET / shows the MLflow UI and /health answers OK through an Ingress (Ingress concept page) and through an
    HTTPRoute (Gateway API HTTPRoute); the REST API writes through the Ingress; a second Ingress host that MLflow
    does not allow gets MLflow's 403 "Invalid Host header" (the INGRESS_HOST_NOT_ALLOWED case of issue 18)."""
    ns = make_namespace(lab, "ingmlf")
    try:
        host, alias, gw_host = f"mlflow.{ns}.test", f"alias.{ns}.test", f"gw-mlflow.{ns}.test"
        dep = manifest("mlflow-deployment.yaml")
        dep["spec"]["template"]["spec"]["containers"][0]["args"].append(
            f"--allowed-hosts={host},{gw_host},localhost:*,127.0.0.1:*")
        create(lab, ns, dep)
        create(lab, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow"},
                         "spec": {"selector": {"app.kubernetes.io/name": "mlflow"}, "ports": [{"port": 80, "targetPort": "http"}]}})
        for name, h in (("mlflow", host), ("alias", alias)):
            create(lab, ns, ingress(name, [{"host": h, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("mlflow")}]}}],
                annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "100m",
                             "nginx.ingress.kubernetes.io/proxy-read-timeout": "300"}))
        create(lab, ns, {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "gw"},
                         "spec": {"gatewayClassName": "asgard-lab", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
        create(lab, ns, {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "mlflow"},
                         "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [gw_host],
                                  "rules": [{"backendRefs": [{"name": "mlflow", "port": 80}], "timeouts": {"request": "300s"}}]}})
        wait_for(lambda: ready_endpoints(lab, ns, "mlflow"), 300, 0.5, what="MLflow ready (its first start can take minutes on a loaded machine)")
        wait_for(lambda: read(lab, ns, ingress("mlflow")).get("status", {}).get("loadBalancer", {}).get("ingress"), 30,
                 what="Ingress status")
        health = wait_for(lambda: (r := get(lab, host, "/health")).status_code == 200 and r, 30, what="/health through the Ingress")
        assert health.text.strip() == "OK"
        ui = wait_for(lambda: (r := get(lab, host, "/")).status_code == 200 and r, 30, what="/ through the Ingress")
        assert "<title>MLflow</title>" in ui.text
        created = request(lab, "POST", host, "/api/2.0/mlflow/experiments/create", json={"name": f"through-{ns}"})
        assert created.status_code == 200, created.text
        exp_id = created.json()["experiment_id"]
        found = get(lab, host, f"/api/2.0/mlflow/experiments/get?experiment_id={exp_id}")
        assert found.json()["experiment"]["name"] == f"through-{ns}"
        denied = get(lab, alias, "/")
        assert denied.status_code == 403 and "Invalid Host header" in denied.text
        routed = wait_for(lambda: (r := get(lab, gw_host, "/")).status_code == 200 and r, 30, what="/ through the HTTPRoute")
        assert "<title>MLflow</title>" in routed.text
    finally:
        delete_namespace(lab, ns, wait=90)
