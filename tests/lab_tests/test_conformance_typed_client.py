"""The typed kubernetes client (CoreV1Api / AppsV1Api, pydantic-validated responses) against the lab."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def _deployment(name: str) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="example.invalid/c:1", args=["x"])]),
            ),
        ),
    )


def test_core_v1_crud(k8s_client, lab_namespace):
    core = client.CoreV1Api(k8s_client)
    cm = core.create_namespaced_config_map(lab_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"k": "v"}), data={"a": "1"}))
    assert cm.metadata.uid and cm.data == {"a": "1"}
    assert core.read_namespaced_config_map("cfg", lab_namespace).metadata.resource_version == cm.metadata.resource_version
    listed = core.list_namespaced_config_map(lab_namespace, label_selector="k=v")
    assert [c.metadata.name for c in listed.items] == ["cfg"]
    patched = core.patch_namespaced_config_map("cfg", lab_namespace, {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    svc = core.create_namespaced_service(lab_namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="svc"), spec=client.V1ServiceSpec(selector={"app": "x"}, ports=[client.V1ServicePort(port=80)])))
    assert svc.spec.cluster_ip and svc.spec.ports[0].target_port == 80
    secret = core.create_namespaced_secret(lab_namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"p": "q"}))
    assert secret.data == {"p": "cQ=="} and secret.type == "Opaque"
    ns = core.read_namespace(lab_namespace)
    assert ns.status.phase == "Active"
    status = core.delete_namespaced_config_map("cfg", lab_namespace)
    assert status["kind"] == "Status" and status["status"] == "Success"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("cfg", lab_namespace)
    assert e.value.status == 404


def test_apps_v1_crud_and_errors(k8s_client, lab_namespace):
    apps = client.AppsV1Api(k8s_client)
    d = apps.create_namespaced_deployment(lab_namespace, _deployment("web"))
    assert d.metadata.generation == 1 and d.spec.strategy.type == "RollingUpdate"
    assert apps.read_namespaced_deployment("web", lab_namespace).spec.template.spec.restart_policy == "Always"
    assert [x.metadata.name for x in apps.list_namespaced_deployment(lab_namespace).items] == ["web"]
    assert any(x.metadata.name == "web" for x in apps.list_deployment_for_all_namespaces(label_selector="app=web").items)
    p = apps.patch_namespaced_deployment("web", lab_namespace, {"spec": {"template": {"spec": {"containers": [{"name": "c", "args": ["y"]}]}}}})
    assert p.spec.template.spec.containers[0].args == ["y"] and p.metadata.generation == 2
    scale = apps.read_namespaced_deployment_scale("web", lab_namespace)
    assert scale.spec.replicas == 0
    scale = apps.patch_namespaced_deployment_scale("web", lab_namespace, {"spec": {"replicas": 0}})
    assert scale.spec.replicas == 0
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment(lab_namespace, _deployment("web"))
    assert e.value.status == 409 and '"AlreadyExists"' in e.value.body
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment("web", lab_namespace, {"spec": {"selector": {"matchLabels": {"app": "other"}}}})
    assert e.value.status == 422
    apps.delete_namespaced_deployment("web", lab_namespace, propagation_policy="Foreground")
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("web", lab_namespace)
    assert e.value.status == 404


def test_watch_stream(k8s_client, lab_namespace):
    core = client.CoreV1Api(k8s_client)
    rv = core.list_namespaced_config_map(lab_namespace).metadata.resource_version
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume():
        for ev in w.stream(core.list_namespaced_config_map, lab_namespace, resource_version=rv, timeout_seconds=5):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    core.create_namespaced_config_map(lab_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w1")))
    core.patch_namespaced_config_map("w1", lab_namespace, {"data": {"x": "y"}})
    core.delete_namespaced_config_map("w1", lab_namespace)
    t.join(10)
    assert not t.is_alive()
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
