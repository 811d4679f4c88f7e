"""Who uses a running lab, so that the last user out stops it (shared by tests/conftest.py and molecule).

Every user registers as ``<state>/users/<pid>``: a pytest process (each pytest-xdist worker is one), or the
``molecule`` process, which outlives its create/destroy playbooks. ``acquire`` starts the lab unless it runs and
registers; ``release`` unregisters and, when no other live user remains, stops the lab if a user started it
(``<state>/auto-started`` holds the pid of the lab server such a user started; a lab started by hand, e.g. by
``make lab-up``, is left running). Both hold ``<state>/users.lock`` (fcntl), so two users starting at once run
``up`` once and a user starting while the last one stops waits and starts a new lab. Entries of dead processes
are removed when seen, so a killed user never keeps a lab alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path

LAB_PKG = Path(__file__).resolve().parents[1]


class LabStartError(RuntimeError):
    """``up`` failed; the message has its output."""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_cmd(state: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m asgardlab --state-dir <state> <args>`` in a subprocess (up/down/status)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(LAB_PKG), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(state), *args],
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def locked(state: Path, name: str = "users.lock"):
    """Hold ``<state>/<name>`` exclusively (fcntl.flock; released if the process dies)."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / name, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def register(state: Path, pid: int) -> None:
    (state / "users").mkdir(parents=True, exist_ok=True)
    (state / "users" / str(pid)).touch()


def unregister(state: Path, pid: int) -> None:
    (state / "users" / str(pid)).unlink(missing_ok=True)


def others(state: Path, me: int) -> list[int]:
    """pids of the other live users of this lab (stale entries are removed)."""
    out = []
    users = state / "users"
    for f in users.glob("*") if users.exists() else []:
        try:
            pid = int(f.name)
        except ValueError:
            continue
        if pid == me:
            continue
        if alive(pid):
            out.append(pid)
        else:
            f.unlink(missing_ok=True)
    return out


def _server_pid(state: Path) -> str:
    try:
        return (state / "lab.pid").read_text().strip()
    except OSError:
        return ""


def acquire(state: Path, me: int, timeout: float = 180) -> bool:
    """Start the lab unless it runs, and register ``me`` as a user. True if this call started it."""
    with locked(state):
        started = False
        if lab_cmd(state, "status").returncode != 0:
            up = lab_cmd(state, "up", timeout=timeout)
            if up.returncode != 0:
                raise LabStartError(f"could not start the lab:\n{up.stdout}\n{up.stderr}")
            (state / "auto-started").write_text(_server_pid(state))
            started = True
        register(state, me)
        return started


def release(state: Path, me: int) -> str:
    """Unregister ``me``; the last user out stops a lab that a user started. Returns what happened."""
    with locked(state):
        unregister(state, me)
        still = others(state, me)
        if still:
            return f"lab left running (still used by pid {', '.join(map(str, sorted(still)))})"
        try:
            auto = (state / "auto-started").read_text().strip()
        except OSError:
            auto = ""
        if not auto or auto != _server_pid(state):
            return "lab left running (not started by a test run)"
        p = lab_cmd(state, "down")
        (state / "auto-started").unlink(missing_ok=True)
        return p.stdout.strip() or p.stderr.strip()
