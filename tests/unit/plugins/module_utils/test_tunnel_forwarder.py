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
    backend = socket.create_server(("127.0.0.1", 0))  # the pod's port: the tunnel opens (nothing is sent)
    pf.backends["mlflow-0"] = backend.getsockname()
    k = MemoryKube(pf)
    k.pf = pf
    k.services[("asgard", "mlflow-service")] = service()
    k.pods["asgard"] = [pod("mlflow-0")]
    yield k
    pf.close()
    backend.close()


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
        # ... also when spelled differently: remote_port 5000 is the Service's first (only) port
        same = fw.ensure(params(port, remote_port=5000), lambda: kube, check_mode=False)
        assert same["changed"] is False and same["pid"] == pid and same["stopped"] == []

        # a connection is accepted and logged (this unit test has no API server to resolve pods through)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.settimeout(20)
            assert c.recv(10) == b""
        assert "no tunnel" in open(log).read()

        # another target on the same port replaces it
        kube.services[("asgard", "other")] = service("other")
        other = fw.ensure(params(port, service="other"), lambda: kube, check_mode=False)
        assert other["changed"] is True and other["pid"] != pid
        assert [(s["reason"], s["pid"], s["target"]) for s in other["stopped"]] == [
            ("target changed", pid, "svc/mlflow-service in asgard")]
        pid = other["pid"]
        wait_listening(port, pid)
    finally:
        gone = fw.ensure(params(port, state="absent"), lambda: kube, check_mode=False)
    assert gone["changed"] is True and [s["pid"] for s in gone["stopped"]] == [pid]
    assert not fw.pid_alive(pid)
    assert not (xdg / f"127.0.0.1_{port}.json").exists()
    assert fw.ensure(params(port, state="absent"), lambda: kube, check_mode=False)["changed"] is False


# ------------------------------------------------------------------ issue 14 item 3: only replaced by one that works
@pytest.fixture
def running(kube, xdg):
    """A working forward to svc/mlflow-service in asgard on a free port; stopped at the end."""
    port = free_port()
    r = fw.ensure(params(port), lambda: kube, check_mode=False)
    wait_listening(port, r["pid"])
    yield port, r["pid"]
    fw.ensure(params(port, state="absent", cleanup=True), lambda: kube, check_mode=False)


def _state(xdg, port: int) -> dict:
    return json.loads((xdg / f"127.0.0.1_{port}.json").read_text())


@pytest.mark.parametrize(("change", "code"), [
    ({"namespace": "typo"}, "NAMESPACE_NOT_FOUND"),
    ({"service": "no-such-service"}, "SERVICE_NOT_FOUND"),
    ({"service": "idle"}, "NO_READY_POD"),
    ({"service": "broken"}, None),  # resolved, but the tunnel does not open
])
def test_failed_retarget_keeps_the_working_forward(kube, xdg, running, change, code):
    port, pid = running
    kube.services[("asgard", "idle")] = service("idle", selector={"app": "idle"})  # no pod behind it
    kube.services[("asgard", "broken")] = service("broken", selector={"app": "broken"})
    kube.pods["asgard"].append(pod("broken-0", labels={"app": "broken"}))
    kube.pf.refuse["broken-0"] = 503
    for check in (True, False):
        with pytest.raises(fw.ForwardError) as ei:
            fw.ensure(params(port, **change), lambda: kube, check_mode=check)
        d = ei.value.details
        assert d["stopped"] == [] and [k["pid"] for k in d["kept"]] == [pid], d
        assert d.get("code") == code
        msg = str(ei.value)
        assert "nothing was stopped" in msg and f"pid {pid}" in msg and "svc/mlflow-service in asgard" in msg, msg
        assert fw.pid_alive(pid) and any(h["pid"] == pid for h in fw.port_holders("127.0.0.1", port))
        assert _state(xdg, port)["pid"] == pid, "the state file must name the forward that still runs"


def test_no_ready_pod_with_nothing_to_replace_starts_anyway(kube, xdg):
    """Nothing works on the port yet: a target that is only temporarily unavailable gets its forward (it resolves a
    pod per connection), with a warning; a target that cannot exist fails."""
    port = free_port()
    kube.services[("asgard", "idle")] = service("idle", selector={"app": "idle"})
    r = fw.ensure(params(port, service="idle"), lambda: kube, check_mode=False)
    try:
        assert r["changed"] is True and r["pid"] and "NO_READY_POD" in r["warnings"][0]
        assert "starts anyway" in r["warnings"][0]
    finally:
        fw.ensure(params(port, state="absent"), lambda: kube, check_mode=False)
    with pytest.raises(fw.ForwardError) as ei:
        fw.ensure(params(free_port(), namespace="typo"), lambda: kube, check_mode=False)
    assert ei.value.details["code"] == "NAMESPACE_NOT_FOUND" and ei.value.details["kept"] == []


def test_kubectl_of_another_service_is_named_and_only_stopped_for_a_working_target(kube, xdg, procs, tmp_path):
    port = free_port()
    k = listener(procs, tmp_path, port, name="kubectl",
                 args=("port-forward", "--token=s3cr3t-t0ken", "-n", "other-ns", "svc/other", f"{port}:80"))
    # the new target does not work: the kubectl forward stays, and is named
    with pytest.raises(fw.ForwardError) as ei:
        fw.ensure(params(port, namespace="typo", cleanup=True), lambda: kube, check_mode=False)
    assert k.poll() is None
    [kept] = ei.value.details["kept"]
    assert kept["pid"] == k.pid and kept["target"] == f"svc/other {port}:80 in other-ns"
    assert "s3cr3t-t0ken" not in json.dumps(ei.value.details) + str(ei.value)
    # it works: stopped, named with its command line (credential masked) and target
    r = fw.ensure(params(port, cleanup=True), lambda: kube, check_mode=False, diff=True)
    try:
        [st] = r["stopped"]
        assert (st["pid"], st["kind"], st["target"]) == (k.pid, "kubectl port-forward", f"svc/other {port}:80 in other-ns")
        assert "--token=********" in st["cmdline"] and "s3cr3t-t0ken" not in json.dumps(r)
        assert k.wait(timeout=10) is not None
        assert r["diff"]["before"]["processes"] == [f"pid {k.pid}: kubectl port-forward to svc/other {port}:80 in other-ns"]
        assert r["diff"]["after"]["processes"] == ["new: asgard.mlflow forwarder to svc/mlflow-service in asgard (pod mlflow-0)"]
    finally:
        fw.ensure(params(port, state="absent"), lambda: kube, check_mode=False)


def test_check_mode_and_diff_of_a_retarget(kube, xdg, running):
    port, pid = running
    kube.services[("asgard", "other")] = service("other")
    c = fw.ensure(params(port, service="other"), lambda: kube, check_mode=True, diff=True)
    assert c["changed"] is True and c["would_start"] is True
    assert [(s["pid"], s["reason"]) for s in c["stopped"]] == [(pid, "target changed")]
    assert c["diff"]["before"]["processes"] == [f"pid {pid}: asgard.mlflow forwarder to svc/mlflow-service in asgard"]
    assert c["diff"]["after"]["processes"] == ["new: asgard.mlflow forwarder to svc/other in asgard (pod mlflow-0)"]
    assert fw.pid_alive(pid) and _state(xdg, port)["pid"] == pid, "check mode stops nothing"
    same = fw.ensure(params(port, remote_port=5000), lambda: kube, check_mode=True, diff=True)
    assert same["changed"] is False and same["diff"]["before"] == same["diff"]["after"]


@pytest.mark.parametrize(("a", "b", "port", "equal"), [
    ({"namespace": "n", "service": "s", "remote_port": None}, {"namespace": "n", "service": "s", "remote_port": 5000},
     5000, True),
    ({"namespace": "n", "service": "s", "remote_port": None}, {"namespace": "n", "service": "s", "remote_port": 80},
     5000, False),
    ({"namespace": "n", "service": "s", "remote_port": None}, {"namespace": "n", "service": "s", "remote_port": 5000},
     None, False),  # the Service's first port is unknown: only the same spelling is the same forward
    ({"namespace": "n", "service": "s"}, {"namespace": "m", "service": "s"}, 5000, False),
    ({"namespace": "n", "pod": "p", "remote_port": None}, {"namespace": "n", "pod": "p", "remote_port": 5000}, None, True),
    ({"namespace": "n", "label_selectors": ["a=1,b=2"]}, {"namespace": "n", "label_selectors": ["b=2", "a=1"]},
     None, True),
])
def test_same_target(a, b, port, equal):
    assert fw.same_target(a, b, port) is equal


@pytest.mark.parametrize(("cmd", "expected"), [
    (["kubectl", "port-forward", "svc/mlflow-service", "5000:5000"], "svc/mlflow-service 5000:5000 in the current namespace"),
    (["kubectl", "-n", "a", "port-forward", "--address", "127.0.0.1", "pod/x", "5000"], "pod/x 5000 in a"),
    (["kubectl", "port-forward", "--namespace=ml", "--context", "prod", "deploy/m", "8080:5000"],
     "deploy/m 8080:5000 in ml (context prod)"),
    (["/usr/bin/kubectl", "pf", "-nml", "svc/m", "5000"], "svc/m 5000 in ml"),
])
def test_kubectl_target(cmd, expected):
    assert fw.kubectl_target(cmd) == expected


def test_redact_cmdline():
    assert fw.redact_cmdline(["kubectl", "--token", "abc", "--password=pw", "port-forward", "svc/x", "5000"]) == [
        "kubectl", "--token", "********", "--password=********", "port-forward", "svc/x", "5000"]
    assert fw.redact_cmdline(None) is None
