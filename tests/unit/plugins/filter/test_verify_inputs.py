"""Unit tests of the verify role's input helpers and of its use of asgard.mlflow.mlflow_server_settings."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.filter import verify as F  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.filter.mlflow_settings import mlflow_server_settings  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils import _verify as V  # noqa: E402
from verify_fixtures import DEPLOYMENT, POD, crashloop_pod  # noqa: E402

FILTERS = F.FilterModule().filters()


def test_seed_deployment_settings_through_the_real_parser():
    """The seed's sh -c Full Command, parsed by mlflow_server_settings, gives the verify findings."""
    raw = mlflow_server_settings(DEPLOYMENT)
    n = V.normalize_settings(raw)
    assert n["server"] == "gunicorn"
    assert n["gunicorn_timeout"] == 120
    assert n["workers"] == 4 and n["workers_in_opts"] == 2  # mlflow's default --workers 4 overrides opts' 2
    assert n["static_prefix"] == "/static"
    st = FILTERS["verify_settings"](raw)
    assert {f["code"] for f in st["findings"]} == {"SHORT_WORKER_TIMEOUT", "WORKERS_INCONSISTENT", "STATIC_PREFIX_MISMATCH"}
    st = FILTERS["verify_settings"](raw, expected_static_prefix="/static")
    assert {f["code"] for f in st["findings"]} == {"SHORT_WORKER_TIMEOUT", "WORKERS_INCONSISTENT", "STATIC_PREFIX_SET"}
    assert "s3cr3tpw" not in str(n)


def test_worker_count_row_says_made_consistent():
    before = {"server": "gunicorn", "workers": 4, "workers_in_opts": 2, "gunicorn_timeout": 120}
    after = {"server": "gunicorn", "workers": 4, "workers_in_opts": 4, "gunicorn_timeout": 300}
    row = next(r for r in V.before_after(before, after) if r["metric"] == "Worker count")
    assert row == {"metric": "Worker count", "before": "4 (opts say 2)", "after": "4", "change": "made consistent"}


def test_configmap_refs_and_match_labels():
    dep = copy.deepcopy(DEPLOYMENT)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["env"].append({"name": "MLFLOW_WORKERS", "valueFrom": {"configMapKeyRef": {"name": "mlflow-cfg", "key": "w"}}})
    c["envFrom"] = [{"configMapRef": {"name": "mlflow-env"}}, {"secretRef": {"name": "db"}}]
    assert FILTERS["verify_configmap_refs"](dep) == ["mlflow-cfg", "mlflow-env"]
    assert FILTERS["verify_match_labels"]({"resources": [DEPLOYMENT]}) == ["app=mlflow"]
    assert FILTERS["verify_configmap_refs"](None) == []


def test_log_targets_current_and_previous():
    terminating = copy.deepcopy(POD)
    terminating["metadata"]["deletionTimestamp"] = "2025-10-28T11:59:00Z"
    targets = FILTERS["verify_log_targets"]([POD, crashloop_pod(), terminating])
    name = POD["metadata"]["name"]
    assert targets == [{"pod": name, "container": "mlflow", "previous": False},
                       {"pod": name, "container": "mlflow", "previous": False},
                       {"pod": name, "container": "mlflow", "previous": True}]


def test_log_targets_skip_a_container_that_never_started():
    p = copy.deepcopy(POD)
    p["status"]["containerStatuses"][0].update({"state": {"waiting": {"reason": "ContainerCreating"}},
                                                "restartCount": 0})
    assert V.log_targets([p]) == []


def test_migration_job_uses_the_deployment_image_env_and_volumes():
    dep = copy.deepcopy(DEPLOYMENT)
    dep["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "mlflow"}}]
    dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/mlflow"}]
    job = FILTERS["verify_migration_job"]({"resources": [dep]}, mlflow_server_settings(dep))
    assert job["kind"] == "Job" and job["metadata"]["name"] == "mlflow-deployment-verify-db-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    assert c["command"] == ["/bin/sh", "-c", 'exec mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"']
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/mlflow"}]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "mlflow"
    assert job["metadata"]["namespace"] == "asgard"


def test_migration_job_with_a_literal_sqlite_uri_and_without_any():
    dep = copy.deepcopy(DEPLOYMENT)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["env"] = []
    c["command"] = ["mlflow", "server"]
    c["args"] = ["--backend-store-uri=sqlite:////mlflow/mlflow.db", "--port=5000"]
    job = V.migration_job(dep, mlflow_server_settings(dep))
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][2] == \
        "exec mlflow db upgrade 'sqlite:////mlflow/mlflow.db'"
    c["args"] = ["--port=5000"]
    with pytest.raises(AnsibleFilterError, match="backend store URI was not found"):
        FILTERS["verify_migration_job"](dep, mlflow_server_settings(dep))
    with pytest.raises(AnsibleFilterError, match="deployment: the Deployment is needed"):
        FILTERS["verify_migration_job"](None)
