"""Bench helpers for the lab: authenticated API calls, MLflow instances, the request log, pod network namespaces.

Not a test module (no ``test_`` prefix): pytest does not collect it. Used by tests/bench/bench.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import http.client
import json
import os
import re
import threading
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "playbooks" / "files" / "seed-before.yml"
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
TITLE = re.compile(rb"<title>\s*MLflow\s*</title>", re.I)


class Lab:
    """The bench's private lab (state dir given), talked to with plain ``requests``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.kubeconfig = self.state_dir / "kubeconfig"
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        self.api = cfg["clusters"][0]["cluster"]["server"]
        self.token = cfg["users"][0]["user"]["token"]
        self.ca = str(self.state_dir / "pki" / "ca.crt")
        self.requests_log = self.state_dir / "requests.log"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"
        self.session.verify = self.ca
        # REQUESTS_CA_BUNDLE in the environment would override the lab's CA
        self.session.trust_env = False

    # ----------------------------------------------------------------- API
    def request(self, method: str, path: str, **kw) -> requests.Response:
        return self.session.request(method, self.api + path, timeout=kw.pop("timeout", 30), **kw)

    def get(self, path: str, **params) -> dict:
        r = self.request("GET", path, params=params or None)
        r.raise_for_status()
        return r.json()

    def create(self, path: str, obj: dict) -> None:
        r = self.request("POST", path, json=obj)
        if r.status_code not in (200, 201, 409):
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")

    def ensure_namespace(self, ns: str) -> None:
        self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    def delete_namespace(self, ns: str) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{ns}")

    def wait_namespace_gone(self, ns: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.request("GET", f"/api/v1/namespaces/{ns}").status_code == 404:
                return
            time.sleep(0.5)

    def pods(self, ns: str, selector: str = "app=mlflow") -> list[dict]:
        # `limit=500` marks the bench's own polling in the request log (kubernetes.core never sends it)
        items = self.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=selector, limit="500").get("items", [])
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    # ----------------------------------------------------------------- request log
    def log_mark(self) -> int:
        return self.requests_log.stat().st_size if self.requests_log.exists() else 0

    def requests_since(self, mark: int, end: int | None = None) -> list[dict]:
        with open(self.requests_log, encoding="utf-8") as f:
            f.seek(mark)
            data = f.read() if end is None else f.read(max(0, end - mark))
        out = []
        for line in data.splitlines():
            if line.strip():
                e = json.loads(line)
                end_t = parse_ts(e["ts"])
                e["t_end"] = end_t
                e["t_start"] = end_t - e.get("duration_ms", 0) / 1000.0
                out.append(e)
        return [e for e in out if "limit=500" not in (e.get("query") or "")]


def parse_ts(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals (overlapping requests count once)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def normalise_path(path: str) -> str:
    """Group request paths: namespaces and pod names replaced by placeholders."""
    path = re.sub(r"/namespaces/[^/]+", "/namespaces/{ns}", path)
    path = re.sub(r"/pods/[^/]+", "/pods/{pod}", path)
    return path


# --------------------------------------------------------------------- MLflow instances
def healthy_objects(ns: str, workers: int = 1) -> list[dict]:
    """A healthy MLflow (uvicorn, ``workers`` workers, jobs off, SQLite on an emptyDir, allowed hosts including the
    in-cluster Service name) with a readiness probe on /health, plus its Service ``mlflow-service``."""
    seed = [o for o in yaml.safe_load_all(SEED.read_text()) if o]
    dep = copy.deepcopy(next(o for o in seed if o["kind"] == "Deployment"))
    svc = copy.deepcopy(next(o for o in seed if o["kind"] == "Service"))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    # `exec`: MLflow is PID 1 (a healthy server has no SHELL_WRAPPER_NO_EXEC)
    c["args"] = [
        "exec mlflow server --host=0.0.0.0 --port=5000 --backend-store-uri=${MLFLOW_BACKEND_STORE_URI} "
        f"--default-artifact-root=${{MLFLOW_DEFAULT_ARTIFACT_ROOT}} --serve-artifacts --workers {workers}"
    ]
    c["env"].append({"name": "MLFLOW_SERVER_ALLOWED_HOSTS",
                     "value": f"localhost:*,127.0.0.1:*,10.*,mlflow-service.{ns}.svc.cluster.local:5000"})
    c["readinessProbe"] = {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 1, "failureThreshold": 3}
    return [dep, svc]


def seed_objects() -> list[dict]:
    return [o for o in yaml.safe_load_all(SEED.read_text()) if o]


def apply(lab: Lab, ns: str, objs: list[dict]) -> None:
    lab.ensure_namespace(ns)
    for obj in objs:
        base = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "Service": f"/api/v1/namespaces/{ns}/services"}[obj["kind"]]
        lab.create(base, obj)


def http_get(ip: str, path: str, host: str = "localhost:5000", timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(ip, 5000, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def serving_pod(lab: Lab, ns: str, health_path: str = "/health", exclude_uids: set | frozenset = frozenset()):
    """The first pod (not in exclude_uids) whose MLflow answers ``health_path`` with 200, or None."""
    for p in lab.pods(ns):
        ip = p.get("status", {}).get("podIP")
        if not ip or p["metadata"]["uid"] in exclude_uids:
            continue
        try:
            status, _ = http_get(ip, health_path, timeout=2)
        except OSError:
            continue
        if status == 200:
            return p
    return None


def wait_serving(lab: Lab, ns: str, health_path: str = "/health", timeout: float = 300) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        p = serving_pod(lab, ns, health_path)
        if p is not None:
            return p
        time.sleep(0.5)
    raise RuntimeError(f"MLflow in {ns} did not answer {health_path} within {timeout:.0f}s")


def wait_ready(lab: Lab, ns: str, timeout: float = 300) -> None:
    """Deployment available (what kubernetes.core's wait and the verify role consider ready)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        d = lab.get(f"/apis/apps/v1/namespaces/{ns}/deployments/mlflow-deployment")
        st = d.get("status", {})
        if (st.get("availableReplicas") == 1 and st.get("observedGeneration") == d["metadata"]["generation"]
                and not st.get("unavailableReplicas")):
            return
        time.sleep(0.5)
    raise RuntimeError(f"deployment in {ns} not available within {timeout:.0f}s")


class DashboardWatcher(threading.Thread):
    """Polls a namespace until a pod that did not exist at start serves the dashboard (GET / 200 with the MLflow
    title). ``answered_at`` is the wall-clock time (epoch s) of that answer."""

    def __init__(self, lab: Lab, ns: str, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.lab, self.ns, self.interval = lab, ns, interval
        self.old = {p["metadata"]["uid"] for p in lab.pods(ns)}
        self.answered_at: float | None = None
        self.first_new_pod_at: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set() and self.answered_at is None:
            try:
                for p in self.lab.pods(self.ns):
                    if p["metadata"]["uid"] in self.old:
                        continue
                    if self.first_new_pod_at is None:
                        self.first_new_pod_at = time.time()
                    ip = p.get("status", {}).get("podIP")
                    if not ip:
                        continue
                    try:
                        status, body = http_get(ip, "/", timeout=2)
                    except OSError:
                        continue
                    if status == 200 and TITLE.search(body):
                        self.answered_at = time.time()
                        return
            except (requests.RequestException, ValueError):
                pass
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()


def netns_of(pod: dict) -> str:
    """The pod's network namespace name (tests/lab/asgardlab/kubelet/network.py: asgl-<uid without dashes>[:12])."""
    return "asgl-" + pod["metadata"]["uid"].replace("-", "")[:12]


def in_netns(ns_name: str, fn):
    """Run ``fn()`` in a thread that entered /run/netns/<ns_name> (Python 3.12 os.setns switches only that thread);
    returns its result or raises its exception."""
    box: dict = {}

    def target():
        try:
            fd = os.open(f"/run/netns/{ns_name}", os.O_RDONLY)
            try:
                os.setns(fd, os.CLONE_NEWNET)
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
