"""The HTTPRoute part of verify's ingress step (plugins/module_utils/_step_route.py), and its wiring into one round
(_verify_reader/_verify_round) against a fake Kubernetes API at the module_utils boundary. Every finding, the
"no route" and the 403 cases. The same code path runs for real against the lab's Gateway API implementation in
tests/integration/test_verify_route.py.

Status conditions as the Gateway API spec defines them (https://gateway-api.sigs.k8s.io/reference/spec/):
``HTTPRoute.status.parents[].conditions`` Accepted / ResolvedRefs, ``Gateway.status.conditions`` Programmed;
durations as GEP-2257 (https://gateway-api.sigs.k8s.io/geps/gep-2257/)."""

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

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import CATALOGUE  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_ingress import ingress_check  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._step_route import (  # noqa: E402
    duration_seconds,
    gateway_summary,
    route_check,
    with_routes,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_data import VerifyError  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_plan import plan  # noqa: E402
from ansible_collections.asgard.mlflow.plugins.module_utils._verify_round import run_round  # noqa: E402
from test_step_ingress import ING_PATH, settings  # noqa: E402
from test_verify_round import NS, FakeAPI, cluster, opts  # noqa: E402
from verify_fixtures import SERVICE, UVICORN  # noqa: E402
from verify_fixtures import settings as fixture_settings  # noqa: E402

ROUTES = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"
GW = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/gateways/lab-gw"
HOST = "mlflow.example.test"


def cond(ctype, status="True", reason=None, message=""):
    return {"type": ctype, "status": status, "reason": reason or (ctype if status == "True" else "Invalid"),
            "message": message, "observedGeneration": 1, "lastTransitionTime": "2026-12-03T12:00:00Z"}


def route(name="mlflow-route", hostnames=(HOST,), path="/", port=5000, service="mlflow-service", timeouts=None,
          parents=("lab-gw",), accepted="True", resolved="True", status=True, labels=None, annotations=None,
          filters=None) -> dict:
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": port, "weight": 1}]}
    if timeouts is not None:
        rule["timeouts"] = timeouts
    if filters:
        rule["filters"] = filters
    r = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": name, "namespace": NS, "labels": labels or {}, "annotations": annotations or {}},
         "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": p} for p in parents],
                  "hostnames": list(hostnames), "rules": [rule]}}
    if status:
        r["status"] = {"parents": [{"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": p},
                                    "controllerName": "example.net/gateway-controller",
                                    "conditions": [cond("Accepted", accepted), cond("ResolvedRefs", resolved)]}
                                   for p in parents]}
    return r


def gateway(programmed="True") -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "lab-gw", "namespace": NS},
            "spec": {"gatewayClassName": "asgard-lab", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
            "status": {"conditions": [cond("Accepted"), cond("Programmed", programmed)]}}


GATEWAYS = {f"{NS}/lab-gw": gateway_summary(gateway())}


def check(routes, s=None, gateways=None, **kw):
    kw.setdefault("service_name", "mlflow-service")
    kw.setdefault("namespace", NS)
    return route_check(routes, SERVICE, s if s is not None else settings(), GATEWAYS if gateways is None else gateways,
                       **kw)


def codes(part) -> list[str]:
    return sorted(f["code"] for f in part["findings"])


def test_a_healthy_route_is_ok_with_its_details():
    part = check([route(timeouts={"request": "300s", "backendRequest": "300s"})])
    assert part["findings"] == []
    assert part["summary"] == f"HTTPRoute mlflow-route ({HOST}) -> Service mlflow-service"
    (d,) = part["routes"]
    assert d["parents"] == [{"gateway": f"{NS}/lab-gw", "section": None, "accepted": "True", "resolved_refs": "True",
                             "programmed": "True"}]
    assert d["timeouts"] == {"0": {"request": "300s", "backendRequest": "300s"}}
    # unset timeouts (the implementation's default) and 0s (no timeout) are not judged
    assert check([route()])["findings"] == [] and check([route(timeouts={"request": "0s"})])["findings"] == []


def test_only_routes_to_the_service_are_judged_and_the_named_one_alone():
    other = route(name="other", service="other-svc", port=1)
    cross = route(name="cross", port=1)
    cross["spec"]["rules"][0]["backendRefs"][0]["namespace"] = "elsewhere"  # another namespace's Service
    assert check([other, cross])["routes"] == [] and check([other, cross])["summary"] == ""
    named = check([route(), other], route_name="other")
    assert [d["name"] for d in named["routes"]] == ["other"]
    missing = check([route()], route_name="nope")
    assert codes(missing) == ["ROUTE_NOT_FOUND"] and missing["findings"][0]["severity"] == "warning"


@pytest.mark.parametrize("kw, code, reason", [
    ({"accepted": "False"}, "ROUTE_NOT_ACCEPTED", "Invalid"),
    ({"resolved": "False"}, "ROUTE_REFS_UNRESOLVED", "Invalid"),
    ({"status": False}, "ROUTE_NOT_ACCEPTED", None),
])
def test_parent_conditions_accepted_and_resolved_refs(kw, code, reason):
    part = check([route(**kw)])
    assert codes(part) == [code]
    f = part["findings"][0]
    assert f["severity"] == "critical" and f["evidence"]["gateway"] == f"{NS}/lab-gw"
    assert f["evidence"]["status"] == (None if reason is None else "False")


def test_a_parent_gateway_missing_or_not_programmed():
    missing = check([route(status=False)], gateways={f"{NS}/lab-gw": None})
    # a Gateway that does not exist is the cause: no second finding for the missing parent status
    assert codes(missing) == ["ROUTE_GATEWAY_NOT_PROGRAMMED"]
    assert missing["findings"][0]["evidence"]["exists"] is False and "does not exist" in missing["findings"][0]["message"]
    down = check([route()], gateways={f"{NS}/lab-gw": gateway_summary(gateway(programmed="False"))})
    assert codes(down) == ["ROUTE_GATEWAY_NOT_PROGRAMMED"] and down["findings"][0]["evidence"]["status"] == "False"


def test_a_gateway_forbidden_to_read_is_an_info_line_and_the_route_is_still_judged():
    part = check([route(accepted="False")], gateways={},
                 gateway_errors={f"{NS}/lab-gw": "get gateways.gateway.networking.k8s.io in asgard is forbidden"})
    assert codes(part) == ["ROUTE_NOT_ACCEPTED", "ROUTE_NOT_READABLE"]
    info = next(f for f in part["findings"] if f["code"] == "ROUTE_NOT_READABLE")
    assert info["severity"] == "info" and info["evidence"]["permission"] == \
        "get gateways.gateway.networking.k8s.io in asgard"


def test_a_403_on_the_list_is_an_info_line_naming_the_permission():
    part = check([], read_error="list httproutes.gateway.networking.k8s.io in asgard is forbidden")
    assert codes(part) == ["ROUTE_NOT_READABLE"] and part["findings"][0]["severity"] == "info"
    assert part["findings"][0]["evidence"]["permission"] == "list httproutes.gateway.networking.k8s.io"


def test_a_backend_port_the_service_does_not_expose():
    part = check([route(port=8080)])
    assert codes(part) == ["ROUTE_BACKEND_MISMATCH"]
    assert part["findings"][0]["evidence"] == {"route": "mlflow-route", "ports": [8080], "service_ports": [5000]}
    nop = route()
    del nop["spec"]["rules"][0]["backendRefs"][0]["port"]
    assert codes(check([nop])) == ["ROUTE_BACKEND_MISMATCH"]


@pytest.mark.parametrize("path, prefix, found", [
    ("/", None, False), ("/mlflow", None, True), ("/mlflow", "/mlflow", False), ("/", "/mlflow", False),
    ("/other", "/mlflow", True),
])
def test_path_against_the_static_prefix(path, prefix, found):
    part = check([route(path=path)], settings(prefix=prefix))
    assert ("ROUTE_PATH_MISMATCH" in codes(part)) is found
    if found:
        assert part["findings"][0]["evidence"]["paths"] == [path]


def test_a_rewrite_filter_is_not_judged():
    rw = [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    assert check([route(path="/mlflow", filters=rw)])["findings"] == []


def test_a_hostname_not_in_the_allowed_hosts_plans_the_allowed_hosts_patch_with_it():
    part = check([route(hostnames=("gw.example.test", HOST))])
    assert codes(part) == ["ROUTE_HOST_NOT_ALLOWED"]
    assert part["findings"][0]["evidence"]["hosts"] == ["gw.example.test"]
    # before 3.5 (no host check) and with the check disabled: not judged
    assert check([route(hostnames=("gw.example.test",))], {**settings(), "host_check": False})["findings"] == []
    step = with_routes(ingress_check([], SERVICE, settings(), service_name="mlflow-service", namespace=NS), part)
    p = plan([step], settings())
    assert p["patch_targets"] == ["allowed_hosts"] and p["actions"][0]["reason"] == ["ROUTE_HOST_NOT_ALLOWED"]
    assert p["patch_vars"]["patch_allowed_hosts_extra"] == ["gw.example.test", "gw.example.test:*"]


def test_short_timeouts_are_reported_with_the_json_patch_of_only_those_fields():
    part = check([route(timeouts={"request": "10s", "backendRequest": "10s"})])
    assert codes(part) == ["ROUTE_TIMEOUT_TOO_SHORT"]
    ev = part["findings"][0]["evidence"]
    assert ev["timeouts"] == {"rules[0].timeouts.request": "10s", "rules[0].timeouts.backendRequest": "10s"}
    assert ev["patch"] == [{"op": "replace", "path": "/spec/rules/0/timeouts/request", "value": "300s"},
                           {"op": "replace", "path": "/spec/rules/0/timeouts/backendRequest", "value": "300s"}]
    assert ev["next_step"].endswith(f"kubectl -n {NS} patch httproute mlflow-route --type=json -p '"
                                    + json.dumps(ev["patch"], separators=(",", ":")) + "'")
    # only the short one; a longer request timeout is kept
    one = check([route(timeouts={"request": "10m", "backendRequest": "1m"})])["findings"][0]["evidence"]
    assert one["patch"] == [{"op": "replace", "path": "/spec/rules/0/timeouts/backendRequest", "value": "300s"}]
    # the worker timeout: gunicorn's when longer, the minimum on uvicorn
    slow = settings(base=fixture_settings("gunicorn", timeout=600))
    assert check([route(timeouts={"request": "400s"})], slow)["findings"][0]["evidence"]["wanted"] == "600s"
    assert codes(check([route(timeouts={"request": "299s"})], settings(base=UVICORN))) == ["ROUTE_TIMEOUT_TOO_SHORT"]
    assert codes(check([route(timeouts={"request": "5m"})], settings(base=UVICORN))) == []


def test_the_plan_reports_a_short_timeout_with_the_patch_and_a_helm_route_with_the_chart():
    part = check([route(timeouts={"request": "10s"})])
    step = with_routes(ingress_check([], SERVICE, settings(), service_name="mlflow-service", namespace=NS), part)
    p = plan([step], settings())
    assert p["actions"] == [] and p["needed"] is False
    (r,) = p["report_only"]
    assert r["code"] == "ROUTE_TIMEOUT_TOO_SHORT" and "patch httproute mlflow-route --type=json" in r["next_step"]
    helm = check([route(timeouts={"request": "10s"}, labels={"app.kubernetes.io/managed-by": "Helm"},
                        annotations={"meta.helm.sh/release-name": "tracking"})])
    assert "managed by Helm (release tracking)" in helm["findings"][0]["evidence"]["next_step"]
    assert "kubectl" not in helm["findings"][0]["evidence"]["next_step"]


def test_durations():
    assert duration_seconds("1h30m") == 5400 and duration_seconds("500ms") == 0.5 and duration_seconds("0s") == 0
    assert duration_seconds("10") is None and duration_seconds("1.5s") is None and duration_seconds(None) is None


def test_every_route_code_is_in_the_catalogue_in_the_ingress_step():
    for code in ("ROUTE_NOT_ACCEPTED", "ROUTE_REFS_UNRESOLVED", "ROUTE_GATEWAY_NOT_PROGRAMMED", "ROUTE_BACKEND_MISMATCH",
                 "ROUTE_PATH_MISMATCH", "ROUTE_HOST_NOT_ALLOWED", "ROUTE_TIMEOUT_TOO_SHORT", "ROUTE_NOT_READABLE",
                 "ROUTE_NOT_FOUND"):
        assert CATALOGUE[code].steps == ("ingress",), code
    assert CATALOGUE["ROUTE_HOST_NOT_ALLOWED"].targets == ("allowed_hosts",)


def test_the_route_fixture_is_not_mutated():
    r = route(timeouts={"request": "10s"})
    before = copy.deepcopy(r)
    check([r])
    assert r == before


# ------------------------------------------------------------------------------------------------------ one round
def full(**kw):
    kw.setdefault("run_tags", ["verify_pods", "verify_service", "verify_ingress"])
    return opts(**kw)


def test_a_round_lists_routes_once_and_gets_a_gateway_only_when_a_route_names_it():
    objs = cluster()
    objs[ING_PATH] = {"items": []}
    objs[ROUTES] = {"items": []}
    api = FakeAPI(objs)
    r = run_round(api, full())
    assert api.paths.count(ROUTES) == 1 and not [p for p in api.paths if "/gateways/" in p]
    assert "4c. Checks the Ingress in front of the Service: OK - no Ingress routes to Service " \
           "mlflow-service: nothing to check" in r["console"]
    before = api.requests
    # without the Gateway API (404 on the list): the same, and no error
    del objs[ROUTES]
    api = FakeAPI(objs)
    assert run_round(api, full())["healthy"] is True and api.requests == before

    objs[ROUTES] = {"items": [route(hostnames=("gw.example.test",), timeouts={"request": "10s"}),
                              route(name="other", service="x", parents=("elsewhere",))]}
    objs[GW] = gateway()
    api = FakeAPI(objs)
    r = run_round(api, full())
    step = next(s for s in r["steps"] if s["step"] == "ingress")
    assert {f["code"] for f in step["findings"]} == {"ROUTE_HOST_NOT_ALLOWED", "ROUTE_TIMEOUT_TOO_SHORT"}
    assert [d["name"] for d in step["details"]["routes"]] == ["mlflow-route"] and step["details"]["ingresses"] == []
    assert api.requests == before + 1 and api.paths.count(GW) == 1  # the other route's Gateway is not read
    assert step["summary"] == "HTTPRoute mlflow-route (gw.example.test) -> Service mlflow-service"


def test_a_round_with_an_ingress_and_a_route_reports_both_in_one_step():
    from test_step_ingress import ingress

    objs = cluster()
    objs[ING_PATH] = {"items": [ingress(host="ing.example.test")]}
    objs[ROUTES] = {"items": [route(port=8080)]}
    objs[GW] = gateway()
    step = next(s for s in run_round(FakeAPI(objs), full())["steps"] if s["step"] == "ingress")
    assert {"INGRESS_HOST_NOT_ALLOWED", "ROUTE_BACKEND_MISMATCH"} <= {f["code"] for f in step["findings"]}
    assert step["summary"].startswith("Ingress mlflow-ingress (ing.example.test) -> Service mlflow-service; "
                                      "HTTPRoute mlflow-route")


def test_a_round_forbidden_to_list_routes_or_get_the_gateway_goes_on():
    objs = cluster()
    objs[ING_PATH] = {"items": []}
    objs[ROUTES] = KubeError("GET: HTTP 403", status=403)
    r = run_round(FakeAPI(objs), full())
    step = next(s for s in r["steps"] if s["step"] == "ingress")
    assert r["healthy"] is True and step["status"] == "ok"
    assert [f["code"] for f in step["findings"]] == ["ROUTE_NOT_READABLE"]
    objs[ROUTES] = {"items": [route()]}
    objs[GW] = KubeError("GET: HTTP 403", status=403)
    step = next(s for s in run_round(FakeAPI(objs), full())["steps"] if s["step"] == "ingress")
    # (the fixture's server runs MLflow's default allowed hosts: the DNS hostname is refused)
    assert [f["code"] for f in step["findings"]] == ["ROUTE_HOST_NOT_ALLOWED", "ROUTE_NOT_READABLE"]
    step["findings"] = [f for f in step["findings"] if f["code"] == "ROUTE_NOT_READABLE"]
    assert "get gateways.gateway.networking.k8s.io in asgard is forbidden" in step["findings"][0]["message"]


def test_the_route_tag_is_verify_ingress():
    objs = cluster()
    objs[ROUTES] = {"items": [route(port=8080)]}
    api = FakeAPI(objs)
    run_round(api, opts(run_tags=["verify_pods", "verify_service"]))
    assert ROUTES not in api.paths


def test_a_bad_route_name_names_the_variable():
    with pytest.raises(VerifyError, match="verify_route_name: 'Bad_Name' is not an HTTPRoute name"):
        opts(route_name="Bad_Name")
