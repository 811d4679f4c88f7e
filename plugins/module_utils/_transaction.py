# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the deep check of ``mlflow_probe`` (``transaction: true``): one synthetic MLflow transaction.

Through the probe's own portforward tunnel (same ``_Session``), with the in-cluster Host header:
get-or-create a dedicated experiment, create a run, log a param and a metric, upload an artifact through
the artifact proxy (``--serve-artifacts``), list it, download it and compare bytes, read the run back, mark
it finished, then delete synthetic runs beyond ``keep_runs`` (artifacts first, then ``runs/delete``).
Each step is timed. Failures become stable findings; on a 5xx / broken connection the pod log since the
transaction started is read (pods/log ``sinceSeconds``) to tell a gunicorn worker killed mid-request.

Write steps are never retried (a POST may have been applied); only a stale keep-alive connection (closed
by the server before it answered anything) is re-sent once on a fresh tunnel.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from ansible_collections.asgard.mlflow.plugins.module_utils._findings import finding
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError
from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import (
    TunnelError,
    TunnelTimeout,
    basic_auth,
    http_request,
)

DEFAULT_EXPERIMENT = "asgard-synthetic-healthcheck"
SYNTHETIC_TAG = "asgard.synthetic"
ARTIFACT_FILE = "asgard-synthetic.bin"
WORKER_KILLED_RE = re.compile(r"\[CRITICAL\] WORKER TIMEOUT|was sent SIGKILL|was sent SIGABRT|Worker \(pid:\d+\) was sent")
MAX_ARTIFACT = 512 << 20


@dataclass
class TransactionOptions:
    experiment: str = DEFAULT_EXPERIMENT
    artifact_size: int = 64 * 1024
    keep_runs: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    min_upload_rate: float = 64.0  # KiB/s; below -> SLOW_UPLOAD; 0 disables
    upload_rate_limit: float = 0.0  # KiB/s; pace the upload body (0: as fast as possible)

    @classmethod
    def from_params(cls, p: dict) -> TransactionOptions:
        def num(key, default):
            v = p.get(key)
            return default if v is None else v

        return cls(experiment=num("transaction_experiment", DEFAULT_EXPERIMENT),
                   artifact_size=int(num("transaction_artifact_size", 64 * 1024)),
                   keep_runs=int(num("transaction_keep_runs", 0)),
                   username=p.get("transaction_username"), password=p.get("transaction_password"),
                   min_upload_rate=float(num("transaction_min_upload_rate", 64.0)),
                   upload_rate_limit=float(num("transaction_upload_rate_limit", 0.0)))


def validate_transaction_params(p: dict) -> list[str]:
    errors = []
    exp = p.get("transaction_experiment")
    if exp is not None and (not exp.strip() or len(exp) > 500):
        errors.append(f"transaction_experiment: {exp!r} is not valid (expected a non-empty name of at most 500 characters)")
    size = p.get("transaction_artifact_size")
    if size is not None and not 1 <= int(size) <= MAX_ARTIFACT:
        errors.append(f"transaction_artifact_size: {size} is out of range (expected bytes, from 1 to {MAX_ARTIFACT})")
    keep = p.get("transaction_keep_runs")
    if keep is not None and not 0 <= int(keep) <= 1000:
        errors.append(f"transaction_keep_runs: {keep} is out of range (expected an integer from 0 to 1000)")
    for name in ("transaction_min_upload_rate", "transaction_upload_rate_limit"):
        v = p.get(name)
        if v is not None and not 0 <= float(v) <= 10 * 1024 * 1024:
            errors.append(f"{name}: {v} is out of range (expected KiB/s, 0 or more)")
    if bool(p.get("transaction_username")) != bool(p.get("transaction_password")):
        errors.append("transaction_username/transaction_password: give both or neither (HTTP basic auth)")
    return errors


class _Paced:
    """A stream whose ``sendall`` sends at most ``rate`` bytes per second (to simulate a slow client)."""

    def __init__(self, stream, rate: float, sleep=time.sleep, chunk: int = 64 * 1024):
        self._s, self._rate, self._sleep, self._chunk = stream, rate, sleep, chunk

    def sendall(self, data: bytes) -> None:
        t0, sent = time.monotonic(), 0
        for i in range(0, len(data), self._chunk):
            part = data[i:i + self._chunk]
            self._s.sendall(part)
            sent += len(part)
            ahead = sent / self._rate - (time.monotonic() - t0)
            if ahead > 0:
                self._sleep(ahead)

    def recv(self, bufsize: int = 65536, timeout: float | None = None) -> bytes:
        return self._s.recv(bufsize, timeout=timeout)


class _StepFailed(Exception):
    pass


class _Txn:
    def __init__(self, session, host: str, api_bases: list[str], topts: TransactionOptions, log_reader=None):
        self.s = session
        self.host = host
        self.bases = api_bases
        self.base = api_bases[0]
        self.o = topts
        self.steps: list[dict] = []
        self.findings: list[dict] = []
        self.started_wall = time.time()
        self.log_reader = log_reader
        self.log_checked = False
        self.headers = basic_auth((topts.username, topts.password) if topts.username else None)

    # ---------------------------------------------------------------- HTTP
    def send(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
             timeout: float | None = None, max_body: int = 4 << 20, paced: float = 0.0):
        """(HTTPResult, None) or (None, error text). Opens a tunnel when needed; one re-send on a stale one."""
        s = self.s
        hdrs = dict(self.headers)
        if ctype:
            hdrs["Content-Type"] = ctype
        for attempt in (0, 1):
            left = s.remaining()
            if left <= 0:
                return None, f"deadline of {s.opts.deadline:g}s reached before {method} {path}"
            per = min(timeout or s.opts.timeout, left)
            reused = s.tunnel is not None
            try:
                res = s.ensure_resolved()
                if s.tunnel is None:
                    s.tunnel = s.api.open_portforward(res.namespace, res.pod, res.port, timeout=per)
                    s.tunnels_opened += 1
                stream = _Paced(s.tunnel, paced * 1024, sleep=s.sleep) if paced else s.tunnel
                r = http_request(stream, method, path, self.host, headers=hdrs, timeout=per, body=body,
                                 max_body=max_body)
                if not r.keep_alive:
                    s.close()
                return r, None
            except TunnelTimeout as exc:
                s.close()
                return None, f"timeout after {per:.1f}s: {exc}"
            except (TunnelError, KubeError) as exc:
                s.close()
                stale = reused and "without a response" in str(exc)
                if attempt == 0 and stale:
                    continue
                return None, f"{type(exc).__name__}: {str(exc)[:300]}"
        return None, "unreachable"  # pragma: no cover

    def step(self, name: str, method: str, path: str, payload=None, raw: bytes | None = None,
             ctype: str | None = None, timeout: float | None = None, max_body: int = 4 << 20, paced: float = 0.0):
        body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
        if payload is not None:
            ctype = "application/json"
        t0 = time.monotonic()
        r, err = self.send(method, path, body=body, ctype=ctype, timeout=timeout, max_body=max_body, paced=paced)
        took = r.latency_ms if r else round((time.monotonic() - t0) * 1000.0, 2)  # failed: time until the error
        rec = {"name": name, "method": method, "path": path.split("?")[0], "status": r.status if r else None,
               "latency_ms": took, "bytes_sent": len(body or b""),
               "bytes_received": len(r.body) if r else 0, "ok": bool(r and 200 <= r.status < 300)}
        if err:
            rec["error"] = err
        self.steps.append(rec)
        return r, err, rec

    def api(self, endpoint: str) -> str:
        return f"{self.base}/2.0/mlflow/{endpoint}"

    def art(self, rel: str = "") -> str:
        return f"{self.base}/2.0/mlflow-artifacts/artifacts" + (f"/{quote(rel)}" if rel else "")

    # ---------------------------------------------------------------- failures
    def fail(self, code: str, step: str, r, err: str | None, message: str, **evidence):
        ev = {"step": step, "status": r.status if r else None, "host_header": self.host}
        if r is not None:
            ev["body"] = r.text[:400]
            try:
                data = json.loads(r.text)
                ev["error_code"] = data.get("error_code")
            except (ValueError, AttributeError):
                pass
        if err:
            ev["error"] = err
        ev.update(evidence)
        if r is not None and r.status in (401, 403) and code != "TRANSACTION_AUTH_FAILED":
            code = "TRANSACTION_AUTH_FAILED"
            message = f"{step}: HTTP {r.status}: MLflow refused the request (basic auth / permissions / Host): {message}"
        self.findings.append(_finding(code, message, ev))
        if r is None or r.status >= 500:
            self.check_worker_log(step)
        raise _StepFailed(step)

    def check_worker_log(self, step: str) -> None:
        if self.log_checked or self.log_reader is None:
            return
        self.log_checked = True
        since = max(1, math.ceil(time.time() - self.started_wall) + 2)
        res = self.s.resolved
        try:
            text = self.log_reader(res.namespace, res.pod, since)
        except Exception as exc:  # noqa: BLE001 - the log is evidence, not the check
            self.steps.append({"name": "read_pod_log", "ok": False, "error": str(exc)[:300]})
            return
        lines = [ln for ln in text.splitlines() if WORKER_KILLED_RE.search(ln)]
        self.steps.append({"name": "read_pod_log", "ok": True, "since_seconds": since, "matches": len(lines)})
        if lines:
            self.findings.append(_finding(
                "WORKER_KILLED_DURING_REQUEST",
                f"{step} failed while the server killed a worker (gunicorn worker timeout): raise the gunicorn "
                "--timeout (patch role) or run uvicorn",
                {"step": step, "pod": res.pod, "log_lines": lines[:10], "since_seconds": since}))

    # ---------------------------------------------------------------- the transaction
    def run(self, out: dict) -> None:
        o = self.o
        # 1. experiment: get by name (also finds which API base answers), else create; restore if deleted
        q = "experiments/get-by-name?experiment_name=" + quote(o.experiment, safe="")
        r = err = None
        for base in self.bases:
            self.base = base
            r, err, rec = self.step("get_experiment", "GET", self.api(q))
            if not err and r.status == 404 and _error_code(r) == "RESOURCE_DOES_NOT_EXIST":
                rec.update(ok=True, found=False)  # the expected answer before the first run
            if err or r.status != 404 or _error_code(r):
                break
            self.steps.pop()
        if err or r.status not in (200, 404):
            self.fail("TRANSACTION_READ_FAILED", "get_experiment", r, err, f"GET experiments/get-by-name failed: "
                      f"{err or r.status}")
        out["api_base"] = self.base
        if r.status == 200:
            exp = _json(r).get("experiment") or {}
            exp_id = exp.get("experiment_id")
            if exp.get("lifecycle_stage") == "deleted":
                r, err, _rec = self.step("restore_experiment", "POST", self.api("experiments/restore"),
                                         {"experiment_id": exp_id})
                if err or r.status != 200:
                    self.fail("WRITE_FAILED", "restore_experiment", r, err, "could not restore the synthetic experiment")
        else:
            r, err, _rec = self.step("create_experiment", "POST", self.api("experiments/create"), {"name": o.experiment})
            if err or r.status != 200:
                self.fail("WRITE_FAILED", "create_experiment", r, err,
                          f"could not create experiment {o.experiment!r}: {err or _short(r)}")
            exp_id = _json(r).get("experiment_id")
        out["experiment_id"] = exp_id

        # 2. run
        now = int(time.time() * 1000)
        r, err, _rec = self.step("create_run", "POST", self.api("runs/create"), {
            "experiment_id": exp_id, "start_time": now, "run_name": f"asgard-synthetic-{now}",
            "tags": [{"key": SYNTHETIC_TAG, "value": "true"},
                     {"key": "mlflow.source.name", "value": "asgard.mlflow.mlflow_probe"}]})
        if err or r.status != 200:
            self.fail("WRITE_FAILED", "create_run", r, err, f"could not create a run: {err or _short(r)}")
        info = (_json(r).get("run") or {}).get("info") or {}
        run_id = info.get("run_id") or info.get("run_uuid")
        out["run_id"] = run_id
        self.created_run = {"run_id": run_id, "artifact_uri": info.get("artifact_uri")}

        # 3. param + metric
        r, err, _rec = self.step("log_batch", "POST", self.api("runs/log-batch"), {
            "run_id": run_id, "params": [{"key": "asgard.synthetic.param", "value": "ok"}],
            "metrics": [{"key": "asgard.synthetic.metric", "value": 1.0, "timestamp": now, "step": 0}]})
        if err or r.status != 200:
            self.fail("WRITE_FAILED", "log_batch", r, err, f"could not log a param and a metric: {err or _short(r)}")

        # 4. artifact through the proxy
        rel = _proxied_path(info.get("artifact_uri")) or f"{exp_id}/{run_id}/artifacts"
        out["artifact_path"] = f"{rel}/{ARTIFACT_FILE}"
        data = os.urandom(o.artifact_size)
        digest = hashlib.sha256(data).hexdigest()
        floor = (o.upload_rate_limit or 1024.0) * 1024
        big_timeout = self.s.opts.timeout + o.artifact_size / floor
        r, err, rec = self.step("upload_artifact", "PUT", self.art(f"{rel}/{ARTIFACT_FILE}"), raw=data,
                                ctype="application/octet-stream", timeout=big_timeout, paced=o.upload_rate_limit)
        upload = {"path": out["artifact_path"], "bytes": o.artifact_size, "sha256": digest,
                  "latency_ms": rec["latency_ms"], "rate_kib_s": None}
        out["artifact"] = upload
        if err or r.status != 200:
            self.fail("ARTIFACT_UPLOAD_FAILED", "upload_artifact", r, err,
                      f"uploading {o.artifact_size} bytes through the artifact proxy failed: {err or _short(r)}",
                      bytes=o.artifact_size, path=rec["path"])
        rate = o.artifact_size / 1024 / max(rec["latency_ms"] / 1000.0, 1e-6)
        upload["rate_kib_s"] = round(rate, 1)
        if o.min_upload_rate and rate < o.min_upload_rate:
            evidence = {"rate_kib_s": round(rate, 1), "bytes": o.artifact_size, "latency_ms": rec["latency_ms"],
                        "threshold_kib_s": o.min_upload_rate}
            self.findings.append(_finding("SLOW_UPLOAD", f"artifact upload ran at {rate:.1f} KiB/s, below "
                                          f"{o.min_upload_rate:g} KiB/s", evidence))

        # 5. list
        r, err, _rec = self.step("list_artifacts", "GET", self.art() + "?path=" + quote(rel, safe=""))
        if err or r.status != 200:
            self.fail("ARTIFACT_DOWNLOAD_FAILED", "list_artifacts", r, err, f"listing {rel} failed: {err or _short(r)}")
        files = {f.get("path"): f for f in _json(r).get("files") or []}
        listed = files.get(ARTIFACT_FILE)
        if listed is None or int(listed.get("file_size") or -1) != o.artifact_size:
            self.fail("ARTIFACT_MISMATCH", "list_artifacts", r, None, f"the listing of {rel} does not show "
                      f"{ARTIFACT_FILE} with {o.artifact_size} bytes", listed=list(files.values())[:10])

        # 6. download and compare
        r, err, _rec = self.step("download_artifact", "GET", self.art(f"{rel}/{ARTIFACT_FILE}"),
                                 timeout=big_timeout, max_body=o.artifact_size + 1024)
        if err or r.status != 200:
            self.fail("ARTIFACT_DOWNLOAD_FAILED", "download_artifact", r, err,
                      f"downloading the artifact back failed: {err or _short(r)}")
        got = hashlib.sha256(r.body).hexdigest()
        upload["downloaded_sha256"] = got
        if r.body != data:
            self.fail("ARTIFACT_MISMATCH", "download_artifact", None, None, "the downloaded artifact differs from "
                      "the uploaded one", sha256_sent=digest, sha256_received=got, bytes_sent=len(data),
                      bytes_received=len(r.body))

        # 7. read the run back
        r, err, _rec = self.step("get_run", "GET", self.api("runs/get?run_id=" + quote(run_id)))
        if err or r.status != 200:
            self.fail("TRANSACTION_READ_FAILED", "get_run", r, err, f"runs/get failed: {err or _short(r)}")
        rdata = (_json(r).get("run") or {}).get("data") or {}
        params = {p["key"]: p["value"] for p in rdata.get("params") or []}
        metrics = {m["key"]: m["value"] for m in rdata.get("metrics") or []}
        if params.get("asgard.synthetic.param") != "ok" or metrics.get("asgard.synthetic.metric") != 1.0:
            self.fail("WRITE_FAILED", "get_run", r, None, "the run read back lacks the logged param or metric",
                      params=params, metrics=metrics)

        # 8. finish
        r, err, _rec = self.step("finish_run", "POST", self.api("runs/update"), {
            "run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)})
        if err or r.status != 200:
            self.fail("WRITE_FAILED", "finish_run", r, err, f"runs/update failed: {err or _short(r)}")

    def cleanup(self, out: dict) -> None:
        """Delete synthetic runs beyond keep_runs (the newest kept), and the current one when it failed."""
        exp_id, run = out.get("experiment_id"), getattr(self, "created_run", None)
        deleted, kept = [], []
        out["deleted_runs"], out["kept_runs"] = deleted, kept
        if not exp_id:
            return
        r, err, _rec = self.step("search_runs", "POST", self.api("runs/search"), {
            "experiment_ids": [exp_id], "filter": f"tags.`{SYNTHETIC_TAG}` = 'true'", "run_view_type": "ACTIVE_ONLY",
            "max_results": 1000, "order_by": ["attributes.start_time DESC"]})
        runs = []
        if not err and r.status == 200:
            runs = [x.get("info") or {} for x in _json(r).get("runs") or []]
        elif run:
            runs = [run]
        failed = not out.get("transaction_ok")
        victims = []
        for i, info in enumerate(runs):
            rid = info.get("run_id") or info.get("run_uuid")
            if i < self.o.keep_runs and not (failed and run and rid == run["run_id"]):
                kept.append(rid)
            else:
                victims.append((rid, info.get("artifact_uri")))
        if run and run["run_id"] not in [v[0] for v in victims] + kept:
            victims.append((run["run_id"], run["artifact_uri"]))
        for rid, uri in victims:
            rel = _proxied_path(uri)
            if rel:
                r, err, _rec = self.step("delete_artifacts", "DELETE", self.art() + "?path=" + quote(rel, safe=""))
            r, err, _rec = self.step("delete_run", "POST", self.api("runs/delete"), {"run_id": rid})
            if err or r.status != 200:
                self.findings.append(_finding("TRANSACTION_CLEANUP_FAILED", f"could not delete synthetic run {rid}: "
                                              f"{err or _short(r)}", {"run_id": rid, "status": r and r.status}))
                if r is None or r.status >= 500:
                    self.check_worker_log("delete_run")
                break
            deleted.append(rid)


def _finding(code: str, message: str, evidence: dict) -> dict:
    return finding(code, message, evidence)


def _short(r) -> str:
    return f"HTTP {r.status}: {r.text[:200].strip()}"


def _json(r) -> dict:
    try:
        data = json.loads(r.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_code(r) -> str | None:
    try:
        return json.loads(r.text).get("error_code")
    except (ValueError, AttributeError):
        return None


def _proxied_path(uri: str | None) -> str | None:
    """``mlflow-artifacts:/1/abc/artifacts`` or ``mlflow-artifacts://host/1/abc/artifacts`` -> ``1/abc/artifacts``."""
    if not uri or not uri.startswith("mlflow-artifacts:"):
        return None
    rest = uri[len("mlflow-artifacts:"):]
    if rest.startswith("//"):
        rest = rest[2:].split("/", 1)[1] if "/" in rest[2:] else ""
    return rest.strip("/") or None


def kube_pod_log(api, namespace: str, pod: str, since_seconds: int) -> str:
    """GET pods/log?sinceSeconds=N (text) through the KubeAPI; counted in ``api.requests``."""
    return api.pod_log(namespace, pod, since_seconds)


def run_transaction(session, host: str, prefix: str, topts: TransactionOptions, log_reader=None) -> tuple[dict, list]:
    """Run the synthetic transaction; returns (result dict, findings)."""
    t0 = time.monotonic()
    req0 = getattr(session.api, "requests", 0) or 0
    pfx = (prefix or "").rstrip("/")
    bases = list(dict.fromkeys([f"{pfx}/api", f"{pfx}/ajax-api", "/api"]))
    if log_reader is None:
        def log_reader(ns, pod, since):
            return kube_pod_log(session.api, ns, pod, since)
    txn = _Txn(session, host, bases, topts, log_reader=log_reader)
    out: dict = {"ok": False, "experiment": topts.experiment, "experiment_id": None, "run_id": None,
                 "host_header": host, "auth": "basic" if topts.username else None, "steps": txn.steps}
    out["failed_step"] = None
    try:
        txn.run(out)
        out["transaction_ok"] = True
    except _StepFailed as exc:
        out["transaction_ok"] = False
        out["failed_step"] = str(exc)
    try:
        txn.cleanup(out)
    except _StepFailed:
        pass
    ok = out.pop("transaction_ok") and not any(f["severity"] == "critical" for f in txn.findings)
    out["ok"] = ok
    out["elapsed_ms"] = round((time.monotonic() - t0) * 1000.0, 1)
    out["api_requests"] = (getattr(session.api, "requests", 0) or 0) - req0
    return out, txn.findings
