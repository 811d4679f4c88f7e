"""The probe end to end through real portforward tunnels to MLflow-like backends (API reads from memory)."""

from __future__ import annotations

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._probe import (
    ProbeInputError,
    ProbeOptions,
    finding,
    prefix_from_pod,
    run_probe,
    validate_probe_params,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target, _resolved
from test_tunnel_fixtures import MemoryKube, MlflowLike, PortForwardServer, pod, service


@pytest.fixture
def env():
    pf = PortForwardServer()
    kube = MemoryKube(pf)
    kube.services[("asgard", "mlflow-service")] = service()
    backends = []

    def add(name, server, **pod_kw):
        backends.append(server)
        pf.backends[name] = server.addr
        kube.pods.setdefault("asgard", []).append(pod(name, **pod_kw))
        return server

    yield kube, pf, add
    for b in backends:
        b.close()
    pf.close()


FAST = {"timeout": 5, "deadline": 30, "retries": 3}
NO_SLEEP = {"sleep": lambda s: None}


def codes(result):
    return [f["code"] for f in result["findings"]]


def test_healthy_server(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["mlflow-service.asgard.svc.cluster.local:5000", "localhost:*"]))
    r = run_probe(kube, Target(), ProbeOptions(**FAST))
    assert r["healthy"] is True, r["findings"]
    assert r["pod"] == "mlflow-0"
    assert r["health_path"] == "/health" and r["static_prefix"] == ""
    assert r["mlflow_version"] == "3.17.2" and r["server_header"].startswith("uvicorn")
    assert r["checks"]["root"]["title_found"] is True
    for name in ("health", "root", "version", "api"):
        c = r["checks"][name]
        assert c["ok"] is True and c["status"] == 200 and c["bytes"] > 0 and c["latency_ms"] >= 0
    assert r["checks"]["api"]["host_header"] == "mlflow-service.asgard.svc.cluster.local:5000"
    assert codes(r) == []
    assert r["tunnels_opened"] == 1, "keep-alive: one WebSocket for all checks"


def test_static_prefix_3x_root_not_found_health_under_prefix(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(prefix="/static", allowed_hosts=["*"]), args=["--port=5000", "--static-prefix=/static"])
    r = run_probe(kube, Target(), ProbeOptions(**FAST))
    assert r["healthy"] is False
    assert r["health_path"] == "/static/health" and r["static_prefix"] == "/static"
    assert r["checks"]["health"]["ok"] is True
    assert [t["status"] for t in r["checks"]["health"]["tried"]] == [404, 200]
    assert r["checks"]["root"]["status"] == 404 and r["checks"]["root"]["title_found"] is False
    root = next(f for f in r["findings"] if f["code"] == "ROOT_NOT_FOUND")
    assert root["severity"] == "critical"  # one severity vocabulary (was "error")
    assert root["evidence"]["ui_path"] == "/static/" and root["evidence"]["ui_title_found"] is True
    assert "HEALTH_UNDER_PREFIX" in codes(r)
    assert r["checks"]["version"]["path"] == "/static/version" and r["mlflow_version"] == "3.17.2"
    assert r["checks"]["api"]["path"].startswith("/static/api/2.0/") and r["checks"]["api"]["ok"] is True


def test_static_prefix_on_2x_keeps_health_at_root(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(version="2.22.5", prefix="/static"), env=[{"name": "MLFLOW_STATIC_PREFIX", "value": "/static"}])
    r = run_probe(kube, Target(), ProbeOptions(static_prefix="/static", **FAST))
    assert r["health_path"] == "/health"
    assert [t["path"] for t in r["checks"]["health"]["tried"]] == ["/static/health", "/health"]
    assert r["checks"]["api"]["ok"] is True  # 2.x has no Host check


def test_invalid_host(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike())  # default allow-list: the Service DNS name is rejected
    r = run_probe(kube, Target(), ProbeOptions(**FAST))
    assert r["healthy"] is False
    f = next(f for f in r["findings"] if f["code"] == "INVALID_HOST")
    assert f["evidence"]["host_header"] == "mlflow-service.asgard.svc.cluster.local:5000"
    assert f["evidence"]["status"] == 403
    assert r["checks"]["health"]["ok"] and r["checks"]["root"]["ok"]
    # with a host the server allows, the same server is healthy
    r2 = run_probe(kube, Target(), ProbeOptions(host_header="localhost:5000", **FAST))
    assert r2["healthy"] is True and r2["checks"]["api"]["host_header"] == "localhost:5000"


def test_api_503_burst_is_retried(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"], fail_api=2))
    slept = []
    r = run_probe(kube, Target(), ProbeOptions(**FAST), sleep=slept.append)
    assert r["healthy"] is True
    assert len(slept) == 2 and slept[1] > slept[0] * 1.2
    retried = next(f for f in r["findings"] if f["code"] == "RETRIED")
    assert retried["severity"] == "info" and len(retried["evidence"]["retries"]) == 2


def test_kube_api_429_and_tunnel_503_are_retried(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"]))
    kube.fail_next = [429, 503]
    pf.refuse_next = [503, 429]
    r = run_probe(kube, Target(), ProbeOptions(**FAST), **NO_SLEEP)
    assert r["healthy"] is True, r["findings"]
    reasons = [e["reason"] for e in next(f for f in r["findings"] if f["code"] == "RETRIED")["evidence"]["retries"]]
    assert len(reasons) == 4 and any("429" in x for x in reasons) and any("503" in x for x in reasons)


def test_retries_exhausted_gives_tunnel_error(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"]))
    pf.refuse_next = [503] * 10
    r = run_probe(kube, Target(), ProbeOptions(timeout=5, deadline=30, retries=2), **NO_SLEEP)
    assert r["healthy"] is False
    f = next(f for f in r["findings"] if f["code"] == "TUNNEL_ERROR")
    assert f["evidence"]["status"] == 503 and f["evidence"]["pod"] == "mlflow-0"


def test_pod_replaced_mid_probe_re_resolves(env):
    kube, pf, add = env
    add("mlflow-old", MlflowLike(allowed_hosts=["*"], close_each=True), created="2025-01-01T00:00:00Z")
    new = MlflowLike(allowed_hosts=["*"])
    orig = kube.open_portforward
    opened = []

    def open_pf(ns, name, port, timeout=10.0):
        opened.append(name)
        if name == "mlflow-old" and len(opened) == 2:
            # after the health check the old pod is deleted and a new one is Ready
            del pf.backends["mlflow-old"]
            kube.pods["asgard"] = [pod("mlflow-new", created="2025-01-02T00:00:00Z")]
            pf.backends["mlflow-new"] = new.addr
        return orig(ns, name, port, timeout=timeout)

    kube.open_portforward = open_pf
    try:
        r = run_probe(kube, Target(), ProbeOptions(**FAST), **NO_SLEEP)
    finally:
        new.close()
    assert r["healthy"] is True, r["findings"]
    assert r["checks"]["health"]["ok"] is True
    assert r["pods_seen"] == ["mlflow-old", "mlflow-new"] and r["pod"] == "mlflow-new"
    assert opened[:3] == ["mlflow-old", "mlflow-old", "mlflow-new"]
    assert "POD_REPLACED" in codes(r)
    retried = next(f for f in r["findings"] if f["code"] == "RETRIED")
    assert "404" in retried["evidence"]["retries"][0]["reason"]


def test_no_ready_pod_is_a_result(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(), ready=False)
    r = run_probe(kube, Target(), ProbeOptions(timeout=5, deadline=30, retries=1), **NO_SLEEP)
    assert r["healthy"] is False
    f = next(f for f in r["findings"] if f["code"] == "NO_READY_POD")
    assert f["evidence"]["pods"][0]["name"] == "mlflow-0"
    assert r["checks"]["health"]["ok"] is None  # not reached


def test_missing_service_is_bad_input(env):
    kube, pf, add = env
    with pytest.raises(ProbeInputError) as ei:
        run_probe(kube, Target(service="missing"), ProbeOptions(**FAST))
    assert "service 'missing' not found in namespace 'asgard'" in str(ei.value)
    assert ei.value.result["findings"][0]["code"] == "SERVICE_NOT_FOUND"


def test_unhealthy_health_endpoint(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"], health_status=500))
    r = run_probe(kube, Target(), ProbeOptions(**FAST))
    assert r["healthy"] is False and "HEALTH_FAILED" in codes(r)
    assert r["health_path"] is None


def test_deadline_gives_timeout_finding(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(), ready=False)
    clock = {"t": 0.0}

    def sleep(s):
        clock["t"] += s

    r = run_probe(kube, Target(), ProbeOptions(timeout=1, deadline=2, retries=10), sleep=sleep,
                  clock=lambda: clock["t"])
    assert "TIMEOUT" in codes(r) and r["healthy"] is False


def test_prefix_from_pod_spec_forms():
    def res(args, env=None):
        return _resolved(pod("p", args=args, env=env), 5000, "asgard", None)

    assert prefix_from_pod(res(["--static-prefix=/static"])) == "/static"
    assert prefix_from_pod(res(["--static-prefix", "/ui"])) == "/ui"
    assert prefix_from_pod(res(["mlflow server --host 0.0.0.0 --static-prefix /x --port 5000"])) == "/x"
    assert prefix_from_pod(res([], env=[{"name": "MLFLOW_STATIC_PREFIX", "value": "/e"}])) == "/e"
    assert prefix_from_pod(res(["--port=5000"])) is None


def test_finding_shape_and_severity():
    f = finding("INVALID_HOST", "m", {"a": 1})
    # the catalogue's shape and severity vocabulary (severity was "error" before 0.2.0; findings gained "step")
    assert f == {"code": "INVALID_HOST", "severity": "critical", "step": "probe", "message": "m", "evidence": {"a": 1}}
    assert finding("RETRIED", "m")["severity"] == "info"


@pytest.mark.parametrize(("params", "needle"), [
    ({"static_prefix": "static"}, "static_prefix:"),
    ({"host_header": "bad host"}, "host_header:"),
    ({"timeout": 0}, "timeout:"),
    ({"deadline": 99999}, "deadline:"),
    ({"retries": 50}, "retries:"),
])
def test_probe_param_validation(params, needle):
    errors = validate_probe_params(params)
    assert len(errors) == 1 and errors[0].startswith(needle)


# ---------------------------------------------------------------- an already-resolved target (option resolved)
def _given(name="mlflow-0", **kw):
    return Target.from_params({"namespace": "asgard", "service": "mlflow-service", "pod": None, "label_selectors": [],
                               "remote_port": None, "resolved": {"pod": name, "port": 5000, **kw}})


def _counting(kube):
    calls = []
    for name in ("get_service", "list_pods", "get_pod", "get_namespace"):
        orig = getattr(kube, name)

        def wrapped(*a, _orig=orig, _name=name):
            calls.append(_name)
            return _orig(*a)
        setattr(kube, name, wrapped)
    return calls


def test_resolved_target_skips_the_service_and_pod_reads(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"]))
    calls = _counting(kube)
    r = run_probe(kube, _given(service_port=5000, static_prefix=""), ProbeOptions(**FAST))
    assert r["healthy"] is True, r["findings"]
    assert calls == [], "no Service / pod read with a resolved target"
    assert r["api_requests"] == 1 and r["tunnels_opened"] == 1
    assert r["resolved"] == {"pod": "mlflow-0", "uid": "", "port": 5000, "service_port": 5000, "pod_ip": None,
                             "static_prefix": ""}
    assert r["checks"]["api"]["host_header"] == "mlflow-service.asgard.svc.cluster.local:5000"


def test_resolved_return_value_round_trips_as_the_option(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"]))
    first = run_probe(kube, Target(), ProbeOptions(**FAST))
    assert first["api_requests"] == 3  # Service + pods + tunnel
    assert first["resolved"]["static_prefix"] == "" and first["resolved"]["uid"] == "uid-mlflow-0"
    again = Target.from_params({"namespace": "asgard", "service": "mlflow-service", "label_selectors": [],
                                "resolved": first["resolved"]})
    kube.requests = 0  # the module builds a fresh client per run
    second = run_probe(kube, again, ProbeOptions(**FAST))
    assert second["healthy"] is True and second["api_requests"] == 1
    assert second["resolved"] == first["resolved"]


def test_resolved_pod_gone_falls_back_to_the_service(env):
    kube, pf, add = env
    add("mlflow-new", MlflowLike(allowed_hosts=["*"]))
    calls = _counting(kube)
    r = run_probe(kube, _given("mlflow-old"), ProbeOptions(**FAST), **NO_SLEEP)
    assert r["healthy"] is True, r["findings"]
    assert r["pods_seen"] == ["mlflow-old", "mlflow-new"] and r["pod"] == "mlflow-new"
    assert calls == ["get_service", "list_pods"]
    assert "POD_REPLACED" in codes(r) and "RETRIED" in codes(r)


def test_resolved_without_prefix_reads_the_pod_once_when_health_is_under_a_prefix(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(prefix="/ui", allowed_hosts=["*"]), args=["--port=5000", "--static-prefix=/ui"])
    calls = _counting(kube)
    r = run_probe(kube, _given(), ProbeOptions(**FAST))
    assert r["health_path"] == "/ui/health", r["checks"]["health"]
    assert [t["path"] for t in r["checks"]["health"]["tried"]] == ["/health", "/ui/health"]
    assert calls == ["get_pod"]
    assert r["resolved"]["static_prefix"] == "/ui" and r["resolved"]["uid"] == "uid-mlflow-0"
    # given with the prefix: no read at all
    calls.clear()
    r2 = run_probe(kube, _given(static_prefix="/ui"), ProbeOptions(**FAST))
    assert r2["health_path"] == "/ui/health" and calls == []


def test_tunnel_churn_against_a_server_closing_every_connection(env):
    """gunicorn sync workers close each connection; one WebSocket carries one connection: one tunnel per request."""
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"], close_each=True))
    r = run_probe(kube, _given(static_prefix=""), ProbeOptions(**FAST))
    assert r["healthy"] is True, r["findings"]
    assert r["tunnels_opened"] == 4 == r["api_requests"]  # health, root, version, api; no GET of Service/pods
    assert len(pf.upgrades) == 4


def test_tunnel_401_says_the_credentials_were_rejected(env):
    kube, pf, add = env
    add("mlflow-0", MlflowLike(allowed_hosts=["*"]))
    pf.refuse_next = [401]
    r = run_probe(kube, _given(), ProbeOptions(**FAST), **NO_SLEEP)
    f = next(f for f in r["findings"] if f["code"] == "TUNNEL_ERROR")
    assert "rejected the credentials" in f["message"] and "expired" in f["message"]
    assert "not allowed" not in f["message"]


def test_unhealthy_message_names_codes_and_messages():
    from ansible_collections.asgard.mlflow.plugins.module_utils._probe import unhealthy_message

    result = {"pod": "mlflow-0", "findings": [
        finding("ROOT_NOT_FOUND", "GET / answers 404: the UI is served under the static prefix /static/"),
        finding("HEALTH_UNDER_PREFIX", "health is served under the static prefix: /static/health"),
        finding("INVALID_HOST", "MLflow rejects Host 'x:5000' with 403 'Invalid Host header'")]}
    msg = unhealthy_message(result)
    assert msg.startswith("MLflow is unhealthy (pod mlflow-0): ROOT_NOT_FOUND: GET / answers 404")
    assert "; INVALID_HOST: MLflow rejects Host 'x:5000'" in msg
    assert "HEALTH_UNDER_PREFIX" not in msg  # info, not a reason


def test_version_is_asked_under_the_prefix_first_when_health_is_there(env):
    kube, pf, add = env
    srv = add("mlflow-0", MlflowLike(prefix="/static", allowed_hosts=["*"], close_each=True),
              args=["--port=5000", "--static-prefix=/static"])
    r = run_probe(kube, Target(), ProbeOptions(**FAST))
    assert r["checks"]["version"]["path"] == "/static/version" and r["mlflow_version"] == "3.17.2"
    paths = [p.split("?")[0] for p, _h in srv.requests]
    assert paths == ["/health", "/static/health", "/", "/static/", "/static/version",
                     "/static/api/2.0/mlflow/experiments/search"]
    assert r["tunnels_opened"] == len(paths)  # gunicorn-like: one tunnel per request, none wasted on /version
