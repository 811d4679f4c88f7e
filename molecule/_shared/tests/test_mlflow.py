"""Testinfra verifier shared by every scenario: the running MLflow server's real state.

Runs on the controller with testinfra's local backend (the molecule host has ansible_connection=local). The
expected state comes from the scenario's inventory variables (deploy_*). Pod processes are found
- in the lab (molecule_target=lab): on this host, as the lab runs containers as host processes tagged with
  ASGARDLAB_CONTAINER_ID=<lab>-<containerID>; read with ps and /proc;
- on a real cluster (molecule_target=cluster, molecule/kind): with `kubectl exec` reading the container's /proc.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shlex
import socket
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from testinfra.utils.ansible_runner import AnsibleRunner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = AnsibleRunner(INVENTORY).get_hosts("all")
VARS = AnsibleRunner(INVENTORY).get_variables(testinfra_hosts[0])

NS = VARS["deploy_namespace"]
NAME = VARS.get("deploy_name", "mlflow-deployment")
WORKERS = int(VARS["deploy_workers"])
SERVER = VARS.get("deploy_server") or "uvicorn"
PREFIX = (VARS.get("deploy_static_prefix") or "").rstrip("/")
STEPS = VARS.get("molecule_steps", ["deploy", "verify"])
TARGET = VARS.get("molecule_target", "lab")
RUN_AS = int(VARS.get("deploy_run_as_user", 1000))
POSTGRES = bool(VARS.get("molecule_postgres", False))
DATA = VARS.get("deploy_data_mount_path", "/mlflow")
PORT = int(VARS.get("molecule_forward_port", 5000))  # MOLECULE_FORWARD_PORT, default 5000
FORWARD = f"http://127.0.0.1:{PORT}"
# MLflow's basic auth (deploy_auth_enabled): /health stays open, everything else wants the admin's credentials
AUTH = bool(VARS.get("deploy_auth_enabled", False))
AUTH_HEADER = ({"Authorization": "Basic " + base64.b64encode(
    f"{VARS.get('deploy_auth_admin_username', 'admin')}:{VARS.get('deploy_auth_admin_password', '')}".encode()).decode()}
    if AUTH else {})
INGRESS_HOSTS = (VARS.get("deploy_ingress_hosts") or []) if VARS.get("deploy_ingress_enabled") else []
TLS_SECRET = VARS.get("deploy_ingress_tls_secret") or ""


def kubectl(host, *args: str) -> str:
    return host.check_output("kubectl " + " ".join(shlex.quote(a) for a in args))


def kube_json(host, *args: str) -> dict:
    return json.loads(kubectl(host, *args, "-o", "json"))


@pytest.fixture(scope="module")
def deployment(host):
    return kube_json(host, "get", "deployment", NAME, "-n", NS)


@pytest.fixture(scope="module")
def pod(host, deployment):
    sel = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    pods = [p for p in kube_json(host, "get", "pods", "-n", NS, "-l", sel)["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == deployment["spec"]["replicas"] == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


@pytest.fixture(scope="module")
def procs(host, pod) -> list[dict]:
    """The processes of the MLflow container: [{pid, ppid, uid, gid, args}]."""
    status = pod["status"]["containerStatuses"][0]
    if TARGET == "lab":
        cid = status["containerID"].split("://", 1)[1]
        needle = b"ASGARDLAB_CONTAINER_ID="
        pids = set()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e.startswith(needle) and e.endswith(b"-" + cid.encode()) for e in env):
                pids.add(int(d.name))
        out = []
        for p in host.process.filter():
            if p.pid in pids:
                out.append({"pid": p.pid, "ppid": p.ppid, "uid": p.euid, "gid": p.egid, "args": p.args})
        return out
    script = ('for p in /proc/[0-9]*; do s=$(cat $p/stat 2>/dev/null) || continue; '
              'printf "%s\\t%s\\t%s\\t%s\\t" "${p#/proc/}" "$(echo "$s" | sed "s/.*) //" | cut -d" " -f2)" '
              '"$(awk \'/^Uid/{print $3}\' $p/status)" "$(awk \'/^Gid/{print $3}\' $p/status)"; '
              'tr "\\0" " " < $p/cmdline; echo; done')
    out = []
    for line in kubectl(host, "exec", "-n", NS, pod["metadata"]["name"], "--", "sh", "-c", script).splitlines():
        parts = line.split("\t", 4)
        if len(parts) == 5 and parts[4].strip():
            out.append({"pid": int(parts[0]), "ppid": int(parts[1]), "uid": int(parts[2]), "gid": int(parts[3]),
                        "args": parts[4].strip()})
    return out


def _children(procs, pid):
    return [p for p in procs if p["ppid"] == pid]


def _mlflow_server(procs) -> dict:
    found = [p for p in procs if "mlflow server" in p["args"] or p["args"].split()[1:3] == ["-m", "mlflow"]]
    found = [p for p in found if "/bin/sh -c" not in p["args"]]
    assert found, "no `mlflow server` process in the container: " + json.dumps(procs, indent=1)
    return found[0]


def test_pod_ready_and_not_restarting(pod):
    st = pod["status"]
    assert st["phase"] == "Running"
    assert all(c["ready"] for c in st["containerStatuses"]), st["containerStatuses"]
    assert st["containerStatuses"][0]["restartCount"] == 0, st["containerStatuses"][0]


def test_process_tree_matches_the_settings(procs):
    server = _mlflow_server(procs)
    args = server["args"]
    assert "--port=5000" in args or "--port 5000" in args, args
    if PREFIX:
        assert f"--static-prefix={PREFIX}" in args or f"--static-prefix {PREFIX}" in args, args
    else:
        assert "--static-prefix" not in args, args
    kids = _children(procs, server["pid"])
    if SERVER == "gunicorn":
        masters = [p for p in kids if "gunicorn" in p["args"]]
        assert len(masters) == 1, kids
        master = masters[0]
        assert f"-w {WORKERS}" in master["args"] or f"--workers {WORKERS}" in master["args"], master["args"]
        assert "--timeout 300" in master["args"], master["args"]
        workers = [p for p in _children(procs, master["pid"]) if "gunicorn" in p["args"]]
        assert len(workers) == WORKERS, workers
    else:
        uv = [p for p in kids if "uvicorn" in p["args"]]
        assert len(uv) == 1, kids
        assert f"--workers {WORKERS}" in uv[0]["args"] or (WORKERS == 1 and "--workers" not in uv[0]["args"]), uv[0]["args"]
        spawned = [p for p in _children(procs, uv[0]["pid"]) if "spawn_main" in p["args"]]
        assert len(spawned) == (WORKERS if WORKERS > 1 else 0), spawned
        assert not [p for p in procs if "gunicorn" in p["args"]]
    # MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: no huey job consumers
    assert not [p for p in procs if "huey" in p["args"] or "job_runner" in p["args"]]


def test_listening_on_5000_in_the_pod(host, procs, pod):
    server = _mlflow_server(procs)
    if TARGET == "lab":
        tcp = host.file(f"/proc/{server['pid']}/net/tcp").content_string
    else:
        tcp = kubectl(host, "exec", "-n", NS, pod["metadata"]["name"], "--", "cat", "/proc/net/tcp")
    listening = {line.split()[1] for line in tcp.splitlines()[1:] if line.split()[3] == "0A"}
    assert "00000000:1388" in listening, listening  # 0.0.0.0:5000, LISTEN


def test_verify_report():
    report = json.loads(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "verify-report.json").read_text())
    assert report["meta"]["namespace"] == NS
    critical = {f["code"] for f in report["remaining"] if f["severity"] == "critical"}
    if PREFIX and VARS.get("molecule_verify_remediate") is False:
        # `/` is 404 under a static prefix: verify reports it and, told not to remediate, leaves it
        assert critical == {"ROOT_NOT_FOUND"}, report["remaining"]
        assert report["remediated"] == []
    else:
        assert report["healthy"] is True and not critical, report["remaining"]
    assert report["meta"]["dashboard_url"].startswith(FORWARD), report["meta"]


def test_port_forward_on_loopback_answers(host):
    assert host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    with urllib.request.urlopen(f"{FORWARD}{PREFIX}/health", timeout=20) as r:
        assert r.status == 200 and r.read().strip() == b"OK"
    req = urllib.request.Request(f"{FORWARD}{PREFIX}/", headers=AUTH_HEADER)
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 200 and b"<title>MLflow</title>" in r.read()
    if AUTH:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{FORWARD}{PREFIX}/", timeout=20)
        assert refused.value.code == 401


def _test_non_root_hardened(pod, procs):
    """The hardening the deploy role sets (scenarios that run deploy; the seed runs as root and patch keeps it)."""
    spec = pod["spec"]
    psc = spec.get("securityContext") or {}
    c = spec["containers"][0]
    csc = c.get("securityContext") or {}
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser") == RUN_AS
    assert csc.get("allowPrivilegeEscalation") is False
    assert csc.get("readOnlyRootFilesystem") is True
    assert csc.get("capabilities", {}).get("drop") == ["ALL"]
    assert (psc.get("seccompProfile") or csc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
    assert procs and all(p["uid"] == RUN_AS for p in procs), [(p["pid"], p["uid"], p["args"][:60]) for p in procs]


if "deploy" in STEPS:
    test_non_root_hardened = _test_non_root_hardened


def _api(path: str, body: dict | None = None, method: str | None = None, data: bytes | None = None) -> dict:
    payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"{FORWARD}{PREFIX}{path}", data=payload, method=method,
                                 headers={"Content-Type": "application/json", **AUTH_HEADER})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw.strip() else {}


def _artifacts_destination(pod, procs) -> str:
    """Where `mlflow server --serve-artifacts` writes: --artifacts-destination, MLFLOW_ARTIFACTS_DESTINATION, or
    MLflow's default ./mlartifacts under the container's working directory."""
    for arg in _mlflow_server(procs)["args"].split():
        if arg.startswith("--artifacts-destination="):
            return arg.split("=", 1)[1]
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if env.get("MLFLOW_ARTIFACTS_DESTINATION"):
        return env["MLFLOW_ARTIFACTS_DESTINATION"]
    return (c.get("workingDir") or "/").rstrip("/") + "/mlartifacts"


def test_experiment_and_artifact_land_in_the_store_and_on_the_pvc(host, pod, procs):
    name = f"molecule-{uuid.uuid4().hex[:8]}"
    exp = _api("/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]
    rel = f"molecule/{name}.txt"
    _api(f"/api/2.0/mlflow-artifacts/artifacts/{rel}", method="PUT", data=name.encode())
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == DATA)
    if "deploy" in STEPS:
        assert "persistentVolumeClaim" in volumes[mount["name"]], volumes[mount["name"]]
    dest = _artifacts_destination(pod, procs)
    assert dest.startswith(DATA + "/"), f"artifacts go to {dest}, outside the data volume {DATA}"
    listing = kubectl(host, "exec", "-n", NS, pod["metadata"]["name"], "--", "sh", "-c",
                      f"cat {dest}/{rel}; echo; ls {DATA}")
    assert listing.splitlines()[0] == name
    if POSTGRES:
        assert "mlflow.db" not in listing.split()
        pg = json.loads(Path(VARS["molecule_postgres_dir"], "asgard-pg.json").read_text())
        out = _psql(host, pg, f"SELECT experiment_id FROM experiments WHERE name = '{name}'")
        assert out.strip() == str(exp)
    else:
        assert "mlflow.db" in listing.split()
    got = _api(f"/api/2.0/mlflow/experiments/get?experiment_id={exp}")
    assert got["experiment"]["name"] == name


def _psql(host, pg: dict, sql: str) -> str:
    cmd = (f"PGPASSWORD={shlex.quote(pg['password'])} {pg['bindir']}/psql -X -At -h 127.0.0.1 -p {pg['port']} "
           f"-U {pg['user']} -d {pg['db']} -c {shlex.quote(sql)}")
    return host.check_output(cmd)


def _ingress_endpoint(host, https: bool) -> tuple[str, int]:
    """Where the Ingress is served: the lab's nginx (.lab/ingress.json), or the Ingress' load balancer address."""
    if TARGET == "lab":
        ep = json.loads(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".lab", "ingress.json").read_text())
        addr, port = ep["https" if https else "http"].split("//", 1)[1].rsplit(":", 1)
        return addr, int(port)
    ing = kube_json(host, "get", "ingress", VARS.get("deploy_ingress_name", "mlflow-ingress"), "-n", NS)
    lb = ing["status"]["loadBalancer"]["ingress"][0]
    return lb.get("ip") or lb["hostname"], 443 if https else 80


def _through_ingress(host, name: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET through the Ingress as a browser on DNS `name` would: Host `name`, and over TLS SNI `name` with the
    certificate checked against the one prepare made (molecule_tls_secret)."""
    https = bool(TLS_SECRET)
    addr, port = _ingress_endpoint(host, https)
    if https:
        ctx = ssl.create_default_context(cafile=str(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "tls", "tls.crt")))
        conn = http.client.HTTPSConnection(name, port, context=ctx, timeout=30)
        conn.sock = ctx.wrap_socket(socket.create_connection((addr, port), timeout=30), server_hostname=name)
    else:
        conn = http.client.HTTPConnection(addr, port, timeout=30)
    try:
        conn.request("GET", f"{PREFIX}{path}", headers={"Host": name, **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _test_dashboard_through_the_ingress(host):
    """deploy_ingress_enabled: each host shows MLflow through the ingress controller (TLS checked when the
    Ingress has it); with basic auth, / answers 401 without credentials and the UI with the admin's."""
    for name in INGRESS_HOSTS:
        status, body = _through_ingress(host, name, "/health")
        assert (status, body.strip()) == (200, b"OK"), (name, status, body[:200])
        status, body = _through_ingress(host, name, "/", AUTH_HEADER)
        assert status == 200 and b"<title>MLflow</title>" in body, (name, status, body[:200])
        if AUTH:
            assert _through_ingress(host, name, "/")[0] == 401


def _test_verify_checked_the_ingress():
    report = json.loads(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "verify-report.json").read_text())
    step = next(s for s in report["steps"] if s["step"] == "ingress")
    assert step["status"] == "ok", step
    assert not [f for f in report["remaining"] if f["code"].startswith(("INGRESS_", "AUTH_"))], report["remaining"]


if INGRESS_HOSTS:
    test_dashboard_through_the_ingress = _test_dashboard_through_the_ingress
    test_verify_checked_the_ingress = _test_verify_checked_the_ingress
