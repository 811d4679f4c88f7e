"""Bring the lab up for a molecule scenario, and down again only if this molecule run started it.

    python molecule/_shared/lab.py up   --state-dir .lab
    python molecule/_shared/lab.py down --state-dir .lab

Same convention as tests/conftest.py (``asgardlab.users``): every user of a running lab registers as
``<state>/users/<pid>`` (here the pid of the ``molecule`` process, which outlives the create/destroy playbooks).
``down`` unregisters, and stops the lab only if a test run or molecule started it and no other live user (a pytest
worker, another molecule run) remains. ``up`` prints one JSON line: {"kubeconfig": ..., "started": bool,
"seconds": float}.
"""

from __future__ import annotations

import argparse
import json
import os
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


def up(state: Path) -> int:
    t0 = time.monotonic()
    try:
        started = lab_users.acquire(state, molecule_pid())
    except lab_users.LabStartError as e:
        print(e, file=sys.stderr)
        return 1
    print(json.dumps({"kubeconfig": str(state / "kubeconfig"), "started": started,
                      "seconds": round(time.monotonic() - t0, 2)}))
    return 0


def down(state: Path) -> int:
    print(lab_users.release(state, molecule_pid()))
    return 0


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
