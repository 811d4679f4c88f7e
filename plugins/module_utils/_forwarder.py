# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: persistent port-forwards behind ``asgard.mlflow.port_forward``.

The forwarder is a detached process (new session + second fork) started with the controller's
Python. Its code does not live in the AnsiballZ temp dir: the module copies this file and the
module_utils it needs into ``<state dir>/runtime/<hash>/`` and runs it from there. Kube connection
settings (credentials included) reach it through a pipe, never a file or argv. It listens on
address:port and, for every new connection, resolves a currently Ready pod and tunnels to it, so
it survives rollouts. State per forward: ``<state dir>/<address>_<port>.json`` (pid, target, started,
log) with the log beside it; the state dir is ``$XDG_STATE_HOME/asgard-mlflow/port-forwards``
(default ``~/.local/state/asgard-mlflow/port-forwards``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time

MARKER = "asgard-mlflow-forwarder"
RUNTIME_MODULES = ("_tunnel", "_kube", "_errors", "_shell", "_mlflow_rules", "_server_command", "_target", "_forwarder")
PKG = "ansible_collections.asgard.mlflow.plugins.module_utils"


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


def proc_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_process(pid: int, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``. True when it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    time.sleep(0.2)
    return not pid_alive(pid)


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


def _module_source(name: str) -> str:
    import importlib.util

    full = f"{PKG}.{name}"
    spec = importlib.util.find_spec(full)
    src = spec.loader.get_source(full) if spec and spec.loader else None
    if not src:
        raise ForwardError(f"cannot read the source of {full} to install the forwarder")
    return src


def install_runtime(base: str) -> str:
    """Copy the forwarder's module_utils to ``base/runtime/<hash>`` (content addressed); return that dir."""
    sources = {n: _module_source(n) for n in RUNTIME_MODULES}
    digest = hashlib.sha256("".join(sources[n] for n in RUNTIME_MODULES).encode()).hexdigest()[:16]
    root = os.path.join(base, "runtime", digest)
    pkg_dir = os.path.join(root, *PKG.split("."))
    if os.path.exists(os.path.join(pkg_dir, ".complete")):
        return root
    os.makedirs(pkg_dir, mode=0o700, exist_ok=True)
    d = root
    for part in PKG.split("."):
        d = os.path.join(d, part)
        with open(os.path.join(d, "__init__.py"), "w", encoding="utf-8"):
            pass
    for n, src in sources.items():
        with open(os.path.join(pkg_dir, f"{n}.py"), "w", encoding="utf-8") as fh:
            fh.write(src)
    with open(os.path.join(pkg_dir, ".complete"), "w", encoding="utf-8"):
        pass
    return root


BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    f"from {PKG}._forwarder import daemon_main; daemon_main()"
)


def spawn(runtime: str, fid: str, config: dict, python: str | None = None, wait: float = 15.0) -> int:
    """Start the detached forwarder; returns its pid once it listens (ForwardError otherwise)."""
    import subprocess

    err = os.open(config["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # A detached daemon that outlives the module: run_command would wait for it.
        proc = subprocess.Popen([python or sys.executable, "-c", BOOT, runtime, MARKER, fid],  # pylint: disable=ansible-bad-function
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                cwd="/", start_new_session=True, close_fds=True)
    finally:
        os.close(err)
    try:
        proc.stdin.write(json.dumps(config).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    line = b""
    import select

    end = time.monotonic() + wait
    while not line.endswith(b"\n") and time.monotonic() < end:
        r, _w, _x = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        line += chunk
    proc.stdout.close()
    proc.wait(timeout=5)  # the intermediate process exits right after the second fork
    text = line.decode("utf-8", "replace").strip()
    if text.startswith("READY "):
        return int(text.split()[1])
    if text.startswith("ERROR "):
        raise ForwardError(f"the forwarder did not start: {text[6:]}")
    raise ForwardError(f"the forwarder did not report readiness within {wait:g}s (see {config.get('log')})")


# ------------------------------------------------------------------ the forwarder process


def _log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
    sys.stderr.flush()


def daemon_main() -> None:
    config = json.loads(sys.stdin.read())
    sys.stdin.close()
    if os.fork() > 0:  # second fork: not a session leader, parent (the Popen child) exits at once
        os._exit(0)
    out = os.fdopen(os.dup(1), "w")
    try:
        srv = socket.socket(socket.AF_INET6 if ":" in config["address"] else socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((config["address"], config["port"]))
        srv.listen(64)
        log_fd = os.open(config["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        out.write(f"ERROR {config['address']}:{config['port']}: {exc}\n")
        out.flush()
        os._exit(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.umask(0o077)
    from ansible_collections.asgard.mlflow.plugins.module_utils._kube import KubeAPI
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target

    api = KubeAPI.from_snapshot(config.pop("kube"))
    target = Target(**config["target"])
    _log(f"forwarder pid {os.getpid()} listening on {config['address']}:{config['port']} -> {target.describe()}")
    out.write(f"READY {os.getpid()}\n")
    out.close()

    def stop(_sig, _frm):
        _log("SIGTERM: stopping")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    serve(srv, api, target)


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


def _holder_desc(h: dict) -> str:
    cmd = " ".join(h["cmdline"]) if h.get("cmdline") else "unknown command line"
    return f"PID {h['pid']} ({cmd})" if h.get("pid") else f"an unidentified process ({cmd})"


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


def ensure(params: dict, api_factory, check_mode: bool) -> dict:
    """state=present|absent for one forward; returns the module result (raises ForwardError on conflicts)."""
    from ansible_collections.asgard.mlflow.plugins.module_utils._target import Target, TargetError, resolve

    address, port = params["address"], int(params["local_port"])
    sdir = state_dir()
    fid = forward_id(address, port)
    spath = os.path.join(sdir, f"{fid}.json")
    log = os.path.join(sdir, f"{fid}.log")
    target = Target.from_params(params)
    result = {"changed": False, "state_file": spath, "log": log, "address": address, "local_port": port,
              "url": f"http://{'[' + address + ']' if ':' in address else address}:{port}",
              "target": target.as_dict(), "stopped": [], "stale_removed": [], "pid": None, "started": None}
    if not check_mode:
        os.makedirs(sdir, mode=0o700, exist_ok=True)
        os.chmod(sdir, 0o700)  # logs name pods and clients: keep them private
        result["stale_removed"] = remove_stale(sdir)
    current = read_state(spath)
    ours_alive = bool(current and current.get("pid") and pid_alive(int(current["pid"]))
                      and is_our_forwarder(int(current["pid"]), fid))
    holders = port_holders(address, port)

    def stop(pid: int, why: str, cmd) -> None:
        result["stopped"].append({"pid": pid, "cmdline": cmd, "reason": why})
        result["changed"] = True
        if not check_mode:
            stop_process(pid)

    def clear_others(keep_pid: int | None) -> None:
        for h in holders:
            if h["pid"] is not None and h["pid"] == keep_pid:
                continue
            cmd = h.get("cmdline") or []
            if h["pid"] and is_kubectl_port_forward(cmd):
                if params["cleanup"]:
                    stop(h["pid"], "kubectl port-forward holding the local port (cleanup: true)", cmd)
                    continue
                raise ForwardError(f"local port {port} is held by kubectl port-forward {_holder_desc(h)}; "
                                   "set cleanup: true to stop it", holder=h)
            if h["pid"] and MARKER in cmd:
                if params["cleanup"] or params["state"] == "absent":
                    stop(h["pid"], "orphaned asgard.mlflow forwarder on the local port", cmd)
                    continue
                raise ForwardError(f"local port {port} is held by another asgard.mlflow forwarder {_holder_desc(h)} "
                                   "without a state entry; set cleanup: true to stop it", holder=h)
            if params["state"] == "absent":
                continue  # not ours, not asked to clean it: leave it alone
            raise ForwardError(f"local port {address}:{port} is in use by {_holder_desc(h)}, which is not a "
                               "port-forward this module may stop; free the port or pick another local_port",
                               holder=h)

    if params["state"] == "absent":
        if ours_alive:
            stop(int(current["pid"]), "state: absent", proc_cmdline(int(current["pid"])))
        if current is not None:
            result["changed"] = True
            if not check_mode:
                try:
                    os.unlink(spath)
                except OSError:
                    pass
        if params["cleanup"]:
            clear_others(int(current["pid"]) if ours_alive else None)
        return result

    api = api_factory()
    kube_host = api.api_client.configuration.host
    wanted = {"target": target.as_dict(), "kube_host": kube_host, "address": address, "local_port": port}
    if ours_alive:
        listening = any(h["pid"] == int(current["pid"]) for h in holders)
        same = all(current.get(k) == v for k, v in wanted.items())
        if same and listening:
            clear_others(int(current["pid"]))
            result.update(pid=current["pid"], started=current.get("started"), log=current.get("log", log))
            return result
        stop(int(current["pid"]), "target changed" if not same else "not listening", proc_cmdline(int(current["pid"])))
        holders = [h for h in holders if h["pid"] != int(current["pid"])]
    clear_others(None)
    # the target must exist now (bad input fails here, not in the background)
    try:
        res = resolve(api, target)
        result["pod"] = res.pod
    except TargetError as exc:
        # bad input, or an API server this configuration cannot use (wrong CA, 401/403): fail now rather than
        # start a forwarder whose every connection would fail
        if exc.bad_input or (exc.code == "KUBE_API_ERROR" and not exc.transient):
            raise ForwardError(str(exc), code=exc.code, evidence=exc.evidence) from exc
        result["warnings"] = [f"{exc.code}: {exc} (the forward starts anyway and resolves a pod per connection)"]
    result["changed"] = True
    if check_mode:
        result["would_start"] = True
        return result
    runtime = install_runtime(sdir)
    config = {"address": address, "port": port, "log": log, "target": target.as_dict(), "kube": api.snapshot()}
    pid = spawn(runtime, fid, config)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_state(spath, dict(wanted, pid=pid, started=started, log=log, runtime=runtime,
                            cmdline=proc_cmdline(pid)))
    result.update(pid=pid, started=started)
    return result
