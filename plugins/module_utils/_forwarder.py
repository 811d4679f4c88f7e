# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: persistent port-forwards behind ``asgard.mlflow.port_forward``.

The forwarder is a detached process (``_daemon``: new session + second fork) started with the
controller's Python from a copy of this file and the module_utils it needs under
``<state dir>/runtime/<hash>/``. Kube connection settings (credentials included) reach it through a
pipe, never a file or argv. It listens on
address:port and, for every new connection, resolves a currently Ready pod and tunnels to it, so
it survives rollouts. State per forward: ``<state dir>/<address>_<port>.json`` (pid, target, started,
log) with the log beside it; the state dir is ``$XDG_STATE_HOME/asgard-mlflow/port-forwards``
(default ``~/.local/state/asgard-mlflow/port-forwards``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import threading
import time

from ansible_collections.asgard.mlflow.plugins.module_utils._daemon import (
    DaemonError,
    log_line,
    pid_alive,
    proc_cmdline,
    read_config_and_detach,
    redirect_output,
    report,
    stop_process,
)
from ansible_collections.asgard.mlflow.plugins.module_utils._daemon import install_runtime as _install
from ansible_collections.asgard.mlflow.plugins.module_utils._daemon import spawn as _spawn

MARKER = "asgard-mlflow-forwarder"
RUNTIME_MODULES = ("_daemon", "_tunnel", "_kube", "_errors", "_shell", "_mlflow_rules", "_server_command", "_target",
                   "_forwarder")
__all__ = ["pid_alive", "proc_cmdline", "stop_process"]  # re-exported: callers and tests use them from here


class ForwardError(Exception):
    """Bad input or a port conflict that the module reports as a failure."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


# ------------------------------------------------------------------ state


def state_dir(env=None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "asgard-mlflow", "port-forwards")


def forward_id(address: str, port: int) -> str:
    return f"{address.replace(':', '-')}_{port}"


def read_state(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_state(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------ processes and sockets


def is_our_forwarder(pid: int, fid: str | None = None) -> bool:
    cmd = proc_cmdline(pid)
    if not cmd or MARKER not in cmd:
        return False
    return fid is None or fid in cmd


def is_kubectl_port_forward(cmd: list[str]) -> bool:
    """``kubectl port-forward ...`` (also run through an interpreter or as ``kubectl.real``)."""
    head = [os.path.basename(a) for a in cmd[:3]]
    return any(h == "kubectl" or h.startswith("kubectl.") or h.startswith("kubectl-") for h in head) \
        and ("port-forward" in cmd or "pf" in cmd[1:3])


def _parse_addr(hexaddr: str, v6: bool) -> tuple[str, int]:
    addr, port = hexaddr.split(":")
    raw = bytes.fromhex(addr)
    if v6:
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped), int(port, 16)
        return str(ip), int(port, 16)
    return str(ipaddress.IPv4Address(raw[::-1])), int(port, 16)


def listening_sockets(port: int, proc_root: str = "/proc") -> list[dict]:
    """TCP LISTEN sockets on ``port`` (any address) in this network namespace: [{address, inode}]."""
    out = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(f"{proc_root}/net/{name}", encoding="ascii") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":
                continue
            addr, lport = _parse_addr(f[1], v6)
            if lport == port:
                out.append({"address": addr, "inode": int(f[9])})
    return out


def socket_owners(inodes: set[int], proc_root: str = "/proc") -> dict[int, list[int]]:
    """inode -> pids holding it (scans /proc/*/fd; processes of other users may be invisible unless root)."""
    owners: dict[int, list[int]] = {}
    wanted = {f"socket:[{i}]": i for i in inodes}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        fd_dir = f"{proc_root}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link in wanted:
                owners.setdefault(wanted[link], [])
                if int(entry) not in owners[wanted[link]]:
                    owners[wanted[link]].append(int(entry))
    return owners


def _overlaps(a: str, b: str) -> bool:
    wild = ("0.0.0.0", "::")
    return a == b or a in wild or b in wild


def port_holders(address: str, port: int) -> list[dict]:
    """Processes listening on address:port (or a wildcard address): [{pid, cmdline, address}]."""
    socks = [s for s in listening_sockets(port) if _overlaps(s["address"], address)]
    owners = socket_owners({s["inode"] for s in socks})
    out = []
    for s in socks:
        pids = owners.get(s["inode"], [])
        if not pids:
            out.append({"pid": None, "cmdline": None, "address": s["address"]})
        for pid in pids:
            out.append({"pid": pid, "cmdline": proc_cmdline(pid), "address": s["address"]})
    return out


def validate_forward_params(p: dict) -> list[str]:
    errors = []
    lp = p.get("local_port")
    if lp is not None and not 1 <= int(lp) <= 65535:
        errors.append(f"local_port: {lp} is out of range (expected an integer from 1 to 65535)")
    addr = p.get("address")
    if addr is not None:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            errors.append(f"address: {addr!r} is not an IP address (expected e.g. 127.0.0.1 or ::1)")
        else:
            if not ip.is_loopback and not p.get("allow_non_loopback"):
                errors.append(f"address: {addr} is not a loopback address; binding it exposes the MLflow server "
                              "to the network. Set allow_non_loopback: true to allow it")
    return errors


# ------------------------------------------------------------------ starting


def install_runtime(base: str) -> str:
    """Copy the forwarder's module_utils to ``base/runtime/<hash>`` (content addressed); return that dir."""
    try:
        return _install(base, RUNTIME_MODULES)
    except DaemonError as exc:
        raise ForwardError(str(exc)) from exc


def spawn(runtime: str, fid: str, config: dict, python: str | None = None, wait: float = 15.0) -> int:
    """Start the detached forwarder; returns its pid once it listens (ForwardError otherwise)."""
    try:
        return _spawn(runtime, "_forwarder", [MARKER, fid], config, config["log"], python=python, wait=wait)
    except DaemonError as exc:
        raise ForwardError(str(exc).replace("the helper", "the forwarder")) from exc


# ------------------------------------------------------------------ the forwarder process


def daemon_main() -> None:
    config, out = read_config_and_detach()
    try:
        srv = socket.socket(socket.AF_INET6 if ":" in config["address"] else socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((config["address"], config["port"]))
        srv.listen(64)
        redirect_output(config["log"])
    except OSError as exc:
        report(out, f"ERROR {config['address']}:{config['port']}: {exc}")
        os._exit(1)
    from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeAPI
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target

    api = KubeAPI.from_snapshot(config.pop("kube"))
    target = Target(**config["target"])
    _log(f"forwarder pid {os.getpid()} listening on {config['address']}:{config['port']} -> {target.describe()}")
    report(out, f"READY {os.getpid()}")

    def stop(_sig, _frm):
        _log("SIGTERM: stopping")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    serve(srv, api, target)


_log = log_line


def connect_target(api, target, timeout: float = 10.0, attempts: int = 3):
    """Resolve a Ready pod now and open a tunnel to it (re-resolving on failure). Returns (resolved, tunnel)."""
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import TargetError, resolve
    from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import TunnelError

    last: Exception | None = None
    for i in range(attempts):
        try:
            res = resolve(api, target)
            return res, api.open_portforward(res.namespace, res.pod, res.port, timeout=timeout)
        except (TargetError, TunnelError) as exc:
            last = exc
            if isinstance(exc, TargetError) and exc.bad_input:
                break
            time.sleep(min(2.0, 0.25 * (2 ** i)))
        except Exception as exc:  # noqa: BLE001 - KubeError and friends: logged by the caller
            last = exc
            time.sleep(min(2.0, 0.25 * (2 ** i)))
    raise last  # type: ignore[misc]


def _handle(conn: socket.socket, peer, api, target) -> None:
    from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import relay

    t0 = time.monotonic()
    try:
        res, tunnel = connect_target(api, target)
    except Exception as exc:  # noqa: BLE001 - one connection fails, the forwarder keeps serving
        _log(f"{peer[0]}:{peer[1]} -> no tunnel: {type(exc).__name__}: {exc}")
        conn.close()
        return
    try:
        up, down = relay(conn, tunnel)
        _log(f"{peer[0]}:{peer[1]} -> {res.pod}:{res.port} closed, {up} B up, {down} B down, "
             f"{(time.monotonic() - t0) * 1000:.0f} ms")
    except Exception as exc:  # noqa: BLE001
        _log(f"{peer[0]}:{peer[1]} -> {res.pod}:{res.port} broke: {type(exc).__name__}: {exc}")
    finally:
        tunnel.close()
        conn.close()


def serve(srv: socket.socket, api, target) -> None:
    while True:
        try:
            conn, peer = srv.accept()
        except InterruptedError:
            continue
        threading.Thread(target=_handle, args=(conn, peer, api, target), daemon=True).start()


# ------------------------------------------------------------------ what the module does

# kubectl flags whose value is a credential: never shown (item 2 of issue 14: no credential printed, anywhere)
_SECRET_FLAGS = ("--token", "--password", "--client-key", "--username")
# kubectl flags that take a value (so that the value is not read as the resource or a port)
_VALUE_FLAGS = {"-n", "--namespace", "--context", "--address", "--kubeconfig", "--cluster", "--user", "-s",
                "--server", "--pod-running-timeout", "--as", "--as-group", "--as-uid", "--request-timeout",
                "--certificate-authority", "--client-certificate", "--tls-server-name", "-v", "--v",
                *_SECRET_FLAGS}


def redact_cmdline(cmd: list[str] | None) -> list[str] | None:
    """The command line with the values of credential flags (``--token=...``, ``--password x``) replaced."""
    if cmd is None:
        return None
    out, hide = [], False
    for a in cmd:
        if hide:
            out.append("********")
            hide = False
            continue
        flag = a.split("=", 1)[0]
        if flag in _SECRET_FLAGS:
            if "=" in a:
                out.append(f"{flag}=********")
            else:
                out.append(a)
                hide = True
            continue
        out.append(a)
    return out


def kubectl_target(cmd: list[str]) -> str:
    """What a ``kubectl port-forward`` command line forwards, e.g. ``svc/mlflow-service 5000:5000 in asgard``."""
    verb = "port-forward" if "port-forward" in cmd else "pf"
    after = cmd.index(verb) if verb in cmd else len(cmd)
    ns = ctx = None
    pos: list[str] = []
    i = 1
    while i < len(cmd):
        a = cmd[i]
        flag, eq, val = a.partition("=")
        if a.startswith("-") and not eq and a in _VALUE_FLAGS:
            val = cmd[i + 1] if i + 1 < len(cmd) else ""
            i += 2
        else:
            i += 1
            if not a.startswith("-"):
                if i - 1 > after:
                    pos.append(a)
                continue
            if a.startswith("-n") and not a.startswith("--") and len(a) > 2:
                flag, val = "-n", a[2:]
        if flag in ("-n", "--namespace"):
            ns = val
        elif flag == "--context":
            ctx = val
    what = " ".join(pos) if pos else "an unknown target"
    return f"{what} in {ns or 'the current namespace'}" + (f" (context {ctx})" if ctx else "")


def target_description(target: dict | None) -> str:
    """``svc/NAME[:PORT] in NS`` for a Target dict (as kept in a state file)."""
    if not target:
        return "an unknown target"
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target

    known = {k: target.get(k) for k in ("namespace", "service", "pod", "label_selectors", "remote_port")}
    known["label_selectors"] = known["label_selectors"] or []
    return Target(**known).describe()


def canonical_target(target: dict, service_port: int | None) -> dict:
    """The target with equivalent spellings made equal: a Service's port is the Service port actually used
    (``remote_port`` omitted = its first port, as ``service_port`` from the resolution says), a pod's or selector's
    port defaults to 5000, selectors are sorted. ``port`` is None when it cannot be known."""
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import DEFAULT_POD_PORT

    ns, port = target.get("namespace"), target.get("remote_port")
    if target.get("pod"):
        return {"kind": "pod", "namespace": ns, "pod": target["pod"], "port": port or DEFAULT_POD_PORT}
    if target.get("label_selectors"):
        terms = sorted(t.strip() for s in target["label_selectors"] for t in s.split(","))
        return {"kind": "selector", "namespace": ns, "selector": terms, "port": port or DEFAULT_POD_PORT}
    return {"kind": "service", "namespace": ns, "service": target.get("service"), "port": port or service_port}


def same_target(a: dict, b: dict, service_port: int | None) -> bool:
    """True when two Target dicts forward to the same place (see canonical_target)."""
    ca, cb = canonical_target(a, service_port), canonical_target(b, service_port)
    if ca["port"] is None or cb["port"] is None:  # a Service port that could not be resolved: spelled alike?
        return {**ca, "port": a.get("remote_port")} == {**cb, "port": b.get("remote_port")}
    return ca == cb


def remove_stale(sdir: str) -> list[dict]:
    """Drop state entries whose forwarder is gone."""
    removed = []
    try:
        names = sorted(os.listdir(sdir))
    except OSError:
        return removed
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(sdir, name)
        st = read_state(path)
        fid = name[:-5]
        if st and st.get("pid") and pid_alive(int(st["pid"])) and is_our_forwarder(int(st["pid"]), fid):
            continue
        removed.append({"state_file": path, "pid": (st or {}).get("pid")})
        try:
            os.unlink(path)
        except OSError:
            pass
    return removed


def test_target(api, target) -> tuple[object | None, Exception | None]:
    """Resolve the target and open (then close) one tunnel to it, as the forwarder will for a connection.
    Returns (Resolved, None) when it works, (Resolved or None, the error) otherwise. Changes nothing."""
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import TargetError, resolve
    from ansible_collections.asgard.mlflow.plugins.module_utils._tunnel import TunnelError

    try:
        res = resolve(api, target)
    except TargetError as exc:
        return None, exc
    try:
        api.open_portforward(res.namespace, res.pod, res.port, timeout=10.0).close()
    except TunnelError as exc:
        return res, exc
    except Exception as exc:  # noqa: BLE001 - KubeError and friends: reported as the reason
        return res, exc
    return res, None


def _problem_text(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"


def _is_fatal(exc: Exception) -> bool:
    """Bad input, or an API server this configuration cannot use (wrong CA, 401/403): nothing can work."""
    if getattr(exc, "bad_input", False):
        return True
    return getattr(exc, "code", None) == "KUBE_API_ERROR" and not getattr(exc, "transient", True)


def ensure(params: dict, api_factory, check_mode: bool, diff: bool = False) -> dict:
    """state=present|absent for one forward; returns the module result (raises ForwardError, which carries
    ``stopped`` and ``kept``, on conflicts and on a new target that does not work).

    A forward that works is only replaced by one that works: the new target is resolved and a tunnel to it
    opened BEFORE anything is stopped; every conflict is found before anything is stopped; a process stopped
    is named (pid, command line, target, reason); a state file never names a process that is gone.
    """
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target

    address, port = params["address"], int(params["local_port"])
    sdir = state_dir()
    fid = forward_id(address, port)
    spath = os.path.join(sdir, f"{fid}.json")
    log = os.path.join(sdir, f"{fid}.log")
    target = Target.from_params(params)
    url = f"http://{'[' + address + ']' if ':' in address else address}:{port}"
    result = {"changed": False, "state_file": spath, "log": log, "address": address, "local_port": port,
              "url": url, "target": target.as_dict(), "stopped": [], "kept": [], "stale_removed": [], "pid": None,
              "started": None}
    if not check_mode:
        os.makedirs(sdir, mode=0o700, exist_ok=True)
        os.chmod(sdir, 0o700)  # logs name pods and clients: keep them private
        result["stale_removed"] = remove_stale(sdir)
    current = read_state(spath)
    ours_pid = int(current["pid"]) if current and current.get("pid") else None
    if ours_pid is not None and not (pid_alive(ours_pid) and is_our_forwarder(ours_pid, fid)):
        ours_pid = None
    holders = port_holders(address, port)
    listening = ours_pid is not None and any(h["pid"] == ours_pid for h in holders)
    others = [h for h in holders if ours_pid is None or h["pid"] != ours_pid]

    def entry(pid, cmd, what, reason, kind) -> dict:
        return {"pid": pid, "cmdline": redact_cmdline(cmd), "target": what, "reason": reason, "kind": kind}

    def ours_entry(reason: str) -> dict:
        return entry(ours_pid, proc_cmdline(ours_pid), target_description(current.get("target")), reason,
                     "asgard.mlflow forwarder")

    def plan_others() -> list[dict]:
        """What must go for the port to be free; raises (before anything is stopped) on a process it may not stop."""
        plan = []
        for h in others:
            cmd = h.get("cmdline") or []
            if h["pid"] and is_kubectl_port_forward(cmd):
                what = kubectl_target(cmd)
                if params["cleanup"]:
                    plan.append(entry(h["pid"], cmd, what, "kubectl port-forward holding the local port "
                                      "(cleanup: true)", "kubectl port-forward"))
                    continue
                raise ForwardError(f"local port {port} is held by kubectl port-forward {_holder_desc(h)} "
                                   f"(forwarding {what}); set cleanup: true to stop it",
                                   holder=_public_holder(h), stopped=[], kept=[_kept(h, what)])
            if h["pid"] and MARKER in cmd:
                if params["cleanup"] or params["state"] == "absent":
                    plan.append(entry(h["pid"], cmd, "unknown (no state entry)",
                                      "orphaned asgard.mlflow forwarder on the local port", "asgard.mlflow forwarder"))
                    continue
                raise ForwardError(f"local port {port} is held by another asgard.mlflow forwarder {_holder_desc(h)} "
                                   "without a state entry; set cleanup: true to stop it", holder=_public_holder(h),
                                   stopped=[], kept=[_kept(h, "unknown (no state entry)")])
            if params["state"] == "absent":
                continue  # not ours, not asked to clean it: leave it alone
            raise ForwardError(f"local port {address}:{port} is in use by {_holder_desc(h)}, which is not a "
                               "port-forward this module may stop; free the port or pick another local_port",
                               holder=_public_holder(h), stopped=[], kept=[_kept(h, "unknown")])
        return plan

    def stop_all(plan: list[dict]) -> None:
        """Stop what the plan names (reported in ``stopped`` as it goes); our state file goes with our process."""
        for e in plan:
            if check_mode:
                result["stopped"].append(e)
                continue
            if not stop_process(e["pid"]):
                raise ForwardError(f"could not stop pid {e['pid']} ({e['kind']} to {e['target']}): it survived "
                                   "SIGTERM and SIGKILL", stopped=result["stopped"], kept=[e])
            result["stopped"].append(e)
            if e["pid"] == ours_pid:
                _unlink(spath)

    if params["state"] == "absent":
        plan = [ours_entry("state: absent")] if ours_pid is not None else []
        if params["cleanup"]:
            plan += plan_others()
        stop_all(plan)
        if current is not None or plan:
            result["changed"] = True
            if not check_mode:
                _unlink(spath)
        if diff:
            result["diff"] = {"before": _diff_side(address, port, [_line(e) for e in plan]),
                              "after": _diff_side(address, port, [])}
        return result

    api = api_factory()
    kube_host = api.api_client.configuration.host
    # 1. the new target works (resolved, a tunnel opens), tested before anything is stopped
    resolved, problem = test_target(api, target)
    sport = getattr(resolved, "service_port", None)
    if resolved is not None:
        result["pod"] = resolved.pod
    wanted = {"target": target.as_dict(), "kube_host": kube_host, "address": address, "local_port": port}
    same = bool(ours_pid is not None and current.get("kube_host") == kube_host
                and current.get("address") == address and current.get("local_port") == port
                and same_target(current.get("target") or {}, target.as_dict(), sport))
    kept_ours = [{"pid": ours_pid, "target": target_description(current.get("target")), "url": url,
                  "cmdline": redact_cmdline(proc_cmdline(ours_pid)), "kind": "asgard.mlflow forwarder"}] \
        if ours_pid is not None else []

    # 2. every conflict, before anything is stopped
    plan = plan_others()
    if ours_pid is not None and not (same and listening):
        plan.insert(0, ours_entry("target changed" if not same else "not listening"))
    kept = kept_ours + [_kept(h, kubectl_target(h.get("cmdline") or [])) for h in others
                        if any(e["pid"] == h["pid"] for e in plan)]

    if problem is not None:
        what = _problem_text(problem)
        left = ("; nothing was stopped: " + "; ".join(f"pid {k['pid']} ({k['kind']} to {k['target']}) keeps "
                                                      f"{address}:{port}" for k in kept)) if kept else ""
        if _is_fatal(problem) or (plan and not (same and listening)):
            raise ForwardError(f"the new target {target.describe()} does not work ({what}){left}",
                               code=getattr(problem, "code", None), evidence=getattr(problem, "evidence", {}),
                               stopped=[], kept=kept, target=target.as_dict())
        # nothing to replace (or the same forward): the forwarder resolves a pod per connection
        result["warnings"] = [f"{what} (the forward {'keeps running' if same and listening else 'starts anyway'} "
                              "and resolves a pod per connection)"]

    if same and listening and not plan:
        result.update(pid=ours_pid, started=current.get("started"), log=current.get("log", log))
        if current.get("target") != target.as_dict() and not check_mode:
            # an equivalent spelling (e.g. remote_port 5000 vs omitted): the same forward; remember the canonical form
            write_state(spath, dict(current, canonical=canonical_target(target.as_dict(), sport)))
        if diff:
            side = _diff_side(address, port, [_ours_line(ours_pid, current)])
            result["diff"] = {"before": side, "after": side}
        return result

    result["changed"] = True
    new_line = f"asgard.mlflow forwarder to {target.describe()}" + (f" (pod {resolved.pod})" if resolved else "")
    if diff:
        before = ([_ours_line(ours_pid, current)] if ours_pid else []) + [_line(e) for e in plan if e["pid"] != ours_pid]
        after = [_ours_line(ours_pid, current)] if same and listening else [f"new: {new_line}"]
        result["diff"] = {"before": _diff_side(address, port, before), "after": _diff_side(address, port, after)}
    if same and listening:
        # the same forward, another process on an overlapping address: only that one goes
        stop_all(plan)
        result.update(pid=ours_pid, started=current.get("started"), log=current.get("log", log))
        return result
    if check_mode:
        stop_all(plan)
        result["would_start"] = True
        return result

    # 3. replace: stop, then start the new forwarder; if it cannot start, put ours back
    stop_all(plan)
    runtime = install_runtime(sdir)
    config = {"address": address, "port": port, "log": log, "target": target.as_dict(), "kube": api.snapshot()}
    try:
        pid = spawn(runtime, fid, config)
    except ForwardError as exc:
        restored = None
        if ours_pid is not None and current.get("kube_host") == kube_host and current.get("target"):
            old = {k: current["target"].get(k) for k in ("namespace", "service", "pod", "label_selectors",
                                                         "remote_port")}
            try:
                rpid = spawn(runtime, fid, dict(config, target=old, kube=api.snapshot()))
            except ForwardError:
                rpid = None
            if rpid:
                started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                write_state(spath, dict(current, pid=rpid, started=started, cmdline=proc_cmdline(rpid)))
                restored = {"pid": rpid, "target": target_description(old), "url": url}
        after = (f"the previous forward was restarted (pid {restored['pid']} to {restored['target']})" if restored
                 else "the previous forward could not be restarted")
        raise ForwardError(f"{exc}; {after}", stopped=result["stopped"], kept=[restored] if restored else [],
                           restored=restored) from exc
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_state(spath, dict(wanted, pid=pid, started=started, log=log, runtime=runtime, cmdline=proc_cmdline(pid),
                            canonical=canonical_target(target.as_dict(), sport)))
    result.update(pid=pid, started=started)
    return result


def _holder_desc(h: dict) -> str:
    cmd = " ".join(redact_cmdline(h["cmdline"])) if h.get("cmdline") else "unknown command line"
    return f"PID {h['pid']} ({cmd})" if h.get("pid") else f"an unidentified process ({cmd})"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _public_holder(h: dict) -> dict:
    return dict(h, cmdline=redact_cmdline(h.get("cmdline")))


def _kept(h: dict, what: str) -> dict:
    cmd = h.get("cmdline") or []
    kind = "kubectl port-forward" if is_kubectl_port_forward(cmd) else (
        "asgard.mlflow forwarder" if MARKER in cmd else "process")
    return {"pid": h.get("pid"), "target": what, "cmdline": redact_cmdline(h.get("cmdline")), "kind": kind}


def _line(e: dict) -> str:
    return f"pid {e['pid']}: {e['kind']} to {e['target']}"


def _ours_line(pid, current: dict | None) -> str:
    return f"pid {pid}: asgard.mlflow forwarder to {target_description((current or {}).get('target'))}"


def _diff_side(address: str, port: int, lines: list[str]) -> dict:
    return {"local": f"{address}:{port}", "processes": lines}
