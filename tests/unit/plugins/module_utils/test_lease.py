"""remediation_lock's service code (_lease): the Lease protocol against a fake API at the module_utils boundary
(KubeAPI.get / KubeAPI.send with the API server's resourceVersion rules: 409 AlreadyExists on a POST of an existing
name, 409 Conflict on a PUT carrying a stale resourceVersion), a fake clock, and real processes where processes are
the subject (the owner of a hold, the ansible-playbook ancestor). tests/integration/test_remediation_lock.py runs the
same code for real against the lab with concurrent ansible-playbook processes.

Kubernetes semantics followed (https://kubernetes.io/docs/concepts/architecture/leases/,
https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/, client-go
tools/leaderelection/leaderelection.go tryAcquireOrRenew / release, and
https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for optimistic concurrency).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ansible_collections.asgard.mlflow.plugins.module_utils import _lease as L
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError

NS = "asgard"
DEP = "mlflow-deployment"
NAME = "asgard-mlflow-remediation-mlflow-deployment"
ME = "ops@host-a pid 100"
OTHER = "awx@awx-task pid 7 awx-job 42"
T0 = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.UTC)


class FakeClock(L.Clock):
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = None

    def wall(self):
        return T0 + dt.timedelta(seconds=self.t)

    def mono(self):
        return self.t

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.t += seconds
        if self.on_sleep:
            self.on_sleep(self.t)


class FakeLeases:
    """The Lease part of the API server: resourceVersion bumps on every write, 409s as the API server answers."""

    def __init__(self):
        self.objs: dict[tuple[str, str], dict] = {}
        self.rv = 100
        self.writes: list[tuple[str, str]] = []
        self.before_write = None  # a concurrent writer, run once right before our next write lands
        self.fail_status: int | None = None

    def _key(self, path):
        parts = path.strip("/").split("/")
        assert parts[:4] == ["apis", "coordination.k8s.io", "v1", "namespaces"] and parts[5] == "leases", path
        return parts[4], (parts[6] if len(parts) > 6 else None)

    def get(self, path):
        if self.fail_status:
            raise KubeError(f"GET {path}: HTTP {self.fail_status}", status=self.fail_status)
        ns, name = self._key(path)
        if (ns, name) not in self.objs:
            raise KubeError(f"GET {path}: HTTP 404", status=404, reason="NotFound")
        return copy.deepcopy(self.objs[(ns, name)])

    def put_direct(self, name, spec):
        """Another client's write (bumps the resourceVersion)."""
        self.rv += 1
        obj = self.objs.get((NS, name)) or {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                            "metadata": {"name": name, "namespace": NS}}
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj["spec"] = copy.deepcopy(spec)
        self.objs[(NS, name)] = obj

    def send(self, method, path, body):
        if self.before_write:
            hook, self.before_write = self.before_write, None
            hook(self)
        self.writes.append((method, (body.get("spec") or {}).get("holderIdentity")))
        ns, name = self._key(path)
        if method == "POST":
            name = body["metadata"]["name"]
            if (ns, name) in self.objs:
                raise KubeError("already exists", status=409, reason="AlreadyExists")
        else:
            cur = self.objs.get((ns, name))
            if cur is None:
                raise KubeError("not found", status=404)
            if body["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
                raise KubeError("the object has been modified", status=409, reason="Conflict")
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj["metadata"]["namespace"] = ns
        self.objs[(ns, name)] = obj
        return copy.deepcopy(obj)


@pytest.fixture
def api():
    return FakeLeases()


@pytest.fixture
def clock():
    return FakeClock()


def held(holder, renew_offset=0.0, duration=60, acquire_offset=None, transitions=None) -> dict:
    spec = {"holderIdentity": holder, "leaseDurationSeconds": duration,
            "acquireTime": L.micro_time(T0 + dt.timedelta(seconds=acquire_offset if acquire_offset is not None
                                                          else renew_offset)),
            "renewTime": L.micro_time(T0 + dt.timedelta(seconds=renew_offset))}
    if transitions is not None:
        spec["leaseTransitions"] = transitions
    return spec


# ------------------------------------------------------------------ names, times, identity, input
def test_lease_name_is_the_deployment_name_prefixed_and_always_valid():
    assert L.lease_name(DEP) == NAME
    long = "a" * 120 + "." + "b" * 132
    name = L.lease_name(long)
    assert len(name) == 253 and name.startswith(L.LEASE_PREFIX) and name == L.lease_name(long)
    assert L._DNS1123_SUBDOMAIN.match(name) and name != L.lease_name(long[:-1] + "c")


def test_micro_time_format_and_parse():
    """MicroTime serialises as RFC 3339 with exactly six fractional digits (k8s.io/apimachinery
    pkg/apis/meta/v1/micro_time.go RFC3339Micro = "2006-01-02T15:04:05.000000Z07:00")."""
    t = dt.datetime(2026, 12, 3, 13, 20, 9, 5, tzinfo=dt.UTC)
    assert L.micro_time(t) == "2026-12-03T13:20:09.000005Z" and L.MICROTIME_RE.match(L.micro_time(t))
    assert L.parse_time("2026-12-03T13:20:09.000005Z") == t
    assert L.parse_time("2026-12-03T13:20:09Z") == t.replace(microsecond=0)
    assert L.parse_time("2026-12-03T14:20:09.1234567+01:00") == dt.datetime(2026, 12, 3, 13, 20, 9, 123456, tzinfo=dt.UTC)
    assert L.parse_time("not a time") is None and L.parse_time(None) is None


def test_holder_identity_says_who():
    ident = L.holder_identity(4242, env={"JOB_ID": "1234"})
    assert "@" in ident and ident.split("@")[1].split()[0] == os.uname().nodename
    assert ident.endswith(" pid 4242 awx-job 1234")
    assert L.holder_identity(4242, env={}).endswith(" pid 4242")


@pytest.mark.parametrize(("p", "needle"), [
    ({"namespace": "Bad_NS", "deployment": DEP}, "namespace: 'Bad_NS' is not a valid namespace name"),
    ({"namespace": NS, "deployment": "x" * 254}, "deployment: "),
    ({"namespace": NS, "deployment": DEP, "lease_duration": 5}, "lease_duration: 5 is out of range (expected seconds from 10 to 3600)"),
    ({"namespace": NS, "deployment": DEP, "lease_duration": 7200}, "lease_duration: 7200 is out of range"),
    ({"namespace": NS, "deployment": DEP, "wait_timeout": -1}, "wait_timeout: -1 is out of range (expected seconds from 0 to 3600)"),
    ({"namespace": NS, "deployment": DEP, "owner_pid": 999999999}, "owner_pid: 999999999 is not a running process"),
])
def test_bad_input_names_the_field(p, needle):
    errors = L.validate_lock_params(p)
    assert any(needle in e for e in errors), errors


def test_good_input():
    assert L.validate_lock_params({"namespace": NS, "deployment": DEP, "lease_duration": 60, "wait_timeout": 0,
                                   "owner_pid": os.getpid()}) == []


# ------------------------------------------------------------------ acquire
def test_acquire_creates_the_lease(api, clock):
    r = L.acquire(api, NS, DEP, ME, 30, 0, clock=clock)
    assert r["acquired"] is True and r["changed"] is True and r["took_over_from"] is None
    spec = api.objs[(NS, NAME)]["spec"]
    assert spec["holderIdentity"] == ME and spec["leaseDurationSeconds"] == 30
    assert spec["acquireTime"] == spec["renewTime"] == "2026-12-03T12:00:00.000000Z"
    assert api.writes == [("POST", ME)]
    assert r["lease"]["holder_identity"] == ME and r["before"] is None
    meta = api.objs[(NS, NAME)]["metadata"]
    assert meta["annotations"]["asgard.mlflow/deployment"] == DEP


def test_acquire_again_by_the_same_run_is_a_renewal_not_a_change(api, clock):
    api.put_direct(NAME, held(ME, renew_offset=-5, acquire_offset=-50))
    r = L.acquire(api, NS, DEP, ME, 60, 0, clock=clock)
    assert r["acquired"] is True and r["changed"] is False
    spec = api.objs[(NS, NAME)]["spec"]
    assert spec["acquireTime"] == L.micro_time(T0 - dt.timedelta(seconds=50)), "acquireTime is kept"
    assert spec["renewTime"] == L.micro_time(T0)


def test_held_by_another_run_reports_who_and_since_without_writing(api, clock):
    api.put_direct(NAME, held(OTHER, renew_offset=-1, acquire_offset=-40))
    r = L.acquire(api, NS, DEP, ME, 60, 0, clock=clock)
    assert r["acquired"] is False and r["changed"] is False
    assert r["held_by"] == OTHER and r["since"] == L.micro_time(T0 - dt.timedelta(seconds=40))
    assert r["expires_at"] == L.micro_time(T0 + dt.timedelta(seconds=59))
    assert api.writes == []


def test_second_run_waits_and_gets_it_when_the_first_releases(api, clock):
    api.put_direct(NAME, held(OTHER, renew_offset=0, transitions=2))

    def first_run(t):  # renews at 5 s, releases at 12 s
        if 5 <= t < 6:
            api.put_direct(NAME, held(OTHER, renew_offset=t, acquire_offset=0, transitions=2))
        if t >= 12 and api.objs[(NS, NAME)]["spec"].get("holderIdentity") == OTHER:
            spec = {"leaseDurationSeconds": 1, "renewTime": L.micro_time(clock.wall()), "leaseTransitions": 2}
            api.put_direct(NAME, spec)

    clock.on_sleep = first_run
    r = L.acquire(api, NS, DEP, ME, 60, 30, clock=clock)
    assert r["acquired"] is True and r["changed"] is True and r["took_over_from"] is None
    assert 12 <= r["waited"] < 30 and max(clock.sleeps) <= 2.0
    assert r["before"]["holder_identity"] == OTHER, "another run held it when this one asked"
    assert api.objs[(NS, NAME)]["spec"]["leaseTransitions"] == 2, "a free Lease taken: no transition from a holder"


def test_wait_is_bounded(api, clock):
    api.put_direct(NAME, held(OTHER, renew_offset=0))
    clock.on_sleep = lambda t: api.put_direct(NAME, held(OTHER, renew_offset=t, acquire_offset=0))  # keeps renewing
    r = L.acquire(api, NS, DEP, ME, 60, 20, clock=clock)
    assert r["acquired"] is False and r["held_by"] == OTHER and 20 <= r["waited"] <= 22
    assert api.writes == []


def test_expired_lease_is_taken_over(api, clock):
    api.put_direct(NAME, held(OTHER, renew_offset=-61, duration=60, transitions=4))
    r = L.acquire(api, NS, DEP, ME, 60, 0, clock=clock)
    assert r["acquired"] is True and r["took_over_from"] == OTHER
    spec = api.objs[(NS, NAME)]["spec"]
    assert spec["holderIdentity"] == ME and spec["leaseTransitions"] == 5
    assert spec["acquireTime"] == L.micro_time(T0)


def test_expiry_by_observation_when_the_clocks_disagree(api, clock):
    """A holder whose clock runs ahead writes renewTimes in our future; a record that does not change for a whole
    duration while we watch is expired all the same (client-go judges by its own observation time)."""
    api.put_direct(NAME, held(OTHER, renew_offset=+3600, duration=15))
    r = L.acquire(api, NS, DEP, ME, 60, 30, clock=clock)
    assert r["acquired"] is True and r["took_over_from"] == OTHER and 15 < r["waited"] <= 18


def test_a_409_on_update_means_another_run_won(api, clock):
    """Both runs read the expired Lease at the same resourceVersion; the other run's update lands first, ours
    gets 409 Conflict: we read again, see the new holder, and do not claim the Lease."""
    api.put_direct(NAME, held("crashed@x pid 1", renew_offset=-120))
    api.before_write = lambda a: a.put_direct(NAME, held(OTHER, renew_offset=0))
    r = L.acquire(api, NS, DEP, ME, 60, 0, clock=clock)
    assert r["acquired"] is False and r["held_by"] == OTHER and r["changed"] is False
    assert api.objs[(NS, NAME)]["spec"]["holderIdentity"] == OTHER
    assert api.writes == [("PUT", ME)], "one attempt, refused"


def test_a_409_on_create_means_another_run_created_it_first(api, clock):
    api.before_write = lambda a: a.put_direct(NAME, held(OTHER, renew_offset=0))
    r = L.acquire(api, NS, DEP, ME, 60, 0, clock=clock)
    assert r["acquired"] is False and r["held_by"] == OTHER
    assert r["before"] is None, "before is the Lease as first read: there was none"


def test_check_mode_reads_only_and_does_not_wait(api, clock):
    c = L.acquire(api, NS, DEP, ME, 60, 300, check_mode=True, clock=clock)
    assert c["acquired"] is False and c["would_acquire"] is True and c["changed"] is True
    api.put_direct(NAME, held(OTHER, renew_offset=0))
    c = L.acquire(api, NS, DEP, ME, 60, 300, check_mode=True, clock=clock)
    assert c["acquired"] is False and c["held_by"] == OTHER and clock.sleeps == []
    api.put_direct(NAME, held(OTHER, renew_offset=-100))
    c = L.acquire(api, NS, DEP, ME, 60, 0, check_mode=True, clock=clock)
    assert c["would_acquire"] is True and c["took_over_from"] == OTHER
    assert api.writes == []


def test_api_errors_are_clear(api, clock):
    api.fail_status = 403
    with pytest.raises(L.LeaseError, match="not allowed to do this .HTTP 403 Forbidden.: grant the missing RBAC"):
        L.acquire(api, NS, DEP, ME, 60, 0, clock=clock)


# ------------------------------------------------------------------ release
def test_release_gives_back_only_our_hold(api, clock):
    assert L.release(api, NS, DEP, ME, clock=clock)["changed"] is False  # no Lease at all
    api.put_direct(NAME, held(OTHER, renew_offset=0, transitions=1))
    r = L.release(api, NS, DEP, ME, clock=clock)
    assert r["released"] is False and r["changed"] is False and r["held_by"] == OTHER
    assert api.objs[(NS, NAME)]["spec"]["holderIdentity"] == OTHER and api.writes == []
    api.put_direct(NAME, held(ME, renew_offset=0, transitions=1))
    c = L.release(api, NS, DEP, ME, check_mode=True, clock=clock)
    assert c["would_release"] is True and api.writes == []
    clock.t = 30
    r = L.release(api, NS, DEP, ME, clock=clock)
    assert r["released"] is True and r["changed"] is True
    spec = api.objs[(NS, NAME)]["spec"]
    assert "holderIdentity" not in spec and "acquireTime" not in spec
    assert spec["leaseDurationSeconds"] == 1 and spec["renewTime"] == L.micro_time(T0 + dt.timedelta(seconds=30))
    assert spec["leaseTransitions"] == 1
    # released: the next run takes it at once, without waiting
    assert L.acquire(api, NS, DEP, OTHER, 60, 0, clock=clock)["acquired"] is True


# ------------------------------------------------------------------ renewing
def test_renew_once(api, clock):
    api.put_direct(NAME, held(ME, renew_offset=0))
    clock.t = 20
    assert L.renew_once(api, NS, NAME, ME, 60, clock) == "renewed"
    assert api.objs[(NS, NAME)]["spec"]["renewTime"] == L.micro_time(T0 + dt.timedelta(seconds=20))
    api.before_write = lambda a: a.put_direct(NAME, held(ME, renew_offset=21))
    assert L.renew_once(api, NS, NAME, ME, 60, clock) == "retry"  # 409: read again next time
    api.put_direct(NAME, held(OTHER, renew_offset=22))
    assert L.renew_once(api, NS, NAME, ME, 60, clock) == "lost"
    assert api.objs[(NS, NAME)]["spec"]["holderIdentity"] == OTHER


def test_renew_loop_renews_every_third_of_the_duration_until_the_lease_is_taken(api, clock):
    api.put_direct(NAME, held(ME, renew_offset=0, duration=30))
    renewals = []

    def watch(t):
        if api.objs[(NS, NAME)]["spec"]["holderIdentity"] == ME:
            renewals.append(api.objs[(NS, NAME)]["spec"]["renewTime"])
        if t >= 65:
            api.put_direct(NAME, held(OTHER, renew_offset=t))

    clock.on_sleep = watch
    me = {"namespace": NS, "name": NAME, "identity": ME, "duration": 30, "owner_pid": os.getpid(),
          "owner_start": L.proc_start_time(os.getpid())}
    why = L.renew_loop(api, me, clock)
    assert "released or taken" in why
    times = sorted({L.parse_time(r) for r in renewals})
    assert [int((t - T0).total_seconds()) for t in times] == [0, 10, 20, 30, 40, 50, 60]


def test_renew_loop_stops_when_the_owner_is_gone(api, clock):
    api.put_direct(NAME, held(ME, renew_offset=0, duration=30))
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    start = L.proc_start_time(p.pid)
    p.wait()
    why = L.renew_loop(api, {"namespace": NS, "name": NAME, "identity": ME, "duration": 30, "owner_pid": p.pid,
                             "owner_start": start}, clock)
    assert f"owner pid {p.pid} is gone" in why and api.writes == []
    # a pid reused by another process is not the owner either
    assert L.owner_alive(os.getpid(), "1") is False and L.owner_alive(os.getpid(), L.proc_start_time(os.getpid()))


def test_find_owner_is_the_ansible_playbook_process(tmp_path):
    """A real process chain: a program named ansible-playbook runs a shell that runs Python (as Ansible runs a
    module); find_owner() in that Python names the ansible-playbook process."""
    child = tmp_path / "module.py"
    child.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[4] / ".collections")!r})
        from ansible_collections.asgard.mlflow.plugins.module_utils import _lease
        print(_lease.find_owner())
    """))
    ap = tmp_path / "ansible-playbook"
    ap.write_text(f"#!{sys.executable}\nimport os, subprocess, sys\n"
                  f"print(os.getpid(), flush=True)\n"
                  f"subprocess.run(['/bin/sh', '-c', '{sys.executable} {child}'], check=False)\n")
    ap.chmod(0o755)
    out = subprocess.run([str(ap)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and len(out.stdout.split()) == 2, out
    top, found = out.stdout.split()
    assert found == top, out
    assert L.find_owner(os.getpid()) is None or "ansible" in " ".join(L.proc_cmdline(L.find_owner(os.getpid())))
