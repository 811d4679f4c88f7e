"""The seed incident's own six-step test script (tests/bench/seed-test-script.sh), with real kubectl and a real
``kubectl port-forward``, before and after playbooks/verify.yml heals the seed's broken Deployment (issue 15)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.lab_objects import free_port, live_pods  # noqa: E402

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "bench" / "seed-test-script.sh"
SEED = REPO / "playbooks" / "files" / "seed-before.yml"


def run_script(lab, ns: str, port: int, tmp_path: Path) -> tuple[subprocess.CompletedProcess, int | None]:
    """The script's result and the pid of the kubectl port-forward it left running (None if it started none)."""
    env = lab.env(NAMESPACE=ns, PORT=str(port), PF_LOG=str(tmp_path / f"pf-{port}.log"))
    r = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    m = re.search(r"^kubectl port-forward pid (\d+) forwarding", r.stdout, re.M)
    return r, int(m.group(1)) if m else None


def stop(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    try:
        return "port-forward" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_seed_script_fails_on_the_seed_and_passes_after_verify_heals_it(lab, lab_namespace, tmp_path):
    ns, port = lab_namespace, free_port()
    for obj in yaml.safe_load_all(SEED.read_text()):
        path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments", "Service": f"/api/v1/namespaces/{ns}/services"}
        assert lab.request("POST", path[obj["kind"]], json=obj).status_code == 201
    pids = []
    try:
        # the "Before" server once MLflow answers (on its pod IP, at /static/health): Running, logs clean, endpoints
        # ready, but --static-prefix=/static makes /health a 404
        def serving() -> bool:
            pods = live_pods(lab, ns)
            ip = pods[0].get("status", {}).get("podIP") if pods else None
            try:
                return bool(ip) and requests.get(f"http://{ip}:5000/static/health", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        end = time.monotonic() + 300
        while not serving():
            assert time.monotonic() < end, "the seed's MLflow never answered /static/health"
            time.sleep(1)
        before, pid = run_script(lab, ns, port, tmp_path)
        pids.append(pid)
        assert before.returncode == 6, before.stdout + before.stderr
        assert "FAIL step 6: /health answered 404" in before.stderr, before.stderr
        assert pid and alive(pid), before.stdout  # steps 1-5 passed: a real kubectl port-forward is running

        report = tmp_path / "verify.json"
        res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, env=lab.env(), timeout=900, extra_vars={
            "verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(report),
            # the number of workers is not what this test is about (as in test_verify_heal): at the seed's 2, the
            # healed server keeps its 2 gunicorn workers instead of starting 4 (each one imports MLflow)
            "verify_min_workers": 2})
        assert res.rc == 0, res.output
        assert json.loads(report.read_text())["status"] == "healthy"

        after, pid2 = run_script(lab, ns, port, tmp_path)
        pids.append(pid2)
        assert after.returncode == 0, after.stdout + after.stderr
        assert f"stopped old kubectl port-forward pid {pid} " in after.stdout, after.stdout  # step 4 on the stale one
        assert not alive(pid)
        assert "/health: OK" in after.stdout and "/: <title>MLflow</title>" in after.stdout
        assert after.stdout.rstrip().endswith(f"all 6 steps passed; dashboard on http://127.0.0.1:{port} (kubectl port-forward pid {pid2})")
        assert alive(pid2)
        r = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)  # the forward it left keeps working
        assert (r.status_code, r.text) == (200, "OK")
    finally:
        for p in pids:
            stop(p)
