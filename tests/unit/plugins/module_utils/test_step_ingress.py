"""The ingress step of verify (plugins/module_utils/_step_ingress.py), and its wiring into one round
(_verify_reader/_verify_round) against a fake Kubernetes API at the module_utils boundary. Every finding, the
"no Ingress" and the 403 cases. The same code path runs for real against the lab's nginx in
tests/integration/test_verify_ingress.py."""

from __future__ import annotations

import base64
import copy
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._findings import CATALOGUE  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_ingress import ingress_check, secret_summary  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import plan  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_round import run_round  # noqa: E402
from test_verify_round import NS, FakeAPI, cluster, opts  # noqa: E402
from verify_fixtures import GOOD_SETTINGS, SERVICE, UVICORN  # noqa: E402

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ING_PATH = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"
SIZED = {"nginx.ingress.kubernetes.io/proxy-body-size": "0", "nginx.ingress.kubernetes.io/proxy-read-timeout": "300",
         "nginx.ingress.kubernetes.io/proxy-send-timeout": "300"}


def ingress(name="mlflow-ingress", host="mlflow.example.test", path="/", port=5000, service="mlflow-service",
            annotations=None, tls=None, labels=None) -> dict:
    backend = {"service": {"name": service, "port": {"number": port} if isinstance(port, int) else {"name": port}}}
    spec = {"ingressClassName": "nginx",
            "rules": [{"host": host, "http": {"paths": [{"path": path, "pathType": "Prefix", "backend": backend}]}}]}
    if tls:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {},
                         "annotations": SIZED if annotations is None else annotations}, "spec": spec}


def settings(allowed=("mlflow.example.test", "mlflow.example.test:*"), prefix=None, base=None) -> dict:
    return {**(base or GOOD_SETTINGS), "host_check": True, "allowed_hosts": list(allowed) if allowed != "default" else "default",
            "static_prefix": prefix}


def cert(hosts=("mlflow.example.test",), days=90) -> str:
    """A self-signed certificate (base64 PEM, as in a Secret's data) for ``hosts`` valid ``days`` from NOW."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=400))
         .not_valid_after(NOW + timedelta(days=days))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
         .sign(key, hashes.SHA256()))
    return base64.b64encode(c.public_bytes(serialization.Encoding.PEM)).decode()


def tls_secret(crt, type_="kubernetes.io/tls") -> dict:
    return {"kind": "Secret", "type": type_, "metadata": {"name": "mlflow-tls"},
            "data": {"tls.crt": crt, "tls.key": base64.b64encode(b"PRIVATE-KEY-BYTES").decode()}}


def check(ings, s=None, secrets=None, **kw):
    kw.setdefault("service_name", "mlflow-service")
    kw.setdefault("namespace", NS)
    return ingress_check(ings, SERVICE, s if s is not None else settings(), secrets, now=NOW, **kw)


def codes(step) -> list[str]:
    return [f["code"] for f in step["findings"]]


# ------------------------------------------------------------------------------------------------------ the step
def test_an_ingress_sized_for_mlflow_is_ok():
    st = check([ingress()])
    assert st["step"] == "ingress" and st["status"] == "ok" and codes(st) == []
    assert st["summary"] == "Ingress mlflow-ingress (mlflow.example.test) -> Service mlflow-service"


def test_no_ingress_routing_to_the_service_is_ok_with_a_line_and_nothing_else():
    other = ingress(service="something-else", annotations={})
    st = check([other])
    assert st["status"] == "ok" and st["findings"] == []
    assert st["summary"] == "no Ingress routes to Service mlflow-service: nothing to check"


def test_a_403_on_the_list_is_an_info_line_naming_the_permission():
    st = check(None, read_error="list ingresses.networking.k8s.io in asgard is forbidden to these credentials")
    assert st["status"] == "ok" and codes(st) == ["INGRESS_NOT_READABLE"]
    assert st["findings"][0]["severity"] == "info" and "list ingresses.networking.k8s.io" in st["findings"][0]["message"]


@pytest.mark.parametrize("annotations,wanted,found", [
    ({}, "0", True),  # ingress-nginx's default 1m
    ({**SIZED, "nginx.ingress.kubernetes.io/proxy-body-size": "1m"}, "0", True),
    ({**SIZED, "nginx.ingress.kubernetes.io/proxy-body-size": "1m"}, "100m", True),
    ({**SIZED, "nginx.ingress.kubernetes.io/proxy-body-size": "512M"}, "100m", False),
    ({**SIZED, "nginx.ingress.kubernetes.io/proxy-body-size": "1g"}, "100m", False),
    ({**SIZED, "nginx.ingress.kubernetes.io/proxy-body-size": "0"}, "100m", False),
])
def test_body_size_below_the_minimum(annotations, wanted, found):
    st = check([ingress(annotations=annotations)], min_body_size=wanted)
    assert ("INGRESS_BODY_TOO_SMALL" in codes(st)) is found
    if found:
        f = next(f for f in st["findings"] if f["code"] == "INGRESS_BODY_TOO_SMALL")
        assert f["severity"] == "warning" and f["evidence"]["wanted"] == wanted
        assert f["evidence"]["set"] is bool(annotations)


@pytest.mark.parametrize("body,found", [("1m", True), (None, True), ("99m", True), ("100m", False), ("500m", False),
                                        ("0", False)])
def test_the_default_minimum_is_100m_so_a_deliberate_larger_limit_is_kept(body, found):
    """verify_ingress_min_body_size defaults to 100m (the option's default, not a test value): ingress-nginx's 1m
    default and any smaller limit are flagged, an operator's 500m or no limit is left alone."""
    ann = {**SIZED}
    if body is None:
        ann.pop("nginx.ingress.kubernetes.io/proxy-body-size")
    else:
        ann["nginx.ingress.kubernetes.io/proxy-body-size"] = body
    st = check([ingress(annotations=ann)])
    assert ("INGRESS_BODY_TOO_SMALL" in codes(st)) is found
    assert opts().ingress_min_body_size == "100m"


def test_timeouts_below_the_worker_timeout_name_each_annotation():
    ann = {**SIZED, "nginx.ingress.kubernetes.io/proxy-read-timeout": "10"}
    st = check([ingress(annotations=ann)])
    f = next(f for f in st["findings"] if f["code"] == "INGRESS_TIMEOUT_TOO_SHORT")
    assert f["evidence"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-read-timeout": 10}
    assert f["evidence"]["wanted"] == 300 and "proxy-read-timeout 10s" in f["message"]
    # absent: ingress-nginx's 60 s, both directions
    st = check([ingress(annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "0"})])
    f = next(f for f in st["findings"] if f["code"] == "INGRESS_TIMEOUT_TOO_SHORT")
    assert set(f["evidence"]["annotations"].values()) == {60} and len(f["evidence"]["annotations"]) == 2


def test_the_worker_timeout_is_gunicorns_when_longer_and_the_minimum_on_uvicorn():
    long_gunicorn = settings(base={**GOOD_SETTINGS, "gunicorn": {**GOOD_SETTINGS["gunicorn"], "timeout": 600}})
    f = next(f for f in check([ingress()], long_gunicorn)["findings"] if f["code"] == "INGRESS_TIMEOUT_TOO_SHORT")
    assert f["evidence"]["wanted"] == 600
    assert "INGRESS_TIMEOUT_TOO_SHORT" not in codes(check([ingress()], settings(base=UVICORN)))
    assert "INGRESS_TIMEOUT_TOO_SHORT" in codes(check([ingress()], settings(base=UVICORN), min_gunicorn_timeout=900))


def test_a_host_not_in_the_allowed_hosts():
    st = check([ingress()], settings(allowed=("localhost:*",)))
    f = next(f for f in st["findings"] if f["code"] == "INGRESS_HOST_NOT_ALLOWED")
    assert f["severity"] == "critical" and f["evidence"]["hosts"] == ["mlflow.example.test"]
    # MLflow's defaults do not allow a DNS name either
    assert "INGRESS_HOST_NOT_ALLOWED" in codes(check([ingress()], settings(allowed="default")))
    # before 3.5 (allowed_hosts None, host_check False) and with the check disabled: not judged
    old = {**settings(), "allowed_hosts": None, "host_check": False}
    assert "INGRESS_HOST_NOT_ALLOWED" not in codes(check([ingress()], old))
    assert "INGRESS_HOST_NOT_ALLOWED" not in codes(check([ingress()], settings(allowed=("*",))))
    assert "INGRESS_HOST_NOT_ALLOWED" not in codes(check([ingress()], settings(allowed=("*.example.test",))))


@pytest.mark.parametrize("path,prefix,found", [
    ("/mlflow", None, True), ("/", None, False), ("/", "/mlflow", False), ("/mlflow", "/mlflow", False),
    ("/mlflow/", "/mlflow", False), ("/other", "/mlflow", True), ("/mlflow-x", "/mlflow", True),
])
def test_path_against_the_static_prefix(path, prefix, found):
    st = check([ingress(path=path)], settings(prefix=prefix))
    assert ("INGRESS_PATH_MISMATCH" in codes(st)) is found
    if found:
        assert st["status"] == "failed"


def test_a_rewrite_target_path_is_not_judged():
    ann = {**SIZED, "nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
    assert "INGRESS_PATH_MISMATCH" not in codes(check([ingress(path="/mlflow(/|$)(.*)", annotations=ann)]))


def test_a_backend_port_the_service_does_not_expose():
    st = check([ingress(port=8080)])
    f = next(f for f in st["findings"] if f["code"] == "INGRESS_BACKEND_MISMATCH")
    assert "port 8080" in f["message"] and f["evidence"]["service_ports"] == [5000]
    assert "INGRESS_BACKEND_MISMATCH" not in codes(check([ingress(port="http")]))  # by name
    assert "INGRESS_BACKEND_MISMATCH" in codes(check([ingress(port="grpc")]))


def test_tls_secret_missing_wrong_type_or_not_a_certificate():
    tls = [{"hosts": ["mlflow.example.test"], "secretName": "mlflow-tls"}]
    for secrets in ({"mlflow-tls": None}, {"mlflow-tls": secret_summary(tls_secret(cert(), "Opaque"))},
                    {"mlflow-tls": secret_summary(tls_secret(base64.b64encode(b"junk").decode()))}):
        st = check([ingress(tls=tls)], secrets=secrets)
        assert codes(st) == ["INGRESS_TLS_MISSING"], secrets
    assert codes(check([ingress(tls=[{"hosts": ["mlflow.example.test"]}])])) == ["INGRESS_TLS_MISSING"]
    ok = check([ingress(tls=tls)], secrets={"mlflow-tls": secret_summary(tls_secret(cert()))})
    assert codes(ok) == [] and ok["details"]["ingresses"][0]["tls"][0]["dns_names"] == ["mlflow.example.test"]


def test_tls_without_the_cryptography_library_names_it_instead_of_blaming_the_secret(monkeypatch):
    """An execution environment without cryptography: the certificate is not 'not a PEM certificate'."""
    tls = [{"hosts": ["mlflow.example.test"], "secretName": "mlflow-tls"}]
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography -> ImportError
    with pytest.raises(VerifyError, match=r"Python library cryptography .*requirements\.txt.*ansible_python_interpreter"):
        check([ingress(tls=tls)], secrets={"mlflow-tls": secret_summary(tls_secret(base64.b64encode(b"x").decode()))})


def test_tls_expiring_expired_or_not_covering_the_host():
    tls = [{"hosts": ["mlflow.example.test"], "secretName": "mlflow-tls"}]

    def one(crt, **kw):
        st = check([ingress(tls=tls)], secrets={"mlflow-tls": secret_summary(tls_secret(crt))}, **kw)
        return [f for f in st["findings"] if f["code"] == "INGRESS_TLS_EXPIRING"]

    soon = one(cert(days=5))
    assert soon and soon[0]["severity"] == "warning" and "5 day(s) left" in soon[0]["message"]
    assert one(cert(days=5), tls_min_days=3) == []
    expired = one(cert(days=-1))
    assert expired and expired[0]["severity"] == "critical" and "expired on" in expired[0]["message"]
    other = one(cert(hosts=("other.example.test",)))
    assert other and other[0]["evidence"]["uncovered"] == ["mlflow.example.test"]
    assert one(cert(hosts=("*.example.test",))) == []


def test_the_secret_key_never_leaves_the_reduction():
    summary = secret_summary(tls_secret(cert()))
    assert set(summary) == {"type", "crt"} and "PRIVATE" not in json.dumps(summary)


def test_verify_ingress_name_selects_one_and_a_missing_one_is_reported():
    a, b = ingress(name="a"), ingress(name="b", port=8080)
    assert codes(check([a, b], ingress_name="a")) == []
    st = check([a, b], ingress_name="c")
    assert codes(st) == ["INGRESS_NOT_FOUND"] and st["status"] == "warning"


# ------------------------------------------------------------------------------------------------------ rules
def test_nginx_sizes():
    assert R.nginx_size_bytes("1m") == 1048576 and R.nginx_size_bytes("512k") == 524288
    assert R.nginx_size_bytes("0") == 0 and R.nginx_size_bytes("1 m") is None
    assert R.body_size_allows("0", "0") and not R.body_size_allows("5g", "0")


# ------------------------------------------------------------------------------------------------------ the plan
def test_the_plan_reports_ingress_findings_and_patches_allowed_hosts_with_the_ingress_host():
    st = check([ingress(path="/mlflow", annotations={})], settings(allowed=("localhost:*",)))
    assert set(codes(st)) == {"INGRESS_HOST_NOT_ALLOWED", "INGRESS_PATH_MISMATCH", "INGRESS_BODY_TOO_SMALL",
                              "INGRESS_TIMEOUT_TOO_SHORT"}
    p = plan([st], settings(allowed=("localhost:*",)))
    assert p["patch_targets"] == ["allowed_hosts"] and p["actions"][0]["reason"] == ["INGRESS_HOST_NOT_ALLOWED"]
    assert p["patch_vars"]["patch_allowed_hosts_extra"] == ["mlflow.example.test", "mlflow.example.test:*"]
    assert [a["action"] for a in p["actions"]] == ["patch", "patch_ingress"]
    assert {r["code"] for r in p["report_only"]} == {"INGRESS_PATH_MISMATCH"}
    assert all(CATALOGUE[c].steps == ("ingress",) for c in codes(st))


# ------------------------------------------------------------------------------------------------------ one round
def full(**kw):
    kw.setdefault("run_tags", ["verify_pods", "verify_service", "verify_ingress"])
    return opts(**kw)


def test_a_round_lists_the_ingresses_once_and_reads_only_their_tls_secrets():
    objs = cluster()
    tls = [{"hosts": ["mlflow.example.test"], "secretName": "mlflow-tls"}]
    other = ingress(name="x", service="other", tls=[{"secretName": "other-tls"}])
    objs[ING_PATH] = {"items": [ingress(tls=tls, annotations={}), other]}
    objs[f"/api/v1/namespaces/{NS}/secrets/mlflow-tls"] = tls_secret(cert(days=3650))
    api = FakeAPI(objs)
    r = run_round(api, full())
    step = next(s for s in r["steps"] if s["step"] == "ingress")
    # the fixture's server runs MLflow's default allowed hosts: a DNS name is refused; the Ingress has no
    # status.loadBalancer and no verify_ingress_url is given: no request is sent through it (info)
    assert {f["code"] for f in step["findings"]} == {"INGRESS_BODY_TOO_SMALL", "INGRESS_TIMEOUT_TOO_SHORT",
                                                     "INGRESS_HOST_NOT_ALLOWED", "INGRESS_NO_ENDPOINT"}
    assert next(f for f in step["findings"] if f["code"] == "INGRESS_NO_ENDPOINT")["severity"] == "info"
    assert api.paths.count(ING_PATH) == 1 and f"/api/v1/namespaces/{NS}/secrets/other-tls" not in api.paths
    assert any(line.startswith("4c. Checks the Ingress in front of the Service: FAILED") for line in r["console"])
    assert "PRIVATE-KEY" not in json.dumps(r) and base64.b64encode(b"PRIVATE-KEY-BYTES").decode() not in json.dumps(r)


def test_a_round_with_no_ingress_has_an_ok_ingress_line():
    objs = cluster()
    objs[ING_PATH] = {"items": []}
    r = run_round(FakeAPI(objs), full())
    assert r["healthy"] is True
    assert "4c. Checks the Ingress in front of the Service: OK - no Ingress routes to Service mlflow-service: " \
           "nothing to check" in r["console"]


def test_a_round_forbidden_to_list_ingresses_or_read_secrets_goes_on():
    objs = cluster()
    objs[ING_PATH] = KubeError("GET: HTTP 403", status=403)
    r = run_round(FakeAPI(objs), full())
    step = next(s for s in r["steps"] if s["step"] == "ingress")
    assert r["healthy"] is True and step["status"] == "ok"
    assert [f["code"] for f in step["findings"]] == ["INGRESS_NOT_READABLE"]
    objs = cluster()
    objs[ING_PATH] = {"items": [ingress(tls=[{"hosts": ["mlflow.example.test"], "secretName": "mlflow-tls"}])]}
    objs[f"/api/v1/namespaces/{NS}/secrets/mlflow-tls"] = KubeError("GET: HTTP 403", status=403)
    step = next(s for s in run_round(FakeAPI(objs), full())["steps"] if s["step"] == "ingress")
    info = [f for f in step["findings"] if f["code"] == "INGRESS_NOT_READABLE"]
    assert info and "get secrets in asgard is forbidden" in info[0]["message"]
    assert not {"INGRESS_TLS_MISSING", "INGRESS_TLS_EXPIRING"} & {f["code"] for f in step["findings"]}


def test_bad_ingress_options_name_the_variable():
    with pytest.raises(VerifyError, match="verify_ingress_min_body_size: expected an nginx size.*got '1 MB'"):
        opts(ingress_min_body_size="1 MB")
    with pytest.raises(VerifyError, match="expected verify_tls_min_days >= 0, got -1"):
        opts(tls_min_days=-1)
    with pytest.raises(VerifyError, match="verify_ingress_name: 'Bad_Name' is not an Ingress name"):
        opts(ingress_name="Bad_Name")


def test_the_ingress_fixture_is_not_mutated():
    ing = ingress()
    before = copy.deepcopy(ing)
    check([ing])
    assert ing == before


# ------------------------------------------------------------------------------------------------------ remediation
def test_body_and_timeout_plan_one_merge_patch_of_only_those_annotations():
    ann = {"nginx.ingress.kubernetes.io/proxy-body-size": "1m", "nginx.ingress.kubernetes.io/proxy-read-timeout": "10",
           "nginx.ingress.kubernetes.io/proxy-send-timeout": "300", "other/annotation": "kept"}
    st = check([ingress(annotations=ann)])
    p = plan([st], settings())
    assert [a["action"] for a in p["actions"]] == ["patch_ingress"] and p["needed"] is True
    assert p["ingress_patches"] == [{"name": "mlflow-ingress", "annotations": {
        "nginx.ingress.kubernetes.io/proxy-body-size": "100m", "nginx.ingress.kubernetes.io/proxy-read-timeout": "300"},
        "previous": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m",
                     "nginx.ingress.kubernetes.io/proxy-read-timeout": "10"}, "served": True}]
    assert p["actions"][0]["reason"] == ["INGRESS_BODY_TOO_SMALL", "INGRESS_TIMEOUT_TOO_SHORT"]
    assert p["patch"] is False and p["restart"] is False
    # an audit (no remediation kinds) or remediations without patch: reported with the values to set
    for enabled in ([], ["restart", "migrate"]):
        audit = plan([st], settings(), enabled=enabled)
        assert audit["actions"] == [] and {r["code"] for r in audit["report_only"]} == {
            "INGRESS_BODY_TOO_SMALL", "INGRESS_TIMEOUT_TOO_SHORT"}
    # already patched in this run and still there: not repeated
    again = plan([st], settings(), done=[{"action": "patch_ingress", "reason": ["INGRESS_BODY_TOO_SMALL",
                                                                                "INGRESS_TIMEOUT_TOO_SHORT"],
                                          "changed": True, "failed": False}])
    assert again["actions"] == [] and all("not repeated" in r["message"] for r in again["report_only"])


def _not_serving(code: str = "INGRESS_HEALTH_FAILED", name: str = "mlflow-ingress") -> dict:
    return {"step": "ingress", "findings": [
        {"code": code, "severity": "critical", "message": f"{name}: 502 through the Ingress",
         "evidence": {"ingress": name, "status": 502}}], "details": {"ingresses": []}}


def test_an_ingress_that_stops_serving_after_the_patch_gets_its_annotations_back_once():
    """Like the Deployment patch's rollback: the patch of this run (read back as changed) was made on an Ingress that
    served the requests through it; the next check finds it no longer does, so the plan restores what the patch
    replaced (an annotation that was not set is removed: null in the merge patch), once per run."""
    ann = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "10"}  # body size not set: ingress-nginx's 1m
    first = plan([check([ingress(annotations=ann)])], settings())
    patched = first["ingress_patches"]
    assert patched[0]["previous"] == {"nginx.ingress.kubernetes.io/proxy-body-size": None,
                                      "nginx.ingress.kubernetes.io/proxy-read-timeout": "10",
                                      "nginx.ingress.kubernetes.io/proxy-send-timeout": None}
    done = [{"action": "patch_ingress", "reason": first["actions"][0]["reason"], "ingresses": patched,
             "changed": True, "failed": False}]
    p = plan([_not_serving()], settings(), done=done)
    [rb] = [a for a in p["actions"] if a.get("rollback")]
    assert rb["action"] == "patch_ingress" and rb["reason"] == ["INGRESS_HEALTH_FAILED"]
    assert rb["ingresses"] == [{"name": "mlflow-ingress", "annotations": patched[0]["previous"],
                                "previous": patched[0]["annotations"], "served": False}]
    assert p["ingress_patches"] == rb["ingresses"] and p["needed"] is True
    assert "proxy-body-size=(unset)" in rb["description"] and "proxy-read-timeout=10" in rb["description"]
    # once per run: after the rollback, a still broken Ingress is reported, not rolled back again
    done.append({"action": "patch_ingress", "rollback": True, "reason": rb["reason"], "ingresses": rb["ingresses"],
                 "changed": True, "failed": False})
    assert not [a for a in plan([_not_serving()], settings(), done=done)["actions"] if a.get("rollback")]


def test_no_rollback_when_the_ingress_did_not_serve_before_or_the_patch_did_not_happen():
    ann = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "10"}
    already_broken = plan([check([ingress(annotations=ann)]), _not_serving("INGRESS_ROOT_FAILED")], settings())
    assert already_broken["ingress_patches"][0]["served"] is False
    entry = already_broken["ingress_patches"]
    for rec in ({"changed": True, "failed": False, "ingresses": entry},  # it did not serve before the patch
                {"changed": False, "failed": True, "ingresses": [dict(entry[0], served=True)]}):  # nothing changed
        p = plan([_not_serving()], settings(), done=[{"action": "patch_ingress", "reason": [], **rec}])
        assert not [a for a in p["actions"] if a.get("rollback")], rec


def test_an_unreachable_ingress_after_the_patch_is_not_rolled_back():
    """No connection after the patch is a network problem between verify and the controller, not the annotations':
    reported (a warning), the patch kept."""
    ann = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "10"}
    first = plan([check([ingress(annotations=ann)])], settings())
    done = [{"action": "patch_ingress", "reason": first["actions"][0]["reason"], "ingresses": first["ingress_patches"],
             "changed": True, "failed": False}]
    p = plan([_not_serving("INGRESS_UNREACHABLE")], settings(), done=done)
    assert not [a for a in p["actions"] if a.get("rollback")]


def test_a_helm_managed_ingress_is_reported_with_the_values_not_patched():
    ing = ingress(annotations={}, labels={"app.kubernetes.io/managed-by": "Helm"})
    ing["metadata"]["annotations"] = {"meta.helm.sh/release-name": "tracking"}
    p = plan([check([ing])], settings())
    assert p["actions"] == [] and p["ingress_patches"] == []
    hints = {r["code"]: r["next_step"] for r in p["report_only"]}
    assert "managed by Helm (release tracking)" in hints["INGRESS_BODY_TOO_SMALL"]
    assert 'nginx.ingress.kubernetes.io/proxy-read-timeout: "300"' in hints["INGRESS_TIMEOUT_TOO_SHORT"]


def test_the_ingress_patch_outcome_is_read_back_from_the_cluster():
    objs = cluster()
    small = ingress(annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "1m"})
    objs[ING_PATH] = {"items": [small]}
    objs[f"{ING_PATH}/mlflow-ingress"] = small
    api = FakeAPI(objs)
    o = full(run_tags=["verify_pods", "verify_service", "verify_ingress", "verify_remediate"])
    first = run_round(api, o)
    assert "patch_ingress" in [a["action"] for a in first["plan"]["actions"]]
    # the patch did not happen (say, it failed): never reported as a change
    second = run_round(api, o, state=first["state"], errors={"patch_ingress": "HTTP 403"})
    rec = next(r for r in second["state"]["remediated"] if r["action"] == "patch_ingress")
    assert rec["changed"] is False and rec["failed"] is True
    # the cluster has the annotations now (the role's merge patch ran)
    healed = ingress(annotations={**SIZED, **first["plan"]["ingress_patches"][0]["annotations"]})
    assert healed["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "100m"
    objs[ING_PATH] = {"items": [healed]}
    objs[f"{ING_PATH}/mlflow-ingress"] = healed
    third = run_round(api, o, state={**first["state"]})
    rec = next(r for r in third["state"]["remediated"] if r["action"] == "patch_ingress")
    assert rec["changed"] is True and rec["failed"] is False
    step = next(s for s in third["steps"] if s["step"] == "ingress")
    assert not {"INGRESS_BODY_TOO_SMALL", "INGRESS_TIMEOUT_TOO_SHORT"} & {f["code"] for f in step["findings"]}
