"""playbooks/verify.yml step 4c on a Gateway API HTTPRoute, through the lab's real Gateway API implementation
(tests/lab/asgardlab/ingress/gateway.py: nginx programmed from GatewayClass/Gateway/HTTPRoute) and real MLflow,
driven as an operator types it (``-e name=value`` strings, ``--check --diff``).

Gateway API spec (https://gateway-api.sigs.k8s.io/reference/spec/): an implementation reports per parent
``status.parents[].conditions`` Accepted and ResolvedRefs (a backendRef to a Service port that does not exist is
ResolvedRefs=False, reason BackendNotFound), a Gateway reports ``status.conditions`` Programmed; a route naming a
Gateway that does not exist gets no status from anyone. ``HTTPRouteRule.timeouts.request`` / ``backendRequest``
are GEP-2257 durations (https://gateway-api.sigs.k8s.io/geps/gep-1742/).

One MLflow Deployment for the whole module, made by the deploy role with its HTTPRoute (the first test checks what
it made and that a second deploy run changes nothing; the others run in order on it and leave the route healthy)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.ingress import create, get, request, wait_for, wait_synced  # noqa: E402
from helpers.lab_objects import codes  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("verify_route")]
GW_API = "/apis/gateway.networking.k8s.io/v1"
ROUTE_CODES = {"ROUTE_NOT_ACCEPTED", "ROUTE_REFS_UNRESOLVED", "ROUTE_GATEWAY_NOT_PROGRAMMED", "ROUTE_BACKEND_MISMATCH",
               "ROUTE_PATH_MISMATCH", "ROUTE_HOST_NOT_ALLOWED", "ROUTE_TIMEOUT_TOO_SHORT", "ROUTE_NOT_READABLE",
               "ROUTE_NOT_FOUND"}
TITLE = "<title>MLflow</title>"


def deploy_args(ns: str) -> list[str]:
    """``deploy_route_enabled`` and the rest as an operator types them (``-e name=value`` strings)."""
    return [f"deploy_namespace={ns}", "deploy_workers=1", "deploy_wait_timeout=240", "deploy_route_enabled=true",
            f"deploy_route_hostnames=route.{ns}.example.test,gw.{ns}.example.test", "deploy_route_gateway_name=lab-gw",
            "deploy_static_prefix=/mlflow", "deploy_proxy_timeout=600"]


@pytest.fixture(scope="module")
def served(lab):
    """A namespace with the Gateway ``lab-gw`` (class asgard-lab) and MLflow deployed by the deploy role with its
    HTTPRoute (``deploy_route_enabled``, two hostnames, static prefix ``/mlflow``, ``deploy_proxy_timeout=600``),
    Accepted and served through nginx; yields (namespace, first hostname, the deploy run)."""
    ns = f"t-route-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    host = f"route.{ns}.example.test"
    create(lab, ns, {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "lab-gw"},
                     "spec": {"gatewayClassName": "asgard-lab",
                              "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}})
    res = run_playbook("playbooks/deploy.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=900,
                       cli_vars=deploy_args(ns))
    assert res.rc == 0, res.output
    wait_for(lambda: any(_cond(p, "Accepted") == "True" for p in (route(lab, ns).get("status") or {}).get("parents")
                         or []), 60, 0.2, "HTTPRoute mlflow-route Accepted")
    wait_synced(lab)
    yield ns, host
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


def _cond(status: dict, ctype: str) -> str | None:
    return next((c["status"] for c in status.get("conditions") or [] if c["type"] == ctype), None)


def route(lab, ns: str) -> dict:
    r = lab.request("GET", f"{GW_API}/namespaces/{ns}/httproutes/mlflow-route")
    assert r.status_code == 200, r.text
    return r.json()


def patch_route(lab, ns: str, ops: list[dict]) -> dict:
    r = lab.request("PATCH", f"{GW_API}/namespaces/{ns}/httproutes/mlflow-route", data=json.dumps(ops),
                    headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    return r.json()


def settled(lab, ns: str) -> dict:
    """The route once its implementation has written the status of its current generation (observedGeneration)."""
    def done():
        r = route(lab, ns)
        parents = (r.get("status") or {}).get("parents") or []
        gen = r["metadata"].get("generation")
        return r if parents and all(c.get("observedGeneration") == gen for p in parents for c in p["conditions"]) \
            else None
    return wait_for(done, 60, 0.2, "HTTPRoute status of its generation")


def generation(lab, ns: str) -> int:
    return lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment").json()["metadata"][
        "generation"]


def verify(lab, ns: str, tmp_path: Path, name: str, *cli_vars: str, check: bool = False):
    report = tmp_path / f"{name}.json"
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=900, check=check,
                       diff=check, cli_vars=[f"verify_namespace={ns}", "verify_port_forward=false",
                                             "verify_min_workers=1", "verify_expected_static_prefix=/mlflow",
                                             f"verify_report_path={report}", *cli_vars])
    rep = json.loads(report.read_text()) if report.exists() else {}
    return res, rep


def step(rep: dict) -> dict:
    return next(s for s in rep["steps"] if s["step"] == "ingress")


def test_httproute_through_the_lab_gateway(lab, served):
    """``deploy_route_enabled`` (strings from ``-e``): an HTTPRoute on an existing Gateway of class ``asgard-lab``;
    the Gateway API status says Accepted and ResolvedRefs (Gateway API spec, HTTPRoute status conditions), the
    route's ``timeouts.request``/``backendRequest`` follow ``deploy_proxy_timeout``, its path the static prefix,
    and MLflow's UI, health and API answer through nginx for both hostnames (in the Host allow-list); a second
    run changes nothing."""
    ns, _host = served
    hosts = [f"route.{ns}.example.test", f"gw.{ns}.example.test"]
    route_ = wait_for(lambda: (lambda r: r if any(_cond(p, "Accepted") == "True" for p in
                                                  (r.get("status") or {}).get("parents") or []) else None)(
        route(lab, ns)), 60, 0.2, "HTTPRoute mlflow-route Accepted")
    parent = route_["status"]["parents"][0]
    assert parent["parentRef"]["name"] == "lab-gw"
    assert _cond(parent, "ResolvedRefs") == "True", parent
    rule = route_["spec"]["rules"][0]
    assert rule["timeouts"] == {"request": "600s", "backendRequest": "600s"}
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/mlflow"}}]
    assert route_["spec"]["hostnames"] == hosts
    dep = lab.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment").json()
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert set(hosts) <= set(env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(","))
    # nginx has the route: the module fixture waited for it right after the deploy

    for host in hosts:
        ui = get(lab, host, "/mlflow/")
        assert ui.status_code == 200 and TITLE in ui.text, (host, ui.status_code, ui.text[:300])
        health = get(lab, host, "/mlflow/health")
        assert health.status_code == 200 and health.text == "OK", (host, health.status_code, health.text[:300])
        api = get(lab, host, "/mlflow/api/2.0/mlflow/experiments/search?max_results=1")
        assert api.status_code == 200 and "experiments" in api.json(), (host, api.status_code, api.text[:300])

    again = run_playbook("playbooks/deploy.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=900,
                         cli_vars=deploy_args(ns))
    assert again.rc == 0, again.output
    assert again.changed == 0, again.changed_tasks()


def test_a_healthy_route_has_no_finding(lab, served, tmp_path):
    """The route deploy made (timeouts above the worker timeout, path = the static prefix, hostnames in the allowed
    hosts): Accepted, ResolvedRefs, its Gateway Programmed; MLflow answers through the Gateway, and verify finds
    nothing on it."""
    ns, host = served
    health = request(lab, "GET", host, "/mlflow/health")
    assert health.status_code == 200 and health.text == "OK", (health.status_code, health.text[:300])
    res, rep = verify(lab, ns, tmp_path, "healthy")
    assert res.rc == 0, res.output
    assert not ROUTE_CODES & codes(rep["findings_before"]), rep["findings_before"]
    assert step(rep)["status"] == "ok" and "HTTPRoute mlflow-route" in step(rep)["summary"], step(rep)
    assert res.changed == 0, res.changed_tasks()


def test_a_short_route_timeout_is_found_reported_and_its_next_step_heals_it(lab, served, tmp_path):
    """``timeouts.request: 10s`` while gunicorn waits 300 s: ``--check --diff`` and ``-e verify_remediate=false``
    find ROUTE_TIMEOUT_TOO_SHORT and change nothing (the route read back is identical); a real run reports it,
    not patched (nothing changed), naming the exact ``kubectl patch``; that command, run by real kubectl, sets
    only the short timeouts, and verify then finds nothing on the route."""
    ns, _host = served
    patch_route(lab, ns, [{"op": "replace", "path": "/spec/rules/0/timeouts",
                           "value": {"request": "10s", "backendRequest": "10s"}}])
    short = settled(lab, ns)
    gen = generation(lab, ns)
    for name, args, check in (("check", (), True), ("audit", ("verify_remediate=false",), False),
                              ("report", (), False)):
        res, rep = verify(lab, ns, tmp_path, name, *args, check=check)
        assert res.rc == 0, res.output  # a warning: MLflow itself is healthy
        assert "ROUTE_TIMEOUT_TOO_SHORT" in codes(rep["findings_before"]), (name, rep["findings_before"])
        now = route(lab, ns)
        assert now["metadata"]["resourceVersion"] == short["metadata"]["resourceVersion"], name
        assert now["spec"] == short["spec"], name
        assert generation(lab, ns) == gen and rep["remediated"] == [], name
        assert res.changed == 0, (name, res.changed_tasks())
    f = next(f for f in rep["remaining"] if f["code"] == "ROUTE_TIMEOUT_TOO_SHORT")
    assert f["evidence"]["timeouts"] == {"rules[0].timeouts.request": "10s", "rules[0].timeouts.backendRequest": "10s"}
    command = f["evidence"]["next_step"].split(": ", 1)[1]
    assert command.startswith(f"kubectl -n {ns} patch httproute mlflow-route --type=json -p "), command
    assert any(command in s for s in rep["next_steps"]), rep["next_steps"]

    done = subprocess.run(shlex.split(command), env=lab.env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    after = route(lab, ns)
    assert after["spec"]["rules"][0]["timeouts"] == {"request": "300s", "backendRequest": "300s"}
    rest = lambda r: {**r["spec"], "rules": [{k: v for k, v in x.items() if k != "timeouts"} for x in r["spec"]["rules"]]}  # noqa: E731
    assert rest(after) == rest(short)
    res, rep = verify(lab, ns, tmp_path, "after")
    assert res.rc == 0, res.output
    assert not ROUTE_CODES & codes(rep["findings_before"]), rep["findings_before"]


def test_a_wrong_port_and_a_missing_gateway_are_reported_and_nothing_changed(lab, served, tmp_path):
    """A backendRef to port 5001 (the Service exposes 5000): the lab's implementation says ResolvedRefs=False
    (BackendNotFound) and verify reports ROUTE_REFS_UNRESOLVED and ROUTE_BACKEND_MISMATCH, critical: the run fails
    naming them. The route moved to a Gateway that does not exist: ROUTE_GATEWAY_NOT_PROGRAMMED. Neither is
    guessed at: nothing is patched or restarted."""
    ns, _host = served
    gen = generation(lab, ns)
    patch_route(lab, ns, [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/port", "value": 5001}])
    wrong = settled(lab, ns)
    assert any(_cond(p, "ResolvedRefs") == "False" for p in wrong["status"]["parents"]), wrong["status"]
    try:
        res, rep = verify(lab, ns, tmp_path, "port")
        assert res.rc != 0, "a critical finding must fail the run"
        assert {"ROUTE_REFS_UNRESOLVED", "ROUTE_BACKEND_MISMATCH"} <= codes(rep["remaining"]), rep["remaining"]
        f = next(f for f in rep["remaining"] if f["code"] == "ROUTE_REFS_UNRESOLVED")
        assert f["evidence"]["reason"] == "BackendNotFound", f
        assert step(rep)["status"] == "failed" and rep["remediated"] == []
        assert route(lab, ns)["spec"] == wrong["spec"] and generation(lab, ns) == gen

        gone = patch_route(lab, ns, [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/port", "value": 5000},
                                     {"op": "replace", "path": "/spec/parentRefs/0/name", "value": "no-such-gw"}])
        res, rep = verify(lab, ns, tmp_path, "gateway")
        assert res.rc != 0, "a critical finding must fail the run"
        f = next(f for f in rep["remaining"] if f["code"] == "ROUTE_GATEWAY_NOT_PROGRAMMED")
        assert f["evidence"]["gateway"] == f"{ns}/no-such-gw" and f["evidence"]["exists"] is False, f
        assert not {"ROUTE_BACKEND_MISMATCH"} & codes(rep["remaining"])
        assert rep["remediated"] == [] and route(lab, ns)["spec"] == gone["spec"] and generation(lab, ns) == gen
    finally:
        patch_route(lab, ns, [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/port", "value": 5000},
                              {"op": "replace", "path": "/spec/parentRefs/0/name", "value": "lab-gw"}])
