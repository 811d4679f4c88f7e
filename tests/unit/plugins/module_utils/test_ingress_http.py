"""Requests through an Ingress endpoint (plugins/module_utils/_ingress_http.py) against a REAL nginx (Debian's
``nginx``, which scripts/system-packages.sh installs for the lab) in front of an MLflow-like HTTP server in a thread.

nginx behaviour relied on (nginx.org docs, ``client_max_body_size``: "If the size in a request exceeds the configured
value, the 413 (Request Entity Too Large) error is returned to the client"; ``ngx_http_core_module.c`` checks the
Content-Length as soon as the location is found, ``ngx_http_request_body.c`` sends ``100 Continue`` when it starts
to read a body): a header-only POST with ``Expect: 100-continue`` gets 413 or 100 and nothing reaches the upstream.
The same code runs through the lab's ingress-nginx-like controller in tests/integration/test_verify_ingress.py."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils import _ingress_http as H  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._findings import CATALOGUE  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_ingress import ingress_check  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import plan  # noqa: E402
from test_tunnel_fixtures import MlflowLike  # noqa: E402
from test_verify_round import opts  # noqa: E402
from verify_fixtures import SERVICE  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ANN = "nginx.ingress.kubernetes.io/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ca():
    import trustme

    return trustme.CA()


@pytest.fixture(scope="module")
def edge(tmp_path_factory, ca):
    """nginx on two free ports: http (virtual hosts big/small/prefix/auth.test) and https (tls.test; the default
    server presents a certificate for other.test, so only the right SNI gets tls.test's)."""
    d = tmp_path_factory.mktemp("nginx")
    backend = MlflowLike(allowed_hosts=["*"])
    http, https = _free_port(), _free_port()
    for host in ("tls.test", "other.test"):
        leaf = ca.issue_cert(host)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(d / f"{host}.pem"))
    (d / "htpasswd").write_text("alice:{PLAIN}s3cret\n")
    up = f"proxy_pass http://127.0.0.1:{backend.addr[1]}; proxy_set_header Host $host;"
    (d / "nginx.conf").write_text(f"""
daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen 127.0.0.1:{http} default_server; server_name big.test; client_max_body_size 0; location / {{ {up} }} }}
  server {{ listen 127.0.0.1:{http}; server_name small.test; client_max_body_size 1m; location / {{ {up} }} }}
  server {{ listen 127.0.0.1:{http}; server_name auth.test; client_max_body_size 0;
           location / {{ auth_basic "mlflow"; auth_basic_user_file {d}/htpasswd; {up} }} }}
  server {{ listen 127.0.0.1:{https} ssl default_server; server_name other.test; ssl_certificate {d}/other.test.pem;
           ssl_certificate_key {d}/other.test.pem; location / {{ return 404; }} }}
  server {{ listen 127.0.0.1:{https} ssl; server_name tls.test; ssl_certificate {d}/tls.test.pem;
           ssl_certificate_key {d}/tls.test.pem; client_max_body_size 100m; location / {{ {up} }} }}
}}
""")
    proc = subprocess.Popen([NGINX, "-p", f"{d}/", "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", https), timeout=1).close()
            socket.create_connection(("127.0.0.1", http), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
    ca_file = d / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield {"http": f"http://127.0.0.1:{http}", "https": f"https://127.0.0.1:{https}", "backend": backend,
           "ca": str(ca_file), "access_log": d / "access.log"}
    proc.terminate()
    proc.wait(10)
    backend.close()


def ing(host="big.test", path="/", tls=None, status_ip=None, name="mlflow-ingress", annotations=None) -> dict:
    spec = {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
        {"path": path, "pathType": "Prefix", "backend": {"service": {"name": "mlflow-service",
                                                                     "port": {"number": 5000}}}}]}}]}
    if tls:
        spec["tls"] = tls
    out = {"metadata": {"name": name, "annotations": annotations if annotations is not None else {
        ANN + "proxy-body-size": "0", ANN + "proxy-read-timeout": "300", ANN + "proxy-send-timeout": "300"}},
        "spec": spec}
    if status_ip:
        out["status"] = {"loadBalancer": {"ingress": [{"ip": status_ip}]}}
    return out


def run(obj, **kw):
    detail = {"name": obj["metadata"]["name"]}
    o = H.HttpOptions(**{"timeout": 5.0, "min_body_size": "20m", **kw})
    found = H.check_ingress(obj, detail, service="mlflow-service", static_prefix=None, health_path="/health", o=o)
    return found, detail["http"]


def codes(found) -> set:
    return {f["code"] for f in found}


def test_a_healthy_ingress_passes_three_requests_and_the_upload_reaches_nothing(edge):
    before = list(edge["backend"].requests)
    found, http = run(ing(), url=edge["http"])
    assert found == []
    assert http["endpoint"] == edge["http"] and http["source"] == "verify_ingress_url" and http["host"] == "big.test"
    assert [(r["check"], r["method"], r["path"], r["status"], r["ok"]) for r in http["requests"]] == [
        ("health", "GET", "/health", 200, True), ("root", "GET", "/", 200, True), ("upload", "POST", "/health", 100, True)]
    assert http["requests"][2]["content_length"] == 20 * 1024 * 1024
    assert all(isinstance(r["ms"], float) for r in http["requests"])
    # the MLflow-like server saw the two GETs with the Ingress host, and nothing of the upload check
    assert edge["backend"].requests[len(before):] == [("/health", "big.test"), ("/", "big.test")]


def test_a_body_limit_below_the_minimum_is_a_413_at_once(edge):
    found, http = run(ing(host="small.test"), url=edge["http"])
    assert codes(found) == {"INGRESS_UPLOAD_REFUSED"}
    f = found[0]
    assert f["severity"] == "warning" and f["evidence"]["status"] == 413
    assert f["evidence"]["content_length"] == 20 * 1024 * 1024 and f["evidence"]["wanted"] == "20m"
    assert http["requests"][2]["status"] == 413
    # without INGRESS_BODY_TOO_SMALL the 413 was asked again (the annotation allows the size) before reporting
    assert http["requests"][2]["attempts"] > 1
    # 1m: an upload of 512k passes the same nginx
    found, http = run(ing(host="small.test"), url=edge["http"], min_body_size="512k")
    assert found == [] and http["requests"][2]["status"] == 100


def test_the_413_shares_the_body_size_patch_and_is_planned_once(edge):
    small = ing(host="small.test", annotations={ANN + "proxy-body-size": "1m", ANN + "proxy-read-timeout": "300",
                                                ANN + "proxy-send-timeout": "300"})
    step = ingress_check([small], SERVICE, None, service_name="mlflow-service", min_body_size="20m")
    step = H.through_ingresses(step, [small], service="mlflow-service", static_prefix=None, health_path="/health",
                               o=H.HttpOptions(url=edge["http"], timeout=5.0, min_body_size="20m"))
    assert {"INGRESS_BODY_TOO_SMALL", "INGRESS_UPLOAD_REFUSED"} <= codes(step["findings"])
    assert "through the Ingress: mlflow-ingress via " + edge["http"] in step["summary"]
    assert step["details"]["ingresses"][0]["http"]["requests"][2]["status"] == 413
    refused = next(f for f in step["findings"] if f["code"] == "INGRESS_UPLOAD_REFUSED")
    assert "attempts" not in step["details"]["ingresses"][0]["http"]["requests"][2]  # explained: not asked again
    assert refused["evidence"]["annotation"] == ANN + "proxy-body-size" and refused["evidence"]["value"] == "1m"
    p = plan([step])
    assert [a["action"] for a in p["actions"]] == ["patch_ingress"]
    assert p["ingress_patches"] == [{"name": "mlflow-ingress", "annotations": {ANN + "proxy-body-size": "20m"},
                                     "previous": {ANN + "proxy-body-size": "1m"}, "served": True}]
    assert p["actions"][0]["reason"] == ["INGRESS_BODY_TOO_SMALL", "INGRESS_UPLOAD_REFUSED"]
    # the annotation allows the size yet nginx refuses: the limit is elsewhere, reported (nothing to patch)
    alone = plan([{"step": "ingress", "findings": [refused | {"evidence": {"ingress": "mlflow-ingress", "status": 413}}]}])
    assert alone["actions"] == [] and "ConfigMap" in alone["report_only"][0]["next_step"]
    assert CATALOGUE["INGRESS_UPLOAD_REFUSED"].action == "patch_ingress"


def test_an_ingress_path_the_server_does_not_serve_is_a_404_with_a_hint(edge):
    found, http = run(ing(path="/mlflow"), url=edge["http"])
    assert codes(found) == {"INGRESS_HEALTH_FAILED", "INGRESS_ROOT_FAILED"}
    assert [r["path"] for r in http["requests"]] == ["/mlflow/health", "/mlflow/", "/mlflow/health"]
    root = next(f for f in found if f["code"] == "INGRESS_ROOT_FAILED")
    assert root["severity"] == "critical" and root["evidence"]["status"] == 404
    assert "static-prefix" in root["evidence"]["next_step"] and "INGRESS_PATH_MISMATCH" in root["evidence"]["next_step"]


def test_a_closed_port_is_unreachable_and_the_other_requests_are_skipped():
    port = _free_port()
    found, http = run(ing(), url=f"http://127.0.0.1:{port}")
    assert codes(found) == {"INGRESS_UNREACHABLE"} and len(http["requests"]) == 1
    f = found[0]
    assert f["severity"] == "warning" and f["evidence"]["endpoint"] == f"http://127.0.0.1:{port}"
    assert "verify_ingress_url" in f["evidence"]["next_step"] and "refused" in f["message"].lower()


def test_an_endpoint_that_never_answers_is_unreachable_within_the_timeout():
    with socket.socket() as quiet:  # accepts connections (the kernel's backlog) and never answers
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(8)
        found, http = run(ing(), url=f"http://127.0.0.1:{quiet.getsockname()[1]}", timeout=0.3)
    assert codes(found) == {"INGRESS_UNREACHABLE"}
    assert "no answer within 0.3s (verify_probe_timeout)" in found[0]["message"]


def test_tls_with_sni_and_the_ca_passes(edge):
    found, http = run(ing(host="tls.test", tls=[{"hosts": ["tls.test"], "secretName": "t"}]), url=edge["https"],
                      ca_cert=edge["ca"])
    assert found == [] and [r["status"] for r in http["requests"]] == [200, 200, 100]
    assert "certificate" not in http


def test_an_invalid_certificate_is_a_finding_and_the_rest_is_still_judged(edge):
    # the system CAs do not know the test CA: never accepted silently
    found, http = run(ing(host="tls.test"), url=edge["https"])
    assert codes(found) == {"INGRESS_TLS_INVALID"} and found[0]["severity"] == "warning"
    assert "certificate verify failed" in found[0]["message"] or "unable to get" in found[0]["message"]
    assert [r["status"] for r in http["requests"]] == [200, 200, 100] and "invalid" in http["certificate"]
    # the wrong host for the certificate (SNI other.test gets other.test's cert; Host mismatch is checked too)
    found, _http = run(ing(host="nope.test"), url=edge["https"], ca_cert=edge["ca"])
    assert "INGRESS_TLS_INVALID" in codes(found)
    # verify_ingress_validate_certs=false: the operator's choice, said in the details
    found, http = run(ing(host="tls.test"), url=edge["https"], validate_certs=False)
    assert found == [] and "not verified" in http["certificate"]


def test_a_401_is_authentication_required_not_a_broken_ingress(edge):
    found, http = run(ing(host="auth.test"), url=edge["http"])
    assert codes(found) == {"INGRESS_AUTH_REQUIRED"} and {f["severity"] for f in found} == {"info"}
    assert [r["status"] for r in http["requests"]] == [401, 401, 401]
    found, http = run(ing(host="auth.test"), url=edge["http"], auth=("alice", "s3cret"))
    assert found == [] and [r["status"] for r in http["requests"]] == [200, 200, 100]
    assert "s3cret" not in repr(http)


def test_the_endpoint_comes_from_the_status_or_the_url():
    assert H.endpoint(ing(), "big.test") is None
    ep = H.endpoint(ing(status_ip="10.0.0.7"), "big.test")
    assert (ep.url, ep.host, ep.source) == ("http://10.0.0.7:80", "big.test", "status.loadBalancer")
    tls = ing(status_ip="10.0.0.7", tls=[{"hosts": ["big.test"], "secretName": "t"}])
    assert H.endpoint(tls, "big.test").url == "https://10.0.0.7:443"
    named = ing()
    named["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
    assert H.endpoint(named, "big.test").url == "http://lb.example.com:80"
    assert H.endpoint(tls, "big.test", "https://127.0.0.1:8443").url == "https://127.0.0.1:8443"
    assert H.route(ing(path="/something(/|$)(.*)"), "mlflow-service") == ("big.test", "/something")
    found, http = run(ing())
    assert codes(found) == {"INGRESS_NO_ENDPOINT"} and found[0]["severity"] == "info" and http["endpoint"] is None


@pytest.mark.parametrize("url", ["ftp://x", "https://lb.example.com/mlflow", "127.0.0.1:8443", "http://:80"])
def test_a_bad_ingress_url_names_the_variable(url):
    with pytest.raises(VerifyError, match=r"verify_ingress_url: expected the ingress controller's address as "
                                          r"http\(s\)://host\[:port\]"):
        opts(ingress_url=url)
