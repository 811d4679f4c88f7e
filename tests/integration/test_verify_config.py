"""playbooks/verify.yml on the lab: a crash loop from a bad flag (CONTAINER_CONFIG_ERROR, never restarted), the
expected static prefix (kept, the dashboard checked under it; a different one reported), the dashboard
port-forward refused by an unrelated process on the local port (the run fails naming it; AWX/CI unaffected)
and two remediation rounds (a patch, then a restart for what showed only after it). The static-prefix and port tests
read one MLflow (module fixture ``prefixed``; neither changes it) and one port held by an unrelated process."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.lab_objects import codes, free_port, get_deployment, live_pods, wait_container_waiting  # noqa: E402

pytestmark = pytest.mark.lab
IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
LOCAL_HOST = "localhost:5000"
TIMINGS: dict[str, float] = {}


def server_args(*extra: str, workers: int = 1) -> list[str]:
    return ["server", "--host=0.0.0.0", "--port=5000", f"--workers={workers}",
            "--backend-store-uri=sqlite:////mlflow/mlflow.db", "--default-artifact-root=/mlflow/artifacts", *extra]


def allowed_hosts(ns: str) -> str:
    names = ["mlflow-service", f"mlflow-service.{ns}", f"mlflow-service.{ns}.svc",
             f"mlflow-service.{ns}.svc.cluster.local"]
    return ",".join([f"{n}:5000" for n in names] + ["localhost:*", "127.0.0.1:*", "10.*"])


def objects(ns: str, args: list[str], command=None, volumes=(), mounts=()) -> list[dict]:
    labels = {"app": "mlflow"}
    c = {"name": "mlflow", "image": IMAGE, "command": command or ["mlflow"], "args": args,
         "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
                 {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": allowed_hosts(ns)}],
         "ports": [{"name": "http", "containerPort": 5000}],
         "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 1},
         "volumeMounts": [{"name": "data", "mountPath": "/mlflow"}, *mounts]}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow-deployment", "labels": labels},
           "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"terminationGracePeriodSeconds": 3, "enableServiceLinks": False,
                                          "containers": [c],
                                          "volumes": [{"name": "data", "emptyDir": {}}, *volumes]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow-service"},
           "spec": {"selector": labels, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}}
    return [dep, svc]


def create(lab, ns: str, objs: list[dict]) -> None:
    for obj in objs:
        path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "Service": f"/api/v1/namespaces/{ns}/services"}[obj["kind"]]
        r = lab.request("POST", path, json=obj)
        assert r.status_code == 201, r.text


def wait_serving(lab, ns: str, prefix: str = "", timeout: float = 240) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in live_pods(lab, ns):
            ip = p.get("status", {}).get("podIP")
            if not ip:
                continue
            try:
                if requests.get(f"http://{ip}:5000{prefix}/health", headers={"Host": LOCAL_HOST},
                                timeout=3).status_code == 200:
                    return p["metadata"]["name"]
            except requests.RequestException:
                pass
        time.sleep(1)
    raise AssertionError(f"no MLflow pod in {ns} answers {prefix}/health")


def verify(lab, ns: str, tmp_path: Path, name: str, check: bool = False, **extra):
    rep_path = tmp_path / f"verify-{name}.json"
    ev = {"verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(rep_path),
          "verify_min_workers": 1, "verify_rollout_timeout": 240, "verify_probe_deadline": 45}
    ev.update(extra)
    t0 = time.monotonic()
    res = run_playbook("playbooks/verify.yml", extra_vars=ev, env=lab.env(), check=check, timeout=900)
    TIMINGS[name] = round(time.monotonic() - t0, 1)
    rep = json.loads(rep_path.read_text()) if rep_path.exists() else {}
    return res, rep


# ------------------------------------------------------------------------------------------------ the tests
def test_crash_loop_from_a_bad_flag_is_a_config_error_never_restarted(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    create(lab, ns, objects(ns, server_args("--no-such-flag")))
    assert wait_container_waiting(lab, ns, "CrashLoopBackOff", timeout=120) == "CrashLoopBackOff"
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    res, rep = verify(lab, ns, tmp_path, "bad-flag", verify_max_restarts=2)
    assert res.rc != 0, "verify passed on a server that cannot start"
    assert res.changed == 0, res.changed_tasks()
    cfg = [f for f in rep["remaining"] if f["code"] == "CONTAINER_CONFIG_ERROR"]
    assert cfg and cfg[0]["severity"] == "critical", rep["remaining"]
    # measured (click 8.2, MLflow 3.17.2): "Error: No such option '--no-such-flag'."
    assert cfg[0]["evidence"]["line"].startswith("Error: No such option '--no-such-flag'"), cfg[0]
    assert cfg[0]["evidence"]["exit_code"] == 2
    assert rep["remediated"] == [] and rep["plan"]["actions"] == []
    assert rep["next_steps"][0].startswith("CONTAINER_CONFIG_ERROR: fix the command/args of container mlflow")
    # the failure says it at a glance
    assert "CONTAINER_CONFIG_ERROR" in res.output and "No such option '--no-such-flag'" in res.output
    dep = get_deployment(lab, ns)
    assert dep["metadata"]["generation"] == gen
    assert "kubectl.kubernetes.io/restartedAt" not in (dep["spec"]["template"]["metadata"].get("annotations") or {})
    assert "--no-such-flag" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.fixture(scope="module")
def prefixed(lab):
    """A namespace with MLflow serving under --static-prefix=/mlflow, shared by the tests that only read it (each
    asserts that its verify runs changed nothing)."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    r = lab.request("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert r.status_code == 201, r.text
    create(lab, ns, objects(ns, server_args("--static-prefix=/mlflow")))
    wait_serving(lab, ns, "/mlflow")
    yield ns
    lab.request("DELETE", f"/api/v1/namespaces/{ns}")


@pytest.fixture(scope="module")
def held_port(tmp_path_factory):
    """(port, process): a local port held by an unrelated process (python -m http.server) while the module runs."""
    port = free_port()
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             cwd=tmp_path_factory.mktemp("held"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield port, other
    finally:
        other.kill()
        other.wait()


def test_expected_static_prefix_is_kept_and_the_dashboard_checked_under_it(lab, prefixed, held_port, tmp_path):
    ns = prefixed
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    # also the AWX/CI case of the port test: verify_port_forward false, so the local port an unrelated process holds
    # does not matter: the run passes and changes nothing
    port, other = held_port
    res, rep = verify(lab, ns, tmp_path, "prefix-kept", verify_expected_static_prefix="/mlflow",
                      verify_port_forward_local_port=port)
    assert other.poll() is None, "verify killed an unrelated process"
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert rep["status"] == "healthy", rep["remaining"]
    assert {"ROOT_UNDER_PREFIX", "STATIC_PREFIX_SET"} <= codes(rep["findings"])
    assert rep["measurements"]["before"]["root_status"] == 200
    assert rep["remediated"] == [] and get_deployment(lab, ns)["metadata"]["generation"] == gen

    # another prefix expected: reported (both named), nothing removed, the run fails
    res, rep = verify(lab, ns, tmp_path, "prefix-other", verify_expected_static_prefix="/other")
    assert res.rc != 0
    assert res.changed == 0, res.changed_tasks()
    mm = next(f for f in rep["remaining"] if f["code"] == "STATIC_PREFIX_MISMATCH")
    assert mm["evidence"] == {"static_prefix": "/mlflow", "expected": "/other"}
    assert "ROOT_NOT_FOUND" in codes(rep["remaining"])
    assert rep["plan"]["actions"] == []
    assert any("--static-prefix=/other" in n for n in rep["next_steps"]), rep["next_steps"]
    args = get_deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--static-prefix=/mlflow" in args and get_deployment(lab, ns)["metadata"]["generation"] == gen

    # a malformed expectation fails in preflight naming the variable
    res, rep = verify(lab, ns, tmp_path, "prefix-bad", verify_expected_static_prefix="mlflow/")
    assert res.rc != 0 and "verify_expected_static_prefix" in res.output and rep == {}


def test_port_held_by_an_unrelated_process_fails_the_run_naming_it(lab, prefixed, held_port, tmp_path):
    # the MLflow of the static-prefix test (serving under /mlflow, which is expected: healthy but for the forward);
    # the AWX/CI case of the same state (verify_port_forward false) is that test's first run
    ns = prefixed
    port, other = held_port
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    res, rep = verify(lab, ns, tmp_path, "port-held", verify_port_forward=True,
                      verify_port_forward_local_port=port, verify_expected_static_prefix="/mlflow")
    assert other.poll() is None, "verify killed an unrelated process"
    assert res.rc != 0, "verify passed although the port-forward asked for could not start"
    assert rep["status"] == "degraded" and rep["healthy"] is True, rep["remaining"]
    [pf] = [f for f in rep["remaining"] if f["code"] == "PORT_FORWARD_FAILED"]
    assert str(other.pid) in pf["message"] and "http.server" in pf["message"], pf
    assert pf["evidence"]["holder"]["pid"] == other.pid
    assert rep["meta"]["dashboard_url"] == ""
    assert any(n.startswith("PORT_FORWARD_FAILED: the dashboard port-forward could not start: free the local")
               for n in rep["next_steps"]), rep["next_steps"]
    assert f"the dashboard port-forward on 127.0.0.1:{port} could not start" in res.output
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # still the http.server
    assert res.changed == 0, res.changed_tasks()
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen
    print("\nverify wall times (s):", json.dumps(TIMINGS))


HANG_ONCE = ("if [ -e /shared/armed ] && [ ! -e /shared/hung ]; then touch /shared/hung; exec python3 -c "
             "'import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
             "s.bind((\"0.0.0.0\",5000));s.listen(64);c=[];[c.append(s.accept()) for _ in iter(int,1)]'; fi; touch /shared/armed; exec mlflow "
             + " ".join(server_args()))


def test_two_rounds_a_patch_then_a_restart_for_what_showed_after_it(lab, lab_namespace, tmp_path):
    """Round 1 patches --workers 1 -> 2; the patched pod accepts TCP connections and keeps them (so the tcpSocket
    readiness probe passes and it stays Ready) but never answers HTTP;
    round 2 sees that (probe) and makes one rollout restart; the next pod serves. A re-run changes nothing."""
    ns = lab_namespace
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    create(lab, ns, objects(ns, [HANG_ONCE], command=["/bin/sh", "-c"],
                            volumes=[{"name": "shared", "hostPath": {"path": str(shared), "type": "DirectoryOrCreate"}}],
                            mounts=[{"name": "shared", "mountPath": "/shared"}]))
    first = wait_serving(lab, ns)
    assert (shared / "armed").exists() and not (shared / "hung").exists()
    gen = get_deployment(lab, ns)["metadata"]["generation"]
    probe = {"verify_min_workers": 2, "verify_probe_timeout": 5, "verify_probe_deadline": 20}

    # check mode: one round planned (the patch), nothing changed
    res, rep = verify(lab, ns, tmp_path, "rounds-check", check=True, **probe)
    assert res.rc == 0, res.output
    assert [a["action"] for a in rep["plan"]["actions"]] == ["patch"]
    assert [r["round"] for r in rep["rounds"]] == [1] and rep["rounds"][0]["findings_after"] is None
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen and not (shared / "hung").exists()

    res, rep = verify(lab, ns, tmp_path, "rounds-heal", **probe)
    assert res.rc == 0, res.output
    assert (shared / "hung").exists(), "the patched pod did not take the hanging branch"
    assert [(r["round"], r["action"], r["changed"]) for r in rep["remediated"]] == [(1, "patch", True),
                                                                                    (2, "restart", True)]
    assert "TOO_FEW_WORKERS" in rep["remediated"][0]["reason"]
    r1, r2 = rep["rounds"]
    assert r1["planned"] == ["patch"] and r2["planned"] == ["restart"]
    assert set(r1["findings_after"]) & {"TIMEOUT", "HEALTH_FAILED", "PROBE_UNHEALTHY", "TUNNEL_ERROR"}, r1
    assert r2["findings_after"] == [] and rep["status"] == "healthy", rep["remaining"]
    assert "after round 1: " in res.output and "(round 2, changed; for " in res.output
    dep = get_deployment(lab, ns)
    assert re.search(r"--workers[= ]2\b", dep["spec"]["template"]["spec"]["containers"][0]["args"][0])
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    assert wait_serving(lab, ns) != first

    res, rep = verify(lab, ns, tmp_path, "rounds-rerun", **probe)
    assert res.rc == 0 and res.changed == 0, res.changed_tasks()
    assert rep["remediated"] == [] and rep["rounds"] == [] and rep["status"] == "healthy"
    print("\nverify wall times (s):", json.dumps(TIMINGS))
