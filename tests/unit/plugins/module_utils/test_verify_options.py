"""Types at the boundary (issue 14, item 1): every boolean and number of the verify role may arrive as a string
(`-e name=value`), and means what it says. The role hands its variables to asgard.mlflow.mlflow_verify, whose argument
spec types them; the few the YAML uses itself are converted once in roles/verify/vars/main.yml. Also: the option
checks (errors name the role variable), the steps chosen by --tags, and a bad value failing before any API call."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_options import ARG_SPEC, Options  # noqa: E402

ROLE = REPO / "roles" / "verify"
SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
MAIN = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
MODULE_DEFAULTS = MAIN[0]["module_defaults"]["asgard.mlflow.mlflow_verify"]
VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
TYPED = {n: s for n, s in SPECS.items() if s.get("type") in ("bool", "int", "float")}
# how each kind of string must come out
STRINGS = {"bool": [("false", False), ("no", False), ("0", False), ("true", True), ("yes", True), ("1", True)],
           "int": [("5", 5), ("0", 0)], "float": [("5", 5.0), ("2.5", 2.5)]}


def where_typed(name: str) -> str:
    """'module:<option>' when the variable reaches mlflow_verify, 'vars:<name>' when vars/main.yml converts it."""
    for opt, value in MODULE_DEFAULTS.items():
        if value == "{{ " + name + " }}":
            return f"module:{opt}"
    for var, value in VARS.items():
        if isinstance(value, str) and re.fullmatch(r"\{\{ " + name + r" \| (bool|int|float) \}\}", value):
            return f"vars:{var}"
    return ""


@pytest.mark.parametrize("name", sorted(TYPED))
def test_every_typed_role_variable_is_typed_once_where_it_enters(name):
    where = where_typed(name)
    if name == "verify_validate_certs":  # passed to kubernetes.core's own bool option (module_defaults auth)
        assert "verify_validate_certs" in json.dumps(MAIN[0]["module_defaults"]["group/kubernetes.core.k8s"])
        return
    assert where, f"{name} ({TYPED[name]['type']}) is used untyped: hand it to mlflow_verify or convert it in vars"
    if where.startswith("module:"):
        opt = where.split(":", 1)[1]
        assert ARG_SPEC[opt]["type"] == TYPED[name]["type"], (name, opt)


@pytest.mark.parametrize(("name", "raw", "expected"), [
    (n, raw, exp) for n in sorted(TYPED) if where_typed(n).startswith("module:")
    for raw, exp in STRINGS[TYPED[n]["type"]]])
def test_a_string_from_the_command_line_means_what_it_says(name, raw, expected):
    opt = where_typed(name).split(":", 1)[1]
    res = ArgumentSpecValidator(ARG_SPEC).validate({opt: raw})
    assert not res.error_messages, res.error_messages
    assert res.validated_parameters[opt] == expected and type(res.validated_parameters[opt]) is type(expected)


def test_the_yaml_never_uses_a_typed_variable_raw():
    """Outside module_defaults and vars/main.yml, a bool/int variable is only read through its converted twin."""
    for path in sorted((ROLE / "tasks").glob("*.yml")):
        text = path.read_text()
        if path.name == "main.yml":
            text = text.split("  block:", 1)[1]  # after the module_defaults
        for name in TYPED:
            for m in re.finditer(r"\b" + name + r"\b", text):
                line = text[text.rfind("\n", 0, m.start()) + 1: text.find("\n", m.end())]
                if line.strip().startswith(("#", "tags:")) or "patch_" in line.split(":")[0] or (
                        line.strip().startswith(("- name:", "name:")) and "{{" not in line):
                    continue  # comments, tag names; the patch role's own typed variables (its argument spec)
                if name == "verify_service_port" and "remote_port:" in line:
                    continue  # handed to asgard.mlflow.port_forward's int option (typed by its argument spec)
                raise AssertionError(f"{path.name}: {name} used raw: {line.strip()}")


def opts(**kw) -> Options:
    params = {k: v.get("default") for k, v in ARG_SPEC.items()}
    params.update(variable_prefix="verify_", **kw)
    return Options.from_params(params)


@pytest.mark.parametrize(("kw", "message"), [
    ({"probe_timeout": -1.0}, "expected verify_probe_timeout > 0"),
    ({"probe_deadline": 1.0}, "expected verify_probe_deadline >= verify_probe_timeout"),
    ({"max_restarts": 11}, "expected verify_max_restarts 0-10, got 11"),
    ({"remediation_rounds": 0}, "expected verify_remediation_rounds 1-5, got 0"),
    ({"namespace": "Bad_NS"}, "verify_namespace: 'Bad_NS' is not a namespace name"),
    ({"expected_static_prefix": "mlflow/"}, "verify_expected_static_prefix: expected '' (no prefix)"),
    ({"transaction_options": {"sise": 1}}, "verify_transaction_options: unknown key(s) sise"),
    ({"transaction_options": {"artifact_size": 0}}, "verify_transaction_options.artifact_size: 0 is out of range"),
    ({"transaction_password": "Zq-secret-981"}, "verify_transaction_username / verify_transaction_password"),
    ({"patch_vars": {"patch_nope": 1}}, "verify_patch_vars: unknown key(s) patch_nope"),
    ({"log_patterns": [{"code": "X", "pattern": "("}]}, r"verify_log_patterns[0].pattern: invalid regular expression"),
])
def test_bad_values_name_the_role_variable(kw, message):
    with pytest.raises(VerifyError) as ei:
        opts(**kw)
    assert message in str(ei.value)
    assert "Zq-secret-981" not in str(ei.value)


@pytest.mark.parametrize(("run", "skip", "steps", "enabled"), [
    (["all"], [], {"pods", "logs", "service", "probe", "ingress"}, ["patch", "restart", "migrate"]),
    (["verify_pods", "verify_logs"], [], {"pods", "logs"}, []),
    (["verify_pods", "verify_remediate"], [], {"pods"}, ["patch", "restart", "migrate"]),
    (["verify_report"], [], {"pods", "logs", "service", "probe", "ingress"}, []),
    (["all"], ["verify_probe", "verify_remediate"], {"pods", "logs", "service", "ingress"}, []),
])
def test_steps_and_remediation_follow_the_tags(run, skip, steps, enabled):
    o = opts(run_tags=run, skip_tags=skip)
    assert o.steps() == steps and o.remediation_enabled() == enabled


def test_audit_and_deep_check_switches():
    assert opts(remediate=False).remediation_enabled() == []
    assert "transaction" in opts(transaction=True).steps()


def test_a_bad_value_fails_the_module_before_any_api_call(tmp_path):
    """The real module through ansible-playbook, no cluster at all: the option checks come first."""
    play = tmp_path / "p.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "bad", "asgard.mlflow.mlflow_verify": {
            "probe_timeout": "-1", "variable_prefix": "verify_", "transaction_password": "Zq-secret-981",
            "host": "https://127.0.0.1:1"}}]}]))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(play), "-vvv"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "expected verify_probe_timeout > 0 (seconds), got -1" in out, out[-3000:]
    assert "verify_transaction_username / verify_transaction_password" in out
    assert "Zq-secret-981" not in out
