"""MLflow's rules, written once (plugins/module_utils/_mlflow_rules.py), against shared/reference/mlflow-server-facts.md."""

from __future__ import annotations

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils import _mlflow_rules as R
from ansible_collections.asgard.mlflow.plugins.module_utils._errors import MlflowSettingsError


@pytest.mark.parametrize(("version", "gunicorn_opts", "kind"), [
    ("2.22.5", False, "gunicorn"), ("3.2.0", False, "gunicorn"), ("3.3.0", False, "uvicorn"),
    ("3.17.2", False, "uvicorn"), ("3.17.2", True, "gunicorn"), (None, False, "uvicorn"),
])
def test_server_kind(version, gunicorn_opts, kind):
    assert R.server_kind(version, gunicorn_opts) == kind


@pytest.mark.parametrize(("version", "checks"), [("2.22.5", False), ("3.4.9", False), ("3.5.0", True), (None, True)])
def test_host_check_from_3_5(version, checks):
    assert R.host_check_applies(version) is checks


@pytest.mark.parametrize(("prefix", "version", "path"), [
    ("/static", "3.17.2", "/static/health"), ("/static", "3.7.0", "/static/health"), ("/static", "3.6.1", "/health"),
    ("/static", "2.22.5", "/health"), ("", "3.17.2", "/health"), (None, None, "/health"), ("/x/", None, "/x/health"),
])
def test_health_path(prefix, version, path):
    assert R.health_path(prefix, version) == path


@pytest.mark.parametrize("bad", ["latest", "three", "x3.1"])
def test_version_tuple_rejects_what_is_not_a_version(bad):
    with pytest.raises(MlflowSettingsError, match="MAJOR.MINOR"):
        R.version_tuple(bad)


def test_every_env_var_of_the_facts_file_is_known():
    facts = ("MLFLOW_BACKEND_STORE_URI MLFLOW_READ_REPLICA_BACKEND_STORE_URI MLFLOW_REGISTRY_STORE_URI "
             "MLFLOW_DEFAULT_ARTIFACT_ROOT MLFLOW_SERVE_ARTIFACTS MLFLOW_ARTIFACTS_ONLY MLFLOW_ARTIFACTS_DESTINATION "
             "MLFLOW_HOST MLFLOW_PORT MLFLOW_WORKERS MLFLOW_STATIC_PREFIX MLFLOW_GUNICORN_OPTS MLFLOW_UVICORN_OPTS "
             "MLFLOW_EXPOSE_PROMETHEUS MLFLOW_SERVER_ALLOWED_HOSTS MLFLOW_SERVER_CORS_ALLOWED_ORIGINS "
             "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE MLFLOW_SERVER_X_FRAME_OPTIONS").split()
    assert set(facts) <= set(R.ENV_TO_NAME)


def test_proxy_settings_follow_worker_timeout_and_body_size():
    """ingress-nginx wants unitless seconds and string values (annotations are strings); Gateway API durations."""
    out = R.proxy_settings("300", "0")
    assert out["ingress_nginx_annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-body-size": "0",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "300",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "300",
    }
    assert out["route_timeouts"] == {"request": "300s", "backendRequest": "300s"}
    assert R.proxy_settings(120, "5g")["ingress_nginx_annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "5g"


@pytest.mark.parametrize(("timeout", "size", "words"), [
    (0, "0", "worker timeout"), ("x", "0", "worker timeout"), (300, "1 GB", "body size"), (300, "-1", "body size"),
    (300, "10mb", "body size"),
])
def test_proxy_settings_refuse_bad_values(timeout, size, words):
    with pytest.raises(MlflowSettingsError, match=words):
        R.proxy_settings(timeout, size)
