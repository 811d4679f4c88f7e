"""Kubernetes API objects in the exact shapes the API server returns them (trimmed of managedFields), and the
server settings and verify state shapes the verify module_utils read."""

from __future__ import annotations

import copy

NOW = "2025-10-28T12:00:00Z"

SEED_BEFORE_SCRIPT = (
    "mlflow server \\\n--host=0.0.0.0 \\\n--port=5000 \\\n--backend-store-uri=${MLFLOW_BACKEND_STORE_URI} \\\n"
    "--default-artifact-root=${MLFLOW_DEFAULT_ARTIFACT_ROOT} \\\n--serve-artifacts \\\n--static-prefix=/static \\\n"
    '--gunicorn-opts="--timeout 120 --workers 2 --worker-class sync"\n'
)

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "mlflow-deployment", "namespace": "asgard", "uid": "9a3c2c4e-0d3e-4d53-8a8e-2f0f3c1f5c11",
        "resourceVersion": "1187", "generation": 2, "creationTimestamp": "2025-10-28T10:00:00Z",
        "labels": {"app": "mlflow"},
        "annotations": {"deployment.kubernetes.io/revision": "2"},
    },
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "mlflow"}},
        "strategy": {"type": "Recreate"},
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
        "template": {
            "metadata": {"labels": {"app": "mlflow"}},
            "spec": {
                "containers": [{
                    "name": "mlflow",
                    "image": "ghcr.io/mlflow/mlflow:v3.17.2",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c"],
                    "args": [SEED_BEFORE_SCRIPT],
                    "env": [
                        {"name": "MLFLOW_BACKEND_STORE_URI",
                         "value": "postgresql://mlflow:s3cr3tpw@postgres.asgard.svc:5432/mlflow"},
                        {"name": "MLFLOW_DEFAULT_ARTIFACT_ROOT", "value": "mlflow-artifacts:/"},
                    ],
                    "ports": [{"name": "http", "containerPort": 5000, "protocol": "TCP"}],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler",
                "securityContext": {},
            },
        },
    },
    "status": {
        "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "lastUpdateTime": "2025-10-28T10:01:00Z",
             "lastTransitionTime": "2025-10-28T10:01:00Z", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": "2025-10-28T10:01:00Z",
             "lastTransitionTime": "2025-10-28T10:00:00Z", "reason": "NewReplicaSetAvailable",
             "message": 'ReplicaSet "mlflow-deployment-6b8f7d9c5d" has successfully progressed.'},
        ],
    },
}

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "mlflow-deployment-6b8f7d9c5d-x2x9q", "generateName": "mlflow-deployment-6b8f7d9c5d-",
        "namespace": "asgard", "uid": "0b7c6f3e-5b1a-4a2e-9a57-1f6a3c2d4e5f", "resourceVersion": "1180",
        "creationTimestamp": "2025-10-28T10:00:05Z",
        "labels": {"app": "mlflow", "pod-template-hash": "6b8f7d9c5d"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "mlflow-deployment-6b8f7d9c5d",
                             "uid": "7e1d", "controller": True, "blockOwnerDeletion": True}],
    },
    "spec": copy.deepcopy(DEPLOYMENT["spec"]["template"]["spec"]) | {"nodeName": "lab-node-1"},
    "status": {
        "phase": "Running",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": "2025-10-28T10:00:05Z"},
            {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": "2025-10-28T10:00:20Z"},
            {"type": "ContainersReady", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": "2025-10-28T10:00:20Z"},
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": "2025-10-28T10:00:05Z"},
        ],
        "hostIP": "10.250.0.1", "podIP": "10.250.0.7", "podIPs": [{"ip": "10.250.0.7"}],
        "startTime": "2025-10-28T10:00:05Z",
        "containerStatuses": [{
            "name": "mlflow", "state": {"running": {"startedAt": "2025-10-28T10:00:06Z"}}, "lastState": {},
            "ready": True, "restartCount": 0, "image": "ghcr.io/mlflow/mlflow:v3.17.2",
            "imageID": "ghcr.io/mlflow/mlflow@sha256:4f6c", "containerID": "containerd://ab12", "started": True,
        }],
        "qosClass": "BestEffort",
    },
}


def pod(**status_changes) -> dict:
    p = copy.deepcopy(POD)
    for k, v in status_changes.items():
        p["status"][k] = v
    return p


def crashloop_pod(reason: str = "Error", exit_code: int = 1, restarts: int = 5,
                  finished: str = "2025-10-28T11:58:00Z") -> dict:
    p = copy.deepcopy(POD)
    p["status"]["conditions"][1] = {"type": "Ready", "status": "False", "lastProbeTime": None,
                                    "lastTransitionTime": "2025-10-28T11:50:00Z", "reason": "ContainersNotReady",
                                    "message": "containers with unready status: [mlflow]"}
    p["status"]["containerStatuses"][0].update({
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 2m40s restarting failed container=mlflow pod=" + p["metadata"]["name"]}},
        "lastState": {"terminated": {"exitCode": exit_code, "reason": reason,
                                     "startedAt": "2025-10-28T11:57:50Z", "finishedAt": finished,
                                     "containerID": "containerd://cd34"}},
        "ready": False, "restartCount": restarts, "started": False,
    })
    return p


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "mlflow-service", "namespace": "asgard", "uid": "5c2e", "resourceVersion": "1002",
                 "labels": {"app": "mlflow"}},
    "spec": {
        "type": "ClusterIP", "clusterIP": "10.96.14.20", "clusterIPs": ["10.96.14.20"],
        "selector": {"app": "mlflow"},
        "ports": [{"name": "http", "protocol": "TCP", "port": 5000, "targetPort": 5000}],
        "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    },
    "status": {"loadBalancer": {}},
}

ENDPOINT_SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "mlflow-service-7xk2p", "namespace": "asgard", "generateName": "mlflow-service-",
                 "labels": {"kubernetes.io/service-name": "mlflow-service",
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
    "addressType": "IPv4",
    "endpoints": [{"addresses": ["10.250.0.7"],
                   "conditions": {"ready": True, "serving": True, "terminating": False},
                   "targetRef": {"kind": "Pod", "namespace": "asgard", "name": POD["metadata"]["name"],
                                 "uid": POD["metadata"]["uid"]},
                   "nodeName": "lab-node-1"}],
    "ports": [{"name": "http", "protocol": "TCP", "port": 5000}],
}

ENDPOINTS = {
    "apiVersion": "v1",
    "kind": "Endpoints",
    "metadata": {"name": "mlflow-service", "namespace": "asgard"},
    "subsets": [{"addresses": [{"ip": "10.250.0.7", "nodeName": "lab-node-1",
                                "targetRef": {"kind": "Pod", "namespace": "asgard",
                                              "name": POD["metadata"]["name"]}}],
                 "ports": [{"name": "http", "port": 5000, "protocol": "TCP"}]}],
}

GUNICORN_LOG = """\
[2025-10-28 11:40:01 +0000] [7] [INFO] Starting gunicorn 23.0.0
[2025-10-28 11:40:01 +0000] [7] [INFO] Listening at: http://0.0.0.0:5000 (7)
[2025-10-28 11:40:01 +0000] [7] [INFO] Using worker: sync
[2025-10-28 11:40:01 +0000] [9] [INFO] Booting worker with pid: 9
[2025-10-28 11:42:13 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:9)
[2025-10-28 11:42:14 +0000] [7] [ERROR] Worker (pid:9) was sent SIGKILL! Perhaps out of memory?
[2025-10-28 11:42:14 +0000] [31] [INFO] Booting worker with pid: 31
[2025-10-28 11:45:20 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:31)
[2025-10-28 11:45:21 +0000] [7] [ERROR] Worker (pid:31) was sent SIGKILL! Perhaps out of memory?
2025/10/28 11:46:02 WARNING mlflow.server.security: Rejected request with invalid Host header: mlflow-service.asgard.svc:5000
"""

SCHEMA_LOG = """\
2025/10/28 11:58:01 INFO mlflow.store.db.utils: Creating initial MLflow database tables...
Traceback (most recent call last):
  File "/usr/local/bin/mlflow", line 8, in <module>
    sys.exit(cli())
mlflow.exceptions.MlflowException: Detected out-of-date database schema (found version 1a8c4e4aed7b, but expected 6953534de441). Take a backup of your database, then run 'mlflow db upgrade <database_uri>' to migrate your database to the latest version.
2025/10/28 11:58:01 ERROR connecting to postgresql://mlflow:s3cr3tpw@postgres.asgard.svc:5432/mlflow failed
"""


def probe(root_status=200, title=True, healthy=True, findings=None, health_status=200, version="3.17.2"):
    return {
        "changed": False, "healthy": healthy, "pod": POD["metadata"]["name"],
        "checks": {
            "health": {"path": "/health", "status": health_status, "latency_ms": 4.1, "bytes": 2,
                       "ok": health_status == 200},
            "root": {"path": "/", "status": root_status, "latency_ms": 7.9, "bytes": 1432,
                     "ok": root_status == 200 and title, "title_found": title},
            "version": {"path": "/version", "status": 200, "latency_ms": 2.2, "bytes": 6, "ok": True,
                        "version": version},
            "api": {"path": "/api/2.0/mlflow/experiments/search?max_results=1", "status": 200, "latency_ms": 6.5,
                    "bytes": 120, "ok": True},
        },
        "mlflow_version": version, "server_header": "uvicorn", "health_path": "/health",
        "findings": findings or [],
    }


def settings(server="gunicorn", workers=4, timeout=300, keep_alive=5, prefix=None, port=5000, workers_in_opts=None,
             version="3.17.2") -> dict:
    """Server settings in the one settings shape of ``_settings.server_settings()`` (only the keys verify reads)."""
    out = {"server": server, "workers": workers, "port": port, "static_prefix": prefix, "mlflow_version": version,
           "container": "mlflow", "gunicorn": None, "uvicorn": None}
    if server == "gunicorn":
        out["gunicorn"] = {"timeout": timeout, "keep_alive": keep_alive, "worker_class": "sync",
                           "effective_workers": workers}
        if workers_in_opts is not None:
            out["gunicorn"]["workers"] = workers_in_opts
    elif server == "uvicorn":
        out["uvicorn"] = {"timeout_keep_alive": keep_alive, "effective_workers": workers}
        if workers_in_opts is not None:
            out["uvicorn"]["workers"] = workers_in_opts
    return out


SEED_SETTINGS = settings("gunicorn", workers=2, timeout=120, keep_alive=2, prefix="/static")
GOOD_SETTINGS = settings("gunicorn", workers=4, timeout=300, keep_alive=5)
UVICORN = settings("uvicorn", workers=4, keep_alive=5)


def state_of(before, after=None, *, plan=None, remediated=None, rounds=None, settings_before=None,
             settings_after=None, meta=None) -> dict:
    """A mlflow_verify ``state`` as the last round leaves it (what the report is built from)."""
    return {"version": 1, "started_at": "2025-10-28T12:00:00Z", "round": len(rounds or []),
            "before": {"steps": before, "settings": settings_before},
            "last": {"steps": after if after is not None else before,
                     "settings": settings_after if settings_after is not None else settings_before},
            "plan": plan or {}, "remediated": remediated or [], "rounds": rounds or [], "deployment": {},
            "meta": meta or {"namespace": "asgard", "deployment": "mlflow-deployment", "service": "mlflow-service"}}
