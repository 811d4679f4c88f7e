"""_discovery: which Deployments are MLflow instances, their facts, the Service verify needs, API errors per scope
(the Kubernetes API faked at the module_utils boundary; tests/integration/test_fleet.py runs the same code on
the lab)."""

from __future__ import annotations

import json

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils import _discovery as D
from fleet_fixtures import FakeKube, deployment, mlflow_container, service, sidecar


def names(result):
    return [(f["namespace"], f["deployment"]) for f in result["instances"]]


def test_found_by_the_command_not_by_labels_or_names():
    kube = FakeKube(deployments=[
        deployment("a"),                                                     # the usual one
        deployment("b", name="tracking", labels={"run": "tracking"},         # unlabelled, renamed, renamed container
                   containers=[mlflow_container(name="server")]),
        deployment("c", name="mlflow-log-shipper", containers=[sidecar()]),  # labelled app=mlflow, no mlflow server
        deployment("d", name="web", labels={"app": "web"},
                   containers=[{"name": "nginx", "image": "nginx:1", "command": ["nginx"]}]),
        deployment("e", name="with-sidecar", containers=[sidecar(), mlflow_container(name="srv")]),
    ])
    res = D.discover(kube, "lab-a")
    assert names(res) == [("a", "mlflow-deployment"), ("b", "tracking"), ("e", "with-sidecar")]
    assert res["counts"] == {"deployments": 5, "mlflow": 3, "not_mlflow": 2}
    assert [f["container"] for f in res["instances"]] == ["mlflow", "server", "srv"]
    assert res["errors"] == []


def test_facts_from_the_settings_parser():
    dep = deployment("ns1", containers=[mlflow_container(
        image="ghcr.io/mlflow/mlflow:v2.22.5",
        args=["mlflow server --host 0.0.0.0 --port 8080 --static-prefix=/mlflow "
              "--gunicorn-opts='--timeout 120 --workers 2'"])], replicas=2, ready=1)
    (f,) = D.discover(FakeKube([dep], [service("ns1", target_port=8080)]), "c1")["instances"]
    assert (f["cluster"], f["mlflow_version"], f["server_kind"], f["port"], f["static_prefix"], f["workers"]) == (
        "c1", "2.22.5", "gunicorn", 8080, "/mlflow", 4)
    assert (f["replicas"], f["ready_replicas"], f["available_replicas"]) == (2, 1, 1)
    assert (f["service"], f["service_port"], f["services"]) == ("mlflow-service", 5000, ["mlflow-service"])
    assert f["labels"] == {"app": "mlflow"} and f["settings_error"] is None


def test_no_credential_and_no_annotation_in_the_facts():
    res = D.discover(FakeKube([deployment("a")], [service("a")]), "c1")
    text = json.dumps(res)
    assert "hunter2" not in text and "s3cr3t" not in text and "last-applied" not in text


def test_several_mlflow_containers_is_an_instance_with_an_error():
    dep = deployment("a", containers=[mlflow_container(name="one"), mlflow_container(name="two", port=5001)])
    (f,) = D.discover(FakeKube([dep]), "c1")["instances"]
    assert f["settings_error"].startswith("SEVERAL_MLFLOW_CONTAINERS:")
    assert f["container"] is None and f["server_kind"] is None


@pytest.mark.parametrize("target,expected", [(5000, 80), ("http", 80), ("other", 80)])
def test_service_port_by_number_or_container_port_name(target, expected):
    svc = service("a", port=80, target_port=target)
    (f,) = D.discover(FakeKube([deployment("a")], [svc]), "c1")["instances"]
    assert (f["service"], f["service_port"]) == ("mlflow-service", expected)


def test_the_service_that_forwards_to_mlflow_wins_over_another_selecting_the_pods():
    svcs = [service("a", name="aaa-metrics", port=9090, target_port=9090), service("a", name="zzz-http", port=80)]
    (f,) = D.discover(FakeKube([deployment("a")], svcs), "c1")["instances"]
    assert (f["service"], f["service_port"]) == ("zzz-http", 80)
    assert f["services"] == ["aaa-metrics", "zzz-http"]
    assert any("several Services" in w for w in f["warnings"])


def test_no_service_selecting_the_pods():
    svcs = [service("a", selector={"app": "other"}), service("a", name="headless", selector={})]
    (f,) = D.discover(FakeKube([deployment("a")], svcs), "c1")["instances"]
    assert (f["service"], f["service_port"], f["services"]) == (None, None, [])
    assert "no Service selects its pods" in f["warnings"]


def test_services_are_read_only_where_an_mlflow_was_found():
    kube = FakeKube([deployment("a"), deployment("b", containers=[sidecar()])], [service("a"), service("b")])
    D.discover(kube, "c1")
    paths = [p for p, _q in kube.requests]
    assert paths == ["/apis/apps/v1/deployments", "/api/v1/namespaces/a/services"]


def test_pages_are_followed(monkeypatch):
    monkeypatch.setattr(D, "LIST_LIMIT", 2)
    kube = FakeKube([deployment(f"ns{i}") for i in range(5)])
    res = D.discover(kube, "c1")
    assert len(res["instances"]) == 5
    deps = [q for p, q in kube.requests if p.endswith("/deployments")]
    assert [q.get("continue") for q in deps] == [None, "2", "4"] and all(q["limit"] == "2" for q in deps)


def test_plain_namespace_names_are_listed_one_by_one_patterns_cluster_wide():
    kube = FakeKube([deployment("team-a"), deployment("team-b"), deployment("kube-x"), deployment("other")])
    res = D.discover(kube, "c1", namespaces=["team-a", "kube-x"], exclude_namespaces=["kube-*"])
    assert names(res) == [("team-a", "mlflow-deployment")]
    assert kube.requests[0][0] == "/apis/apps/v1/namespaces/team-a/deployments"
    kube.requests.clear()
    res = D.discover(kube, "c1", namespaces=["team-*", "other"], exclude_namespaces=["team-b"])
    assert names(res) == [("other", "mlflow-deployment"), ("team-a", "mlflow-deployment")]
    assert kube.requests[0][0] == "/apis/apps/v1/deployments"


def test_label_selectors_are_sent_to_the_api_server():
    kube = FakeKube([deployment("a"), deployment("b", labels={"app": "mlflow", "team": "ml"})])
    res = D.discover(kube, "c1", label_selectors=["app=mlflow", "team=ml"])
    assert names(res) == [("b", "mlflow-deployment")]
    assert kube.requests[0][1]["labelSelector"] == "app=mlflow,team=ml"


def test_a_forbidden_namespace_is_an_error_for_that_namespace_only():
    kube = FakeKube([deployment("a"), deployment("b")], errors={r"/namespaces/b/deployments": 403})
    res = D.discover(kube, "c1", namespaces=["a", "b"])
    assert names(res) == [("a", "mlflow-deployment")]
    (err,) = res["errors"]
    assert err["scope"] == "namespace b" and err["status"] == 403
    assert "not allowed" in err["message"] and "RBAC" in err["message"]


def test_unreachable_cluster_is_an_error_not_an_exception():
    res = D.discover(FakeKube([deployment("a")], errors={".": None}), "c1")
    assert res["instances"] == []
    (err,) = res["errors"]
    assert err["scope"] == "cluster" and err["status"] is None and "connection refused" in err["message"]


def test_401_says_what_to_do():
    (err,) = D.discover(FakeKube(errors={".": 401}), "c1")["errors"]
    assert "expired, revoked or invalid" in err["message"]


def test_cluster_values_never_become_templates():
    dep = deployment("a", labels={"app": "mlflow"}, containers=[mlflow_container(
        image="evil/{{ lookup('pipe', 'id') }}",
        args=["mlflow server --port 5000 --static-prefix='/x{{ lookup(\"pipe\", \"id\") }}'"])])
    (f,) = D.discover(FakeKube([dep]), "c1")["instances"]
    assert f["image"] is None and f["static_prefix"] is None
    assert not any("{{" in str(v) for v in f.values())
    assert any("image holds template delimiters" in w for w in f["warnings"])


def test_a_prefix_that_is_not_a_path_is_left_out():
    dep = deployment("a", containers=[mlflow_container(args=["mlflow server --port 5000 --static-prefix=static"])])
    (f,) = D.discover(FakeKube([dep]), "c1")["instances"]
    assert f["static_prefix"] is None
    assert any("static-prefix" in w for w in f["warnings"])
