"""Target resolution (Service -> selector + targetPort -> Ready pod) and target option validation."""

from __future__ import annotations

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._target import (
    Target,
    TargetError,
    resolve,
    validate_target_params,
)
from test_tunnel_fixtures import MemoryKube, PortForwardServer, pod, service


@pytest.fixture
def kube():
    pf = PortForwardServer()
    yield MemoryKube(pf)
    pf.close()


def test_service_numeric_target_port_newest_ready_pod(kube):
    kube.services[("asgard", "mlflow-service")] = service(port=80, target_port=5000)
    kube.pods["asgard"] = [
        pod("old", created="2025-01-01T00:00:00Z"),
        pod("new", created="2025-01-02T00:00:00Z"),
        pod("newest-not-ready", created="2025-01-03T00:00:00Z", ready=False),
        pod("terminating", created="2025-01-04T00:00:00Z", terminating=True),
        pod("other-app", labels={"app": "db"}, created="2025-01-05T00:00:00Z"),
    ]
    res = resolve(kube, Target())
    assert (res.pod, res.port, res.service_port) == ("new", 5000, 80)


def test_service_named_target_port_and_remote_port_selects_service_port(kube):
    svc = service(port=5000, target_port="http")
    svc["spec"]["ports"].append({"port": 9000, "targetPort": 9999})
    kube.services[("asgard", "mlflow-service")] = svc
    kube.pods["asgard"] = [pod("p", port=5555)]
    assert resolve(kube, Target()).port == 5555
    assert resolve(kube, Target(remote_port=9000)).port == 9999


def test_service_port_not_found_is_bad_input(kube):
    kube.services[("asgard", "mlflow-service")] = service(port=5000)
    kube.pods["asgard"] = [pod("p")]
    with pytest.raises(TargetError) as ei:
        resolve(kube, Target(remote_port=8080))
    assert ei.value.code == "SERVICE_PORT_MISSING" and ei.value.bad_input  # PORT_NOT_FOUND merged into it
    assert "8080" in str(ei.value) and "5000" in str(ei.value)


def test_missing_service_vs_missing_namespace(kube):
    with pytest.raises(TargetError) as e1:
        resolve(kube, Target(service="nope"))
    assert (e1.value.code, e1.value.bad_input) == ("SERVICE_NOT_FOUND", True)
    assert "'nope'" in str(e1.value)
    with pytest.raises(TargetError) as e2:
        resolve(kube, Target(namespace="ghost"))
    assert (e2.value.code, e2.value.bad_input) == ("NAMESPACE_NOT_FOUND", True)


def test_no_ready_pod_is_a_transient_result_with_evidence(kube):
    kube.services[("asgard", "mlflow-service")] = service()
    kube.pods["asgard"] = [pod("p", ready=False)]
    with pytest.raises(TargetError) as ei:
        resolve(kube, Target())
    assert ei.value.code == "NO_READY_POD"
    assert not ei.value.bad_input and ei.value.transient
    assert ei.value.evidence["pods"] == [{"name": "p", "phase": "Running", "ready": "False", "terminating": False}]


def test_pod_and_selector_targets(kube):
    kube.pods["asgard"] = [pod("a", labels={"app": "mlflow", "tier": "x"}), pod("b", labels={"app": "other"})]
    assert resolve(kube, Target(service=None, pod="b", remote_port=6000)).port == 6000
    assert resolve(kube, Target(service=None, label_selectors=["tier=x"])).pod == "a"
    with pytest.raises(TargetError) as ei:
        resolve(kube, Target(service=None, pod="zzz"))
    assert ei.value.code == "POD_NOT_FOUND"


def test_api_error_403_is_not_transient(kube):
    kube.fail_next = [403]
    with pytest.raises(TargetError) as ei:
        resolve(kube, Target())
    assert ei.value.code == "KUBE_API_ERROR" and not ei.value.transient


def test_from_params_pod_overrides_service():
    t = Target.from_params({"namespace": "ml", "service": "mlflow-service", "pod": "p1", "label_selectors": []})
    assert (t.kind, t.service, t.pod) == ("pod", None, "p1")


@pytest.mark.parametrize(("params", "field", "expected"), [
    ({"namespace": "Bad_NS"}, "namespace:", "DNS-1123 label"),
    ({"namespace": "a" * 64}, "namespace:", "at most 63"),
    ({"service": "9svc"}, "service:", "DNS-1035"),
    ({"pod": "UPPER"}, "pod:", "DNS-1123 subdomain"),
    ({"remote_port": 70000}, "remote_port:", "1 to 65535"),
    ({"remote_port": 0}, "remote_port:", "1 to 65535"),
    ({"label_selectors": ["app=="]}, "", ""),
    ({"label_selectors": ["a b c"]}, "label_selectors:", "app=mlflow"),
])
def test_validation_names_field_and_form(params, field, expected):
    errors = validate_target_params(params)
    if not field:
        assert errors == []  # 'app==' is a valid (empty value) selector
        return
    assert len(errors) == 1
    assert errors[0].startswith(field) and expected in errors[0]


def test_validation_accepts_good_input():
    assert validate_target_params({"namespace": "asgard", "service": "mlflow-service", "pod": "mlflow-7d9-x2x9q",
                                   "remote_port": 5000}) == []
    assert validate_target_params({"label_selectors": ["app=mlflow", "env in (a,b)", "!legacy"]}) == []
    assert "mutually exclusive" in validate_target_params({"pod": "p", "label_selectors": ["a=b"]})[0]


def test_api_error_401_says_the_credentials_were_rejected(kube):
    kube.fail_next = [401]
    with pytest.raises(TargetError) as ei:
        resolve(kube, Target())
    msg = str(ei.value)
    assert "rejected the credentials" in msg and "expired" in msg and "refresh the kubeconfig" in msg
    assert "not allowed" not in msg and not ei.value.transient


@pytest.mark.parametrize(("resolved", "needle"), [
    ("mlflow-0", "resolved: expected a dict with pod and port"),
    ({"pod": "Bad_Pod", "port": 5000}, "resolved.pod: 'Bad_Pod' is not a valid pod name"),
    ({"pod": "p", "port": 0}, "resolved.port: 0 is not a port (expected an integer from 1 to 65535)"),
    ({"pod": "p", "port": 5000, "service_port": 70000}, "resolved.service_port: 70000 is not a port"),
    ({"pod": "p", "port": 5000, "static_prefix": "static"}, "resolved.static_prefix: 'static' is not valid"),
])
def test_resolved_param_errors_name_the_field(resolved, needle):
    errors = validate_target_params({"resolved": resolved})
    assert any(needle in e for e in errors), errors


def test_resolved_param_becomes_a_hint():
    t = Target.from_params({"namespace": "ml", "service": "mlflow-service", "label_selectors": [],
                            "resolved": {"pod": "p1", "port": 5001, "service_port": 80, "static_prefix": "/static/"}})
    assert (t.kind, t.service) == ("service", "mlflow-service")
    h = t.hint
    assert (h.pod, h.port, h.service_port, h.namespace, h.spec_known, h.given_prefix) == ("p1", 5001, 80, "ml", False,
                                                                                          "/static")
    assert validate_target_params({"resolved": {"pod": "p1", "port": 5001, "static_prefix": ""}}) == []
