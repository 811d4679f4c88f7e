"""The modules' argument handling, run through their real main() (fails before any API call)."""

from __future__ import annotations

import json

import pytest

try:  # ansible-core >= 2.19
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # older ansible-core (make test-compat): the classic way to hand a module its arguments
    import contextlib

    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args):
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved
from ansible_collections.asgard.mlflow.plugins.modules import mlflow_probe, port_forward, remediation_lock


def run(module, args: dict, capsys) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("module", "args", "needle"), [
    (port_forward, {"local_port": 70000}, "local_port: 70000 is out of range (expected an integer from 1 to 65535)"),
    (remediation_lock, {"lease_duration": 5}, "lease_duration: 5 is out of range (expected seconds from 10 to 3600)"),
    (remediation_lock, {"deployment": "Bad_Name"}, "deployment: 'Bad_Name' is not a valid Deployment name"),
    (remediation_lock, {"wait_timeout": 4000}, "wait_timeout: 4000 is out of range"),
    (port_forward, {"address": "0.0.0.0"}, "address: 0.0.0.0 is not a loopback address"),
    (port_forward, {"namespace": "Asgard!"}, "namespace: 'Asgard!' is not a valid namespace name"),
    (mlflow_probe, {"namespace": "bad_ns"}, "namespace: 'bad_ns' is not a valid namespace name"),
    (mlflow_probe, {"remote_port": 0}, "remote_port: 0 is out of range"),
    (mlflow_probe, {"static_prefix": "static"}, "static_prefix: 'static' is not valid"),
    (mlflow_probe, {"service": "Mlflow"}, "service: 'Mlflow' is not a valid Service name"),
    (mlflow_probe, {"resolved": {"pod": "mlflow-0", "port": 0}}, "resolved.port: 0 is not a port"),
    (mlflow_probe, {"resolved": {"pod": "Mlflow_0", "port": 5000}}, "resolved.pod: 'Mlflow_0' is not a valid pod name"),
    (mlflow_probe, {"resolved": {"port": 5000}}, "resolved"),
])
def test_bad_input_fails_naming_the_field(module, args, needle, capsys):
    out = run(module, args, capsys)
    assert out["failed"] is True
    assert needle in out["msg"]


def test_pod_and_selector_are_mutually_exclusive(capsys):
    out = run(mlflow_probe, {"pod": "p", "label_selectors": ["app=mlflow"]}, capsys)
    assert out["failed"] and "mutually exclusive" in out["msg"]


def test_unreadable_kubeconfig_is_a_clear_failure(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    out = run(mlflow_probe, {"kubeconfig": str(tmp_path / "missing.yaml")}, capsys)
    assert out["failed"] is True
    assert "kubeconfig: " in out["msg"] and "missing.yaml is not a readable file" in out["msg"]


def test_argspec_reuses_kubernetes_core_auth_options():
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC

    for module in (mlflow_probe, port_forward):
        spec = module.argspec()
        assert set(AUTH_ARG_SPEC) <= set(spec)
        assert spec["api_key"].get("no_log") is True
        assert spec["namespace"]["default"] == "asgard" and spec["service"]["default"] == "mlflow-service"
    assert port_forward.argspec()["local_port"]["default"] == 5000
    assert port_forward.argspec()["address"]["default"] == "127.0.0.1"


def test_every_error_is_reported_at_once(capsys):
    out = run(mlflow_probe, {"namespace": "Bad_NS", "timeout": 0, "resolved": {"pod": "p", "port": 70000}}, capsys)
    assert out["failed"] is True
    assert len(out["errors"]) == 3
    assert [e.split(":")[0] for e in out["errors"]] == ["namespace", "resolved.port", "timeout"]


def test_resolved_option_only_on_the_probe():
    spec = mlflow_probe.argspec()["resolved"]
    assert spec["type"] == "dict"
    assert {k for k, v in spec["options"].items() if v.get("required")} == {"pod", "port"}
    assert "resolved" not in port_forward.argspec()
