"""Issue 14 item 6 in the verify role: remediation of a Deployment is serialised by its Lease.

Another run holds the Lease (tests/integration/test_remediation_lock.py's holder play: it keeps the Lease, renewed,
until the test creates its go-file). verify.yml on the seed's broken Deployment, allowed to wait 1 s, then changes
nothing, says REMEDIATION_IN_PROGRESS with who holds the Lease and since when, and claims no change; once the
holder is done, the next verify.yml takes the Lease and heals. Lease semantics:
https://kubernetes.io/docs/concepts/architecture/leases/.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.ansible_runner import REPO, run_playbook  # noqa: E402
from helpers.lab_objects import get_deployment  # noqa: E402
from test_remediation_lock import journal, lease, start, wait_until  # noqa: E402
from test_verify_heal import wait_log  # noqa: E402

pytestmark = pytest.mark.lab
SEED = REPO / "playbooks" / "files" / "seed-before.yml"


def test_a_run_that_does_not_get_the_lock_changes_nothing_and_says_who_holds_it(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    # the seed, but with one gunicorn worker: the number of workers is not what this test is about (the seed's 2,
    # or the default target of 4 in the healed pod, are each one more MLflow import per pod start)
    seed = SEED.read_text()
    assert seed.count("--workers 2 ") == 1
    for obj in (o for o in yaml.safe_load_all(seed.replace("--workers 2 ", "--workers 1 ")) if o):
        path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
                "Service": f"/api/v1/namespaces/{ns}/services"}[obj["kind"]]
        assert lab.request("POST", path, json=obj).status_code == 201
    wait_log(lab, ns, "Listening at")
    holder = start(lab, tmp_path, "holder", ns, wait=0, duration=30)
    try:
        wait_until("the holder remediating", lambda: "start holder" in journal(tmp_path), timeout=180)
        held_by = lease(lab, ns)["spec"]["holderIdentity"]
        gen = get_deployment(lab, ns)["metadata"]["generation"]
        report = tmp_path / "held.json"
        res = run_playbook("playbooks/verify.yml", env=lab.env(), timeout=900, extra_vars={
            "verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(report),
            "verify_lock_wait_timeout": 1, "verify_min_workers": 1})
        rep = json.loads(report.read_text())
        assert res.rc != 0, res.output
        assert res.changed == 0, res.changed_tasks()
        assert get_deployment(lab, ns)["metadata"]["generation"] == gen
        assert rep["remediated"] == [] and rep["rounds"] == []
        [held] = [f for f in rep["remaining"] if f["code"] == "REMEDIATION_IN_PROGRESS"]
        assert held["evidence"]["held_by"] == held_by and held["evidence"]["since"], held
        assert held_by in held["message"] and "remediated nothing" in held["message"]
        assert lease(lab, ns)["spec"]["holderIdentity"] == held_by  # the holder's Lease was left alone
    finally:
        (tmp_path / "journal.go-holder").touch()
        holder.wait(timeout=300)
    # the holder is done: the next run takes the Lease, heals, and gives it back
    end = time.monotonic() + 60
    while (lease(lab, ns) or {}).get("spec", {}).get("holderIdentity") and time.monotonic() < end:
        time.sleep(0.5)
    report = tmp_path / "heal.json"
    res = run_playbook("playbooks/verify.yml", env=lab.env(), timeout=900, extra_vars={
        "verify_namespace": ns, "verify_port_forward": False, "verify_report_path": str(report),
        "verify_rollout_timeout": 300, "verify_min_workers": 1})
    rep = json.loads(report.read_text())
    assert res.rc == 0, res.output
    assert rep["status"] == "healthy" and [r["action"] for r in rep["remediated"]] == ["patch"], rep["remaining"]
    assert not (lease(lab, ns) or {}).get("spec", {}).get("holderIdentity"), "the Lease was not given back"
