# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: detached helper processes that outlive the module (the port forwarder, the Lease renewer).

A helper is started with the controller's Python from a copy of the module_utils it needs under
``<state dir>/runtime/<hash>/`` (content addressed), not from the AnsiballZ temp dir that Ansible deletes.
Its configuration (credentials included) reaches it through a pipe, never a file or argv. It detaches (new
session + second fork) and reports ``READY <pid>`` or ``ERROR <text>`` on its stdout once it is ready.
Also: process liveness and stopping (``/proc``), used by both helpers and the modules that manage them.
Standard library only: this file is copied next to the helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time

PKG = "ansible_collections.asgard.mlflow.plugins.module_utils"


class DaemonError(Exception):
    """A helper process could not be installed or did not start."""


# ------------------------------------------------------------------ processes


def proc_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is [0], ppid [1], start time [19])."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_start_time(pid: int) -> str | None:
    """The process start time in clock ticks since boot: with the pid, it tells a process from a later one."""
    st = proc_stat(pid)
    return st[19] if st and len(st) > 19 else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = proc_stat(pid)
    return bool(st) and st[0] != "Z"


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


# ------------------------------------------------------------------ starting


def _module_source(name: str) -> str:
    import importlib.util

    full = f"{PKG}.{name}"
    spec = importlib.util.find_spec(full)
    src = spec.loader.get_source(full) if spec and spec.loader else None
    if not src:
        raise DaemonError(f"cannot read the source of {full} to install a helper process")
    return src


def install_runtime(base: str, modules: tuple[str, ...]) -> str:
    """Copy ``modules`` (module_utils names) to ``base/runtime/<hash>``; return that dir."""
    sources = {n: _module_source(n) for n in modules}
    digest = hashlib.sha256("".join(f"{n}\0{sources[n]}" for n in sorted(modules)).encode()).hexdigest()[:16]
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


def boot_code(module: str) -> str:
    """The ``python -c`` program of a helper: import ``module`` from the runtime copy and run its daemon_main()."""
    return f"import sys; sys.path.insert(0, sys.argv[1]); from {PKG}.{module} import daemon_main; daemon_main()"


def spawn(runtime: str, module: str, tags: list[str], config: dict, log: str, python: str | None = None,
          wait: float = 15.0) -> int:
    """Start ``module``'s daemon_main() detached, hand it ``config`` (JSON) on stdin; its pid once it is ready.

    argv is ``python -c BOOT runtime *tags``: the tags (a marker and an id) let ``/proc`` tell the helper apart.
    """
    import select
    import subprocess

    err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # A detached daemon that outlives the module: run_command would wait for it.
        proc = subprocess.Popen([python or sys.executable, "-c", boot_code(module), runtime, *tags],  # pylint: disable=ansible-bad-function
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
        raise DaemonError(f"the helper did not start: {text[6:]}")
    raise DaemonError(f"the helper did not report readiness within {wait:g}s (see {log})")


# ------------------------------------------------------------------ inside the helper


def read_config_and_detach():
    """In the helper: read the configuration from stdin, then fork again (not a session leader; the Popen child
    exits at once). Returns (config, pipe) where the pipe is where READY/ERROR go (see report_ready)."""
    config = json.loads(sys.stdin.read())
    sys.stdin.close()
    if os.fork() > 0:
        os._exit(0)
    return config, os.fdopen(os.dup(1), "w")


def redirect_output(log: str) -> None:
    """stdin from /dev/null, stdout and stderr to ``log`` (private), umask 077."""
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.umask(0o077)


def report(pipe, text: str) -> None:
    pipe.write(text + "\n")
    pipe.flush()
    pipe.close()


def log_line(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
    sys.stderr.flush()
