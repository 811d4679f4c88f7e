"""The deploy and patch roles' variable rules (plugins/module_utils/_deploy_preflight.py and _patch_preflight.py,
filters asgard.mlflow.deploy_preflight and patch_preflight): the roles' defaults pass; values typed on the command line
(strings) mean what they say; every bad variable is reported at once, named, with what was expected; a password is
never shown. The roles run the same rules in tests/unit/roles/test_deploy_preflight.py and the lab tests (real
ansible-playbook, before any API call)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils._deploy_preflight import errors  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._patch_preflight import errors as patch_errors  # noqa: E402

ROLE = REPO / "roles" / "deploy"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
TASK = yaml.safe_load((ROLE / "tasks" / "preflight.yml").read_text())[0]
CHECKED = list(TASK["vars"]["_deploy_preflight_vars"])


def variables(**changes) -> dict:
    v = {n: DEFAULTS[n] for n in CHECKED}
    v.update(changes)
    return v


def test_the_role_hands_over_every_variable_it_has_a_default_for():
    assert CHECKED, TASK
    missing = [n for n in CHECKED if n not in DEFAULTS]
    assert not missing, f"preflight reads variables the role does not define: {missing}"


def test_the_defaults_pass():
    assert errors(variables()) == []


def test_numbers_typed_on_the_command_line_pass_and_bad_ones_are_named():
    typed = {n: str(DEFAULTS[n]) for n in ("deploy_workers", "deploy_replicas", "deploy_container_port",
                                           "deploy_service_port", "deploy_run_as_group", "deploy_proxy_timeout")}
    assert errors(variables(**typed)) == []
    msgs = errors(variables(deploy_workers="0", deploy_replicas="-1", deploy_service_port="65536",
                            deploy_gunicorn_timeout=True))
    assert msgs == [
        'deploy_workers="0" is invalid; expected an integer >= 1',
        "deploy_gunicorn_timeout=true is invalid; expected an integer >= 1",
        'deploy_replicas="-1" is invalid; expected an integer >= 0',
        'deploy_service_port="65536" is out of range; expected a port number 1-65535',
    ]


def test_every_bad_variable_is_reported_at_once():
    msgs = errors(variables(deploy_namespace="Asgard", deploy_name="x" * 48, deploy_static_prefix="/static/",
                            deploy_allowed_hosts_extra="a.example.com", deploy_service_type="Internal"))
    named = [m.split("=")[0].split(" ")[0] for m in msgs]
    assert named == ["deploy_static_prefix", "deploy_namespace", "deploy_name", "deploy_allowed_hosts_extra",
                     "deploy_service_type"], msgs


@pytest.mark.parametrize("server,image,ok", [
    ("uvicorn", "ghcr.io/mlflow/mlflow:v3.17.2", True),
    ("uvicorn", "ghcr.io/mlflow/mlflow:v2.22.5", False),
    ("gunicorn", "ghcr.io/mlflow/mlflow:v2.22.5", True),
    ("waitress", "ghcr.io/mlflow/mlflow:v3.17.2", False),
])
def test_server_kind_follows_the_version(server, image, ok):
    msgs = errors(variables(deploy_server=server, deploy_image=image))
    assert (msgs == []) is ok, msgs
    if not ok:
        assert msgs[0].startswith(f'deploy_server="{server}" is not possible with MLflow '), msgs


def test_version_from_the_override_or_the_tag():
    assert errors(variables(deploy_image="ghcr.io/mlflow/mlflow:latest", deploy_mlflow_version="3.17")) == []
    for override in ("", "three"):
        msgs = errors(variables(deploy_image="ghcr.io/mlflow/mlflow:latest", deploy_mlflow_version=override))
        assert len(msgs) == 1 and "deploy_mlflow_version" in msgs[0] and "X.Y.Z" in msgs[0], msgs


def test_passwords_are_never_shown():
    uri = "postgresql://u:TopSecretPw@pg/db with space"
    msgs = errors(variables(deploy_backend_store_uri=uri), {"backend_source": "created_secret", "uses_sqlite": False})
    assert msgs and all("TopSecretPw" not in m for m in msgs), msgs
    assert "value hidden" in msgs[0]
    msgs = errors(variables(deploy_auth_admin_password="short-Pw-x"), {"auth_enabled": True})
    assert msgs and all("short-Pw-x" not in m for m in msgs), msgs
    assert "deploy_auth_admin_password" in msgs[0] and "12 characters" in msgs[0]


def test_switched_off_features_are_not_checked():
    assert errors(variables(deploy_route_gateway_name="Bad_Gateway", deploy_ingress_hosts=[])) == []
    msgs = errors(variables(deploy_route_gateway_name="Bad_Gateway", deploy_route_hostnames=["mlflow.example.com"]),
                  {"route_enabled": True, "route_hostnames": ["mlflow.example.com"]})
    assert len(msgs) == 1 and '(is "Bad_Gateway")' in msgs[0], msgs
    msgs = errors(variables(), {"ingress_enabled": True, "ingress_hosts": []})
    assert len(msgs) == 1 and "deploy_ingress_enabled=true" in msgs[0], msgs


# ------------------------------------------------------------------------------------------- the patch role's

PATCH_DEFAULTS = yaml.safe_load((REPO / "roles" / "patch" / "defaults" / "main.yml").read_text())
PATCH_TASK = yaml.safe_load((REPO / "roles" / "patch" / "tasks" / "preflight.yml").read_text())[0]


def patch_variables(**changes) -> dict:
    v = {n: PATCH_DEFAULTS[n] for n in PATCH_TASK["vars"]["_patch_preflight_vars"]}
    v.update(changes)
    return v


def test_patch_defaults_and_command_line_strings_pass():
    assert patch_errors(patch_variables()) == []
    typed = {"patch_workers": "5", "patch_port": "null", "patch_gunicorn_timeout": "~", "patch_enable_service_links": "no",
             "patch_static_prefix": "None", "patch_service_port": "5000", "patch_mlflow_version": "v3.17"}
    assert patch_errors(patch_variables(**typed)) == []


def test_patch_bad_variables_are_named_all_at_once():
    msgs = patch_errors(patch_variables(patch_workers="four", patch_port="70000", patch_static_prefix="static",
                                        patch_workers_mode="more", patch_liveness_probe={"periodSeconds": "ten"}))
    assert [m.split("=")[0].split(" ")[0] for m in msgs] == [
        "patch_workers", "patch_port", "patch_static_prefix", "expected", "patch_liveness_probe"], msgs
    assert msgs[0] == 'patch_workers="four" is invalid; expected an integer >= 1, or null to leave it alone'
    assert '(got "at_least", "more")' in msgs[3]
