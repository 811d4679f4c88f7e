"""Run ansible-playbook for the bench: wall time, JSON callback results, peak RSS of the controller side.

The peak RSS is sampled from /proc every ``interval`` seconds over ansible-playbook and all its descendants
(forks, module processes): ``peak_tree_mb`` is the largest sum seen at one sample, ``peak_proc_mb`` the largest
single process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from helpers.ansible_runner import ansible_env  # noqa: E402

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(d))
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE_KB
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss_kb(root: int) -> tuple[int, int, int]:
    """(sum of RSS, largest RSS, number of processes) of ``root`` and its descendants, in KiB."""
    kids = _children_map()
    todo, seen = [root], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(kids.get(p, []))
    sizes = [_rss_kb(p) for p in seen]
    return sum(sizes), max(sizes or [0]), len(seen)


class RssMonitor(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_tree = self.peak_proc = self.peak_procs = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total, biggest, n = tree_rss_kb(self.pid)
            self.peak_tree = max(self.peak_tree, total)
            self.peak_proc = max(self.peak_proc, biggest)
            self.peak_procs = max(self.peak_procs, n)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class Run:
    rc: int
    wall_s: float
    started: float  # epoch seconds
    ended: float
    stdout: str
    stderr: str
    data: dict = field(default_factory=dict)
    peak_tree_mb: float = 0.0
    peak_proc_mb: float = 0.0
    peak_procs: int = 0

    def tasks(self) -> list[dict]:
        return [t for play in self.data.get("plays", []) for t in play.get("tasks", [])]

    def host_results(self, name_suffix: str) -> list[dict]:
        out = []
        for t in self.tasks():
            name = t.get("task", {}).get("name", "")
            if name == name_suffix or name.endswith(" : " + name_suffix):
                out.extend(t.get("hosts", {}).values())
        return out

    def failures(self) -> list[str]:
        """'host: task: message' for every failed (not ignored) host result, from the JSON callback."""
        out = []
        for t in self.tasks():
            name = t.get("task", {}).get("name", "")
            for host, res in t.get("hosts", {}).items():
                if (res.get("failed") or res.get("unreachable")) and not res.get("_ansible_ignore_errors"):
                    msg = res.get("msg") or res.get("stderr") or res.get("censored") or ""
                    out.append(f"{host}: {name}: {str(msg)[:400]}")
        return out

    @property
    def output(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-3000:]}"


def run_playbook(playbook: str | Path, *, kubeconfig: Path, tmpdir: Path, extra_vars: dict | None = None,
                 inventory: Path | None = None, forks: int | None = None, timeout: float = 1800) -> Run:
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)]
    if inventory:
        cmd += ["-i", str(inventory)]
    if forks:
        cmd += ["--forks", str(forks)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    env = ansible_env(kubeconfig, tmpdir=str(tmpdir))
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "0"
    env["ANSIBLE_LOCALHOST_WARNING"] = "0"
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "0"
    started = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mon = RssMonitor(proc.pid)
    mon.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    mon.stop()
    data = {}
    start = out.find("{")
    if start >= 0:
        try:
            data = json.loads(out[start:])
        except json.JSONDecodeError:
            data = {}
    return Run(proc.returncode, wall, started, time.time(), out, err, data,
               round(mon.peak_tree / 1024, 1), round(mon.peak_proc / 1024, 1), mon.peak_procs)
