"""playbooks/verify.yml on the seed's `/bin/sh -c "mlflow server ..."` form (no `exec`) with real MLflow pods:
SHELL_WRAPPER_NO_EXEC in `--check --diff` and in a report-only run (nothing changed), the heal (`exec ` written
into the script by the patch role), then the effect on real processes: before the heal the pod's PID 1 is `sh`,
which drops SIGTERM, so the old pod stays Terminating for its whole terminationGracePeriodSeconds; after it, MLflow
is PID 1 and a deleted pod is gone well before the grace period. A second run changes nothing.

Kubernetes: on deletion the kubelet sends SIGTERM to PID 1 of each container and SIGKILL when the grace period is
over (kubernetes/website content/en/docs/concepts/workloads/pods/pod-lifecycle.md "Termination of Pods"); a
namespace's init gets no default signal actions, so a PID 1 without a SIGTERM handler ignores it (the Docker run
reference's PID 1 note; tests/lab_tests/test_kubelet_termination.py proves the lab does the same).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook  # noqa: E402
from helpers.fleet_objects import apply, healthy, wait_serving  # noqa: E402
from helpers.lab_objects import codes, get_deployment, live_pods  # noqa: E402

pytestmark = pytest.mark.lab
GRACE = 45  # long, so that "took the grace period" (>= 40 s) and "stopped on SIGTERM" (< 40 s; MLflow exits in
# seconds) cannot be confused on a loaded machine
SCRIPT = ("mlflow server --host=0.0.0.0 --port=5000 --backend-store-uri=${MLFLOW_BACKEND_STORE_URI} "
          "--default-artifact-root=${MLFLOW_DEFAULT_ARTIFACT_ROOT} --serve-artifacts --workers 1")


def verify(lab, ns: str, tmp_path: Path, name: str, *cli: str, check: bool = False, diff: bool = False):
    """verify.yml as an operator runs it: every variable a `-e name=value` string."""
    report = tmp_path / f"{name}.json"
    res = run_playbook("playbooks/verify.yml", kubeconfig=lab.kubeconfig, check=check, diff=diff, env=lab.env(),
                       timeout=900, cli_vars=[f"verify_namespace={ns}", "verify_port_forward=false",
                                              "verify_min_workers=1", "verify_rollout_timeout=400",
                                              f"verify_report_path={report}", *cli])
    return res, (json.loads(report.read_text()) if report.exists() else {})


class Watch(threading.Thread):
    """Polls one pod: when it is first seen Terminating and when it is gone (monotonic clock of this process)."""

    def __init__(self, lab, ns: str, pod: str):
        super().__init__(daemon=True)
        self.lab, self.ns, self.pod = lab, ns, pod
        self.terminating = self.gone = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and self.gone is None:
            r = self.lab.request("GET", f"/api/v1/namespaces/{self.ns}/pods/{self.pod}")
            now = time.monotonic()
            if r.status_code == 404:
                self.gone = now
            elif self.terminating is None and r.json()["metadata"].get("deletionTimestamp"):
                self.terminating = now
            time.sleep(0.25)


def test_shell_wrapper_without_exec_is_found_healed_and_pods_then_stop_on_sigterm(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    dep, svc = healthy(ns)
    dep["spec"]["template"]["spec"]["containers"][0]["args"] = [SCRIPT]  # the seed's form: no exec
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = GRACE
    apply(lab, ns, [dep, svc])
    wait_serving(lab, ns, "app=mlflow", "/health", timeout=300)
    gen0 = get_deployment(lab, ns)["metadata"]["generation"]

    # --check --diff: the finding, the planned patch and its diff (the script with exec); nothing changed
    res, rep = verify(lab, ns, tmp_path, "check", check=True, diff=True)
    assert res.rc == 0, res.output
    f = [f for f in rep["findings_before"] if f["code"] == "SHELL_WRAPPER_NO_EXEC"]
    assert f and f"grace period ({GRACE} s)" in f[0]["message"], rep["findings_before"]
    assert [a["action"] for a in rep["plan"]["actions"]] == ["patch"]
    assert rep["plan"]["actions"][0]["reason"] == ["SHELL_WRAPPER_NO_EXEC"]
    diffs = [h["diff"] for h in res.task("Patch the MLflow Deployment and wait for the rollout") if h.get("diff")]
    assert diffs and "exec mlflow server" in diffs[0]["after"] and "exec " not in diffs[0]["before"], res.output
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen0

    # report only (-e verify_remediate=false): the finding with its next step, nothing changed
    res, rep = verify(lab, ns, tmp_path, "audit", "verify_remediate=false")
    assert res.changed == 0, res.changed_tasks()
    assert "SHELL_WRAPPER_NO_EXEC" in codes(rep["remaining"])
    assert any(n.startswith("SHELL_WRAPPER_NO_EXEC") for n in rep["next_steps"]), rep["next_steps"]
    assert get_deployment(lab, ns)["metadata"]["generation"] == gen0

    # the heal: one patch, one rollout; the old pod (sh as PID 1) is watched while it is replaced
    old = [p["metadata"]["name"] for p in live_pods(lab, ns)]
    assert len(old) == 1
    watch = Watch(lab, ns, old[0])
    watch.start()
    res, rep = verify(lab, ns, tmp_path, "heal")
    watch.stop.set()
    watch.join(5)
    assert res.rc == 0, res.output
    assert rep["status"] == "healthy", rep["remaining"]
    assert rep["remediated"][0]["action"] == "patch" and rep["remediated"][0]["changed"] is True
    assert rep["remediated"][0]["reason"] == ["SHELL_WRAPPER_NO_EXEC"]
    c = get_deployment(lab, ns)["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["/bin/sh", "-c"] and c["args"] == ["exec " + SCRIPT]
    # before: SIGTERM went to sh and was dropped; the pod stayed Terminating until the SIGKILL at the end of the
    # grace period (a lower bound: load only makes it longer)
    assert watch.terminating is not None and watch.gone is not None, "the old pod was not seen going"
    assert watch.gone - watch.terminating >= GRACE - 5, (watch.gone - watch.terminating)

    # a second run changes nothing
    res, rep = verify(lab, ns, tmp_path, "rerun")
    assert res.rc == 0, res.output
    assert res.changed == 0, res.changed_tasks()
    assert rep["status"] == "healthy" and rep["remediated"] == []
    assert "SHELL_WRAPPER_NO_EXEC" not in codes(rep["findings_before"])

    # after: MLflow is PID 1 and stops on SIGTERM; the deleted pod is gone well before the grace period is over
    pod = [p["metadata"]["name"] for p in live_pods(lab, ns)]
    assert len(pod) == 1
    # the replacement pod the ReplicaSet then creates is not looked at: it does not start MLflow (the lab's
    # delayStartSeconds fault on pods created later in the namespace)
    r = lab.request("POST", f"/lab/pods/{ns}/*/fault", json={"delayStartSeconds": 3600})
    assert r.status_code in (200, 201), r.text
    t0 = time.monotonic()
    r = lab.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{pod[0]}")
    assert r.status_code == 200, r.text
    while lab.request("GET", f"/api/v1/namespaces/{ns}/pods/{pod[0]}").status_code != 404:
        assert time.monotonic() - t0 < GRACE - 5, f"pod {pod[0]} still there: SIGTERM did not stop MLflow"
        time.sleep(0.25)
