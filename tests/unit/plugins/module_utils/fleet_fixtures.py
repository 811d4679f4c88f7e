"""Test support (no tests here): a Kubernetes API served from memory at the module_utils boundary (what
``_kube.KubeAPI.get`` answers: lists with labelSelector, limit and continue, and KubeError for injected failures),
and builders of Deployments / Services like the ones the fleet meets."""

from __future__ import annotations

import copy
import re

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError

IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
_LIST = re.compile(r"^/(?:apis/apps/v1|api/v1)(?:/namespaces/([^/]+))?/(deployments|services)$")


class _Config:
    host = "https://fake.example:6443"


class _Client:
    configuration = _Config()


class FakeKube:
    """``deployments``/``services``: lists of objects (with metadata.namespace); ``errors``: path regex -> status
    (None = connection refused); ``requests``: every (path, query) asked."""

    def __init__(self, deployments=(), services=(), errors=None, host="https://fake.example:6443"):
        self.deployments = list(deployments)
        self.services = list(services)
        self.errors = dict(errors or {})
        self.requests: list[tuple[str, dict]] = []
        self.api_client = _Client()
        self.api_client.configuration = _Config()
        self.api_client.configuration.host = host

    def get(self, path, query=None):
        q = dict(query or [])
        self.requests.append((path, q))
        for rx, status in self.errors.items():
            if re.search(rx, path):
                if status is None:
                    raise KubeError(f"GET {path}: MaxRetryError: connection refused", status=None)
                raise KubeError(f"GET {path}: HTTP {status}: denied", status=status)
        m = _LIST.match(path)
        if not m:
            raise KubeError(f"GET {path}: HTTP 404: not found", status=404)
        ns, kind = m.groups()
        items = [o for o in (self.deployments if kind == "deployments" else self.services)
                 if ns is None or o["metadata"]["namespace"] == ns]
        if q.get("labelSelector"):
            for term in q["labelSelector"].split(","):
                k, _sep, v = term.partition("=")
                items = [o for o in items if (o["metadata"].get("labels") or {}).get(k) == v]
        items.sort(key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or 0) or len(items)
        page = items[start:start + limit]
        meta = {"continue": str(start + limit)} if start + limit < len(items) else {}
        return {"items": copy.deepcopy(page), "metadata": meta}


def deployment(ns, name="mlflow-deployment", labels=None, containers=None, replicas=1, ready=1):
    labels = {"app": "mlflow"} if labels is None else labels
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels),
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"token": "s3cr3t"}'}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                 "template": {"metadata": {"labels": dict(labels)},
                              "spec": {"containers": containers if containers is not None else [mlflow_container()]}}},
        "status": {"readyReplicas": ready, "availableReplicas": ready},
    }


def mlflow_container(name="mlflow", image=IMAGE, args=None, port_name="http", port=5000, env=None):
    return {"name": name, "image": image, "command": ["/bin/sh", "-c"],
            "args": args or [f"mlflow server --host 0.0.0.0 --port {port} --workers 4"],
            "ports": [{"name": port_name, "containerPort": port}],
            "env": env if env is not None else [
                {"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql://mlflow:hunter2@db:5432/mlflow"}]}


def sidecar(name="log-shipper"):
    return {"name": name, "image": "busybox:1.36",
            "command": ["/bin/sh", "-c", "exec tail -F /mlflow/logs/server.log  # ships the mlflow server log"]}


def service(ns, name="mlflow-service", selector=None, port=5000, target_port=5000):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": "mlflow"} if selector is None else selector,
                     "ports": [{"name": "http", "port": port, "targetPort": target_port}]}}
