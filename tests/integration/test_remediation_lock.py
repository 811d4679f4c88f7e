"""asgard.mlflow.remediation_lock against the lab with real, concurrent ansible-playbook processes (issue 14 item 6).

The play holds the Lease around a "remediation" that lasts until the test says so (it waits for a file the test
creates), so each test decides when a holder ends, without fixed sleeps: two runs started at the same moment
remediate one after the other, a holder keeps its Lease past one duration because it is renewed, a run that must not
wait says who holds it and since when and claims no change, check mode writes nothing, and a holder killed with
SIGKILL (its whole process group, as a crashed AWX job) stops being renewed, so its Lease expires and the next run
takes it over. Lease semantics: https://kubernetes.io/docs/concepts/architecture/leases/ and
https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/ (renewTime, leaseDurationSeconds,
MicroTime); the 409 on a stale resourceVersion: https://kubernetes.io/docs/reference/using-api/api-concepts/.

Every -e value is typed as an operator types it (strings); the module converts them by its argument spec.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.ansible_runner import run_playbook, start_playbook  # noqa: E402

pytestmark = pytest.mark.lab

DEPLOYMENT = "mlflow-deployment"
LEASE = f"asgard-mlflow-remediation-{DEPLOYMENT}"
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def lock_play(tmp_path: Path) -> Path:
    """Take the Lease, "remediate" (journal a start line, wait for go-<run>, journal an end line), release."""
    lock = {"namespace": "{{ ns }}", "deployment": DEPLOYMENT, "lease_duration": "{{ lease_duration }}",
            "wait_timeout": "{{ wait }}"}
    pb = tmp_path / "lock.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [{
        "name": "critical section",
        "block": [
            {"name": "lock", "asgard.mlflow.remediation_lock": lock, "register": "lock"},
            {"name": "remediate", "when": "lock.acquired and not ansible_check_mode",
             "ansible.builtin.shell": "echo start {{ run }} >> {{ journal }}; "
                                      "while [ ! -e {{ journal }}.go-{{ run }} ]; do sleep 0.2; done; "
                                      "echo end {{ run }} >> {{ journal }}"},
        ],
        "always": [{"name": "unlock", "asgard.mlflow.remediation_lock": {
            "namespace": "{{ ns }}", "deployment": DEPLOYMENT, "state": "released"}, "register": "unlock"}],
    }]}]))
    return pb


def start(lab, tmp_path, run: str, ns: str, wait: int, duration: int = 10, check: bool = False):
    journal = tmp_path / "journal"
    return start_playbook(lock_play(tmp_path), env=lab.env(XDG_STATE_HOME=str(tmp_path / "state")), check=check,
                          argv=[
                              "-e", f"ns={ns}", "-e", f"run={run}", "-e", f"journal={journal}",
                              "-e", f"lease_duration={duration}", "-e", f"wait={wait}"])


def journal(tmp_path) -> list[str]:
    path = tmp_path / "journal"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def wait_until(what: str, cond, timeout: float = 60, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def lease(lab, ns: str) -> dict | None:
    r = lab.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{LEASE}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def kill_run(pid: int) -> None:
    """SIGKILL an ansible-playbook run and every process under it, as a killed AWX job loses its whole container.
    (Killing the process group is not enough: Ansible's workers detach into sessions of their own.)"""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def ts(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def one(res, name: str) -> dict:
    hosts = res.task(name)
    assert hosts, res.output
    return hosts[0]


def test_two_concurrent_runs_remediate_one_after_the_other(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    a = start(lab, tmp_path, "a", ns, wait=120)
    b = start(lab, tmp_path, "b", ns, wait=120)
    try:
        first = wait_until("one run in its critical section", lambda: journal(tmp_path), timeout=120)
        assert len(first) == 1, first
        holder_run = first[0].split()[1]
        holder, other = (a, b) if holder_run == "a" else (b, a)
        lz = lease(lab, ns)
        spec = lz["spec"]
        assert re.search(rf" pid {holder.pid}( |$)", spec["holderIdentity"]), spec
        assert MICROTIME.match(spec["acquireTime"]) and MICROTIME.match(spec["renewTime"]), spec
        assert spec["leaseDurationSeconds"] == 10
        # the holder keeps the Lease past one duration: renewed (every ~3.3 s) while it remediates
        acquired = ts(spec["acquireTime"])

        def renewed_past_one_duration():
            renew = lease(lab, ns)["spec"]["renewTime"]
            return renew if ts(renew) > acquired + dt.timedelta(seconds=11) else None

        renewed = wait_until("a renewal one duration after the acquisition", renewed_past_one_duration, timeout=60,
                             every=1)
        assert MICROTIME.match(renewed)
        assert lease(lab, ns)["spec"]["holderIdentity"] == spec["holderIdentity"]
        assert journal(tmp_path) == first, "the second run entered while the first one held the Lease"
        assert other.proc.poll() is None, "the second run did not wait"

        # a run that must not wait says who holds it and since when, and claims no change; check mode writes nothing
        mark = lab.log_mark()
        nowait = start(lab, tmp_path, "c", ns, wait=0).wait(300)
        checked = start(lab, tmp_path, "d", ns, wait=0, check=True).wait(300)
        for res in (nowait, checked):
            assert res.rc == 0, res.output
            lk = one(res, "lock")
            assert lk["acquired"] is False and lk["changed"] is False and lk["held_by"] == spec["holderIdentity"], lk
            assert lk["since"] == spec["acquireTime"] and lk["before"]["holder_identity"] == spec["holderIdentity"]
            ul = one(res, "unlock")
            assert ul["released"] is False and ul["changed"] is False and ul["held_by"] == spec["holderIdentity"]
            assert res.changed == 0, res.changed_tasks()
        writes = [(r["method"], r["path"], r["status"]) for r in lab.requests_since(mark)
                  if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and f"/namespaces/{ns}/" in r["path"]]
        assert all(m == "PUT" and p.endswith(f"/leases/{LEASE}") for m, p, _s in writes), writes  # renewals only
        assert lease(lab, ns)["spec"]["holderIdentity"] == spec["holderIdentity"]

        (tmp_path / f"journal.go-{holder_run}").touch()
        second_run = "b" if holder_run == "a" else "a"
        wait_until("the second run's critical section", lambda: len(journal(tmp_path)) >= 3, timeout=120)
        (tmp_path / f"journal.go-{second_run}").touch()
        ra, rb = a.wait(300), b.wait(300)
    finally:
        for p in (a, b):
            if p.proc.poll() is None:
                kill_run(p.pid)
    assert journal(tmp_path) == [f"start {holder_run}", f"end {holder_run}", f"start {second_run}",
                                 f"end {second_run}"]
    for res, run in ((ra, "a"), (rb, "b")):
        assert res.rc == 0, res.output
        lk, ul = one(res, "lock"), one(res, "unlock")
        assert lk["acquired"] is True and lk["changed"] is True and ul["released"] is True, (lk, ul)
        if run == second_run:
            assert lk["waited"] > 0 and lk["took_over_from"] is None, lk
    final = lease(lab, ns)["spec"]
    assert "holderIdentity" not in final and final["leaseDurationSeconds"] == 1, final
    # no renewer left behind
    st = tmp_path / "state" / "asgard-mlflow" / "leases"
    assert not list(st.glob("*.json")), list(st.iterdir())


def test_crashed_holder_lease_expires_and_is_taken_over(lab, lab_namespace, tmp_path):
    ns = lab_namespace
    crashed = start(lab, tmp_path, "a", ns, wait=0, duration=10)
    killed = False
    try:
        wait_until("the first run's critical section", lambda: journal(tmp_path), timeout=120)
        spec = lease(lab, ns)["spec"]
        assert re.search(rf" pid {crashed.pid}( |$)", spec["holderIdentity"]), spec
        state = tmp_path / "state" / "asgard-mlflow" / "leases" / f"{ns}_{LEASE}.json"
        renewer = json.loads(state.read_text())["pid"]
        assert os.path.exists(f"/proc/{renewer}")
        kill_run(crashed.pid)  # the whole run, as a killed AWX job; the renewer is detached (not under it)
        killed = True
        crashed.wait(60)
        # the renewer sees its ansible-playbook gone and stops renewing by itself
        wait_until("the renewer to stop", lambda: not os.path.exists(f"/proc/{renewer}")
                   or open(f"/proc/{renewer}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", timeout=30)
        log = (tmp_path / "state" / "asgard-mlflow" / "leases" / f"{ns}_{LEASE}.log").read_text()
        assert f"owner pid {crashed.pid} is gone" in log, log
        last = lease(lab, ns)["spec"]
        assert last["holderIdentity"] == spec["holderIdentity"], "a crash does not release the Lease"

        nxt = start(lab, tmp_path, "b", ns, wait=60, duration=10)
        wait_until("the next run's critical section", lambda: len(journal(tmp_path)) >= 2, timeout=120)
        taken = lease(lab, ns)["spec"]
        assert ts(taken["acquireTime"]) >= ts(last["renewTime"]) + dt.timedelta(seconds=10), (last, taken)
        (tmp_path / "journal.go-b").touch()
        res = nxt.wait(300)
    finally:
        if not killed:
            kill_run(crashed.pid)
    assert res.rc == 0, res.output
    lk = one(res, "lock")
    assert lk["acquired"] is True and lk["took_over_from"] == spec["holderIdentity"], lk
    assert taken["leaseTransitions"] == spec.get("leaseTransitions", 0) + 1, taken
    assert journal(tmp_path) == ["start a", "start b", "end b"]


def test_bad_input_names_the_field_and_writes_nothing(lab, lab_namespace, tmp_path):
    mark = lab.log_mark()
    pb = tmp_path / "bad.yml"
    pb.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "lock", "asgard.mlflow.remediation_lock": {"namespace": lab_namespace, "lease_duration": 5,
                                                             "wait_timeout": "-1"}}]}]))
    res = run_playbook(pb, env=lab.env(XDG_STATE_HOME=str(tmp_path / "state")), timeout=300)
    assert res.rc != 0
    msg = one(res, "lock")["msg"]
    assert "lease_duration: 5 is out of range (expected seconds from 10 to 3600)" in msg, msg
    assert "wait_timeout: -1 is out of range" in msg, msg
    assert [r for r in lab.requests_since(mark) if f"/namespaces/{lab_namespace}/" in r["path"]] == []
