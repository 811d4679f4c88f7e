"""asgard.mlflow.port_forward through real ansible-playbook against the lab with a real MLflow pod."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers.ansible_runner import run_playbook
from helpers.kubectl import PortForward
from helpers.lab_objects import free_port
from test_probe_module import create_namespace, deploy_mlflow, run_module, wait_ready

pytestmark = pytest.mark.lab

def get(url: str, timeout: float = 20) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def get_eventually(url: str, timeout: float = 90) -> float:
    """Seconds until GET url answered 200."""
    t0 = time.monotonic()
    while True:
        try:
            if get(url)[0] == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{url} never answered 200")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def target(lab):
    ns = create_namespace(lab)
    deploy_mlflow(lab, ns, "fwd", service="mlflow-service")
    # a second Service in front of the same pods (another forward target)
    r = lab.request("POST", f"/api/v1/namespaces/{ns}/services", json={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "other-service"},
        "spec": {"selector": {"app": "fwd"}, "ports": [{"name": "http", "port": 5000, "targetPort": "http"}]}})
    assert r.status_code == 201, r.text
    wait_ready(lab, ns, "fwd")
    yield ns
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


@pytest.fixture
def xdg(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    yield env
    # whatever a test left running: stop it by the pids in its state files (the module's state: absent is checked in
    # test_start_idempotent_survives_rollout_and_stop; the other tests leave their forward to this, not to one more
    # playbook run)
    import json

    for f in (tmp_path / "state").rglob("*.json"):
        try:
            os.kill(json.loads(f.read_text())["pid"], 15)
        except (OSError, KeyError, ValueError):
            pass


def fwd(lab, tmp_path, env, check=False, **args):
    return run_module(lab, tmp_path, "asgard.mlflow.port_forward", args, check=check, env=env)


def test_start_idempotent_survives_rollout_and_stop(lab, target, tmp_path, xdg):
    port = free_port()
    args = {"namespace": target, "local_port": port}
    c = fwd(lab, tmp_path, xdg, check=True, **args)
    assert c["changed"] is True and c["would_start"] is True and c["pid"] is None
    r = fwd(lab, tmp_path, xdg, **args)
    assert r["changed"] is True and r["pid"] and r["url"] == f"http://127.0.0.1:{port}"
    assert os.path.exists(r["log"]) and r["log"].startswith(xdg["XDG_STATE_HOME"])
    first = get_eventually(f"{r['url']}/health")
    print(f"\nport_forward: first /health through the forward after {first:.2f}s")
    assert get(f"{r['url']}/")[1].find(b"<title>MLflow</title>") >= 0

    again = fwd(lab, tmp_path, xdg, **args)
    assert again["changed"] is False and again["pid"] == r["pid"]

    old = wait_ready(lab, target, "fwd")
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": str(time.time())}}}}}
    resp = lab.request("PATCH", f"/apis/apps/v1/namespaces/{target}/deployments/fwd", json=patch,
                       headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert resp.status_code == 200, resp.text
    end = time.monotonic() + 180
    while time.monotonic() < end:
        r2 = lab.request("GET", f"/api/v1/namespaces/{target}/pods/{old}")
        if r2.status_code == 404:
            break
        time.sleep(1)
    else:
        raise AssertionError("old pod never went away")
    get_eventually(f"{r['url']}/health", timeout=120)
    # the forwarder logs a connection when it closes, just after the response reached us: wait for that line
    end = time.monotonic() + 20
    while True:
        log = open(r["log"]).read()
        new_pods = {line.split(" -> ")[1].split(":")[0] for line in log.splitlines()
                    if " -> " in line and "closed" in line}
        if (old in new_pods and len(new_pods) >= 2) or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert old in new_pods and len(new_pods) >= 2, log

    stop = fwd(lab, tmp_path, xdg, state="absent", **args)
    assert stop["changed"] is True and [s["pid"] for s in stop["stopped"]] == [r["pid"]]
    with pytest.raises(OSError):
        get(f"{r['url']}/health", timeout=3)
    assert fwd(lab, tmp_path, xdg, state="absent", **args)["changed"] is False


def test_foreign_process_reported_not_killed(lab, target, tmp_path, xdg):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        r = fwd(lab, tmp_path, xdg, namespace=target, local_port=port, cleanup=True)
        assert r["failed"] is True
        assert f"PID {p.pid}" in r["msg"] and "http.server" in r["msg"]
        assert r["holder"]["pid"] == p.pid
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_stale_kubectl_port_forward_is_cleaned(lab, target, tmp_path, xdg):
    """A real, working ``kubectl port-forward`` (kubectl 1.32) holds the port: refused without cleanup (naming it),
    stopped with ``cleanup: true``, and the module's own forward takes the port."""
    port = free_port()
    with PortForward(lab.env(), "-n", target, "svc/mlflow-service", f"{port}:5000") as k:
        assert get(f"http://127.0.0.1:{port}/health")[1].strip() == b"OK"
        refused = fwd(lab, tmp_path, xdg, namespace=target, local_port=port)
        assert refused["failed"] is True and "kubectl port-forward" in refused["msg"] and str(k.pid) in refused["msg"]
        assert k.proc.poll() is None
        r = fwd(lab, tmp_path, xdg, namespace=target, local_port=port, cleanup=True)
        assert r["changed"] is True and [s["pid"] for s in r["stopped"]] == [k.pid]
        assert k.wait(timeout=10) is not None
        get_eventually(f"{r['url']}/health")


def test_non_loopback_bind_refused(lab, target, tmp_path, xdg):
    r = fwd(lab, tmp_path, xdg, namespace=target, address="0.0.0.0", local_port=free_port())
    assert r["failed"] is True and "allow_non_loopback" in r["msg"]


# --------------------------------------------------------------- issue 14 item 3: only replaced by one that works
def _state(xdg: dict, port: int) -> dict:
    import json

    path = os.path.join(xdg["XDG_STATE_HOME"], "asgard-mlflow", "port-forwards", f"127.0.0.1_{port}.json")
    with open(path) as fh:
        return json.load(fh)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_typo_does_not_kill_the_working_dashboard_forward(lab, target, tmp_path, xdg):
    """Issue 14 item 3, the way it was observed: a working forward on the port, then `verify.yml -e
    verify_namespace=<typo>` (typed on the command line). The forward keeps running and keeps answering, the
    state file names it, the module's result and the verify report say that nothing was stopped and what keeps
    running. Then the same through the module directly, also in check mode."""
    port = free_port()
    r = fwd(lab, tmp_path, xdg, namespace=target, local_port=port)
    assert r["changed"] is True and r["pid"], r
    pid, url = r["pid"], r["url"]
    get_eventually(f"{url}/health")
    typo = f"{target}-typo"

    rep_path = tmp_path / "verify.json"
    res = run_playbook("playbooks/verify.yml", env=lab.env(**xdg), timeout=600, argv=[
        "-e", f"verify_namespace={typo}", "-e", f"verify_port_forward_local_port={port}",
        "-e", f"verify_report_path={rep_path}"])
    assert _alive(pid) and get(f"{url}/health")[0] == 200, f"the working forward was stopped:\n{res.output}"
    assert _state(xdg, port)["pid"] == pid
    # verify checks the namespace first (issue 16's typed core): a bad-input error naming the variable, the value and
    # that nothing was changed; steps 5-6 never run, so the forward is not even looked at
    assert res.rc != 0, "verify.yml passed on a namespace that does not exist"
    assert f"verify_namespace: namespace {typo!r} does not exist (NAMESPACE_NOT_FOUND)" in res.output, res.output[-3000:]
    assert "Nothing was changed" in res.output
    assert not rep_path.exists() or "stopped" not in json.loads(rep_path.read_text()).get("port_forward", {})

    for check in (True, False):
        bad = fwd(lab, tmp_path, xdg, check=check, namespace=typo, local_port=port, cleanup=True)
        assert bad["failed"] is True and bad["code"] == "NAMESPACE_NOT_FOUND", bad
        assert bad["stopped"] == [] and [k["pid"] for k in bad["kept"]] == [pid], bad
        assert f"svc/mlflow-service in {target}" in bad["kept"][0]["target"]
    # a Service without a Ready pod behind it: not a working target either
    r2 = lab.request("POST", f"/api/v1/namespaces/{target}/services", json={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "idle-service"},
        "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 5000}]}})
    assert r2.status_code in (201, 409), r2.text
    idle = fwd(lab, tmp_path, xdg, namespace=target, service="idle-service", local_port=port)
    assert idle["failed"] is True and idle["code"] == "NO_READY_POD" and idle["stopped"] == [], idle
    assert _alive(pid) and get(f"{url}/health")[0] == 200 and _state(xdg, port)["pid"] == pid


def test_equivalent_options_are_the_same_forward(lab, target, tmp_path, xdg):
    """remote_port omitted (the Service's first port) and remote_port: 5000 are one forward: changed false, the same
    pid, in check mode and diff too; another Service on the same port is a real re-target, named in `stopped`."""
    port = free_port()
    r = fwd(lab, tmp_path, xdg, namespace=target, local_port=port)
    get_eventually(f"{r['url']}/health")
    for check in (True, False):
        same = fwd(lab, tmp_path, xdg, check=check, namespace=target, local_port=port, remote_port=5000)
        assert same["changed"] is False and same["pid"] == r["pid"] and same["stopped"] == [], same
    other = fwd(lab, tmp_path, xdg, namespace=target, local_port=port, service="other-service")
    assert other["changed"] is True and other["pid"] != r["pid"]
    assert [(s["pid"], s["reason"], s["target"]) for s in other["stopped"]] == [
        (r["pid"], "target changed", f"svc/mlflow-service in {target}")]
    assert get_eventually(f"{r['url']}/health") >= 0 and not _alive(r["pid"])


def test_kubectl_port_forward_of_another_service_is_named_when_stopped(lab, target, tmp_path, xdg):
    """A `kubectl port-forward` of another Service holds the port: a target that does not work leaves it running
    (named in `kept`); a working one stops it and names it (pid, command line, target)."""
    port = free_port()
    k = PortForward(lab.env(), "-n", target, "svc/other-service", f"{port}:5000")
    try:
        assert get(f"http://127.0.0.1:{port}/health")[1].strip() == b"OK"  # a real, working kubectl forward
        bad = fwd(lab, tmp_path, xdg, namespace=f"{target}-typo", local_port=port, cleanup=True)
        assert bad["failed"] is True and bad["stopped"] == [] and k.proc.poll() is None, bad
        assert [(x["pid"], x["target"]) for x in bad["kept"]] == [(k.pid, f"svc/other-service {port}:5000 in {target}")]
        r = fwd(lab, tmp_path, xdg, namespace=target, local_port=port, cleanup=True)
        [st] = r["stopped"]
        assert (st["pid"], st["kind"], st["target"]) == (k.pid, "kubectl port-forward",
                                                          f"svc/other-service {port}:5000 in {target}"), st
        assert "port-forward" in st["cmdline"] and f"{port}:5000" in st["cmdline"]
        assert k.wait(timeout=10) is not None
        get_eventually(f"{r['url']}/health")
    finally:
        k.stop()
