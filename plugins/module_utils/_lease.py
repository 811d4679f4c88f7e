# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: remediation serialised per Deployment with a Kubernetes Lease (coordination.k8s.io/v1).

- The Lease is ``asgard-mlflow-remediation-<deployment>`` in the Deployment's namespace (``lease_name``).
- ``holderIdentity`` says who: ``<user>@<host> pid <ansible-playbook pid>`` and `` awx-job <JOB_ID>`` when AWX
  runs the job (``holder_identity``). ``leaseDurationSeconds`` is bounded (10-3600 s); ``acquireTime`` and
  ``renewTime`` are MicroTime (RFC 3339 with microseconds, UTC).
- Acquire (``acquire``): create the Lease, or take it when it is free (no holder), expired (``renewTime`` +
  duration in the past, or the record unchanged for a whole duration while we watched), or already ours.
  Every write carries the resourceVersion it was read at: a 409 means another run won, and we read again.
  Held by another run: wait (polling) up to ``wait_timeout``, then report who holds it and since when.
- While held, a detached renewer (``_daemon``) tied to the ansible-playbook process renews the Lease every
  duration/3; it stops when the Lease is released or taken, or when that process is gone (a crashed run's
  Lease then expires after one duration and the next run takes it over).
- Release (``release``): only our own hold; holder cleared, ``leaseDurationSeconds`` 1 (as client-go's
  leader election releases), the object kept.

The Kubernetes API is reached only through ``_kube.KubeAPI`` (``get`` / ``send``): the boundary tests fake.
This file is also copied next to the renewer: standard library and collection module_utils only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import signal
import socket
import time

from ansible_collections.asgard.mlflow.plugins.module_utils._daemon import (
    DaemonError,
    install_runtime,
    log_line,
    pid_alive,
    proc_cmdline,
    proc_start_time,
    proc_stat,
    read_config_and_detach,
    redirect_output,
    report,
    spawn,
    stop_process,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeError, credentials_hint

LEASE_PREFIX = "asgard-mlflow-remediation-"
MARKER = "asgard-mlflow-lease-renewer"
RUNTIME_MODULES = ("_daemon", "_tunnel", "_kube", "_lease")
MIN_DURATION, MAX_DURATION = 10, 3600
MAX_WAIT = 3600
MICROTIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class LeaseError(Exception):
    """The Lease could not be read or written (not a 409: those are retried)."""


class Clock:
    """Wall clock (Lease times), monotonic clock (waiting) and sleep; tests hand in a fake one."""

    def wall(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)

    def mono(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# ------------------------------------------------------------------ names, identity, times


def lease_name(deployment: str) -> str:
    """``asgard-mlflow-remediation-<deployment>``; cut to 253 characters with a hash suffix when longer."""
    name = LEASE_PREFIX + deployment
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:8]
    return name[:244].rstrip("-.") + "-" + digest


def validate_lock_params(p: dict) -> list[str]:
    """Errors in the options, each naming the field and what was expected."""
    errors = []
    ns, dep = p.get("namespace"), p.get("deployment")
    if not isinstance(ns, str) or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ns) or len(ns) > 63:
        errors.append(f"namespace: {ns!r} is not a valid namespace name (DNS-1123 label: lower-case letters, digits "
                      "and '-', at most 63 characters)")
    if not isinstance(dep, str) or not _DNS1123_SUBDOMAIN.match(dep) or len(dep) > 253:
        errors.append(f"deployment: {dep!r} is not a valid Deployment name (DNS-1123 subdomain, at most 253 "
                      "characters)")
    d = p.get("lease_duration")
    if d is not None and not MIN_DURATION <= int(d) <= MAX_DURATION:
        errors.append(f"lease_duration: {d} is out of range (expected seconds from {MIN_DURATION} to {MAX_DURATION})")
    w = p.get("wait_timeout")
    if w is not None and not 0 <= int(w) <= MAX_WAIT:
        errors.append(f"wait_timeout: {w} is out of range (expected seconds from 0 to {MAX_WAIT})")
    o = p.get("owner_pid")
    if o is not None and (int(o) < 2 or not pid_alive(int(o))):
        errors.append(f"owner_pid: {o} is not a running process (expected the pid of the ansible-playbook run "
                      "that holds the Lease)")
    return errors


def find_owner(start: int | None = None) -> int | None:
    """The ansible-playbook (or ansible) process this module runs under: the topmost such ancestor."""
    pid = os.getppid() if start is None else start
    found = None
    for _i in range(64):
        if pid <= 1:
            break
        cmd = proc_cmdline(pid) or []
        if any(os.path.basename(a) in ("ansible-playbook", "ansible") for a in cmd[:2]):
            found = pid
        st = proc_stat(pid)
        pid = int(st[1]) if st else 0
    return found


def holder_identity(owner_pid: int, env=None) -> str:
    """``user@host pid N`` plus `` awx-job ID`` when AWX runs the job (its JOB_ID environment variable)."""
    env = os.environ if env is None else env
    try:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        user = env.get("USER") or str(os.getuid())
    ident = f"{user}@{socket.gethostname()} pid {owner_pid}"
    if env.get("JOB_ID"):
        ident += f" awx-job {env['JOB_ID']}"
    return ident


def micro_time(t: _dt.datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with six fractional digits, UTC (``2026-12-03T13:20:09.123456Z``)."""
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value) -> _dt.datetime | None:
    """A Time/MicroTime string as an aware datetime (None when missing or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m and m.group(2):  # fromisoformat wants at most 6 fractional digits
        text = m.group(1) + m.group(2)[:7].ljust(7, "0") + m.group(3)
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


# ------------------------------------------------------------------ the Lease over the API


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def _api_error(exc: KubeError, what: str) -> LeaseError:
    hint = credentials_hint(exc.status)
    return LeaseError(f"{what}: {hint or exc}" + (f" ({exc})" if hint else ""))


def get_lease(api, namespace: str, name: str) -> dict | None:
    try:
        return api.get(_path(namespace, name))
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, f"reading Lease {namespace}/{name}") from exc


def _write(api, method: str, namespace: str, name: str, body: dict) -> dict | None:
    """POST (create) or PUT (replace, with the resourceVersion in body); None on 409 (another writer won)."""
    try:
        return api.send(method, _path(namespace, None if method == "POST" else name), body)
    except KubeError as exc:
        if exc.status == 409:
            return None
        raise _api_error(exc, f"{'creating' if method == 'POST' else 'updating'} Lease {namespace}/{name}") from exc


def summary(lease: dict | None) -> dict | None:
    """What the result shows of a Lease (no managedFields or annotations)."""
    if lease is None:
        return None
    meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
    return {"namespace": meta.get("namespace"), "name": meta.get("name"),
            "holder_identity": spec.get("holderIdentity") or None, "acquire_time": spec.get("acquireTime"),
            "renew_time": spec.get("renewTime"), "lease_duration_seconds": spec.get("leaseDurationSeconds"),
            "lease_transitions": spec.get("leaseTransitions", 0), "resource_version": meta.get("resourceVersion")}


def expires_at(spec: dict) -> _dt.datetime | None:
    renew = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    if renew is None:
        return None
    return renew + _dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))


def _held_spec(identity: str, duration: int, now: _dt.datetime, old: dict | None) -> dict:
    old = old or {}
    same = old.get("holderIdentity") == identity
    transitions = int(old.get("leaseTransitions") or 0) + (0 if same or not old.get("holderIdentity") else 1)
    spec = {"holderIdentity": identity, "leaseDurationSeconds": int(duration),
            "acquireTime": old.get("acquireTime") if same and old.get("acquireTime") else micro_time(now),
            "renewTime": micro_time(now)}
    if transitions or "leaseTransitions" in old:
        spec["leaseTransitions"] = transitions
    return spec


def acquire(api, namespace: str, deployment: str, identity: str, duration: int, wait_timeout: float,
            check_mode: bool = False, clock: Clock | None = None, poll: float = 2.0) -> dict:
    """Take the Lease of ``deployment`` for ``identity`` (see the module docstring). Never raises for a Lease held
    by someone else: the result says ``acquired: false``, ``held_by``, ``since``, ``expires_at``."""
    clock = clock or Clock()
    name = lease_name(deployment)
    start = clock.mono()
    first_seen: dict[str, float] = {}  # resourceVersion -> when we first saw it (expiry by observation)
    first_read = True
    result = {"acquired": False, "changed": False, "lease_name": name, "namespace": namespace, "identity": identity,
              "held_by": None, "since": None, "expires_at": None, "took_over_from": None, "waited": 0.0,
              "lease": None, "before": None}
    while True:
        lease = get_lease(api, namespace, name)
        if first_read:
            result["before"], first_read = summary(lease), False
        now = clock.wall()
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "asgard.mlflow"},
                                 "annotations": {"asgard.mlflow/deployment": deployment}},
                    "spec": _held_spec(identity, duration, now, None)}
            if check_mode:
                return dict(result, changed=True, would_acquire=True, lease=summary(body),
                            waited=round(clock.mono() - start, 1))
            made = _write(api, "POST", namespace, name, body)
            if made is None:
                continue  # created by another run meanwhile: read it
            return dict(result, acquired=True, changed=True, lease=summary(made), waited=round(clock.mono() - start, 1))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        rv = (lease.get("metadata") or {}).get("resourceVersion") or ""
        seen_at = first_seen.setdefault(rv, clock.mono())
        dur = int(spec.get("leaseDurationSeconds") or 0)
        exp = expires_at(spec)
        expired = bool(holder) and ((exp is not None and exp < now) or clock.mono() - seen_at > dur)
        if not holder or expired or holder == identity:
            body = dict(lease, spec=dict(spec, **_held_spec(identity, duration, now, spec)))
            if check_mode:
                return dict(result, changed=holder != identity, would_acquire=True, lease=summary(body),
                            took_over_from=holder if expired and holder != identity else None,
                            waited=round(clock.mono() - start, 1))
            put = _write(api, "PUT", namespace, name, body)
            if put is None:
                continue  # someone else wrote it since we read it: they won this round, read again
            return dict(result, acquired=True, changed=holder != identity, lease=summary(put),
                        took_over_from=holder if expired and holder != identity else None,
                        waited=round(clock.mono() - start, 1))
        # held by another run that keeps it alive
        waited = clock.mono() - start
        remaining = float(wait_timeout) - waited
        if check_mode or remaining <= 0:
            return dict(result, held_by=holder, since=spec.get("acquireTime"), lease=summary(lease),
                        expires_at=micro_time(exp) if exp else None, waited=round(waited, 1))
        until_expiry = (exp - now).total_seconds() if exp else poll
        clock.sleep(max(0.2, min(poll, remaining, until_expiry + 0.2)))


def release(api, namespace: str, deployment: str, identity: str, check_mode: bool = False,
            clock: Clock | None = None) -> dict:
    """Give our hold back (holder cleared, leaseDurationSeconds 1); a Lease held by another run is left alone."""
    clock = clock or Clock()
    name = lease_name(deployment)
    result = {"released": False, "changed": False, "lease_name": name, "namespace": namespace, "identity": identity,
              "held_by": None, "since": None, "expires_at": None, "took_over_from": None, "waited": 0.0,
              "lease": None, "before": None}
    for attempt in range(10):
        lease = get_lease(api, namespace, name)
        if attempt == 0:
            result["before"] = summary(lease)
        if lease is None:
            return result
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder != identity:
            exp = expires_at(spec) if holder else None
            return dict(result, held_by=holder or None, lease=summary(lease), since=spec.get("acquireTime") if holder
                        else None, expires_at=micro_time(exp) if exp else None)
        new_spec = {k: v for k, v in spec.items() if k not in ("holderIdentity", "acquireTime")}
        new_spec.update(leaseDurationSeconds=1, renewTime=micro_time(clock.wall()))
        body = dict(lease, spec=new_spec)
        if check_mode:
            return dict(result, changed=True, would_release=True, lease=summary(body))
        put = _write(api, "PUT", namespace, name, body)
        if put is not None:
            return dict(result, released=True, changed=True, lease=summary(put))
    raise LeaseError(f"Lease {namespace}/{name}: could not release it (it kept changing under us)")


# ------------------------------------------------------------------ the renewer (module side)


def state_dir(env=None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "asgard-mlflow", "leases")


def _renewer_paths(sdir: str, namespace: str, name: str) -> tuple[str, str, str]:
    rid = f"{namespace}_{name}"
    return rid, os.path.join(sdir, f"{rid}.json"), os.path.join(sdir, f"{rid}.log")


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def running_renewer(sdir: str, namespace: str, name: str, identity: str | None = None) -> int | None:
    """The pid of the renewer of this Lease on this machine (for ``identity`` when given), None if none runs."""
    rid, spath, _log = _renewer_paths(sdir, namespace, name)
    st = _read_json(spath)
    if not st or not st.get("pid"):
        return None
    pid = int(st["pid"])
    cmd = proc_cmdline(pid) or []
    if not pid_alive(pid) or MARKER not in cmd or rid not in cmd:
        return None
    if identity is not None and st.get("identity") != identity:
        return None
    return pid


def start_renewer(api, sdir: str, namespace: str, name: str, identity: str, duration: int, owner_pid: int) -> dict:
    """Start the detached renewer of our hold; {pid, log}."""
    os.makedirs(sdir, mode=0o700, exist_ok=True)
    os.chmod(sdir, 0o700)
    rid, spath, log = _renewer_paths(sdir, namespace, name)
    try:
        runtime = install_runtime(sdir, RUNTIME_MODULES)
        config = {"namespace": namespace, "name": name, "identity": identity, "duration": int(duration),
                  "owner_pid": int(owner_pid), "owner_start": proc_start_time(int(owner_pid)), "log": log,
                  "kube": api.snapshot()}
        pid = spawn(runtime, "_lease", [MARKER, rid], config, log)
    except DaemonError as exc:
        raise LeaseError(f"the Lease renewer did not start: {exc}") from exc
    tmp = f"{spath}.tmp{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        json.dump({"pid": pid, "identity": identity, "owner_pid": owner_pid, "log": log,
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, fh)
    os.replace(tmp, spath)
    return {"pid": pid, "log": log}


def stop_renewer(sdir: str, namespace: str, name: str) -> int | None:
    """Stop this machine's renewer of the Lease (whoever it renews for); the pid stopped, None if none ran."""
    _rid, spath, _log = _renewer_paths(sdir, namespace, name)
    pid = running_renewer(sdir, namespace, name)
    if pid is not None:
        stop_process(pid)
    try:
        os.unlink(spath)
    except OSError:
        pass
    return pid


# ------------------------------------------------------------------ the renewer process


def owner_alive(pid: int, start: str | None) -> bool:
    return pid_alive(pid) and (start is None or proc_start_time(pid) == start)


def renew_once(api, namespace: str, name: str, identity: str, duration: int, clock: Clock) -> str:
    """One renewal: ``renewed``, ``lost`` (released, taken, deleted) or ``retry`` (409 or an API error)."""
    try:
        lease = get_lease(api, namespace, name)
    except LeaseError as exc:
        log_line(f"renew: {exc}")
        return "retry"
    if lease is None or (lease.get("spec") or {}).get("holderIdentity") != identity:
        return "lost"
    spec = dict(lease["spec"], renewTime=micro_time(clock.wall()), leaseDurationSeconds=int(duration))
    try:
        put = _write(api, "PUT", namespace, name, dict(lease, spec=spec))
    except LeaseError as exc:
        log_line(f"renew: {exc}")
        return "retry"
    return "renewed" if put is not None else "retry"


def renew_loop(api, cfg: dict, clock: Clock | None = None) -> str:
    """Renew every duration/3 while the owner runs and the Lease is ours; why it stopped."""
    clock = clock or Clock()
    ns, name, ident, duration = cfg["namespace"], cfg["name"], cfg["identity"], int(cfg["duration"])
    interval = max(1.0, duration / 3.0)
    next_at = clock.mono() + interval
    while True:
        if not owner_alive(int(cfg["owner_pid"]), cfg.get("owner_start")):
            return f"owner pid {cfg['owner_pid']} is gone: renewing stops, the Lease expires one duration after " \
                   "its last renewal"
        if clock.mono() >= next_at:
            outcome = renew_once(api, ns, name, ident, duration, clock)
            if outcome == "lost":
                return "the Lease was released or taken: renewing stops"
            next_at = clock.mono() + (interval if outcome == "renewed" else max(1.0, interval / 3))
        clock.sleep(min(1.0, max(0.05, next_at - clock.mono())))


def daemon_main() -> None:
    config, out = read_config_and_detach()
    try:
        redirect_output(config["log"])
    except OSError as exc:
        report(out, f"ERROR {config['log']}: {exc}")
        os._exit(1)
    from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeAPI

    api = KubeAPI.from_snapshot(config.pop("kube"))
    log_line(f"renewer pid {os.getpid()} for Lease {config['namespace']}/{config['name']} held by "
             f"{config['identity']}, every {max(1.0, int(config['duration']) / 3.0):.1f}s while pid "
             f"{config['owner_pid']} runs")
    report(out, f"READY {os.getpid()}")

    def stop(_sig, _frm):
        log_line("SIGTERM: stopping")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    log_line(renew_loop(api, config))
