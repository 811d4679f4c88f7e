"""One round of mlflow_verify (plugins/module_utils/_verify_round.py) against a fake Kubernetes API at the
module_utils boundary (the _kube.KubeAPI methods it calls: get, get_text, watch). The same code path runs for real
against the lab in tests/integration/test_verify_*.py. Here: the state protocol (an action's outcome is read from the
cluster, never assumed), the rollout wait (a watch), check mode, Helm, the API request count, bad input."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[4]
if str(REPO / ".collections") not in sys.path:
    sys.path.insert(0, str(REPO / ".collections"))

from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_options import ARG_SPEC, Options  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_reader import Reader  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_round import InputError, run_round  # noqa: E402
from verify_fixtures import DEPLOYMENT, ENDPOINT_SLICE, POD, SERVICE, crashloop_pod  # noqa: E402

NS = "asgard"
DEP_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/mlflow-deployment"
NO_PROBE = ["verify_pods", "verify_logs", "verify_service", "verify_remediate"]


class FakeAPI:
    """GETs answered from ``objects`` (path -> object or text); 404 for anything else; watches from ``events``."""

    def __init__(self, objects: dict, events: list | None = None):
        self.objects = objects
        self.events = list(events or [])
        self.requests = 0
        self.paths: list[str] = []

    def get(self, path, query=None):
        self.requests += 1
        self.paths.append(path)
        if path not in self.objects:
            raise KubeError(f"GET {path}: HTTP 404", status=404)
        value = self.objects[path]
        if isinstance(value, Exception):
            raise value
        selector = dict(query or []).get("labelSelector")
        if selector and isinstance(value, dict) and "items" in value:  # as the API server filters a list
            want = dict(kv.split("=", 1) for kv in selector.split(","))
            value = {**value, "items": [i for i in value["items"]
                                        if want.items() <= ((i.get("metadata") or {}).get("labels") or {}).items()]}
        return copy.deepcopy(value)

    def get_text(self, path, query=None, accept="application/json"):
        value = self.get(path, query)
        return value if isinstance(value, str) else json.dumps(value)

    def watch(self, path, query=None, timeout=30.0):
        self.requests += 1
        self.paths.append(path + "?watch")
        while self.events:
            event = self.events.pop(0)
            if event.get("type") == "MODIFIED":  # the cluster changes as the watch says
                self.objects[DEP_PATH] = copy.deepcopy(event["object"])
            yield event


def cluster(dep=None, pods=None, log="INFO: Uvicorn running on http://0.0.0.0:5000\n") -> dict:
    dep = copy.deepcopy(dep or DEPLOYMENT)
    dep["spec"]["template"]["spec"]["containers"][0]["command"] = ["mlflow", "server"]
    dep["spec"]["template"]["spec"]["containers"][0]["args"] = ["--host=0.0.0.0", "--port=5000", "--workers=4"]
    pods = pods if pods is not None else [copy.deepcopy(POD)]
    for p in pods:
        p["spec"]["containers"] = copy.deepcopy(dep["spec"]["template"]["spec"]["containers"])
    objs = {DEP_PATH: dep, f"/api/v1/namespaces/{NS}/pods": {"items": pods},
            f"/api/v1/namespaces/{NS}/services/mlflow-service": SERVICE,
            f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices": {"items": [ENDPOINT_SLICE]},
            f"/api/v1/namespaces/{NS}": {"metadata": {"name": NS}}}
    for p in pods:
        objs[f"/api/v1/namespaces/{NS}/pods/{p['metadata']['name']}/log"] = log
    return objs


def opts(**kw) -> Options:
    params = {k: v.get("default") for k, v in ARG_SPEC.items()}
    params.update(namespace=NS, run_tags=NO_PROBE, variable_prefix="verify_")
    params.update(kw)
    return Options.from_params(params)


def test_a_healthy_round_reads_each_object_once_and_plans_nothing():
    api = FakeAPI(cluster())
    r = run_round(api, opts())
    assert r["healthy"] is True and r["plan"]["needed"] is False and r["round"] == 0
    # Deployment, pods, log, Service, EndpointSlices (the probe's tunnel is the 6th in a full round)
    assert api.requests == 5, api.paths
    assert r["console"][0].startswith("1. Checks pod status: OK")
    assert r["state"]["before"]["steps"] == r["steps"] and r["state"]["version"] == 1
    assert "s3cr3tpw" not in json.dumps(r)  # the fixture's literal password in the Deployment env


def test_a_missing_namespace_is_bad_input_named_after_the_variable():
    api = FakeAPI({})
    with pytest.raises(InputError, match="verify_namespace: namespace 'asgard' does not exist"):
        run_round(api, opts())


def test_rejected_credentials_say_what_to_do():
    api = FakeAPI({DEP_PATH: KubeError("GET: HTTP 401", status=401)})
    with pytest.raises(InputError, match="HTTP 401 Unauthorized.*refresh the kubeconfig"):
        run_round(api, opts())


def test_transient_api_errors_are_retried():
    objs = cluster()
    api = FakeAPI(objs)
    real = api.get
    failures = {"n": 0}

    def flaky(path, query=None):
        if path == DEP_PATH and failures["n"] < 2:
            failures["n"] += 1
            api.requests += 1
            raise KubeError("GET: HTTP 429", status=429)
        return real(path, query)

    api.get = flaky
    reader = Reader(api, NS, sleep=lambda s: None)
    assert reader.get("d", DEP_PATH)["metadata"]["name"] == "mlflow-deployment" and failures["n"] == 2


def test_after_a_patch_the_outcome_is_read_from_the_cluster_and_the_rollout_watched():
    few = copy.deepcopy(DEPLOYMENT)
    objs = cluster(few)
    args = ["--host=0.0.0.0", "--port=5000", "--workers=1"]
    objs[DEP_PATH]["spec"]["template"]["spec"]["containers"][0]["args"] = args
    api = FakeAPI(objs)
    first = run_round(api, opts())
    assert first["plan"]["patch"] is True and first["plan"]["patch_targets"] == ["workers"]
    # the patch role ran: the Deployment's generation moved; its rollout is still in progress, then completes
    patched = copy.deepcopy(objs[DEP_PATH])
    patched["metadata"]["generation"] = 3
    patched["spec"]["template"]["spec"]["containers"][0]["args"][-1] = "--workers=4"
    done = copy.deepcopy(patched)
    done["status"]["observedGeneration"] = 3
    api.objects[DEP_PATH] = patched
    api.events = [{"type": "MODIFIED", "object": done}]
    api.objects[f"/api/v1/namespaces/{NS}/pods"]["items"][0]["spec"]["containers"][0]["args"][-1] = "--workers=4"
    second = run_round(api, opts(), state=first["state"])
    assert second["round"] == 1 and second["rollout"]["state"] == "complete"
    [rec] = second["state"]["remediated"]
    assert (rec["action"], rec["changed"], rec["failed"], rec["round"]) == ("patch", True, False, 1)
    assert second["state"]["rounds"][0]["findings_after"] == [] and second["plan"]["needed"] is False
    assert any(p.endswith("?watch") for p in api.paths)


def test_a_failed_patch_that_changed_nothing_is_never_reported_as_a_change():
    objs = cluster()
    objs[DEP_PATH]["spec"]["template"]["spec"]["containers"][0]["args"][-1] = "--workers=1"
    api = FakeAPI(objs)
    first = run_round(api, opts())
    second = run_round(api, opts(), state=first["state"], errors={"patch": "Deployment is managed by Helm"})
    [rec] = second["state"]["remediated"]
    assert rec["changed"] is False and rec["failed"] is True and "FAILED: Deployment is managed by Helm" in \
        rec["description"]
    assert second["rollout"] is None  # nothing rolled: no wait
    # the same finding is not patched twice in one run
    assert second["plan"]["patch"] is False and second["plan"]["needed"] is False


def replicasets(*revisions_hashes) -> dict:
    return {"items": [{"metadata": {"name": f"mlflow-deployment-{h}", "labels": {"app": "mlflow", "pod-template-hash": h},
                                    "annotations": {"deployment.kubernetes.io/revision": rev}}}
                      for rev, h in revisions_hashes]}


def test_a_new_pod_that_cannot_start_ends_the_wait_early():
    objs = cluster(pods=[crashloop_pod(restarts=3)])
    objs[f"/apis/apps/v1/namespaces/{NS}/replicasets"] = replicasets(("1", "5f4d8c7b6a"), ("2", "6b8f7d9c5d"))
    api = FakeAPI(objs)
    reader = Reader(api, NS)
    dep = objs[DEP_PATH]
    dep["metadata"]["generation"] = 3  # not observed yet: a rollout in progress
    out = reader.wait_rollout("mlflow-deployment", timeout=60)
    assert out["state"] == "failing" and "CrashLoopBackOff" in out["reason"]


def test_an_old_pod_crash_looping_while_the_new_one_starts_is_waited_for():
    """The restart after a migration: the old ReplicaSet's pod still crash loops (the reason for the rollout) while
    the new template's pod starts. Only the current template's pods (the ReplicaSet with the Deployment's revision,
    its pod-template-hash) can make the wait hopeless."""
    old = crashloop_pod(restarts=4)
    old["metadata"]["labels"]["pod-template-hash"] = "5f4d8c7b6a"
    objs = cluster(pods=[old])
    objs[f"/apis/apps/v1/namespaces/{NS}/replicasets"] = replicasets(("1", "5f4d8c7b6a"), ("2", "6b8f7d9c5d"))
    dep = objs[DEP_PATH]
    dep["metadata"]["generation"] = 3
    done = copy.deepcopy(dep)
    done["status"]["observedGeneration"] = 3
    api = FakeAPI(objs, events=[{"type": "MODIFIED", "object": done}])
    out = Reader(api, NS).wait_rollout("mlflow-deployment", timeout=60)
    assert out["state"] == "complete", out


def test_check_mode_records_the_round_without_reading():
    objs = cluster()
    objs[DEP_PATH]["spec"]["template"]["spec"]["containers"][0]["args"][-1] = "--workers=1"
    api = FakeAPI(objs)
    first = run_round(api, opts(), check_mode=True)
    before = api.requests
    second = run_round(api, opts(), state=first["state"], check_mode=True)
    assert api.requests == before
    assert second["state"]["rounds"] == [{"round": 1, "planned": ["patch"], "remediated": [], "findings_after": None}]
    assert second["plan"]["needed"] is False and second["plan"]["actions"][0]["action"] == "patch"
    assert second["state"]["remediated"] == []


def test_a_helm_managed_deployment_gets_the_chart_values_not_a_patch():
    objs = cluster()
    dep = objs[DEP_PATH]
    dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
    dep["metadata"]["annotations"]["meta.helm.sh/release-name"] = "mlflow"
    dep["spec"]["template"]["spec"]["containers"][0]["args"][-1] = "--workers=1"
    r = run_round(FakeAPI(objs), opts())
    assert r["plan"]["patch"] is False and r["plan"]["needed"] is False
    helm = next(f for f in r["findings"] if f["code"] == "HELM_MANAGED")
    assert "release mlflow" in helm["message"] and "mlflow server --workers 4 (or more)" in helm["message"]
    allowed = run_round(FakeAPI(objs), opts(patch_vars={"patch_allow_helm_managed": True}))
    assert allowed["plan"]["patch"] is True


def test_the_remediation_rounds_budget_stops_the_plan():
    objs = cluster()
    objs[DEP_PATH]["spec"]["template"]["spec"]["containers"][0]["args"][-1] = "--workers=1"
    api = FakeAPI(objs)
    first = run_round(api, opts(remediation_rounds=1))
    state = copy.deepcopy(first["state"])
    state["plan"]["actions"] = []  # pretend round 1 ran something else
    second = run_round(api, opts(remediation_rounds=1), state=state)
    assert second["plan"]["patch"] is True and second["plan"]["needed"] is False
    assert second["plan"]["not_applied"] == "verify_remediation_rounds (1) reached"


def test_a_state_from_something_else_is_refused():
    with pytest.raises(ValueError, match="state: expected the state returned by an earlier mlflow_verify call"):
        run_round(FakeAPI(cluster()), opts(), state={"round": 1})
