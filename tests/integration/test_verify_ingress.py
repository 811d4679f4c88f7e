"""playbooks/verify.yml step 4c against the lab's real nginx ingress controller (docs/lab.md "Ingress and Gateway
API", ingress-nginx behaviour) and real MLflow, driven as an operator types it (``-e name=value`` strings).

ingress-nginx: ``proxy-body-size`` is nginx's ``client_max_body_size`` (413 above it, default 1m);
``proxy-read-timeout`` / ``proxy-send-timeout`` are unitless seconds (default 60)
(kubernetes/ingress-nginx docs/user-guide/nginx-configuration/annotations.md and configmap.md). An Ingress path
is matched against the request path as given (Kubernetes docs, concepts/services-networking/ingress "Path types"),
so a path ``/mlflow`` in front of a server without ``--static-prefix`` reaches routes MLflow does not have.

One MLflow deployed by the deploy role (the module fixture ``shared``) serves the first three tests in file order
(one worker: ``xdist_group``): the annotations found and healed, then the path the server does not serve (restored
after), then an Ingress made by hand for a host the server does not allow (its heal restarts the pod: last)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.ingress import create, endpoints, merge_patch, request, tls_secret, wait_for, wait_synced  # noqa: E402
from helpers.lab_objects import codes, free_port  # noqa: E402

pytestmark = pytest.mark.lab
ANN = "nginx.ingress.kubernetes.io/"
UPLOAD = "/api/2.0/mlflow-artifacts/artifacts/ingress-verify/blob.bin"
SHARED = pytest.mark.xdist_group("verify_ingress")


def deploy(lab, ns: str, *cli_vars: str):
    return run_playbook("playbooks/deploy.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=900,
                        cli_vars=[f"deploy_namespace={ns}", "deploy_workers=1", "deploy_wait_timeout=240", *cli_vars])


def verify(lab, ns: str, tmp_path: Path, name: str, *cli_vars: str, check: bool = False, verbosity: int = 0):
    report = tmp_path / f"{name}.json"
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=900, check=check,
                       diff=check, verbosity=verbosity, cli_vars=[f"verify_namespace={ns}", "verify_port_forward=false",
                                             "verify_min_workers=1", f"verify_report_path={report}", *cli_vars])
    rep = json.loads(report.read_text()) if report.exists() else {}
    return res, rep


def ingress(lab, ns: str) -> dict:
    r = lab.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/mlflow-ingress")
    assert r.status_code == 200, r.text
    return r.json()


def served(lab, ns: str) -> dict:
    ing = wait_for(lambda: (lambda i: i if (i.get("status") or {}).get("loadBalancer", {}).get("ingress") else None)(
        ingress(lab, ns)), 60, 0.2, "Ingress mlflow-ingress served")
    wait_synced(lab)
    return ing


@pytest.fixture(scope="module")
def shared(lab):
    """A namespace with MLflow deployed by the deploy role with its Ingress for ``mlflow.<ns>.example.test`` and the
    operator's ``proxy-body-size: 1m`` / ``proxy-read-timeout: 10`` (JSON ``-e``) over the role's annotations."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    host = f"mlflow.{ns}.example.test"
    res = deploy(lab, ns, "deploy_ingress_enabled=true", f"deploy_ingress_hosts={host}",
                 json.dumps({"deploy_ingress_annotations": {ANN + "proxy-body-size": "1m",
                                                            ANN + "proxy-read-timeout": "10"}}))
    assert res.rc == 0, res.output
    served(lab, ns)  # here, right after the deploy: with no Ingress change pending, nginx's sync mark never moves
    yield ns, host
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def step(rep: dict, name: str = "ingress") -> dict:
    return next(s for s in rep["steps"] if s["step"] == name)


def requests_of(rep: dict, name: str = "mlflow-ingress") -> list[tuple]:
    """(check, status) of each request the report's ingress step sent through the Ingress ``name``."""
    d = next(i for i in step(rep)["ingresses"] if i["name"] == name)
    assert all(isinstance(r["ms"], (int, float)) for r in d["requests"]), d
    return [(r["check"], r["status"]) for r in d["requests"]]


@SHARED
def test_small_body_and_short_timeout_are_found_and_healed(lab, shared, tmp_path):
    """An Ingress with ``proxy-body-size: 1m`` and ``proxy-read-timeout: 10`` (the operator's annotations over the
    deploy role's): a 20 MB upload through nginx is refused with 413. verify.yml, sending its requests through the
    lab's nginx (``-e verify_ingress_url=<its http port>``: the published 127.0.0.1 has no port 80 here) with
    ``-e verify_ingress_min_body_size=20m``: --check --diff reports both annotations and the refused upload
    (INGRESS_UPLOAD_REFUSED, 413: the size check sends no body) and changes nothing; audit mode
    (``-e verify_remediate=false``) reports and changes nothing; a real run patches only those two annotations (to
    20m and the worker timeout) in one patch, a real 20 MB artifact upload then passes, and a second run changes
    nothing, with health 200, the page 200 and the size check 100 Continue through the Ingress and no ingress
    finding. A wrong ``verify_ingress_url`` (a closed port) is INGRESS_UNREACHABLE with a next step."""
    ns, host = shared
    before = ingress(lab, ns)["metadata"]["annotations"]
    assert before[ANN + "proxy-body-size"] == "1m" and before[ANN + "proxy-read-timeout"] == "10"
    blob = os.urandom(20 * 1000 * 1000)
    refused = request(lab, "PUT", host, UPLOAD, data=blob, headers={"Content-Type": "application/octet-stream"})
    assert refused.status_code == 413, (refused.status_code, refused.text[:300])
    via = (f"verify_ingress_url={endpoints(lab)['http']}", "verify_ingress_min_body_size=20m")

    for name, args, check in (("check", (), True), ("audit", ("verify_remediate=false",), False)):
        res, rep = verify(lab, ns, tmp_path, name, *via, *args, check=check)
        assert res.rc == 0, res.output  # warnings only: MLflow itself is healthy
        assert {"INGRESS_BODY_TOO_SMALL", "INGRESS_TIMEOUT_TOO_SHORT", "INGRESS_UPLOAD_REFUSED"} <= codes(
            rep["findings_before"]), rep
        assert requests_of(rep) == [("health", 200), ("root", 200), ("upload", 413)], step(rep)
        assert ingress(lab, ns)["metadata"]["annotations"] == before, name
        if check:
            assert [h for h in res.task("Ingress annotations: merge patch (body size, timeouts)") if h.get("changed")]
        else:
            assert res.changed == 0, res.changed_tasks()

    res, rep = verify(lab, ns, tmp_path, "heal", *via)
    assert res.rc == 0, res.output
    after = ingress(lab, ns)["metadata"]["annotations"]
    assert after[ANN + "proxy-body-size"] == "20m" and after[ANN + "proxy-read-timeout"] == "300"
    assert {k: v for k, v in after.items() if k not in (ANN + "proxy-body-size", ANN + "proxy-read-timeout")} == \
        {k: v for k, v in before.items() if k not in (ANN + "proxy-body-size", ANN + "proxy-read-timeout")}
    healed = [r for r in rep["remediated"] if r["action"] == "patch_ingress"]
    assert len(healed) == 1 and healed[0]["changed"] is True and healed[0]["failed"] is False, rep["remediated"]
    assert "INGRESS_UPLOAD_REFUSED" in healed[0]["reason"], healed
    assert not {"INGRESS_BODY_TOO_SMALL", "INGRESS_TIMEOUT_TOO_SHORT", "INGRESS_UPLOAD_REFUSED"} & codes(
        rep["remaining"]), rep["remaining"]
    assert step(rep)["status"] == "ok", step(rep)

    # nginx serves the patched Ingress (the run's last API change is its Lease, which the controller does not watch:
    # wait for the Ingress' own resourceVersion, not the latest one)
    wait_synced(lab, rv=ingress(lab, ns)["metadata"]["resourceVersion"])
    up = request(lab, "PUT", host, UPLOAD, data=blob, headers={"Content-Type": "application/octet-stream"})
    assert up.status_code == 200, (up.status_code, up.text[:300])

    res, rep = verify(lab, ns, tmp_path, "again", *via)
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert rep["remediated"] == []
    assert requests_of(rep) == [("health", 200), ("root", 200), ("upload", 100)], step(rep)
    assert step(rep)["findings"] == [] and step(rep)["status"] == "ok", step(rep)

    closed = free_port()
    res, rep = verify(lab, ns, tmp_path, "closed", f"verify_ingress_url=http://127.0.0.1:{closed}",
                      "verify_ingress_min_body_size=20m", "verify_remediate=false")
    assert res.rc == 0, res.output  # a warning: the published address may be reachable only from inside
    f = next(f for f in rep["findings_before"] if f["code"] == "INGRESS_UNREACHABLE")
    assert f["evidence"]["endpoint"] == f"http://127.0.0.1:{closed}" and "verify_ingress_url" in f["evidence"]["next_step"]
    assert requests_of(rep) == [("health", None)], step(rep)
    assert res.changed == 0, res.changed_tasks()


def set_path(lab, ns: str, path: str) -> None:
    r = lab.request("PATCH", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/mlflow-ingress",
                    data=json.dumps([{"op": "replace", "path": "/spec/rules/0/http/paths/0/path", "value": path}]),
                    headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    wait_synced(lab, rv=r.json()["metadata"]["resourceVersion"])


@SHARED
def test_an_ingress_path_the_server_does_not_serve_is_reported_and_nothing_changed(lab, shared, tmp_path):
    """The Ingress path ``/mlflow`` in front of a server without a static prefix (the deploy role's Ingress with the
    role's own annotations: no body limit, 300 s timeouts): through nginx the dashboard answers 404. verify.yml
    reports INGRESS_PATH_MISMATCH, and through the Ingress endpoint (``-e verify_ingress_url``)
    INGRESS_HEALTH_FAILED / INGRESS_ROOT_FAILED with the 404 (critical: the run fails naming them) and changes
    nothing - no path is guessed, no pod is restarted."""
    ns, host = shared
    merge_patch(lab, ns, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "mlflow-ingress"}},
                {"metadata": {"annotations": {ANN + "proxy-body-size": "0", ANN + "proxy-read-timeout": "300",
                                              ANN + "proxy-send-timeout": "300"}}})
    set_path(lab, ns, "/mlflow")
    try:
        _path_mismatch(lab, ns, host, tmp_path)
    finally:
        set_path(lab, ns, "/")


def _path_mismatch(lab, ns: str, host: str, tmp_path: Path) -> None:
    assert request(lab, "GET", host, "/mlflow/").status_code == 404
    ing_before = ingress(lab, ns)
    dep_path = f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment"
    gen_before = lab.request("GET", dep_path).json()["metadata"]["generation"]

    res, rep = verify(lab, ns, tmp_path, "path", f"verify_ingress_url={endpoints(lab)['http']}")
    assert res.rc != 0, "a critical finding must fail the run"
    assert "INGRESS_PATH_MISMATCH" in codes(rep["remaining"]), rep["remaining"]
    # through nginx: the dashboard and health answer 404 under /mlflow (the hint names the path/prefix)
    assert {"INGRESS_ROOT_FAILED", "INGRESS_HEALTH_FAILED"} <= codes(rep["remaining"]), rep["remaining"]
    assert requests_of(rep)[:2] == [("health", 404), ("root", 404)], step(rep)
    root = next(f for f in rep["remaining"] if f["code"] == "INGRESS_ROOT_FAILED")
    assert "static-prefix" in root["evidence"]["next_step"], root
    assert "INGRESS_PATH_MISMATCH" in step(rep)["findings"] and step(rep)["status"] == "failed", step(rep)
    f = next(f for f in rep["remaining"] if f["code"] == "INGRESS_PATH_MISMATCH")
    assert f["evidence"]["paths"] == ["/mlflow"] and f["evidence"]["static_prefix"] is None
    assert rep["remediated"] == []
    assert ingress(lab, ns)["spec"] == ing_before["spec"]
    assert ingress(lab, ns)["metadata"]["annotations"] == ing_before["metadata"]["annotations"]
    assert lab.request("GET", dep_path).json()["metadata"]["generation"] == gen_before


@SHARED
def test_an_ingress_host_missing_from_the_allowed_hosts_is_healed(lab, shared, tmp_path):
    """An Ingress added by hand (in place of the deploy role's) for a host the server does not allow (MLflow >=
    3.5's Host check answers 403 through nginx): verify.yml finds INGRESS_HOST_NOT_ALLOWED and heals it with the
    allowed-hosts patch of the Deployment, which adds the host (and ``host:*``) and keeps the existing entries; the
    API then answers 200 through the Ingress, and a second run changes nothing."""
    ns, _ = shared
    host = f"late.{ns}.example.test"
    r = lab.request("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/mlflow-ingress")
    assert r.status_code in (200, 202, 404), r.text
    wait_for(lambda: lab.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/mlflow-ingress")
             .status_code == 404, 60, 0.2, "Ingress mlflow-ingress deleted")
    create(lab, ns, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                     "metadata": {"name": "mlflow-ingress", "annotations": {
                         ANN + "proxy-body-size": "0", ANN + "proxy-read-timeout": "300",
                         ANN + "proxy-send-timeout": "300"}},
                     "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
                         {"path": "/", "pathType": "Prefix", "backend": {
                             "service": {"name": "mlflow-service", "port": {"number": 5000}}}}]}}]}})
    served(lab, ns)
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    refused = request(lab, "GET", host, search)
    assert refused.status_code == 403, (refused.status_code, refused.text[:300])
    dep_path = f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment"

    def allowed() -> list[str]:
        env = lab.request("GET", dep_path).json()["spec"]["template"]["spec"]["containers"][0].get("env") or []
        return next((e.get("value") or "" for e in env if e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS"), "").split(",")

    before = allowed()
    res, rep = verify(lab, ns, tmp_path, "host")
    assert res.rc == 0, res.output
    assert "INGRESS_HOST_NOT_ALLOWED" in codes(rep["findings_before"]), rep["findings_before"]
    patch = [r for r in rep["remediated"] if r["action"] == "patch"]
    assert patch and patch[0]["changed"] is True and "INGRESS_HOST_NOT_ALLOWED" in patch[0]["reason"], rep["remediated"]
    now = allowed()
    assert {host, f"{host}:*"} <= set(now) and set(before) <= set(now), (before, now)
    assert "INGRESS_HOST_NOT_ALLOWED" not in codes(rep["remaining"])
    ok = request(lab, "GET", host, search)
    assert ok.status_code == 200 and "experiments" in ok.json(), (ok.status_code, ok.text[:300])

    res, rep = verify(lab, ns, tmp_path, "host-again")
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()


def test_expiring_certificate_is_reported_and_its_key_never_printed(lab, lab_namespace, tmp_path):
    """An Ingress whose TLS Secret holds a certificate that expires in 3 days: verify at -vvv reports
    INGRESS_TLS_EXPIRING (verify_tls_min_days=14 typed on the command line), changes nothing for it, and the Secret's
    private key appears 0 times in the output and the report (the reader keeps only the certificate). Through the
    lab's nginx on https (``-e verify_ingress_url``, SNI = the host): the test CA's certificate is INGRESS_TLS_INVALID
    without ``verify_ingress_ca_cert``, valid with it, and not checked with ``verify_ingress_validate_certs=no``."""
    import trustme

    ns = lab_namespace
    host = f"tls.{ns}.example.test"
    ca = trustme.CA()
    leaf = ca.issue_cert(host, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    key_pem = leaf.private_key_pem.bytes()
    create(lab, ns, tls_secret("mlflow-tls", leaf.cert_chain_pems[0].bytes(), key_pem))
    res = deploy(lab, ns, "deploy_ingress_enabled=yes", f"deploy_ingress_hosts={host}",
                 "deploy_ingress_tls_secret=mlflow-tls")
    assert res.rc == 0, res.output
    served(lab, ns)
    gen = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment").json()["metadata"]["generation"]

    https = f"verify_ingress_url={endpoints(lab)['https']}"
    res, rep = verify(lab, ns, tmp_path, "tls", "verify_tls_min_days=14", https, verbosity=3)
    tls = [f for f in rep["findings_before"] if f["code"] == "INGRESS_TLS_EXPIRING"]
    assert tls and tls[0]["evidence"]["days_left"] in (2, 3), rep["findings_before"]
    assert "INGRESS_TLS_EXPIRING" in codes(rep["remaining"]), rep["remaining"]
    assert lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment").json()["metadata"][
        "generation"] == gen
    # the key in every form it has: PEM body lines, the Secret's base64 of the whole PEM
    secrets = [line for line in key_pem.decode().splitlines() if line and not line.startswith("-----")]
    secrets.append(base64.b64encode(key_pem).decode()[:60])
    written = res.stdout + res.stderr + json.dumps(rep)
    assert [x for x in secrets if x in written] == [], "the TLS private key was printed"

    # through nginx with SNI = the host: the test CA is not a system CA, so the certificate is INGRESS_TLS_INVALID
    # (never accepted silently), and the rest is still judged
    assert "INGRESS_TLS_INVALID" in codes(rep["findings_before"]), rep["findings_before"]
    assert requests_of(rep) == [("health", 200), ("root", 200), ("upload", 100)], step(rep)
    # with its CA (verify_ingress_ca_cert) it is valid for the host nginx picked by SNI; with
    # verify_ingress_validate_certs=no (a string, as typed) it is not checked
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    for name, arg in (("ca", f"verify_ingress_ca_cert={ca_file}"), ("novalidate", "verify_ingress_validate_certs=no")):
        res, rep = verify(lab, ns, tmp_path, name, https, arg, "verify_remediate=false")
        assert "INGRESS_TLS_INVALID" not in codes(rep["findings_before"]), (name, rep["findings_before"])
        assert requests_of(rep) == [("health", 200), ("root", 200), ("upload", 100)], (name, step(rep))
