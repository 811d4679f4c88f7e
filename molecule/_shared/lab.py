"""Bring the lab up for a molecule scenario, and down again only if this molecule run started it.

    python molecule/_shared/lab.py up   --state-dir .lab
    python molecule/_shared/lab.py down --state-dir .lab

Same convention as tests/conftest.py: every user of a running lab registers as ``<state>/users/<pid>`` (here
the pid of the ``molecule`` process, which outlives the create/destroy playbooks); ``<state>/started-by`` holds
the pid of whoever started it, and ``<state>/molecule-started`` marks a lab that molecule started. ``down``
unregisters, and stops the lab only if molecule started it and no other live user (a pytest session, another
molecule run) remains. ``up`` prints one JSON line: {"kubeconfig": ..., "started": bool, "seconds": float}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def molecule_pid() -> int:
    """The nearest ancestor process running molecule (else our parent: ansible-playbook)."""
    pid = os.getppid()
    first = pid
    while pid > 1:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        if any(Path(a.decode(errors="replace")).name == "molecule" for a in argv[:2]):
            return pid
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return first


def _lab(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "lab"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "asgardlab", "--state-dir", str(state), *args], env=env,
                          capture_output=True, text=True, timeout=180)


def up(state: Path) -> int:
    me = molecule_pid()
    t0 = time.monotonic()
    started = False
    if _lab(state, "status").returncode != 0:
        p = _lab(state, "up")
        if p.returncode != 0:
            print(f"could not start the lab:\n{p.stdout}\n{p.stderr}", file=sys.stderr)
            return 1
        started = True
        (state / "started-by").write_text(str(me))
        (state / "molecule-started").write_text(str(me))
    (state / "users").mkdir(parents=True, exist_ok=True)
    (state / "users" / str(me)).touch()
    print(json.dumps({"kubeconfig": str(state / "kubeconfig"), "started": started,
                      "seconds": round(time.monotonic() - t0, 2)}))
    return 0


def down(state: Path) -> int:
    me = molecule_pid()
    users = state / "users"
    (users / str(me)).unlink(missing_ok=True)
    marker = state / "molecule-started"
    try:
        starter = int(marker.read_text())
    except (OSError, ValueError):
        print("lab left running (molecule did not start it)")
        return 0
    others = []
    for f in users.glob("*") if users.exists() else []:
        try:
            pid = int(f.name)
        except ValueError:
            continue
        if _alive(pid):
            others.append(pid)
        else:
            f.unlink(missing_ok=True)
    if starter != me and _alive(starter):
        print(f"lab left running (started by molecule pid {starter})")
        return 0
    if others:
        print(f"lab left running (still used by pid {', '.join(map(str, others))})")
        return 0
    p = _lab(state, "down")
    marker.unlink(missing_ok=True)
    print(p.stdout.strip())
    return p.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--state-dir", default=str(REPO / ".lab"))
    args = ap.parse_args()
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    return up(state) if args.action == "up" else down(state)


if __name__ == "__main__":
    sys.exit(main())
