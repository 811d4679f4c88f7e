"""Who uses a running lab, so that the last user out stops it (shared by tests/conftest.py and molecule).

Every user registers as ``<state>/users/<pid>`` (a pytest session, or the ``molecule`` process, which outlives
its create/destroy playbooks); ``<state>/started-by`` holds the pid of whoever started the lab. Entries of
dead processes are removed when seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LAB_PKG = Path(__file__).resolve().parents[1]


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


def starter(state: Path, marker: str = "started-by") -> int | None:
    try:
        return int((state / marker).read_text())
    except (OSError, ValueError):
        return None
