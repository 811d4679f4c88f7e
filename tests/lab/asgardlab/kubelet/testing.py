"""Helpers for the kubelet/controller lab tests (tests/lab_tests/test_kubelet_*.py, test_controllers_*.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import yaml

MANIFESTS = Path(__file__).resolve().parents[4] / "tests" / "lab_tests" / "manifests"
VENV_BIN = Path(sys.executable).parent
TAG = "ASGARDLAB_CONTAINER_ID="


def make_namespace(lab, prefix: str = "k") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


def delete_namespace(lab, name: str, wait: float = 60) -> None:
    lab.request("DELETE", f"/api/v1/namespaces/{name}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if lab.request("GET", f"/api/v1/namespaces/{name}").status_code == 404:
            return
        time.sleep(0.5)
    raise AssertionError(f"namespace {name} still exists {wait}s after delete")


def kubectl(lab, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(["kubectl", *args], env=lab.env(), capture_output=True, text=True, timeout=timeout, input=stdin)
    if check:
        assert res.returncode == 0, f"kubectl {' '.join(args)}: rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def apply(lab, ns: str, obj: dict | str) -> None:
    text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
    kubectl(lab, "-n", ns, "apply", "-f", "-", stdin=text)


def manifest(name: str) -> dict:
    return yaml.safe_load((MANIFESTS / name).read_text())


def playbook(lab, tmp_path: Path, tasks: str, extra_vars: dict | None = None, timeout: float = 300) -> dict:
    """Run an ansible-playbook with ``tasks`` (YAML text) on localhost; return {task name: result}."""
    pb = tmp_path / f"pb-{uuid.uuid4().hex[:6]}.yml"
    pb.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + textwrap.indent(textwrap.dedent(tasks), "    "))
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb)]
    if extra_vars:
        vf = tmp_path / f"vars-{uuid.uuid4().hex[:6]}.json"
        vf.write_text(json.dumps(extra_vars))
        cmd += ["-e", f"@{vf}"]
    env = lab.env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    start = res.stdout.find("{")
    data = json.loads(res.stdout[start:]) if start >= 0 else {}
    out = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            out[task["task"]["name"]] = task["hosts"].get("localhost", {})
    assert res.returncode == 0, f"playbook failed rc={res.returncode}\n{json.dumps(out, indent=1)[-6000:]}\n{res.stderr[-3000:]}"
    return out


def wait_for(fn, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def get(lab, path: str) -> dict:
    r = lab.request("GET", path)
    assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
    return r.json()


def pods(lab, ns: str, selector: str | None = None) -> list[dict]:
    q = f"?labelSelector={selector}" if selector else ""
    return get(lab, f"/api/v1/namespaces/{ns}/pods{q}")["items"]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def tagged_processes(contains: str = "") -> list[tuple[int, str]]:
    """Processes started by the lab's kubelet (environment tag), optionally only those whose tag contains
    ``contains`` (e.g. a container ID without its ``asgardlab://`` prefix): (pid, command line)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for entry in env:
            if entry.startswith(TAG.encode()) and contains.encode() in entry:
                found.append((int(d), cmd))
                break
    return found


def http_over_socket(sock, request: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(request)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data
