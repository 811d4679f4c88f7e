"""port_forward's service code: validation, port owners from /proc, clean-up rules, the detached forwarder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils import _forwarder as fw
from test_tunnel_fixtures import MemoryKube, PortForwardServer, pod, service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, pid: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(h["pid"] == pid for h in fw.port_holders("127.0.0.1", port)):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} does not listen on {port}")


@pytest.fixture
def kube():
    pf = PortForwardServer()
    k = MemoryKube(pf)
    k.services[("asgard", "mlflow-service")] = service()
    k.pods["asgard"] = [pod("mlflow-0")]
    yield k
    pf.close()


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "asgard-mlflow" / "port-forwards"


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def listener(procs, tmp_path, port: int, name: str = "server.py", args=()) -> subprocess.Popen:
    script = tmp_path / name
    script.write_text("import socket, sys, time\n"
                      f"s = socket.create_server(('127.0.0.1', {port}))\n"
                      "print('up', flush=True)\n"
                      "time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    procs.append(p)
    return p


def params(port: int, **kw) -> dict:
    base = {"namespace": "asgard", "service": "mlflow-service", "pod": None, "label_selectors": [],
            "remote_port": None, "local_port": port, "address": "127.0.0.1", "allow_non_loopback": False,
            "state": "present", "cleanup": False}
    base.update(kw)
    return base


@pytest.mark.parametrize(("p", "needle"), [
    ({"local_port": 0}, "local_port: 0 is out of range"),
    ({"local_port": 65536}, "local_port: 65536 is out of range"),
    ({"address": "0.0.0.0"}, "allow_non_loopback: true"),
    ({"address": "10.1.2.3"}, "not a loopback address"),
    ({"address": "localhost"}, "not an IP address"),
])
def test_validate_forward_params(p, needle):
    errors = fw.validate_forward_params(p)
    assert len(errors) == 1 and needle in errors[0]


def test_validate_forward_params_ok():
    assert fw.validate_forward_params({"local_port": 5000, "address": "127.0.0.1"}) == []
    assert fw.validate_forward_params({"local_port": 5000, "address": "::1"}) == []
    assert fw.validate_forward_params({"local_port": 5000, "address": "0.0.0.0", "allow_non_loopback": True}) == []


def test_state_dir_default_and_xdg():
    assert fw.state_dir({"XDG_STATE_HOME": "/x"}) == "/x/asgard-mlflow/port-forwards"
    assert fw.state_dir({}).endswith("/.local/state/asgard-mlflow/port-forwards")


def test_port_holders_finds_pid_and_cmdline(procs, tmp_path):
    port = free_port()
    p = listener(procs, tmp_path, port)
    holders = fw.port_holders("127.0.0.1", port)
    assert [h["pid"] for h in holders] == [p.pid]
    assert holders[0]["cmdline"][1].endswith("server.py")
    assert fw.port_holders("127.0.0.1", free_port()) == []


def test_is_kubectl_port_forward():
    assert fw.is_kubectl_port_forward(["kubectl", "port-forward", "-n", "asgard", "svc/mlflow-service", "5000:5000"])
    assert fw.is_kubectl_port_forward(["/usr/bin/python3", "/tmp/x/kubectl", "port-forward", "svc/x", "5000"])
    assert not fw.is_kubectl_port_forward(["kubectl", "proxy", "--port=5000"])
    assert not fw.is_kubectl_port_forward(["python3", "-m", "http.server", "5000"])


def test_foreign_process_is_reported_not_killed(kube, xdg, procs, tmp_path):
    port = free_port()
    p = listener(procs, tmp_path, port)
    with pytest.raises(fw.ForwardError) as ei:
        fw.ensure(params(port, cleanup=True), lambda: kube, check_mode=False)
    msg = str(ei.value)
    assert f"PID {p.pid}" in msg and "server.py" in msg
    assert ei.value.details["holder"]["pid"] == p.pid
    assert p.poll() is None, "a foreign process must never be killed"


def test_kubectl_like_process_needs_cleanup(kube, xdg, procs, tmp_path):
    port = free_port()
    k = listener(procs, tmp_path, port, name="kubectl", args=("port-forward", "svc/mlflow-service", f"{port}:5000"))
    with pytest.raises(fw.ForwardError, match="set cleanup: true"):
        fw.ensure(params(port), lambda: kube, check_mode=False)
    checked = fw.ensure(params(port, cleanup=True), lambda: kube, check_mode=True)
    assert checked["changed"] is True and checked["would_start"] is True
    assert [s["pid"] for s in checked["stopped"]] == [k.pid]
    assert k.poll() is None, "check mode stops nothing"
    assert not xdg.exists() or not any(xdg.glob("*.json")), "check mode writes no state"


def test_forwarder_lifecycle_detached_idempotent_stale_and_absent(kube, xdg, procs, tmp_path):
    port = free_port()
    k = listener(procs, tmp_path, port, name="kubectl", args=("port-forward", "svc/mlflow-service", f"{port}:5000"))
    # a stale entry of a forward whose process is gone
    xdg.mkdir(parents=True)
    (xdg / "127.0.0.1_1.json").write_text(json.dumps({"pid": 999999, "target": {}}))

    r = fw.ensure(params(port, cleanup=True), lambda: kube, check_mode=False)
    pid = r["pid"]
    try:
        assert r["changed"] is True and r["pod"] == "mlflow-0"
        assert [s["pid"] for s in r["stopped"]] == [k.pid]
        k.wait(timeout=10)
        assert [s["pid"] for s in r["stale_removed"]] == [999999]
        assert not (xdg / "127.0.0.1_1.json").exists()
        wait_listening(port, pid)
        # detached: not our child, its own session, code outside any temp dir of the module
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        assert int(fields[1]) != os.getpid() and int(fields[3]) != os.getsid(0)
        cmd = fw.proc_cmdline(pid)
        assert fw.MARKER in cmd and cmd[3].startswith(str(xdg / "runtime"))
        state = json.loads((xdg / f"127.0.0.1_{port}.json").read_text())
        assert state["pid"] == pid and state["target"]["service"] == "mlflow-service"
        assert "test-token" not in (xdg / f"127.0.0.1_{port}.json").read_text(), "no credentials in state"
        assert os.stat(xdg).st_mode & 0o077 == 0
        log = r["log"]
        assert "listening on 127.0.0.1:" in open(log).read()

        # idempotent
        again = fw.ensure(params(port), lambda: kube, check_mode=False)
        assert again["changed"] is False and again["pid"] == pid

        # a connection is accepted and logged (this unit test has no API server to resolve pods through)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.settimeout(20)
            assert c.recv(10) == b""
        assert "no tunnel" in open(log).read()

        # another target on the same port replaces it
        other = fw.ensure(params(port, remote_port=5000), lambda: kube, check_mode=False)
        assert other["changed"] is True and other["pid"] != pid
        assert [s["reason"] for s in other["stopped"]] == ["target changed"]
        pid = other["pid"]
        wait_listening(port, pid)
    finally:
        gone = fw.ensure(params(port, state="absent"), lambda: kube, check_mode=False)
    assert gone["changed"] is True and [s["pid"] for s in gone["stopped"]] == [pid]
    assert not fw.pid_alive(pid)
    assert not (xdg / f"127.0.0.1_{port}.json").exists()
    assert fw.ensure(params(port, state="absent"), lambda: kube, check_mode=False)["changed"] is False
