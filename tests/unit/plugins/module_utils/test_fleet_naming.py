"""_fleet_naming: group names, host variables and the JMESPath instance_filter."""

from __future__ import annotations

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._fleet_naming import (
    FilterError,
    InstanceFilter,
    default_groups,
    group_name,
    host_vars,
)

FACTS = {"cluster": "prod-eu.1", "namespace": "team-a", "deployment": "tracking", "labels": {"team": "a"},
         "pod_labels": {"run": "tracking"}, "container": "server", "image": "ghcr.io/mlflow/mlflow:v3.17.2",
         "mlflow_version": "3.17.2", "server_kind": "gunicorn", "port": 5000, "static_prefix": None, "workers": 4,
         "replicas": 1, "ready_replicas": 1, "available_replicas": 1, "service": "tracking-http",
         "service_port": 80, "services": ["tracking-http"], "settings_error": None, "warnings": []}


def test_groups():
    assert default_groups(FACTS) == ["mlflow_servers", "mlflow_cluster_prod_eu_1", "mlflow_namespace_team_a",
                                     "mlflow_version_3_17_2", "mlflow_server_gunicorn"]
    unknown = dict(FACTS, mlflow_version=None, server_kind=None)
    assert default_groups(unknown)[3:] == ["mlflow_version_unknown", "mlflow_server_unknown"]
    assert group_name("cluster", "a-b/c") == "mlflow_cluster_a_b_c"


def test_host_vars_for_the_roles():
    hv = host_vars(FACTS, {"verify_kubeconfig": "/k"})
    assert {k: hv[k] for k in ("verify_namespace", "verify_deployment", "verify_service", "verify_service_port",
                               "verify_container", "verify_kubeconfig")} == {
        "verify_namespace": "team-a", "verify_deployment": "tracking", "verify_service": "tracking-http",
        "verify_service_port": 80, "verify_container": "server", "verify_kubeconfig": "/k"}
    assert (hv["mlflow_version"], hv["mlflow_server_kind"], hv["mlflow_labels"], hv["mlflow_cluster"]) == (
        "3.17.2", "gunicorn", {"team": "a"}, "prod-eu.1")
    assert "mlflow_mlflow_version" not in hv and "verify_expected_static_prefix" not in hv


def test_no_service_falls_back_to_the_deployment_name():
    hv = host_vars(dict(FACTS, service=None, service_port=None, services=[]), {})
    assert hv["verify_service"] == "tracking" and "verify_service_port" not in hv
    assert hv["mlflow_service_found"] is False


def test_instance_filter_from_the_issue():
    flt = InstanceFilter("server_kind == 'gunicorn' && contains(keys(labels), 'team')")
    assert flt.keep(FACTS)
    assert not flt.keep(dict(FACTS, labels={}))
    assert not flt.keep(dict(FACTS, server_kind="uvicorn"))
    assert InstanceFilter(None).keep(FACTS) and InstanceFilter("").keep(FACTS)


def test_bad_instance_filter_names_the_option():
    with pytest.raises(FilterError) as ei:
        InstanceFilter("server_kind == ")
    assert str(ei.value).startswith("instance_filter: 'server_kind == ' is not a valid JMESPath expression")
    with pytest.raises(FilterError) as ei:
        InstanceFilter("keys(pod_labels)").keep(dict(FACTS, pod_labels=None))
    assert "instance_filter: 'keys(pod_labels)' failed on prod-eu.1/team-a/tracking" in str(ei.value)
