"""The deep check's step sequencing and finding mapping, through real portforward WebSockets to a small
in-memory MLflow-like HTTP backend (the module_utils boundary). Real MLflow behaviour is proven by
tests/integration/test_probe_transaction.py against the lab."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils._probe import ProbeOptions, run_probe
from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target
from ansible_collections.asgard.mlflow.plugins.module_utils._transaction import (
    TransactionOptions,
    _Paced,
    _proxied_path,
    validate_transaction_params,
)
from test_tunnel_fixtures import MemoryKube, PortForwardServer, pod, service

HOST = "mlflow-service.asgard.svc.cluster.local:5000"


class FakeTracking:
    """Just enough of MLflow's REST API and artifact proxy, in memory. ``api_prefix``: where /api lives;
    ``fail``: {endpoint suffix: (status, body)}; ``auth``: (user, password) for basic auth."""

    def __init__(self, api_prefix="", fail=None, auth=None, corrupt=False):
        self.api_prefix, self.fail, self.auth, self.corrupt = api_prefix, dict(fail or {}), auth, corrupt
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str]] = []
        self.hosts: set[str] = set()
        self.lock = threading.Lock()
        me = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "uvicorn"

            def log_message(self, *a):
                pass

            def _go(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with me.lock:
                    status, ctype, out = me.route(self.command, self.path, body, self.headers)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _go

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.addr = self.httpd.server_address
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, method, raw_path, body, headers):
        u = urlparse(raw_path)
        path, q = u.path, {k: v[0] for k, v in parse_qs(u.query).items()}
        self.hosts.add(headers.get("Host"))
        if path in (self.api_prefix + "/health", self.api_prefix + "/version"):  # MLflow >= 3.7 layout
            path = path[len(self.api_prefix):]
            return 200, "text/plain", b"OK" if path == "/health" else b"3.17.2"
        if path in ("/health", "/version") and not self.api_prefix:
            return 200, "text/plain", b"OK" if path == "/health" else b"3.17.2"
        if path == "/":
            return 200, "text/html", b"<html><head><title>MLflow</title></head></html>"
        if not path.startswith(self.api_prefix + "/api/2.0/"):
            return 404, "application/json", b'{"detail": "Not Found"}'
        ep = path[len(self.api_prefix + "/api/2.0/"):]
        self.log.append((method, ep.split("/artifacts/")[0] if "artifacts/" in ep else ep))
        if self.auth:
            want = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            if headers.get("Authorization") != want:
                return 401, "text/plain", b"You are not authenticated."
        for key, (status, text) in self.fail.items():
            if ep.endswith(key) or (key == "PUT" and method == "PUT"):
                return status, "application/json", text.encode()
        data = json.loads(body) if body and headers.get("Content-Type") == "application/json" else {}

        def ok(obj):
            return 200, "application/json", json.dumps(obj).encode()

        if ep == "mlflow/experiments/search":
            return ok({"experiments": []})
        if ep == "mlflow/experiments/get-by-name":
            for e in self.experiments.values():
                if e["name"] == q["experiment_name"]:
                    return ok({"experiment": e})
            return 404, "application/json", b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}'
        if ep == "mlflow/experiments/create":
            eid = str(len(self.experiments) + 1)
            self.experiments[eid] = {"experiment_id": eid, "name": data["name"], "lifecycle_stage": "active"}
            return ok({"experiment_id": eid})
        if ep == "mlflow/runs/create":
            rid = f"run{len(self.runs) + 1:03d}"
            info = {"run_id": rid, "experiment_id": data["experiment_id"], "start_time": data["start_time"] + len(self.runs),
                    "artifact_uri": f"mlflow-artifacts:/{data['experiment_id']}/{rid}/artifacts", "lifecycle_stage": "active"}
            self.runs[rid] = {"info": info, "data": {"tags": data.get("tags", [])}}
            return ok({"run": self.runs[rid]})
        if ep == "mlflow/runs/log-batch":
            self.runs[data["run_id"]]["data"].update(params=data["params"], metrics=data["metrics"])
            return ok({})
        if ep == "mlflow/runs/get":
            return ok({"run": self.runs[q["run_id"]]})
        if ep == "mlflow/runs/update":
            self.runs[data["run_id"]]["info"]["status"] = data["status"]
            return ok({})
        if ep == "mlflow/runs/search":
            live = [r for r in self.runs.values() if r["info"]["lifecycle_stage"] == "active"]
            return ok({"runs": sorted(live, key=lambda r: -r["info"]["start_time"])})
        if ep == "mlflow/runs/delete":
            self.runs[data["run_id"]]["info"]["lifecycle_stage"] = "deleted"
            return ok({})
        if ep.startswith("mlflow-artifacts/artifacts"):
            rel = unquote(ep[len("mlflow-artifacts/artifacts/"):])
            if method == "PUT":
                self.files[rel] = body
                return ok({})
            if method == "GET" and "path" in q:
                pre = q["path"] + "/"
                return ok({"files": [{"path": k[len(pre):], "is_dir": False, "file_size": len(v)}
                                     for k, v in self.files.items() if k.startswith(pre)]})
            if method == "GET":
                data = self.files[rel]
                return 200, "application/octet-stream", (data[:-1] + b"X") if self.corrupt else data
            if method == "DELETE":
                for k in [k for k in self.files if k.startswith(q["path"] + "/")]:
                    del self.files[k]
                return ok({})
        return 404, "application/json", b'{"detail": "Not Found"}'

    def active(self):
        return [r["info"]["run_id"] for r in self.runs.values() if r["info"]["lifecycle_stage"] == "active"]


class LogKube(MemoryKube):
    """MemoryKube plus pods/log (the only extra read the deep check makes)."""

    def __init__(self, pf, log_text=""):
        super().__init__(pf)
        self.log_text = log_text
        self.log_calls: list[tuple] = []

    def pod_log(self, namespace, pod_name, since_seconds):
        self.requests += 1
        self.log_calls.append((namespace, pod_name, since_seconds))
        return self.log_text


@pytest.fixture
def env():
    made = []

    def make(log_text="", prefix_args=None, **fake_kw):
        pf = PortForwardServer()
        kube = LogKube(pf, log_text)
        kube.services[("asgard", "mlflow-service")] = service()
        fake = FakeTracking(**fake_kw)
        pf.backends["mlflow-0"] = fake.addr
        kube.pods["asgard"] = [pod("mlflow-0", args=prefix_args)]
        made.extend([fake, pf])
        return kube, fake

    yield make
    for m in made:
        m.close()


def deep(kube, skip=None, **topts):
    opts = ProbeOptions(timeout=5, deadline=30, retries=0, transaction=TransactionOptions(**topts),
                        transaction_skip=skip)
    return run_probe(kube, Target(), opts)


def codes(r):
    return [f["code"] for f in r["findings"]]


def names(r):
    return [s["name"] for s in r["transaction"]["steps"]]


def test_full_transaction_sequence_and_cleanup(env):
    kube, fake = env()
    r = deep(kube, artifact_size=5000)
    t = r["transaction"]
    assert r["healthy"] is True and t["ok"] is True, r["findings"]
    assert names(r) == ["get_experiment", "create_experiment", "create_run", "log_batch", "upload_artifact",
                        "list_artifacts", "download_artifact", "get_run", "finish_run", "search_runs",
                        "delete_artifacts", "delete_run"]
    assert all(s["ok"] and s["latency_ms"] >= 0 for s in t["steps"])
    assert t["steps"][0]["found"] is False
    assert fake.hosts == {"localhost:5000", HOST}, "probe checks use localhost, the transaction the Service name"
    assert t["artifact"]["path"] == f"1/{t['run_id']}/artifacts/asgard-synthetic.bin"
    assert t["artifact"]["bytes"] == 5000 and t["artifact"]["sha256"] == t["artifact"]["downloaded_sha256"]
    assert fake.active() == [] and fake.files == {} and t["deleted_runs"] == [t["run_id"]]
    assert t["api_requests"] == 0 and r["tunnels_opened"] == 1, "keep-alive: the probe's tunnel is reused"
    # second run reuses the experiment
    r2 = deep(kube)
    assert "create_experiment" not in names(r2) and r2["transaction"]["experiment_id"] == t["experiment_id"]


def test_keep_last_n_runs(env):
    kube, fake = env()
    results = [deep(kube, keep_runs=2)["transaction"] for _i in range(4)]
    assert sorted(fake.active()) == sorted([results[-1]["run_id"], results[-2]["run_id"]])
    assert results[-1]["kept_runs"][0] == results[-1]["run_id"]
    assert results[2]["deleted_runs"] == [results[0]["run_id"]]
    t = deep(kube, keep_runs=0)["transaction"]
    assert fake.active() == [] and set(results[-1]["kept_runs"]) < set(t["deleted_runs"])


def test_static_prefix_falls_back_to_unprefixed_api_like_mlflow_2(env):
    kube, fake = env(prefix_args=["--static-prefix=/static"])  # /static/api 404: the 2.x layout
    r = run_probe(kube, Target(), ProbeOptions(timeout=5, deadline=30, retries=0, static_prefix="/static",
                                               transaction=TransactionOptions()))
    assert r["transaction"]["ok"] is True and r["transaction"]["api_base"] == "/api", r["findings"]


def test_prefixed_api_is_used(env):
    kube, fake = env(api_prefix="/static")
    r = run_probe(kube, Target(), ProbeOptions(timeout=5, deadline=30, retries=0, static_prefix="/static",
                                               transaction=TransactionOptions()))
    t = r["transaction"]
    assert t["ok"] is True and t["api_base"] == "/static/api"
    assert all(s["path"].startswith("/static/api/2.0/") for s in t["steps"])


@pytest.mark.parametrize("log_text, killed", [
    ("[2026-11-27 09:00:01 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:9)\n"
     "[2026-11-27 09:00:02 +0000] [7] [ERROR] Worker (pid:9) was sent SIGKILL! Perhaps out of memory?\n", True),
    ("[2026-11-27 09:00:01 +0000] [7] [INFO] Booting worker with pid: 9\n", False),
])
def test_upload_5xx_maps_to_worker_killed_only_with_log_evidence(env, log_text, killed):
    kube, fake = env(log_text=log_text, fail={"PUT": (500, "Internal Server Error")})
    r = deep(kube)
    t = r["transaction"]
    assert t["ok"] is False and r["healthy"] is False and t["failed_step"] == "upload_artifact"
    assert "ARTIFACT_UPLOAD_FAILED" in codes(r)
    assert ("WORKER_KILLED_DURING_REQUEST" in codes(r)) is killed
    assert len(kube.log_calls) == 1 and kube.log_calls[0][:2] == ("asgard", "mlflow-0") and kube.log_calls[0][2] >= 1
    if killed:
        f = next(f for f in r["findings"] if f["code"] == "WORKER_KILLED_DURING_REQUEST")
        assert len(f["evidence"]["log_lines"]) == 2 and f["evidence"]["step"] == "upload_artifact"
    assert fake.active() == [] and t["deleted_runs"] == [t["run_id"]], "the failed run is cleaned up"
    assert "list_artifacts" not in names(r)


def test_write_failure_stops_and_reports_evidence(env):
    body = '{"error_code": "INTERNAL_ERROR", "message": "attempt to write a readonly database"}'
    kube, fake = env(fail={"runs/create": (500, body)})
    r = deep(kube)
    f = next(f for f in r["findings"] if f["code"] == "WRITE_FAILED")
    assert f["evidence"]["step"] == "create_run" and f["evidence"]["status"] == 500
    assert f["evidence"]["error_code"] == "INTERNAL_ERROR" and "readonly" in f["evidence"]["body"]
    assert r["transaction"]["failed_step"] == "create_run" and "log_batch" not in names(r)
    assert "WORKER_KILLED_DURING_REQUEST" not in codes(r)


def test_artifact_mismatch(env):
    kube, fake = env(corrupt=True)
    r = deep(kube, artifact_size=1000)
    f = next(f for f in r["findings"] if f["code"] == "ARTIFACT_MISMATCH")
    assert f["evidence"]["sha256_sent"] != f["evidence"]["sha256_received"]
    assert r["transaction"]["failed_step"] == "download_artifact" and r["healthy"] is False


def test_basic_auth(env):
    kube, fake = env(auth=("admin", "s3cret"))
    r = deep(kube)
    assert r["transaction"]["ok"] is False and "TRANSACTION_AUTH_FAILED" in codes(r)
    r = deep(kube, username="admin", password="s3cret")
    assert r["transaction"]["ok"] is True and r["transaction"]["auth"] == "basic"
    assert "s3cret" not in json.dumps(r) and "s3cret" not in repr(TransactionOptions(password="s3cret"))


def test_slow_upload_is_a_warning(env):
    kube, fake = env()
    r = deep(kube, artifact_size=1000, min_upload_rate=10**7)
    f = next(f for f in r["findings"] if f["code"] == "SLOW_UPLOAD")
    assert f["severity"] == "warning" and f["evidence"]["rate_kib_s"] < 10**7
    assert r["healthy"] is True and r["transaction"]["ok"] is True


def test_check_mode_skip(env):
    kube, fake = env()
    r = deep(kube, skip="check mode")
    assert r["transaction"] == {"ok": None, "skipped": "check mode"} and "TRANSACTION_SKIPPED" in codes(r)
    assert fake.log == [("GET", "mlflow/experiments/search")], "nothing written"


def test_paced_stream_respects_rate():
    sent = []

    class Sink:
        def sendall(self, data):
            sent.append(len(data))

    t0 = time.monotonic()
    _Paced(Sink(), rate=400_000, chunk=50_000).sendall(b"x" * 200_000)
    assert sum(sent) == 200_000 and len(sent) == 4
    assert time.monotonic() - t0 >= 0.45


@pytest.mark.parametrize("uri, rel", [
    ("mlflow-artifacts:/1/abc/artifacts", "1/abc/artifacts"),
    ("mlflow-artifacts://mlflow:5000/1/abc/artifacts", "1/abc/artifacts"),
    ("/mlflow/artifacts/1/abc/artifacts", None),
    ("s3://bucket/1/abc/artifacts", None),
    (None, None),
])
def test_proxied_path(uri, rel):
    assert _proxied_path(uri) == rel


def test_validation_names_fields():
    assert validate_transaction_params({"transaction_artifact_size": 65536, "transaction_keep_runs": 0}) == []
    errs = validate_transaction_params({"transaction_artifact_size": 0, "transaction_keep_runs": -1,
                                        "transaction_experiment": " ", "transaction_username": "u",
                                        "transaction_min_upload_rate": -1})
    joined = " | ".join(errs)
    for name in ("transaction_artifact_size", "transaction_keep_runs", "transaction_experiment",
                 "transaction_username/transaction_password", "transaction_min_upload_rate"):
        assert name in joined
