"""Two labs in one network namespace: each has its own pod network, both are reachable from one process.

Kubernetes documentation (kubernetes/website content/en/docs/concepts/cluster-administration/networking.md,
"The Kubernetes network model"): every pod gets its own cluster-wide unique IP, and agents on a node can
communicate with all pods on that node. Two clusters on one host must therefore not hand out the same pod IP;
the Node's ``spec.podCIDR`` is the range its pods get their IPs from (API reference NodeSpec).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import requests
import yaml
from asgardlab.kubelet.testing import apply, get, kubectl, make_namespace, wait_for

LAB_PKG = Path(__file__).resolve().parents[1] / "lab"
SERVE = "python3 -m http.server 8080 --bind 0.0.0.0"
# both tests start and stop a second lab: one at a time, or a freed pod network slot is claimed again mid-test
pytestmark = pytest.mark.xdist_group("second_lab")


def _lab(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(LAB_PKG)}
    return subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(state), *args], capture_output=True, text=True,
                          timeout=120, env=env)


class SecondLab:
    """What the asgardlab.kubelet.testing helpers need of a lab handle (request, env), for a lab of our own."""

    def __init__(self, state: Path) -> None:
        self.state_dir = state
        self.kubeconfig = state / "kubeconfig"
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        self.api, self.token = cfg["clusters"][0]["cluster"]["server"], cfg["users"][0]["user"]["token"]
        self.ca = state / "pki" / "ca.crt"

    def request(self, method: str, path: str, **kw):
        return requests.request(method, self.api + path, headers={"Authorization": f"Bearer {self.token}"}, verify=str(self.ca),
                                timeout=30, **kw)

    def env(self, **extra) -> dict:
        tmp = self.state_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "TMPDIR": str(tmp), **extra}


@pytest.fixture
def second_lab(tmp_path):
    state = tmp_path / "lab2"
    up = _lab(state, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield SecondLab(state)
    finally:
        _lab(state, "down")


def _serving_pod(lab, ns: str) -> dict:
    apply(lab, ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", f"exec {SERVE}"], "workingDir": "/etc",
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}})
    return wait_for(lambda: (p := get(lab, f"/api/v1/namespaces/{ns}/pods/web"))["status"].get("podIP")
                    and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"]) and p, 60, "pod ready")


def _fetch(ip: str) -> int:
    with urllib.request.urlopen(f"http://{ip}:8080/hostname", timeout=5) as r:
        return r.status


def test_two_labs_in_one_network_namespace(lab, second_lab, lab_namespace):
    nets = [json.loads((h.state_dir / "network.json").read_text()) for h in (lab, second_lab)]
    cidrs = [ipaddress.ip_network(n["cidr"]) for n in nets]
    assert not cidrs[0].overlaps(cidrs[1]) and nets[0]["bridge"] != nets[1]["bridge"]
    for h, n in zip((lab, second_lab), nets, strict=True):
        node = get(h, "/api/v1/nodes/asgard-lab-node")
        assert node["spec"]["podCIDR"] == n["cidr"]
        assert {"type": "InternalIP", "address": n["gateway"]} in node["status"]["addresses"]
    ns2 = make_namespace(second_lab, "net")
    pods = [_serving_pod(lab, lab_namespace), _serving_pod(second_lab, ns2)]
    ips = [p["status"]["podIP"] for p in pods]
    assert ips[0] != ips[1] and all(ipaddress.ip_address(ip) in c for ip, c in zip(ips, cidrs, strict=True))
    assert [p["status"]["hostIP"] for p in pods] == [n["gateway"] for n in nets]
    assert [_fetch(ip) for ip in ips] == [200, 200]  # both pod networks reachable from this one process
    # each lab's pods reach the host at their own gateway
    srv = socket.create_server(("0.0.0.0", 0))
    port = srv.getsockname()[1]
    threading.Thread(target=lambda: [srv.accept()[0].close() for _ in range(2)], daemon=True).start()
    try:
        for h, ns, n in ((lab, lab_namespace, nets[0]), (second_lab, ns2, nets[1])):
            kubectl(h, "-n", ns, "exec", "web", "--", "python3", "-c",
                    f"import socket; socket.create_connection(('{n['gateway']}', {port}), timeout=5).close()")
    finally:
        srv.close()
    # the second lab's teardown leaves the first one working
    assert _lab(second_lab.state_dir, "down").returncode == 0
    links = subprocess.run(["ip", "-br", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    assert nets[0]["bridge"] in links.split() and nets[1]["bridge"] not in links.split()
    assert _fetch(ips[0]) == 200
    ns3 = make_namespace(lab, "net")
    assert _serving_pod(lab, ns3)["status"]["podIP"] != ips[0]
    lab.request("DELETE", f"/api/v1/namespaces/{ns3}")


def test_a_killed_lab_is_cleaned_up_by_the_next_start(second_lab):
    """A lab server that is killed (SIGKILL: no teardown) leaves its bridge, pod network namespaces and container
    processes behind; the next start of that lab reclaims the bridge (the same pod network) and kills the
    containers whose lab is gone, as a restarted kubelet does not keep running pods it no longer knows."""
    from asgardlab.kubelet.testing import tagged_processes

    ns = make_namespace(second_lab, "crash")
    p = _serving_pod(second_lab, ns)
    cid = p["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    assert tagged_processes(cid)
    before = json.loads((second_lab.state_dir / "network.json").read_text())
    os.kill(int((second_lab.state_dir / "lab.pid").read_text()), 9)
    wait_for(lambda: _lab(second_lab.state_dir, "status").returncode != 0, 30, "the killed lab to be gone")
    assert tagged_processes(cid), "the containers outlive a killed lab server (no teardown ran)"
    up = _lab(second_lab.state_dir, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    after = json.loads((second_lab.state_dir / "network.json").read_text())
    if after != before:
        # another lab started while this one was dead and claimed its free slot (xdist runs other labs): then the
        # old bridge is that live lab's, and this lab got a network of its own, never a shared one
        import subprocess
        assert subprocess.run(["ip", "link", "show", before["bridge"]], capture_output=True).returncode == 0, \
            (before, after)
        assert after["cidr"] != before["cidr"] and after["bridge"] != before["bridge"], (before, after)
    wait_for(lambda: not tagged_processes(cid), 20, "the orphaned container to be killed")
