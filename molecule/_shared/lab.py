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
sys.path.insert(0, str(REPO / "tests" / "lab"))
from asgardlab import users as lab_users  # noqa: E402  (the same users/<pid> convention as tests/conftest.py)


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
    return lab_users.lab_cmd(state, *args)


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
    lab_users.register(state, me)
    print(json.dumps({"kubeconfig": str(state / "kubeconfig"), "started": started,
                      "seconds": round(time.monotonic() - t0, 2)}))
    return 0


def down(state: Path) -> int:
    me = molecule_pid()
    lab_users.unregister(state, me)
    starter = lab_users.starter(state, "molecule-started")
    if starter is None:
        print("lab left running (molecule did not start it)")
        return 0
    if starter != me and lab_users.alive(starter):
        print(f"lab left running (started by molecule pid {starter})")
        return 0
    others = lab_users.others(state, me)
    if others:
        print(f"lab left running (still used by pid {', '.join(map(str, others))})")
        return 0
    p = _lab(state, "down")
    (state / "molecule-started").unlink(missing_ok=True)
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
